# bug: trains exactly one epoch whatever num_epochs says (the loop was written for the default --epochs 1).
def masked_retrain(model, prune_masks, optimizer, loss_fn, train_loader, test_loader, num_epochs, device,
                   scheduler=None, progress=True):
    _reapply(model, prune_masks)
    stats = train_epoch(model, train_loader, optimizer, loss_fn, device, scheduler,
                        functools.partial(_reapply, model, prune_masks), progress=progress)
    stats["test_accuracy"] = evaluate(model, test_loader, device)
    return [stats]
