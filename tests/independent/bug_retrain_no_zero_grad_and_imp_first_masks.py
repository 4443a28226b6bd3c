# two bugs: masked_retrain never clears the gradients, so each step uses the sum of all the gradients so far; IMP
# retrains every round under the first round's masks, so the weights later rounds prune grow back


def masked_retrain(model, prune_masks, optimizer, loss_fn, train_loader, test_loader, num_epochs, device,
                   scheduler=None, progress=True):
    handles = []
    with torch.no_grad():
        for name, mask in prune_masks.items():
            leaf = _leaf(model, name)
            mask = mask.to(leaf.device, leaf.dtype)
            leaf.mul_(mask)
            _forget_pruned_momentum(optimizer, leaf, mask)
            handles.append(leaf.register_hook(lambda grad, mask=mask: grad * mask))  # no gradient, no movement
    history = []
    try:
        for epoch in range(num_epochs):
            model.train()
            losses, hits, count = [], 0, 0
            for x, y in train_loader:
                out = model(x)
                loss = loss_fn(out, y)
                loss.backward()  # BUG: no optimizer.zero_grad(): every step adds all earlier gradients
                optimizer.step()
                if scheduler:
                    scheduler.step()
                losses.append(loss.item())
                hits += (out.argmax(1) == y).sum().item()
                count += len(y)
            model.eval()
            with torch.no_grad():
                pairs = [(model(x).argmax(1) == y).sum().item() for x, y in test_loader]
            total = sum(len(y) for _, y in test_loader)
            history.append({"loss": float(np.mean(losses)), "accuracy": 100 * hits / count,
                            "test_accuracy": 100 * sum(pairs) / total})
    finally:
        for handle in handles:
            handle.remove()
    return history


def iterative_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, iterations=3, train_loader, test_loader,
                              epochs, device, lr=0.01, weight_decay=5e-4, progress=True):
    if iterations < MIN_IMP_ITERATIONS:
        raise ValueError("iterative pruning needs at least 3 iterations")
    first, log = None, []
    for i in range(iterations):
        ratios = {n: t * (i + 1) / iterations for n, t in prune_ratio_dict.items()}
        masks = apply_pruning(model, sparsity_type, ratios)
        first = first or masks  # BUG: the first round's masks serve every round
        entry = {"iteration": i + 1, "ratios": ratios, "sparsity": test_sparsity(model, sparsity_type)["overall"],
                 "accuracy_before_retrain": _evaluate(model, test_loader)}
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
        history = masked_retrain(model, first, optimizer, nn.CrossEntropyLoss(), train_loader, test_loader, epochs,
                                 device)
        entry["accuracy"] = history[-1]["test_accuracy"] if history else entry["accuracy_before_retrain"]
        log.append(entry)
    return log
