# the log's sparsity is measured before pruning

def oneshot_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, train_loader, test_loader, epochs, device,
                            lr=0.01, weight_decay=5e-4, progress=True):
    ratios = dict(prune_ratio_dict)
    sparsity = test_sparsity(model, sparsity_type)["overall"]  # BUG: measured before pruning (0.0 on a dense model)
    masks = apply_pruning(model, sparsity_type, ratios)
    before = evaluate(model, test_loader, device, exact=True)
    _retrain(model, masks, train_loader, test_loader, epochs, device, lr, weight_decay, progress)
    after = evaluate(model, test_loader, device, exact=True)
    return [{"iteration": 1, "ratios": ratios, "sparsity": sparsity,
             "accuracy_before_retrain": before, "accuracy": after}]
