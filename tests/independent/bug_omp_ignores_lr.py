# bug: OMP retrains with a learning rate written into the code, whatever `lr` says.
def oneshot_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, train_loader, test_loader, epochs, device,
                            lr=0.01, weight_decay=5e-4, progress=True):
    return [_round(model, sparsity_type, prune_ratio_dict, train_loader, test_loader, epochs, device, 0.01,  # BUG: lr
                   weight_decay, progress, 1)]
