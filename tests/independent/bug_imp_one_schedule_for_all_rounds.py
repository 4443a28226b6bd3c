# bug: IMP builds one optimizer and one cosine schedule over all its rounds, so every round after the first retrains at
# a learning rate the schedule has already decayed, not at the lr it is given.
def iterative_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, iterations=3, train_loader, test_loader,
                              epochs, device, lr=0.01, weight_decay=5e-4, progress=True):
    if iterations < MIN_IMP_ITERATIONS:
        raise ValueError(f"need at least {MIN_IMP_ITERATIONS} iterations")
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(  # BUG: one schedule for every round
        optimizer, T_max=max(1, iterations * epochs * len(train_loader)))
    log = []
    for step in range(1, iterations + 1):
        ratios = {name: target * step / iterations for name, target in prune_ratio_dict.items()}
        masks = apply_pruning(model, sparsity_type, ratios)
        sparsity = test_sparsity(model, sparsity_type)["overall"]
        before = _accuracy(model, test_loader, device)
        history = masked_retrain(model, masks, optimizer, nn.CrossEntropyLoss(), train_loader, test_loader, epochs,
                                 device, scheduler)
        log.append({"iteration": step, "ratios": dict(ratios), "sparsity": sparsity, "accuracy_before_retrain": before,
                    "accuracy": history[-1]["test_accuracy"] if history else before})
    return log
