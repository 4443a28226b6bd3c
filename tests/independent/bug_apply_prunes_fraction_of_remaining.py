# each call prunes ratio of the weights still left, so a second call overshoots

def apply_pruning(model, sparsity_type, prune_ratio_dict):
    if sparsity_type not in SPARSITY_TYPES:
        raise ValueError(f"unknown sparsity_type {sparsity_type!r}; choose one of {SPARSITY_TYPES}")
    weights = prunable_weights(model)
    bn_of = _batchnorm_after(model) if sparsity_type == "filter" else {}
    masks = {}
    for name, ratio in prune_ratio_dict.items():
        if name not in weights:
            raise ValueError(f"{name} is not a Conv2d/Linear weight of the model")
        w = weights[name].detach()
        mask = unstructured_layer_mask(w, ratio) if sparsity_type == "unstructured" else filter_prune(w, ratio)
        _attach_mask(model, name, mask)
        masks[name] = mask
        module_name, _ = _split(name)
        if sparsity_type == "filter" and module_name in bn_of:
            channel_keep = mask.reshape(mask.shape[0], -1)[:, 0].clone()
            for attr in ("weight", "bias"):
                bn_name = f"{bn_of[module_name]}.{attr}"
                _attach_mask(model, bn_name, channel_keep)
                masks[bn_name] = channel_keep
    return masks


def unstructured_layer_mask(w, ratio):
    alive = w != 0
    mask = torch.zeros_like(w)
    mask[alive] = unstructured_prune(w[alive], ratio)
    return mask
