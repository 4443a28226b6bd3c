# OMP prunes and retrains a deep copy; the given model is unchanged

def oneshot_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, train_loader, test_loader, epochs, device,
                            lr=0.01, weight_decay=5e-4, progress=True):
    work = copy_without_pruning(model)
    return [_prune_and_retrain(work, sparsity_type, dict(prune_ratio_dict), 1, train_loader=train_loader,
                               test_loader=test_loader, epochs=epochs, device=device, lr=lr,
                               weight_decay=weight_decay, progress=progress)]
