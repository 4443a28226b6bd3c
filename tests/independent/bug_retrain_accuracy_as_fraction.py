# bug: masked_retrain's history holds the test accuracy as a fraction (0.9), not in percent (90.0).
_masked_retrain_in_percent = masked_retrain


def masked_retrain(model, prune_masks, optimizer, loss_fn, train_loader, test_loader, num_epochs, device,
                   scheduler=None, progress=True):
    history = _masked_retrain_in_percent(model, prune_masks, optimizer, loss_fn, train_loader, test_loader,
                                         num_epochs, device, scheduler, progress)
    for stats in history:
        stats["test_accuracy"] /= 100  # BUG: a fraction
    return history
