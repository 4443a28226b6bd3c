# bug: OMP measures "accuracy_before_retrain" after the retraining, so the log shows no drop at all.
def oneshot_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, train_loader, test_loader, epochs, device,
                            lr=0.01, weight_decay=5e-4, progress=True):
    ratios = dict(prune_ratio_dict)
    masks = apply_pruning(model, sparsity_type, ratios)
    report = test_sparsity(model, sparsity_type)
    optimizer, scheduler, loss_fn = _retrain_setup(model, epochs, train_loader, lr, weight_decay)
    history = masked_retrain(model, masks, optimizer, loss_fn, train_loader, test_loader, epochs, device,
                             scheduler, progress)
    before = evaluate(model, test_loader, device, exact=True)  # BUG: the model is already retrained here
    after = evaluate(model, test_loader, device, exact=True)
    return [{"iteration": 1, "ratios": ratios, "sparsity": report["overall"], "layer_sparsity": dict(report["layers"]),
             "accuracy_before_retrain": before, "accuracy": after, "history": history}]
