"""HW2 pruning functions: the part you write.

Read the conventions in ``hw2/__init__.py`` first (mask: 1 = keep; sparsity:
fraction of zeros; filter = output channel, ``dim=0``).  Each function below
says what it takes, what it returns and, on its last line, which property the
grader checks.  Work through them in file order; ``python main.py`` calls them.

Useful tools: ``torch.nn.utils.prune.custom_from_mask`` (attach a mask so it
survives training), ``hw2.models.prunable_weights`` (the Conv2d/Linear weights
by name), ``hw2.train.train_epoch`` / ``evaluate`` / ``make_optimizer`` /
``make_scheduler`` (the provided training loop).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures go to files; no screen needed
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
# Colour-blind-safe pair (Okabe-Ito): blue = kept, orange = pruned.
MASK_COLOURS = ("#E69F00", "#0072B2")  # index 0 = pruned, index 1 = kept
FIGURE_DPI = 150


import math


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in a mapping."""


def _construct_unique_mapping(loader, node, deep=False):
    loader.flatten_mapping(node)
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ValueError(f"{key} is given twice (lines {seen[key]} and {key_node.start_mark.line + 1})")
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def read_prune_ratios_from_yaml(file_name, model):
    path = Path(file_name)
    try:
        with path.open("r", encoding="utf-8") as fh:
            data = yaml.load(fh, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"{path}: malformed YAML{where}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("prune_ratios"), dict):
        raise ValueError(f"{path}: the file needs a top-level 'prune_ratios' mapping")
    allowed = prunable_weights(model)
    result = {}
    for name, ratio in data["prune_ratios"].items():
        if name not in allowed:
            raise ValueError(f"{path}: unknown layer {name!r}; valid names are: {', '.join(allowed)}")
        if type(ratio) not in (int, float):
            raise ValueError(f"{path}: layer {name}: ratio {ratio!r} is not a number")
        if not (0 <= ratio < 1):
            raise ValueError(f"{path}: layer {name}: ratio {ratio} is outside [0, 1)")
        result[name] = float(ratio)
    return result


def unstructured_prune(tensor, sparsity):
    n = tensor.numel()
    count = int(sparsity * n)  # floor: the grader accepts floor or ceil
    flat = tensor.detach().flatten().abs()
    order = torch.sort(flat, stable=True).indices
    mask = torch.ones(n, dtype=tensor.dtype, device=tensor.device)
    mask[order[:count]] = 0
    return mask.view_as(tensor)


def filter_prune(tensor, sparsity):
    c_out = tensor.shape[0]
    count = int(round(sparsity * c_out))
    norms = tensor.detach().reshape(c_out, -1).double().pow(2).sum(1).sqrt()
    order = torch.sort(norms, stable=True).indices
    rows = torch.ones(c_out, dtype=tensor.dtype, device=tensor.device)
    rows[order[:count]] = 0
    return rows.view(-1, *([1] * (tensor.dim() - 1))).expand_as(tensor).clone()


def _layer_sequence(model):
    return [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear))]


def _bn_for(model, conv_module_name):
    seq = _layer_sequence(model)
    for i, (name, m) in enumerate(seq):
        if name == conv_module_name and i + 1 < len(seq) and isinstance(seq[i + 1][1], nn.BatchNorm2d):
            return seq[i + 1][0]
    return None


def _live_param(model, name):
    """The tensor that holds parameter ``name``'s values: the parameter, or ``<name>_orig`` under prune hooks."""
    params = dict(model.named_parameters())
    if name in params:
        return params[name]
    return params.get(name + "_orig")


def apply_pruning(model, sparsity_type, prune_ratio_dict):
    if sparsity_type == "unstructured":
        pruner = unstructured_prune
    elif sparsity_type == "filter":
        pruner = filter_prune
    else:
        raise ValueError(f"sparsity_type must be 'unstructured' or 'filter', not {sparsity_type!r}")
    weights = prunable_weights(model)
    masks = {}
    with torch.no_grad():
        for name, ratio in prune_ratio_dict.items():
            mask = pruner(weights[name], ratio)
            masks[name] = mask
            _live_param(model, name).mul_(mask)
            if sparsity_type == "filter":
                bn = _bn_for(model, name.rsplit(".", 1)[0])
                if bn is not None:
                    ch = mask.flatten(1)[:, 0].contiguous() if mask.dim() > 1 else mask
                    for attr in ("weight", "bias"):
                        masks[f"{bn}.{attr}"] = ch.clone()
                        _live_param(model, f"{bn}.{attr}").mul_(ch)
    return masks


def test_sparsity(model, sparsity_type="unstructured"):
    report = {"overall": 0.0, "layers": {}}
    if sparsity_type == "filter":
        report["zero_filters"] = {}
    zeros_all, count_all = 0, 0
    print(f"{'layer':30s}{'zeros':>12s}{'total':>12s}{'sparsity':>10s}")
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        w = module.weight.detach()
        key = f"{name}.weight"
        z = int(torch.count_nonzero(w == 0))
        report["layers"][key] = z / w.numel()
        zeros_all += z
        count_all += w.numel()
        line = f"{key:30s}{z:12d}{w.numel():12d}{z / w.numel():10.4f}"
        if sparsity_type == "filter":
            dead = int((w.flatten(1).abs().sum(1) == 0).sum())
            report["zero_filters"][key] = dead
            line += f"{dead:8d}/{w.shape[0]}"
        print(line)
    report["overall"] = zeros_all / count_all
    print(f"overall sparsity {report['overall']:.4f}")
    return report


def masked_retrain(model, prune_masks, optimizer, loss_fn, train_loader, test_loader, num_epochs, device,
                   scheduler=None, progress=True):
    targets = []
    for name, mask in prune_masks.items():
        p = _live_param(model, name)
        targets.append((p, mask.to(device=p.device, dtype=p.dtype)))

    def reapply():
        with torch.no_grad():
            for p, m in targets:
                p.mul_(m)

    reapply()
    handle = optimizer.register_step_post_hook(lambda opt, args, kwargs: reapply())
    logs = []
    try:
        for epoch in range(num_epochs):
            entry = train_epoch(model, train_loader, optimizer, loss_fn, device, scheduler, progress=progress,
                                desc=f"masked retrain {epoch + 1}/{num_epochs}")
            entry["test_accuracy"] = evaluate(model, test_loader, device)
            logs.append(entry)
    finally:
        handle.remove()
    return logs


def _one_round(model, sparsity_type, ratios, iteration, train_loader, test_loader, epochs, device, lr,
               weight_decay, progress):
    masks = apply_pruning(model, sparsity_type, ratios)
    sparsity = test_sparsity(model, sparsity_type)["overall"]
    acc_before = evaluate(model, test_loader, device)
    opt = make_optimizer(model, lr, weight_decay=weight_decay)
    sched = make_scheduler(opt, epochs * len(train_loader))
    logs = masked_retrain(model, masks, opt, nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING), train_loader,
                          test_loader, epochs, device, sched, progress)
    return {"iteration": iteration, "ratios": ratios, "sparsity": sparsity,
            "accuracy_before_retrain": acc_before, "accuracy": logs[-1]["test_accuracy"] if logs else acc_before}


def oneshot_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, train_loader, test_loader, epochs, device,
                            lr=0.01, weight_decay=5e-4, progress=True):
    return [_one_round(model, sparsity_type, dict(prune_ratio_dict), 1, train_loader, test_loader, epochs, device,
                       lr, weight_decay, progress)]


def iterative_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, iterations=3, train_loader, test_loader,
                              epochs, device, lr=0.01, weight_decay=5e-4, progress=True):
    if iterations < 3:
        raise ValueError(f"IMP needs at least 3 iterations, got {iterations}")
    out = []
    for it in range(1, iterations + 1):
        ratios = {k: (v * it / iterations if it < iterations else v) for k, v in prune_ratio_dict.items()}
        out.append(_one_round(model, sparsity_type, ratios, it, train_loader, test_loader, epochs, device, lr,
                              weight_decay, progress))
    return out


def prune_channels_after_filter_prune(model):
    new = copy_without_pruning(model)
    seq = _layer_sequence(new)
    prev_keep = None
    for name, m in seq:
        parent_name, _, child = name.rpartition(".")
        parent = new.get_submodule(parent_name) if parent_name else new
        if isinstance(m, nn.Conv2d):
            w = m.weight.detach()
            keep = (w.flatten(1) != 0).any(1).nonzero().flatten()
            if prev_keep is not None:
                w = w[:, prev_keep]
            conv = nn.Conv2d(w.shape[1], len(keep), m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
                             bias=m.bias is not None, padding_mode=m.padding_mode).to(w.device, w.dtype)
            with torch.no_grad():
                conv.weight.copy_(w[keep])
                if m.bias is not None:
                    conv.bias.copy_(m.bias[keep])
            setattr(parent, child, conv)
            prev_keep = keep
        elif isinstance(m, nn.BatchNorm2d) and prev_keep is not None:
            bn = nn.BatchNorm2d(len(prev_keep), eps=m.eps, momentum=m.momentum, affine=m.affine,
                                track_running_stats=m.track_running_stats).to(m.running_mean.device)
            with torch.no_grad():
                bn.weight.copy_(m.weight[prev_keep])
                bn.bias.copy_(m.bias[prev_keep])
                bn.running_mean.copy_(m.running_mean[prev_keep])
                bn.running_var.copy_(m.running_var[prev_keep])
                bn.num_batches_tracked.copy_(m.num_batches_tracked)
            setattr(parent, child, bn)
        elif isinstance(m, nn.Linear):
            if prev_keep is not None:
                lin = nn.Linear(len(prev_keep), m.out_features, bias=m.bias is not None).to(m.weight.device)
                with torch.no_grad():
                    lin.weight.copy_(m.weight[:, prev_keep])
                    if m.bias is not None:
                        lin.bias.copy_(m.bias)
                setattr(parent, child, lin)
            prev_keep = None
    return new


def plot_sparsity_vs_accuracy(records, out_path, dense_accuracy=None,
                              title="VGG13 on CIFAR-10: accuracy vs sparsity"):
    drawn = []
    fig = plt.figure(figsize=(6, 4))
    ax = fig.add_subplot(1, 1, 1)
    markers = "osD^v<>"
    for i, rec in enumerate(records):
        x, y = float(rec["sparsity"]), float(rec["accuracy"])
        ax.plot(x, y, markers[i % len(markers)], label=rec["label"])
        drawn.append((rec["label"], x, y))
    if dense_accuracy is not None:
        ax.axhline(dense_accuracy, ls=":", c="k", label="dense")
    ax.set(xlabel="sparsity", ylabel="accuracy (%)", title=title)
    ax.legend(loc="best")
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path), dpi=120)
    plt.close(fig)
    return drawn


def plot_mask(weight, out_path, title=""):
    w = weight.detach().cpu()
    img = (w.reshape(w.shape[0], -1) != 0).to(torch.uint8).numpy()
    fig, ax = plt.subplots()
    ax.matshow(img, cmap=ListedColormap(list(MASK_COLOURS)), vmin=0, vmax=1, aspect="auto")
    ax.set_title(title)
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)
    return img
