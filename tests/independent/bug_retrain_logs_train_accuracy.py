# bug: masked_retrain's "test_accuracy" is the training accuracy of the epoch.
_masked_retrain_with_test_accuracy = masked_retrain


def masked_retrain(model, prune_masks, optimizer, loss_fn, train_loader, test_loader, num_epochs, device,
                   scheduler=None, progress=True):
    history = _masked_retrain_with_test_accuracy(model, prune_masks, optimizer, loss_fn, train_loader, test_loader,
                                                 num_epochs, device, scheduler, progress)
    for stats in history:
        stats["test_accuracy"] = stats["accuracy"]  # BUG: the training batches' accuracy
    return history
