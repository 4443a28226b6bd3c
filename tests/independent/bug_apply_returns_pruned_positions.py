_apply_pruning_keep_masks = apply_pruning


def apply_pruning(model, sparsity_type, prune_ratio_dict):
    kept = _apply_pruning_keep_masks(model, sparsity_type, prune_ratio_dict)
    return {name: 1 - mask for name, mask in kept.items()}  # 1 marks a pruned weight: the convention upside down
