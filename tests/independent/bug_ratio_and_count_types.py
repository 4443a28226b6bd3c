# two bugs: a ratio is range-checked without checking it is a number, so a layer with no ratio (null) raises
# TypeError, not ValueError; test_sparsity's zero-filter counts are 0-d tensors, not ints


def _ratio(layer, value):
    if isinstance(value, (bool, str)) or not 0 <= value < 1:  # BUG: None (and lists) raise TypeError here
        raise ValueError(f"{layer}: ratio {value!r} not in [0, 1)")
    return float(value)


def test_sparsity(model, sparsity_type="unstructured"):
    weights = prunable_weights(model)
    layers = {n: float((w == 0).float().mean()) for n, w in weights.items()}
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    report = {"overall": zeros / sum(w.numel() for w in weights.values()), "layers": layers}
    if sparsity_type == "filter":
        report["zero_filters"] = {n: (w.detach().reshape(len(w), -1) == 0).all(1).sum() for n, w in weights.items()}  # BUG
    return report
