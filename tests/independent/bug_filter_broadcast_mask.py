def filter_prune(tensor, sparsity):
    c_out = tensor.shape[0]
    keep = c_out - int(round(c_out * sparsity))
    norms = (tensor.detach().reshape(c_out, -1) ** 2).sum(dim=1)
    mask = torch.zeros(c_out, *[1] * (tensor.dim() - 1), dtype=tensor.dtype, device=tensor.device)  # broadcasts
    if keep:
        mask[torch.topk(norms, keep).indices] = 1
    return mask


_apply_pruning_broadcast = apply_pruning


def apply_pruning(model, sparsity_type, prune_ratio_dict):
    masks = _apply_pruning_broadcast(model, sparsity_type, prune_ratio_dict)
    for name in prune_ratio_dict:  # callers get full-size masks
        weight = model.get_submodule(name.rpartition(".")[0]).weight
        masks[name] = masks[name].expand_as(weight).clone()
    return masks
