# bug: OMP retrains a single epoch whatever `epochs` says.
def oneshot_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, train_loader, test_loader, epochs, device,
                            lr=0.01, weight_decay=5e-4, progress=True):
    ratios = dict(prune_ratio_dict)
    masks = apply_pruning(model, sparsity_type, ratios)
    sparsity = test_sparsity(model, sparsity_type)["overall"]
    before = evaluate(model, test_loader, device)
    _retrain(model, masks, train_loader, test_loader, 1, device, lr, weight_decay, progress)  # BUG: epochs
    return [{"iteration": 1, "ratios": ratios, "sparsity": sparsity, "accuracy_before_retrain": before,
             "accuracy": evaluate(model, test_loader, device)}]
