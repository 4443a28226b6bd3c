# two bugs: OMP's and IMP's rounds drop the masks apply_pruning returns and retrain with none, so the pruned weights
# grow back (only hooks attached by apply_pruning would have held them); masked_retrain computes its own
# cross-entropy and never calls the loss_fn it is given


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
                loss = nn.functional.cross_entropy(out, y)  # BUG: loss_fn is never used
                optimizer.zero_grad()
                loss.backward()
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


def _one_round(model, kind, ratios, step, train_loader, test_loader, epochs, device, lr, weight_decay):
    apply_pruning(model, kind, ratios)  # BUG: the masks it returns are dropped
    entry = {"iteration": step, "ratios": dict(ratios), "sparsity": test_sparsity(model, kind)["overall"],
             "accuracy_before_retrain": _evaluate(model, test_loader)}
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    history = masked_retrain(model, {}, optimizer, nn.CrossEntropyLoss(), train_loader, test_loader, epochs, device)
    entry["accuracy"] = history[-1]["test_accuracy"] if history else entry["accuracy_before_retrain"]
    return entry
