# bug: IMP logs its accuracies as fractions of the test set (0.9), not in percent (90.0).
_imp_in_percent = iterative_magnitude_prune


def iterative_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, iterations=3, **kwargs):
    log = _imp_in_percent(model, sparsity_type, prune_ratio_dict, iterations=iterations, **kwargs)
    for entry in log:
        entry["accuracy_before_retrain"] /= 100  # BUG: fractions
        entry["accuracy"] /= 100
    return log
