# a second call ranks weight_orig, the unmasked values, not the weights as they are

def apply_pruning(model, sparsity_type, prune_ratio_dict):
    if sparsity_type not in SPARSITY_TYPES:
        raise ValueError(f"unknown sparsity type {sparsity_type!r} (unstructured or filter)")
    modules = dict(model.named_modules())
    pairs = _bn_names(model)
    masks = {}
    for name in sorted(prune_ratio_dict):
        ratio = prune_ratio_dict[name]
        mod_name = name.rsplit(".", 1)[0]
        module = modules[mod_name]
        # BUG: ranks the raw parameter (weight_orig when already pruned), ignoring the earlier mask
        w = dict(model.named_parameters()).get(name + "_orig", dict(model.named_parameters()).get(name)).detach()
        mask = unstructured_prune(w, ratio) if sparsity_type == "unstructured" else filter_prune(w, ratio)
        prune.custom_from_mask(module, "weight", mask)
        masks[name] = module.weight_mask.detach().clone()
        if sparsity_type == "filter" and mod_name in pairs:
            bn = modules[pairs[mod_name]]
            ch = masks[name].flatten(1).amax(1)
            for t in ("weight", "bias"):
                prune.custom_from_mask(bn, t, ch.to(getattr(bn, t).dtype))
                masks[f"{pairs[mod_name]}.{t}"] = getattr(bn, t + "_mask").detach().clone()
    return masks
