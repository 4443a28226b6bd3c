def test_sparsity(model, sparsity_type="unstructured"):
    layers, zero_filters = {}, {}
    zeros = total = 0
    for name, w in model.named_parameters():
        if w.dim() < 2:  # BatchNorm and biases are 1-D; with prune hooks the weight read is <name>_orig, unmasked
            continue
        w = w.detach()
        layers[name] = float((w == 0).sum()) / w.numel()
        zeros, total = zeros + int((w == 0).sum()), total + w.numel()
        if sparsity_type == "filter":
            zero_filters[name] = int((w.reshape(w.shape[0], -1) == 0).all(1).sum())
    report = {"overall": zeros / total, "layers": layers}
    if sparsity_type == "filter":
        report["zero_filters"] = zero_filters
    return report
