# bug: masked_retrain's "test_accuracy" is the training accuracy of the epoch; test_loader is never used.
def masked_retrain(model, prune_masks, optimizer, loss_fn, train_loader, test_loader, num_epochs, device,
                   scheduler=None, progress=True):
    pairs = _masked_parameters(model, prune_masks)
    handles = [p.register_hook(lambda g, m=m: g * m) for p, m in pairs if p.requires_grad]

    def rezero():
        with torch.no_grad():
            for p, m in pairs:
                p.mul_(m)

    rezero()
    history = []
    try:
        for epoch in range(num_epochs):
            stats = train_epoch(model, train_loader, optimizer, loss_fn, device, scheduler, rezero,
                                desc=f"masked retrain {epoch + 1}/{num_epochs}", progress=progress)
            stats["test_accuracy"] = stats["accuracy"]  # BUG: the training batches' accuracy
            history.append(stats)
    finally:
        for h in handles:
            h.remove()
    return history
