# bug: IMP prunes all rounds back to back and spends the whole retraining budget (iterations x epochs) after the
# last round: no retraining between rounds, so it is one-shot pruning in disguise.
def iterative_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, iterations=3, train_loader, test_loader,
                              epochs, device, lr=0.01, weight_decay=5e-4, progress=True):
    if iterations < MIN_IMP_ITERATIONS:
        raise ValueError(f"iterations must be >= {MIN_IMP_ITERATIONS}, got {iterations}")
    log = []
    for t in range(1, iterations + 1):
        ratios = dict(prune_ratio_dict) if t == iterations else \
            {n: 1.0 - (1.0 - r) ** (t / iterations) for n, r in prune_ratio_dict.items()}
        masks = apply_pruning(model, sparsity_type, ratios)
        log.append({"iteration": t, "ratios": ratios, "sparsity": test_sparsity(model, sparsity_type)["overall"],
                    "accuracy_before_retrain": evaluate(model, test_loader, device)})
    total = epochs * iterations   # BUG: the same number of epochs in all, but all of them at the end
    optimizer, scheduler = _sgd_cosine(model, lr, weight_decay, total * len(train_loader))
    masked_retrain(model, masks, optimizer, nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING), train_loader,
                   test_loader, total, device, scheduler, progress)
    for entry in log:
        entry["accuracy"] = evaluate(model, test_loader, device)
    return log
