# every round ranks a copy of the weights IMP was given, so the later rounds ignore what retraining did

def _masks_from(scores, model, sparsity_type, ratios):
    masks = {}
    with torch.no_grad():
        for name, ratio in ratios.items():
            mask = unstructured_prune(scores[name], ratio) if sparsity_type == "unstructured" else \
                filter_prune(scores[name], ratio)
            _parameter(model, name).mul_(mask)
            masks[name] = mask
            if sparsity_type == "filter":
                bn_name = _batchnorm_after(model, name.rpartition(".")[0])
                if bn_name is not None:
                    channel = mask.reshape(mask.shape[0], -1)[:, 0].clone()
                    for attr in ("weight", "bias"):
                        _parameter(model, f"{bn_name}.{attr}").mul_(channel)
                        masks[f"{bn_name}.{attr}"] = channel.clone()
    return masks


def iterative_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, iterations=3, train_loader, test_loader,
                              epochs, device, lr=0.01, weight_decay=5e-4, progress=True):
    if iterations < MIN_IMP_ITERATIONS:
        raise ValueError(f"need at least {MIN_IMP_ITERATIONS} iterations")
    # BUG: the scores are copied once, before the first round: every round ranks the given weights
    scores = {name: _parameter(model, name).detach().clone() for name in prune_ratio_dict}
    log = []
    for step in range(1, iterations + 1):
        ratios = {name: target * step / iterations for name, target in prune_ratio_dict.items()}
        masks = _masks_from(scores, model, sparsity_type, ratios)
        sparsity = test_sparsity(model, sparsity_type)["overall"]
        before = _accuracy(model, test_loader, device)
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * len(train_loader)))
        history = masked_retrain(model, masks, optimizer, nn.CrossEntropyLoss(), train_loader, test_loader, epochs,
                                 device, scheduler)
        log.append({"iteration": step, "ratios": dict(ratios), "sparsity": sparsity, "accuracy_before_retrain": before,
                    "accuracy": history[-1]["test_accuracy"] if history else before})
    return log
