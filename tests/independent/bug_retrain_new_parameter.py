# bug: re-applies the masks by replacing each masked tensor with a new nn.Parameter; the caller's optimizer keeps
# updating the old Parameter objects, which the model no longer uses: only the first step trains the model.
def _reapply_new_param(model, prune_masks):
    for full_name, mask in prune_masks.items():
        module, pname = _module_of(model, full_name)
        attr = pname + "_orig" if hasattr(module, pname + "_orig") else pname
        old = getattr(module, attr)
        setattr(module, attr, nn.Parameter(old.detach() * mask.to(old)))


def masked_retrain(model, prune_masks, optimizer, loss_fn, train_loader, test_loader, num_epochs, device,
                   scheduler=None, progress=True):
    _reapply(model, prune_masks)
    history = []
    for epoch in range(num_epochs):
        stats = train_epoch(model, train_loader, optimizer, loss_fn, device, scheduler,
                            functools.partial(_reapply_new_param, model, prune_masks), progress=progress)
        stats["test_accuracy"] = evaluate(model, test_loader, device)
        history.append(stats)
    return history
