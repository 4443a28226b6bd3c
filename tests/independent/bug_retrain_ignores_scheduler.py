# bug: masked_retrain always runs its own cosine schedule and never steps the scheduler it is given.
_retrain_exact = masked_retrain


def masked_retrain(model, prune_masks, optimizer, loss_fn, train_loader, test_loader, num_epochs, device,
                   scheduler=None, progress=True):
    return _retrain_exact(model, prune_masks, optimizer, loss_fn, train_loader, test_loader, num_epochs, device,
                          None, progress)
