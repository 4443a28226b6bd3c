# bug: model.train() is called once, before the epoch loop; evaluate() at the end of epoch 1 leaves the model in
# eval mode, so every epoch after the first trains with frozen BatchNorm statistics.
def masked_retrain(model, prune_masks, optimizer, loss_fn, train_loader, test_loader, num_epochs, device,
                   scheduler=None, progress=True):
    pruner = Pruner.from_named_masks(model, prune_masks).attach(model)
    history = []
    model.train()                       # BUG: belongs inside the epoch loop
    for epoch in range(num_epochs):
        loss_sum, correct, seen = 0.0, 0, 0
        for images, labels in train_loader:
            optimizer.zero_grad()
            logits = model(images)
            loss = loss_fn(logits, labels)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            pruner.enforce()
            loss_sum += loss.item() * len(labels)
            correct += (logits.argmax(1) == labels).sum().item()
            seen += len(labels)
        history.append({"loss": loss_sum / seen, "accuracy": 100.0 * correct / seen,
                        "test_accuracy": evaluate(model, test_loader, device)})
    return history
