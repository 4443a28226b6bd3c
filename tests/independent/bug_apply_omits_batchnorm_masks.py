# bug: apply_pruning zeroes the BatchNorm channels of pruned filters but returns only the weights' masks, so
# masked_retrain cannot hold those channels at 0 (an optimizer with momentum moves them back).
_apply_with_batchnorm_masks = apply_pruning


def apply_pruning(model, sparsity_type, prune_ratio_dict):
    masks = _apply_with_batchnorm_masks(model, sparsity_type, prune_ratio_dict)
    return {name: mask for name, mask in masks.items() if name in prune_ratio_dict}
