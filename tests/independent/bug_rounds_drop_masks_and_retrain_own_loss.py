# two bugs: OMP's and IMP's rounds drop the masks apply_pruning returns and retrain with none, so the pruned weights
# grow back (only hooks attached by apply_pruning would have held them); masked_retrain computes its own
# cross-entropy and never calls the loss_fn it is given


def _train_step(model, optimizer, loss_fn, x, y):
    out = model(x)
    loss = nn.functional.cross_entropy(out, y)  # BUG: loss_fn is never used
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return out, loss


def _one_round(model, kind, ratios, step, train_loader, test_loader, epochs, device, lr, weight_decay):
    apply_pruning(model, kind, ratios)  # BUG: the masks it returns are dropped
    entry = {"iteration": step, "ratios": dict(ratios), "sparsity": test_sparsity(model, kind)["overall"],
             "accuracy_before_retrain": _evaluate(model, test_loader)}
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    history = masked_retrain(model, {}, optimizer, nn.CrossEntropyLoss(), train_loader, test_loader, epochs, device)
    entry["accuracy"] = history[-1]["test_accuracy"] if history else entry["accuracy_before_retrain"]
    return entry
