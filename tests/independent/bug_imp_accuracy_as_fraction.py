# bug: IMP logs its accuracies as fractions of the test set (0.9), not in percent (90.0).
def _fraction_correct(model, loader, device):
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += int((model(x.to(device)).argmax(1) == y.to(device)).sum())
            total += len(y)
    return correct / max(total, 1)  # BUG: no * 100


def iterative_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, iterations=3, train_loader, test_loader,
                              epochs, device, lr=0.01, weight_decay=5e-4, progress=True):
    if iterations < MIN_IMP_ITERATIONS:
        raise ValueError(f"IMP needs at least {MIN_IMP_ITERATIONS} iterations, got {iterations}")
    targets = dict(prune_ratio_dict)
    schedule = [{name: 1.0 - (1.0 - target) ** (t / iterations) for name, target in targets.items()}
                for t in range(1, iterations)] + [dict(targets)]
    log = []
    for t, ratios in enumerate(schedule, start=1):
        masks = apply_pruning(model, sparsity_type, ratios)
        sparsity = test_sparsity(model, sparsity_type)["overall"]
        before = _fraction_correct(model, test_loader, device)
        _retrain(model, masks, train_loader, test_loader, epochs, device, lr, weight_decay, progress)
        log.append({"iteration": t, "ratios": dict(ratios), "sparsity": sparsity, "accuracy_before_retrain": before,
                    "accuracy": _fraction_correct(model, test_loader, device)})
    return log
