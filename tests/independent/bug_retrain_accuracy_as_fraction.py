# bug: masked_retrain's history holds the test accuracy as a fraction (0.9), not in percent (90.0).
def masked_retrain(model, prune_masks, optimizer, loss_fn, train_loader, test_loader, num_epochs, device,
                   scheduler=None, progress=True):
    modules = dict(model.named_modules())
    for name, mask in prune_masks.items():
        mod_name, attr = name.rsplit(".", 1)
        module = modules[mod_name]
        if not prune.is_pruned(module) or not hasattr(module, attr + "_mask"):
            prune.custom_from_mask(module, attr, mask.to(getattr(module, attr).device))
    history = []
    for epoch in range(num_epochs):
        stats = train_epoch(model, train_loader, optimizer, loss_fn, device, scheduler,
                            desc=f"retrain {epoch + 1}/{num_epochs}", progress=progress)
        stats["test_accuracy"] = evaluate(model, test_loader, device) / 100  # BUG: a fraction
        history.append(stats)
    return history
