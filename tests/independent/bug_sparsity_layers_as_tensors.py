# 'layers' values are 0-d tensors, not floats

def _measure(model: nn.Module, sparsity_type: str) -> dict:
    if sparsity_type not in SPARSITY_TYPES:
        raise ValueError(f"unknown sparsity_type {sparsity_type!r}; choose one of {SPARSITY_TYPES}")
    layers, zero_filters, rows = {}, {}, []
    total_zeros = total = 0
    for name in prunable_weights(model):
        module, attr = _resolve(model, name)
        w = _current_value(module, attr)
        zeros = int((w == 0).sum().item())
        n = w.numel()
        total_zeros += zeros
        total += n
        layers[name] = (w == 0).double().mean()
        row = [name, zeros, n, layers[name]]
        if sparsity_type == "filter":
            c = w.shape[0]
            zf = int((w.reshape(c, -1) == 0).all(dim=1).sum().item()) if w.dim() > 0 else 0
            zero_filters[name] = zf
            row += [zf, c]
        rows.append(row)
    result = {"overall": total_zeros / total if total else 0.0, "layers": layers}
    if sparsity_type == "filter":
        result["zero_filters"] = zero_filters
    return result, rows
