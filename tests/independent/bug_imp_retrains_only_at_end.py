# IMP prunes every round but retrains only after the last one

def iterative_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, iterations=3, train_loader, test_loader,
                              epochs, device, lr=0.01, weight_decay=5e-4, progress=True):
    if iterations < 3:
        raise ValueError(f"IMP needs at least 3 iterations, got {iterations}")
    out = []
    for it in range(1, iterations + 1):
        ratios = {k: (v * it / iterations if it < iterations else v) for k, v in prune_ratio_dict.items()}
        round_epochs = epochs if it == iterations else 0
        out.append(_one_round(model, sparsity_type, ratios, it, train_loader, test_loader, round_epochs, device, lr,
                              weight_decay, progress))
    return out
