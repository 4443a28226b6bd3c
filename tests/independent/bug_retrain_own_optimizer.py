# masked_retrain builds its own SGD, ignoring the caller's optimizer and scheduler

def masked_retrain(model: nn.Module, prune_masks: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
                   loss_fn, train_loader, test_loader, num_epochs: int, device, scheduler=None,
                   progress: bool = True) -> list[dict]:
    if isinstance(num_epochs, bool) or not isinstance(num_epochs, numbers.Integral) or num_epochs < 0:
        raise ValueError(f"num_epochs must be a whole number >= 0, got {num_epochs!r}")
    targets = []  # (tensor to keep masked in place, mask on its device and dtype)
    for name, mask in prune_masks.items():
        module, attr = _resolve(model, name)
        param = getattr(module, attr + "_orig") if hasattr(module, attr + "_orig") else getattr(module, attr)
        if tuple(mask.shape) != tuple(param.shape):
            raise ValueError(f"mask of {name} has shape {tuple(mask.shape)}, the parameter {tuple(param.shape)}")
        targets.append((param, mask.detach().to(device=param.device, dtype=param.dtype)))

    @torch.no_grad()
    def reapply():
        for param, mask in targets:
            param.mul_(mask)

    reapply()
    optimizer = make_optimizer(model, 0.01)
    scheduler = None
    history = []
    for epoch in range(num_epochs):
        stats = train_epoch(model, train_loader, optimizer, loss_fn, device, scheduler, reapply,
                            desc=f"masked retrain {epoch + 1}/{num_epochs}", progress=progress)
        stats["test_accuracy"] = evaluate(model, test_loader, device)
        stats["epoch"] = epoch + 1
        history.append(stats)
    return history
