def apply_pruning(model, sparsity_type, prune_ratio_dict):
    if sparsity_type not in ("unstructured", "filter"):
        raise ValueError(f"sparsity_type must be unstructured or filter, got {sparsity_type}")
    masks = {}
    with torch.no_grad():
        for name, ratio in prune_ratio_dict.items():
            module_name = name.rpartition(".")[0]
            current = model.get_submodule(module_name).weight.detach()
            mask = unstructured_prune(current, ratio) if sparsity_type == "unstructured" else filter_prune(current, ratio)
            _parameter(model, name).mul_(mask)
            masks[name] = mask
            if sparsity_type == "filter":
                bn_name = _batchnorm_after(model, module_name)
                if bn_name is not None:  # the channel's statistics zeroed, its scale and shift left as they are
                    bn = model.get_submodule(bn_name)
                    channel = mask.reshape(mask.shape[0], -1)[:, 0]
                    bn.running_mean.mul_(channel)
                    bn.running_var.mul_(channel).add_(1 - channel)
    return masks
