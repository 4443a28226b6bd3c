# legitimate: masked_retrain walks the loader by hand (iter/next, StopIteration ends the epoch), with bool masks
# kept by the Pruner's pre-hook and after each step.
def masked_retrain(model, prune_masks, optimizer, loss_fn, train_loader, test_loader, num_epochs, device,
                   scheduler=None, progress=True):
    pruner = Pruner.from_named_masks(model, prune_masks).attach(model)
    history = []
    for epoch in range(num_epochs):
        model.train()
        batches = iter(train_loader)
        loss_sum = correct = seen = 0
        while True:
            try:
                images, labels = next(batches)
            except StopIteration:
                break
            logits = model(images)
            loss = loss_fn(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            pruner.enforce()
            loss_sum += float(loss) * len(labels)
            correct += int((logits.argmax(1) == labels).sum())
            seen += len(labels)
        history.append({"loss": loss_sum / seen, "accuracy": 100.0 * correct / seen,
                        "test_accuracy": evaluate(model, test_loader, device)})
    return history
