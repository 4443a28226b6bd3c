# two bugs: masked_retrain never clears the gradients, so each step uses the sum of all the gradients so far; IMP
# retrains every round under the first round's masks, so the weights later rounds prune grow back


def _train_step(model, optimizer, loss_fn, x, y):
    out = model(x)
    loss = loss_fn(out, y)
    loss.backward()  # BUG: no optimizer.zero_grad(): every step adds all earlier gradients
    optimizer.step()
    return out, loss


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
