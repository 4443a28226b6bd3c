# bug: apply_pruning skips layers whose ratio is 0 ("nothing to prune"), so no mask comes back for them, although the
# contract returns one for every name in prune_ratio_dict.
_apply_every_layer = apply_pruning


def apply_pruning(model, sparsity_type, prune_ratio_dict):
    return _apply_every_layer(model, sparsity_type, {n: r for n, r in prune_ratio_dict.items() if r != 0})  # BUG
