# bug: for a layer with a torch.nn.utils.prune hook, test_sparsity counts the zeros of its mask buffer instead of its
# weight, missing weights that are zero under a mask of 1.
def test_sparsity(model, sparsity_type="unstructured"):
    layers, zero_filters = {}, {}
    zeros = total = 0
    for name, module in _weight_layers(model).items():
        w = getattr(module, "weight_mask", module.weight).detach()  # BUG: the mask, where there is one
        z = int((w == 0).sum())
        layers[f"{name}.weight"] = z / w.numel()
        zeros, total = zeros + z, total + w.numel()
        if sparsity_type == "filter":
            zero_filters[f"{name}.weight"] = int((w.reshape(w.shape[0], -1).abs().sum(1) == 0).sum())
    report = {"overall": zeros / total, "layers": layers}
    if sparsity_type == "filter":
        report["zero_filters"] = zero_filters
    return report
