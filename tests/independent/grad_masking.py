"""HW2 pruning by gradient masking: zero the pruned weights once, then mask their gradients while training."""
from __future__ import annotations

import copy
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
import yaml
from torch import nn

from hw2.models import copy_without_pruning, prunable_weights

MIN_IMP_ITERATIONS = 3
TYPES = ["unstructured", "filter"]


def _parse(raw, file_name):
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as problem:
        raise ValueError(f"bad YAML in {file_name}: {problem}") from problem


def _table(parsed, file_name):
    try:
        table = parsed["prune_ratios"]
        assert isinstance(table, dict)
    except (TypeError, KeyError, AssertionError):
        raise ValueError(f"{file_name}: expected 'prune_ratios:' followed by 'layer: ratio' lines") from None
    return table


def _repeated(raw):
    """Layer names given twice under prune_ratios (safe_load keeps only the last): read off the node tree."""
    root = yaml.compose(raw)
    section = next(value for key, value in root.value if key.value == "prune_ratios")
    names = [key.value for key, _ in section.value]
    return sorted({n for n in names if names.count(n) > 1})


def _ratio(layer, value):
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{layer}: ratio {value!r} is not a number") from None
    if isinstance(value, (bool, str)) or not 0.0 <= number < 1.0:
        raise ValueError(f"{layer}: ratio {value!r} not in [0, 1)")
    return number


def read_prune_ratios_from_yaml(file_name, model):
    raw = Path(file_name).read_text()
    table = _table(_parse(raw, file_name), file_name)
    if _repeated(raw):
        raise ValueError(f"{file_name}: given twice: {', '.join(_repeated(raw))}")
    names = list(prunable_weights(model))
    ratios = {}
    for layer, value in table.items():
        if layer not in names:
            raise ValueError(f"{layer!r} is not a conv/linear weight; valid: {names}")
        ratios[layer] = _ratio(layer, value)
    return ratios


def unstructured_prune(tensor, sparsity):
    flat = tensor.detach().reshape(-1).abs()
    n_keep = flat.numel() - round(sparsity * flat.numel())
    mask = torch.zeros_like(flat)
    order = torch.sort(flat, descending=True, stable=True).indices  # largest first: keep the head
    mask[order[:n_keep]] = 1
    return mask.view(tensor.shape)


def filter_prune(tensor, sparsity):
    rows = tensor.detach().reshape(len(tensor), -1)
    n_drop = round(len(tensor) * sparsity)
    order = torch.sort(torch.linalg.vector_norm(rows, ord=2, dim=1), stable=True).indices
    keep = torch.ones(len(tensor), dtype=tensor.dtype, device=tensor.device)
    keep[order[:n_drop]] = 0
    return torch.einsum("o,o...->o...", keep, torch.ones_like(tensor))


def _leaf(model, name):
    table = dict(model.named_parameters())
    return table[name] if name in table else table[name + "_orig"]


def apply_pruning(model, sparsity_type, prune_ratio_dict):
    if sparsity_type not in TYPES:
        raise ValueError(f"sparsity_type {sparsity_type!r} not in {TYPES}")
    masks = {}
    modules = dict(model.named_modules())
    for name, ratio in prune_ratio_dict.items():
        layer = name[: -len(".weight")]
        weight = modules[layer].weight
        mask = (unstructured_prune if sparsity_type == "unstructured" else filter_prune)(weight, ratio)
        with torch.no_grad():
            _leaf(model, name).copy_(torch.where(mask == 0, torch.zeros_like(weight), weight))
        masks[name] = mask
        if sparsity_type == "filter" and layer.startswith("features."):
            bn = f"features.{int(layer.split('.')[1]) + 1}"
            if isinstance(modules.get(bn), nn.BatchNorm2d):
                per_channel = mask.flatten(1)[:, 0]
                for attr in ("weight", "bias"):
                    with torch.no_grad():
                        _leaf(model, f"{bn}.{attr}").mul_(per_channel)
                    masks[f"{bn}.{attr}"] = per_channel
    return masks


def _zero_filters(weight):
    return int((weight.reshape(len(weight), -1) == 0).all(1).sum())


def test_sparsity(model, sparsity_type="unstructured"):
    weights = prunable_weights(model)
    layers = {n: float((w == 0).float().mean()) for n, w in weights.items()}
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    report = {"overall": zeros / sum(w.numel() for w in weights.values()), "layers": layers}
    if sparsity_type == "filter":
        report["zero_filters"] = {n: _zero_filters(w) for n, w in weights.items()}
    print("\n".join(f"{n}: {s:.2%}" for n, s in layers.items()), f"\noverall: {report['overall']:.2%}")
    return report


def _forget_pruned_momentum(optimizer, leaf, mask):
    """Zero the optimizer's state (momentum, Adam's moments) at the pruned entries: a masked gradient alone does not
    stop momentum gathered before the pruning."""
    for value in optimizer.state.get(leaf, {}).values():
        if isinstance(value, torch.Tensor) and value.shape == leaf.shape:
            value.mul_(mask)


def _train_step(model, optimizer, loss_fn, x, y):
    out = model(x)
    loss = loss_fn(out, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return out, loss


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
                out, loss = _train_step(model, optimizer, loss_fn, x, y)
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


def _evaluate(model, loader):
    model.eval()
    with torch.no_grad():
        return 100 * sum((model(x).argmax(1) == y).sum().item() for x, y in loader) / sum(len(y) for _, y in loader)


def _one_round(model, kind, ratios, step, train_loader, test_loader, epochs, device, lr, weight_decay):
    masks = apply_pruning(model, kind, ratios)
    entry = {"iteration": step, "ratios": dict(ratios), "sparsity": test_sparsity(model, kind)["overall"],
             "accuracy_before_retrain": _evaluate(model, test_loader)}
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    history = masked_retrain(model, masks, optimizer, nn.CrossEntropyLoss(), train_loader, test_loader, epochs, device)
    entry["accuracy"] = history[-1]["test_accuracy"] if history else entry["accuracy_before_retrain"]
    return entry


def oneshot_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, train_loader, test_loader, epochs, device,
                            lr=0.01, weight_decay=5e-4, progress=True):
    return [_one_round(model, sparsity_type, prune_ratio_dict, 1, train_loader, test_loader, epochs, device, lr,
                       weight_decay)]


def iterative_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, iterations=3, train_loader, test_loader,
                              epochs, device, lr=0.01, weight_decay=5e-4, progress=True):
    if iterations < MIN_IMP_ITERATIONS:
        raise ValueError("iterative pruning needs at least 3 iterations")
    schedule = {n: np.linspace(0.0, t, iterations + 1)[1:] for n, t in prune_ratio_dict.items()}
    return [_one_round(model, sparsity_type, {n: float(s[i]) for n, s in schedule.items()}, i + 1, train_loader,
                       test_loader, epochs, device, lr, weight_decay) for i in range(iterations)]


def _slim_conv(layer, carried):
    """The conv with only its live filters and the inputs ``carried`` from the conv before; and those filters."""
    w = layer.weight.data if carried is None else layer.weight.data[:, carried]
    live = [j for j in range(w.shape[0]) if bool(w[j].any())] or [0]
    conv = nn.Conv2d(w.shape[1], len(live), layer.kernel_size, layer.stride, layer.padding, bias=False)
    conv.weight.data = w[live].clone()
    return conv, live


def prune_channels_after_filter_prune(model):
    new = copy_without_pruning(model)
    items = list(new.features)
    carried = None
    for i, layer in enumerate(items):
        if isinstance(layer, nn.Conv2d):
            items[i], carried = _slim_conv(layer, carried)
        elif isinstance(layer, nn.BatchNorm2d):
            bn = copy.deepcopy(layer)
            bn.num_features = len(carried)
            bn.weight = nn.Parameter(layer.weight.data[carried].clone())
            bn.bias = nn.Parameter(layer.bias.data[carried].clone())
            bn.running_mean = layer.running_mean[carried].clone()
            bn.running_var = layer.running_var[carried].clone()
            items[i] = bn
    new.features = nn.Sequential(*items)
    fc = nn.Linear(len(carried), new.classifier.out_features)
    fc.weight.data = new.classifier.weight.data[:, carried].clone()
    fc.bias.data = new.classifier.bias.data.clone()
    new.classifier = fc
    return new


def plot_sparsity_vs_accuracy(records, out_path, dense_accuracy=None, title=""):
    fig, ax = plt.subplots()
    out = []
    for r in records:
        ax.plot(r["sparsity"], r["accuracy"], marker="s", linestyle="none", label=r["label"])
        out.append((r["label"], r["sparsity"], r["accuracy"]))
    if dense_accuracy:
        ax.axhline(dense_accuracy)
    ax.legend()
    fig.savefig(out_path)
    plt.close(fig)
    return out


def _mask_grid(weight):
    return np.where(weight.detach().cpu().numpy().reshape(weight.shape[0], -1) != 0, 1, 0)


def plot_mask(weight, out_path, title=""):
    grid = _mask_grid(weight)
    fig, ax = plt.subplots()
    ax.matshow(grid, cmap="binary")
    ax.set_title(title)
    fig.savefig(out_path)
    plt.close(fig)
    return grid
