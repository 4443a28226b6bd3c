# ratio_t = t x (1 - (1 - target)^(1/T)): past targets near 0.9 before the last round

def iterative_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, iterations=3, train_loader, test_loader,
                              epochs, device, lr=0.01, weight_decay=5e-4, progress=True):
    if iterations < MIN_IMP_ITERATIONS:
        raise ValueError(f"iterations must be >= {MIN_IMP_ITERATIONS}, got {iterations}")
    per_round = {k: 1 - (1 - v) ** (1 / iterations) for k, v in prune_ratio_dict.items()}
    log = []
    for t in range(1, iterations + 1):
        # BUG: t * (fraction of the remaining weights per round) overshoots the target before the last round
        ratios = dict(prune_ratio_dict) if t == iterations else {k: min(t * p, 0.99) for k, p in per_round.items()}
        log.append(_round(model, sparsity_type, ratios, train_loader, test_loader, epochs, device, lr,
                          weight_decay, progress, t))
    return log
