# torch.isclose(w, 0) counts tiny weights as zeros

def test_sparsity(model, sparsity_type="unstructured"):
    report = {"overall": 0.0, "layers": {}}
    if sparsity_type == "filter":
        report["zero_filters"] = {}
    zeros_all, count_all = 0, 0
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        w = module.weight.detach()
        key = f"{name}.weight"
        is_zero = torch.isclose(w, torch.zeros_like(w))
        z = int(is_zero.sum())
        report["layers"][key] = z / w.numel()
        zeros_all += z
        count_all += w.numel()
        if sparsity_type == "filter":
            report["zero_filters"][key] = int(is_zero.flatten(1).all(1).sum())
        print(f"{key:30s}{z:12d}{w.numel():12d}{z / w.numel():10.4f}")
    report["overall"] = zeros_all / count_all
    print(f"overall sparsity {report['overall']:.4f}")
    return report
