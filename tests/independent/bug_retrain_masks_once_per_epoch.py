# bug: the masks are re-applied once per epoch (after it), not after every step: during the epoch the pruned
# weights regrow and take part in every forward pass; they are zeroed only at the end.
def masked_retrain(model, prune_masks, optimizer, loss_fn, train_loader, test_loader, num_epochs, device,
                   scheduler=None, progress=True):
    history = []
    for epoch in range(num_epochs):
        stats = train_epoch(model, train_loader, optimizer, loss_fn, device, scheduler, None, progress=progress)
        _reapply(model, prune_masks)   # BUG: should run after every optimizer step (after_step=...)
        stats["test_accuracy"] = evaluate(model, test_loader, device)
        history.append(stats)
    return history
