# zero_grad() between backward() and step(): nothing trains (OMP and IMP call it too)

def masked_retrain(model, prune_masks, optimizer, loss_fn, train_loader, test_loader, num_epochs, device,
                   scheduler=None, progress=True):
    params = [(_trainable_tensor(model, n), m) for n, m in prune_masks.items()]
    history = []
    for epoch in range(num_epochs):
        model.train()
        for x, y in train_loader:
            logits = model(x.to(device))
            loss = loss_fn(logits.float(), y.to(device))
            loss.backward()
            optimizer.zero_grad()  # BUG: gradients cleared between backward and step
            optimizer.step()
            with torch.no_grad():
                for p, m in params:
                    p.mul_(m.to(p.device, p.dtype))
            if scheduler is not None:
                scheduler.step()
        history.append({"loss": loss.item(), "accuracy": 0.0, "test_accuracy": evaluate(model, test_loader, device)})
    return history
