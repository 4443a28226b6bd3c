# bug: IMP measures each round's "accuracy_before_retrain" before that round's pruning (on the model the previous
# round's retraining left, the dense one in round 1), so its log never shows what a pruning step cost.
def iterative_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, iterations=3, train_loader, test_loader,
                              epochs, device, lr=0.01, weight_decay=5e-4, progress=True):
    if iterations < MIN_IMP_ITERATIONS:
        raise ValueError("iterative pruning needs at least 3 iterations")
    schedule = {n: np.linspace(0.0, t, iterations + 1)[1:] for n, t in prune_ratio_dict.items()}
    log = []
    for i in range(iterations):
        before = _evaluate(model, test_loader)  # BUG: the model is not pruned yet
        entry = _one_round(model, sparsity_type, {n: float(s[i]) for n, s in schedule.items()}, i + 1, train_loader,
                           test_loader, epochs, device, lr, weight_decay)
        log.append({**entry, "accuracy_before_retrain": before})
    return log
