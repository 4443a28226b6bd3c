"""HW2 pruning functions -- solution D (vectorised: topk, vector_norm, state_dict, index_select)."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
import yaml
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch
from torch import nn
from torch.nn.utils import prune

from hw2.models import copy_without_pruning, prunable_weights
from hw2.train import LABEL_SMOOTHING, evaluate, make_optimizer, make_scheduler, train_epoch

SPARSITY_TYPES = ("unstructured", "filter")
MIN_IMP_ITERATIONS = 3
MASK_COLOURS = ("#E69F00", "#0072B2")  # index 0 = pruned, index 1 = kept
FIGURE_DPI = 150


def _check_duplicates(node, path="") -> None:
    """Walk the composed YAML node tree; a key given twice in one mapping is an error."""
    if isinstance(node, yaml.MappingNode):
        keys = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if key in keys:
                raise ValueError(f"line {key_node.start_mark.line + 1}: {path}{key} is given twice "
                                 f"(also on line {keys[key]})")
            keys[key] = key_node.start_mark.line + 1
            _check_duplicates(value_node, f"{path}{key}.")
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_duplicates(item, path)


def read_prune_ratios_from_yaml(file_name, model):
    text = Path(file_name).read_text()
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "unknown line"
        raise ValueError(f"malformed YAML in {file_name} ({where}): {exc}") from None
    if root is not None:
        _check_duplicates(root)
    if not isinstance(data, dict) or "prune_ratios" not in data:
        raise ValueError(f"{file_name} has no top-level 'prune_ratios' mapping")
    ratios = data["prune_ratios"]
    if not isinstance(ratios, dict):
        raise ValueError(f"'prune_ratios' in {file_name} must be a mapping name -> ratio, got {type(ratios).__name__}")
    valid = set(prunable_weights(model))
    bad = [k for k in ratios if k not in valid]
    if bad:
        raise ValueError(f"unknown or non-prunable layer(s) {bad}; valid names: {sorted(valid, key=str)}")
    result = {}
    for k, v in ratios.items():
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v < 1
        if not ok:
            raise ValueError(f"layer {k}: ratio must be a number in [0, 1), got {v!r}")
        result[k] = float(v)
    return result


def _keep_top(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Boolean vector: True at the ``keep`` largest scores; among ties the higher index is kept
    (so the lower index is pruned first)."""
    n = scores.numel()
    out = torch.zeros(n, dtype=torch.bool, device=scores.device)
    if keep <= 0:
        return out
    if keep >= n:
        return ~out
    values = torch.topk(scores, keep, largest=True).values
    threshold = values.min()
    out = scores > threshold
    missing = keep - int(out.sum())
    if missing > 0:
        ties = torch.nonzero(scores == threshold).flatten()
        out[ties[-missing:]] = True
    return out


def unstructured_prune(tensor, sparsity):
    n = tensor.numel()
    k = round(sparsity * n)
    keep = _keep_top(tensor.detach().abs().flatten(), n - k)
    return keep.to(tensor.dtype).reshape(tensor.shape)


def filter_prune(tensor, sparsity):
    c = tensor.shape[0]
    k = round(sparsity * c)
    norms = torch.linalg.vector_norm(tensor.detach(), dim=tuple(range(1, tensor.dim())))
    keep = _keep_top(norms, c - k).to(tensor.dtype)
    return keep.view(-1, *([1] * (tensor.dim() - 1))).expand(tensor.shape).contiguous()


def _bn_names(model) -> dict[str, str]:
    """conv module name -> BatchNorm module name right after it in ``named_modules`` order."""
    names = list(model.named_modules())
    pairs = {}
    for (n1, m1), (n2, m2) in zip(names, names[1:]):
        if isinstance(m1, nn.Conv2d) and isinstance(m2, nn.BatchNorm2d):
            pairs[n1] = n2
    return pairs


def apply_pruning(model, sparsity_type, prune_ratio_dict):
    if sparsity_type not in SPARSITY_TYPES:
        raise ValueError(f"unknown sparsity type {sparsity_type!r} (unstructured or filter)")
    modules = dict(model.named_modules())
    weights = prunable_weights(model)
    pairs = _bn_names(model)
    masks = {}
    for name in sorted(prune_ratio_dict):
        ratio = prune_ratio_dict[name]
        mod_name = name.rsplit(".", 1)[0] if "." in name else ""
        module = modules[mod_name]
        w = weights[name].detach()
        mask = unstructured_prune(w, ratio) if sparsity_type == "unstructured" else filter_prune(w, ratio)
        prune.custom_from_mask(module, "weight", mask)
        masks[name] = module.weight_mask.detach().clone()
        if sparsity_type == "filter" and mod_name in pairs:
            bn = modules[pairs[mod_name]]
            ch = masks[name].flatten(1).amax(1)
            for t in ("weight", "bias"):
                prune.custom_from_mask(bn, t, ch.to(getattr(bn, t).dtype))
                masks[f"{pairs[mod_name]}.{t}"] = getattr(bn, t + "_mask").detach().clone()
    return masks


def _effective_weights(model) -> dict[str, torch.Tensor]:
    """Every Conv2d/Linear weight as it acts, read from state_dict() (hooks: orig * mask)."""
    sd = model.state_dict()
    out = {}
    for name in prunable_weights(model):
        if name in sd:
            out[name] = sd[name]
        else:
            out[name] = sd[name + "_orig"] * sd[name + "_mask"]
    return out


def test_sparsity(model, sparsity_type="unstructured"):
    ws = _effective_weights(model)
    names = list(ws)
    flat = torch.cat([w.flatten() for w in ws.values()]) if ws else torch.zeros(0)
    zero = flat == 0
    sizes = [w.numel() for w in ws.values()]
    per = torch.split(zero, sizes)
    layers = {n: z.float().mean().item() for n, z in zip(names, per)}
    overall = zero.sum().item() / max(flat.numel(), 1)
    result = {"overall": overall, "layers": layers}
    header = f"{'name':28s} {'zeros':>9s} {'total':>9s} {'sparsity':>8s}"
    if sparsity_type == "filter":
        result["zero_filters"] = {n: int((ws[n].flatten(1) == 0).all(1).sum()) for n in names}
        header += "   zero filters"
    print(header)
    for n, z in zip(names, per):
        row = f"{n:28s} {int(z.sum()):9d} {z.numel():9d} {layers[n]:8.4f}"
        if sparsity_type == "filter":
            row += f"   {result['zero_filters'][n]}/{ws[n].shape[0]}"
        print(row)
    print(f"overall sparsity {overall:.4f}")
    return result


def masked_retrain(model, prune_masks, optimizer, loss_fn, train_loader, test_loader, num_epochs, device,
                   scheduler=None, progress=True):
    modules = dict(model.named_modules())
    for name, mask in prune_masks.items():
        mod_name, attr = name.rsplit(".", 1)
        module = modules[mod_name]
        if not prune.is_pruned(module) or not hasattr(module, attr + "_mask"):
            prune.custom_from_mask(module, attr, mask.to(getattr(module, attr).device))
    history = []
    for epoch in range(num_epochs):
        stats = train_epoch(model, train_loader, optimizer, loss_fn, device, scheduler,
                            desc=f"retrain {epoch + 1}/{num_epochs}", progress=progress)
        stats["test_accuracy"] = evaluate(model, test_loader, device)
        history.append(stats)
    return history


def _round(model, sparsity_type, ratios, train_loader, test_loader, epochs, device, lr, weight_decay, progress, it):
    masks = apply_pruning(model, sparsity_type, ratios)
    sparsity = test_sparsity(model, sparsity_type)["overall"]
    before = evaluate(model, test_loader, device, exact=True)
    optimizer = make_optimizer(model, lr, weight_decay=weight_decay)
    scheduler = make_scheduler(optimizer, epochs * len(train_loader))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)
    masked_retrain(model, masks, optimizer, loss_fn, train_loader, test_loader, epochs, device, scheduler, progress)
    return {"iteration": it, "ratios": dict(ratios), "sparsity": sparsity, "accuracy_before_retrain": before,
            "accuracy": evaluate(model, test_loader, device, exact=True)}


def oneshot_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, train_loader, test_loader, epochs, device,
                            lr=0.01, weight_decay=5e-4, progress=True):
    return [_round(model, sparsity_type, prune_ratio_dict, train_loader, test_loader, epochs, device, lr,
                   weight_decay, progress, 1)]


def iterative_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, iterations=3, train_loader, test_loader,
                              epochs, device, lr=0.01, weight_decay=5e-4, progress=True):
    if iterations < MIN_IMP_ITERATIONS:
        raise ValueError(f"iterations must be >= {MIN_IMP_ITERATIONS}, got {iterations}")
    log = []
    for t in range(1, iterations + 1):
        if t < iterations:
            ratios = {k: 1 - (1 - v) ** (t / iterations) for k, v in prune_ratio_dict.items()}
        else:
            ratios = dict(prune_ratio_dict)
        log.append(_round(model, sparsity_type, ratios, train_loader, test_loader, epochs, device, lr,
                          weight_decay, progress, t))
    return log


def prune_channels_after_filter_prune(model):
    new = copy_without_pruning(model)
    feats = new.features
    idx = [i for i, m in enumerate(feats) if isinstance(m, nn.Conv2d)]
    prev_keep = None
    with torch.no_grad():
        for i in idx:
            conv, bn = feats[i], feats[i + 1]
            keep = torch.nonzero(torch.linalg.vector_norm(conv.weight, dim=(1, 2, 3)) > 0).flatten()
            w = conv.weight.index_select(0, keep)
            if prev_keep is not None:
                w = w.index_select(1, prev_keep)
            c = nn.Conv2d(w.shape[1], w.shape[0], conv.kernel_size, conv.stride, conv.padding,
                          conv.dilation, conv.groups, bias=conv.bias is not None).to(w.device, w.dtype)
            c.weight.copy_(w)
            if conv.bias is not None:
                c.bias.copy_(conv.bias.index_select(0, keep))
            b = nn.BatchNorm2d(len(keep), eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                               track_running_stats=bn.track_running_stats).to(w.device, w.dtype)
            b.weight.copy_(bn.weight.index_select(0, keep))
            b.bias.copy_(bn.bias.index_select(0, keep))
            b.running_mean.copy_(bn.running_mean.index_select(0, keep))
            b.running_var.copy_(bn.running_var.index_select(0, keep))
            b.num_batches_tracked.copy_(bn.num_batches_tracked)
            feats[i], feats[i + 1] = c, b
            prev_keep = keep
        fc = new.classifier
        lin = nn.Linear(len(prev_keep), fc.out_features, bias=fc.bias is not None).to(fc.weight.device, fc.weight.dtype)
        lin.weight.copy_(fc.weight.index_select(1, prev_keep))
        if fc.bias is not None:
            lin.bias.copy_(fc.bias)
        new.classifier = lin
    return new


def plot_sparsity_vs_accuracy(records, out_path, dense_accuracy=None,
                              title="VGG13 on CIFAR-10: accuracy vs sparsity"):
    xs = np.array([float(r["sparsity"]) for r in records])
    ys = np.array([float(r["accuracy"]) for r in records])
    labels = [str(r["label"]) for r in records]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(xs, ys, c=[f"C{i}" for i in range(len(xs))], zorder=3)
    for x, y, lab in zip(xs, ys, labels):
        ax.annotate(f"{lab}\n({x:.2f}, {y:.2f}%)", (x, y), xytext=(4, 4), textcoords="offset points", fontsize=7)
    if dense_accuracy is not None:
        ax.axhline(dense_accuracy, ls=":", c="k", label="dense")
        ax.legend()
    ax.set(xlabel="sparsity (fraction of zero weights)", ylabel="test accuracy (%)", title=title)
    fig.savefig(out_path, dpi=FIGURE_DPI, bbox_inches="tight")
    plt.close(fig)
    return list(zip(labels, xs.tolist(), ys.tolist()))


def plot_mask(weight, out_path, title=""):
    img = weight.detach().flatten(1).ne(0).to(torch.int64).cpu().numpy()
    fig, ax = plt.subplots(figsize=(10, 5))
    ax.imshow(img, cmap=ListedColormap(MASK_COLOURS), vmin=0, vmax=1, aspect="auto", interpolation="none")
    ax.set(xlabel="C_in x kH x kW", ylabel="filter (C_out)", title=title)
    ax.legend(handles=[Patch(facecolor=MASK_COLOURS[1], label="kept"), Patch(facecolor=MASK_COLOURS[0], label="pruned")],
              loc="upper right")
    fig.savefig(out_path, dpi=FIGURE_DPI)
    plt.close(fig)
    return img
