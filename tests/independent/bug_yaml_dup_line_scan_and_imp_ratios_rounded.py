# two bugs: a repeated layer is looked for line by line, so one repeated in flow style ({a: 0.5, a: 0.6}) passes and
# safe_load keeps the last; IMP rounds each round's ratio to 2 decimals, so a target of 0.915 ends at 0.92


def _repeated(raw):
    seen = []
    for line in raw.splitlines():
        stripped = line.split("#")[0].strip()
        if line.startswith((" ", "\t")) and ":" in stripped:  # BUG: block style only
            seen.append(stripped.split(":")[0].strip())
    return sorted({n for n in seen if seen.count(n) > 1})


def iterative_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, iterations=3, train_loader, test_loader,
                              epochs, device, lr=0.01, weight_decay=5e-4, progress=True):
    if iterations < MIN_IMP_ITERATIONS:
        raise ValueError("iterative pruning needs at least 3 iterations")
    schedule = {n: np.linspace(0.0, t, iterations + 1)[1:] for n, t in prune_ratio_dict.items()}
    return [_one_round(model, sparsity_type, {n: round(float(s[i]), 2) for n, s in schedule.items()}, i + 1,  # BUG
                       train_loader, test_loader, epochs, device, lr, weight_decay) for i in range(iterations)]
