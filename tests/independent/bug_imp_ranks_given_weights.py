# every round ranks a copy of the weights IMP was given, so the later rounds ignore what retraining did
import copy


def iterative_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, iterations=3, train_loader, test_loader,
                              epochs, device, lr=0.01, weight_decay=5e-4, progress=True):
    if iterations < MIN_IMP_ITERATIONS:
        raise ValueError(f"need at least {MIN_IMP_ITERATIONS} iterations")
    given = copy.deepcopy(model)  # BUG: every round's masks come from this copy, taken before any retraining
    log = []
    for step in range(1, iterations + 1):
        ratios = {name: target * step / iterations for name, target in prune_ratio_dict.items()}
        masks = apply_pruning(copy.deepcopy(given), sparsity_type, ratios)
        with torch.no_grad():
            for name, mask in masks.items():
                _parameter(model, name).mul_(mask)
        sparsity = test_sparsity(model, sparsity_type)["overall"]
        before = _accuracy(model, test_loader, device)
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * len(train_loader)))
        history = masked_retrain(model, masks, optimizer, nn.CrossEntropyLoss(), train_loader, test_loader, epochs,
                                 device, scheduler)
        log.append({"iteration": step, "ratios": dict(ratios), "sparsity": sparsity, "accuracy_before_retrain": before,
                    "accuracy": history[-1]["test_accuracy"] if history else before})
    return log
