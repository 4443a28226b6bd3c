# never calls model.train(): BatchNorm statistics frozen

def masked_retrain(model, prune_masks, optimizer, loss_fn, train_loader, test_loader, num_epochs, device,
                   scheduler=None, progress=True):
    params = [(_trainable_tensor(model, n), m) for n, m in prune_masks.items()]
    history = []
    model.eval()  # BUG: "no dropout here, eval is fine" -- BatchNorm never updates its statistics / uses batch stats
    for epoch in range(num_epochs):
        for x, y in train_loader:
            optimizer.zero_grad()
            logits = model(x.to(device))
            loss = loss_fn(logits.float(), y.to(device))
            loss.backward()
            for p, m in params:
                if p.grad is not None:
                    p.grad.mul_(m.to(p.device, p.dtype))
            optimizer.step()
            with torch.no_grad():
                for p, m in params:
                    p.mul_(m.to(p.device, p.dtype))
            if scheduler is not None:
                scheduler.step()
        history.append({"loss": loss.item(), "accuracy": 0.0, "test_accuracy": evaluate(model, test_loader, device)})
    return history
