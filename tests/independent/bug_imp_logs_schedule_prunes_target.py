# bug: IMP logs the rising schedule in "ratios" but prunes every round straight to the target (round 1 already does
# all the pruning; rounds 2..T prune nothing more): OMP with T retrainings.  Graded line: "retrained after every
# round's pruning" / ratio rises every round.
def iterative_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, iterations=3, train_loader, test_loader,
                              epochs, device, lr=0.01, weight_decay=5e-4, progress=True):
    if iterations < MIN_IMP_ITERATIONS:
        raise ValueError(f"IMP needs at least {MIN_IMP_ITERATIONS} iterations, got {iterations}")
    targets = dict(prune_ratio_dict)
    schedule = [{n: 1.0 - (1.0 - r) ** (t / iterations) for n, r in targets.items()} for t in range(1, iterations + 1)]
    schedule[-1] = dict(targets)
    log = []
    for t, ratios in enumerate(schedule, start=1):
        masks = apply_pruning(model, sparsity_type, targets)   # BUG: should be `ratios`
        sparsity = test_sparsity(model, sparsity_type)["overall"]
        before = evaluate(model, test_loader, device)
        _retrain(model, masks, train_loader, test_loader, epochs, device, lr, weight_decay, progress)
        log.append({"iteration": t, "ratios": dict(ratios), "sparsity": sparsity, "accuracy_before_retrain": before,
                    "accuracy": evaluate(model, test_loader, device)})
    return log
