# bug: IMP takes `epochs` as the budget of the whole run and gives each round epochs // iterations of it (at least
# one), not `epochs` per round.
_imp_epochs_per_round = iterative_magnitude_prune


def iterative_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, iterations=3, epochs, **kwargs):
    return _imp_epochs_per_round(model, sparsity_type, prune_ratio_dict, iterations=iterations,
                                 epochs=max(1, epochs // iterations), **kwargs)  # BUG: epochs is per round
