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

from matplotlib.ticker import PercentFormatter

import hw2.models as hw2_models


# ----- solution K: the "careful numerics student" -------------------------------------------------

def _is_ratio(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and 0.0 <= value < 1.0)


def read_prune_ratios_from_yaml(file_name, model):
    path = Path(file_name)
    try:
        root = yaml.compose(path.read_text(), Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark is not None else "?"
        raise ValueError(f"{path}: malformed YAML on line {line}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: malformed YAML: {exc}") from None
    if not isinstance(root, yaml.MappingNode):
        raise ValueError(f"{path}: the file must be a mapping with the key 'prune_ratios'")
    ratios_node = None
    top_keys = set()
    for key_node, value_node in root.value:
        if key_node.value in top_keys:
            raise ValueError(f"{path}: line {key_node.start_mark.line + 1}: top-level key {key_node.value!r} given twice")
        top_keys.add(key_node.value)
        if key_node.value == "prune_ratios":
            ratios_node = value_node
    if not isinstance(ratios_node, yaml.MappingNode):
        raise ValueError(f"{path}: 'prune_ratios' must be a mapping of parameter name -> ratio")
    valid = list(hw2_models.prunable_weights(model))
    loader = yaml.SafeLoader("")
    out: dict[str, float] = {}
    for key_node, value_node in ratios_node.value:
        line = key_node.start_mark.line + 1
        name = loader.construct_object(key_node, deep=True)
        if name in out:
            raise ValueError(f"{path}: line {line}: layer {name!r} is named twice")
        if name not in valid:
            raise ValueError(f"{path}: line {line}: {name!r} is not a Conv2d/Linear weight; valid names: {', '.join(valid)}")
        value = loader.construct_object(value_node, deep=True)
        if not _is_ratio(value):
            raise ValueError(f"{path}: line {line}: the ratio of {name} must be a number in [0, 1), got {value!r}")
        out[name] = float(value)
    return out


def _tie_broken_scores(values: torch.Tensor) -> torch.Tensor:
    """float64 scores with a tiny index-based epsilon so that no two non-zero entries tie."""
    v = values.detach().to(torch.float64).reshape(-1)
    idx = torch.arange(v.numel(), dtype=torch.float64, device=v.device)
    return v * (1.0 + idx * 2.0 ** -52)


def _count(sparsity: float, n: int) -> int:
    return min(n, max(0, math.floor(sparsity * n + 0.5)))


def unstructured_prune(tensor, sparsity):
    n = tensor.numel()
    k = _count(sparsity, n)
    scores = _tie_broken_scores(tensor.detach().abs())
    flat = torch.ones(n, dtype=tensor.dtype, device=tensor.device)
    if k > 0:
        pruned = torch.topk(scores, k, largest=False).indices
        flat[pruned] = 0
    return flat.reshape(tensor.shape)


def filter_prune(tensor, sparsity):
    c_out = tensor.shape[0]
    rows = tensor.detach().to(torch.float64).reshape(c_out, -1)
    sq_norms = torch.einsum("ij,ij->i", rows, rows)
    k = _count(sparsity, c_out)
    keep = torch.ones(c_out, dtype=tensor.dtype, device=tensor.device)
    if k > 0:
        keep[torch.topk(_tie_broken_scores(sq_norms), k, largest=False).indices] = 0
    return keep.reshape((c_out,) + (1,) * (tensor.dim() - 1)).expand(tensor.shape).contiguous()


def _module_and_attr(model, name):
    module_name, _, attr = name.rpartition(".")
    return (model.get_submodule(module_name) if module_name else model), attr


def _attach(module, attr, mask):
    current = getattr(module, attr).detach()
    if prune.is_pruned(module) and hasattr(module, attr + "_orig"):
        prune.remove(module, attr)
    prune.custom_from_mask(module, attr, mask.to(device=current.device, dtype=current.dtype))


def apply_pruning(model, sparsity_type, prune_ratio_dict):
    if sparsity_type not in SPARSITY_TYPES:
        raise ValueError(f"sparsity_type must be one of {SPARSITY_TYPES}, got {sparsity_type!r}")
    weights = hw2_models.prunable_weights(model)
    modules = list(model.named_modules())
    position = {n: i for i, (n, _) in enumerate(modules)}
    masks = {}
    for name, ratio in prune_ratio_dict.items():
        if name not in weights:
            raise ValueError(f"{name!r} is not a Conv2d/Linear weight of the model")
        w = weights[name].detach()
        mask = unstructured_prune(w, ratio) if sparsity_type == "unstructured" else filter_prune(w, ratio)
        module, attr = _module_and_attr(model, name)
        _attach(module, attr, mask)
        masks[name] = mask
        if sparsity_type == "filter" and isinstance(module, nn.Conv2d):
            mod_name = name.rpartition(".")[0]
            for bn_name, bn in modules[position[mod_name] + 1:]:
                if isinstance(bn, (nn.Conv2d, nn.Linear)):
                    break
                if isinstance(bn, nn.BatchNorm2d) and bn.num_features == w.shape[0] and bn.affine:
                    channel = mask.reshape(w.shape[0], -1)[:, 0]
                    for part in ("weight", "bias"):
                        _attach(bn, part, channel)
                        masks[f"{bn_name}.{part}"] = channel.clone()
                    break
    return masks


def test_sparsity(model, sparsity_type="unstructured"):
    weights = hw2_models.prunable_weights(model)
    layers, zero_filters = {}, {}
    zeros_total = count_total = 0
    header = f"{'layer':<24}{'zeros':>12}{'total':>12}{'sparsity':>10}" + (f"{'zero filters':>16}" if sparsity_type == "filter" else "")
    print(header)
    for name, w in weights.items():
        w = w.detach()
        zeros = int(torch.count_nonzero(w == 0))
        total = w.numel()
        zeros_total += zeros
        count_total += total
        layers[name] = zeros / total
        line = f"{name:<24}{zeros:>12}{total:>12}{zeros / total:>10.4f}"
        if sparsity_type == "filter":
            zero_filters[name] = int(torch.count_nonzero(torch.all(w.reshape(w.shape[0], -1) == 0, dim=1)))
            line += f"{zero_filters[name]:>10}/{w.shape[0]:<5}"
        print(line)
    overall = zeros_total / count_total if count_total else 0.0
    print(f"overall sparsity {overall:.6f} ({zeros_total}/{count_total})")
    result = {"overall": overall, "layers": layers}
    if sparsity_type == "filter":
        result["zero_filters"] = zero_filters
    return result


def _masked_parameters(model, prune_masks):
    """(parameter that the optimizer updates, mask) for every masked name, in either pruning state."""
    pairs = []
    for name, mask in prune_masks.items():
        module, attr = _module_and_attr(model, name)
        param = getattr(module, attr + "_orig", None)
        if param is None:
            param = getattr(module, attr)
        pairs.append((param, mask.detach().to(device=param.device, dtype=param.dtype)))
    return pairs


def masked_retrain(model, prune_masks, optimizer, loss_fn, train_loader, test_loader, num_epochs, device,
                   scheduler=None, progress=True):
    pairs = _masked_parameters(model, prune_masks)
    handles = [p.register_hook(lambda g, m=m: g * m) for p, m in pairs if p.requires_grad]

    def rezero():  # weight decay and momentum still move the pruned entries: zero them again
        with torch.no_grad():
            for p, m in pairs:
                p.mul_(m)

    rezero()
    history = []
    try:
        for epoch in range(num_epochs):
            stats = train_epoch(model, train_loader, optimizer, loss_fn, device, scheduler, rezero,
                                desc=f"masked retrain {epoch + 1}/{num_epochs}", progress=progress)
            stats["test_accuracy"] = evaluate(model, test_loader, device)
            history.append(stats)
    finally:
        for h in handles:
            h.remove()
    return history


def _retrain_setup(model, epochs, train_loader, lr, weight_decay):
    optimizer = make_optimizer(model, lr, weight_decay=weight_decay)
    scheduler = make_scheduler(optimizer, max(1, epochs * len(train_loader)))
    return optimizer, scheduler, nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)


def _one_round(model, sparsity_type, ratios, iteration, train_loader, test_loader, epochs, device, lr, weight_decay, progress):
    masks = apply_pruning(model, sparsity_type, ratios)
    report = test_sparsity(model, sparsity_type)
    before = evaluate(model, test_loader, device, exact=True)
    optimizer, scheduler, loss_fn = _retrain_setup(model, epochs, train_loader, lr, weight_decay)
    history = masked_retrain(model, masks, optimizer, loss_fn, train_loader, test_loader, epochs, device,
                             scheduler, progress)
    after = evaluate(model, test_loader, device, exact=True)
    entry = {"iteration": iteration, "ratios": dict(ratios), "sparsity": report["overall"],
             "layer_sparsity": dict(report["layers"]), "accuracy_before_retrain": before, "accuracy": after,
             "history": history}
    print(f"round {iteration}: sparsity {entry['sparsity']:.4f}, accuracy {before:.2f}% -> {after:.2f}%")
    return entry


def oneshot_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, train_loader, test_loader, epochs, device,
                            lr=0.01, weight_decay=5e-4, progress=True):
    return [_one_round(model, sparsity_type, dict(prune_ratio_dict), 1, train_loader, test_loader, epochs, device,
                       lr, weight_decay, progress)]


def iterative_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, iterations=3, train_loader, test_loader,
                              epochs, device, lr=0.01, weight_decay=5e-4, progress=True):
    if iterations < MIN_IMP_ITERATIONS:
        raise ValueError(f"iterations must be at least {MIN_IMP_ITERATIONS}, got {iterations}")
    log = []
    for t in range(1, iterations + 1):
        frac = 1.0 - (1.0 - t / iterations) ** 3  # cubic schedule: big steps first, small ones at the end
        ratios = {name: target * frac for name, target in prune_ratio_dict.items()}
        log.append(_one_round(model, sparsity_type, ratios, t, train_loader, test_loader, epochs, device, lr,
                              weight_decay, progress))
    return log


def _set_child(root, name, module):
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, module)


def prune_channels_after_filter_prune(model):
    new = copy_without_pruning(model)
    named = list(new.named_modules())
    prev_keep = None
    pending_bn = None
    for name, module in named:
        if isinstance(module, nn.Conv2d):
            w = module.weight.detach()
            keep = torch.nonzero(torch.any(w.reshape(w.shape[0], -1) != 0, dim=1)).flatten()
            in_idx = prev_keep if prev_keep is not None else torch.arange(w.shape[1], device=w.device)
            conv = nn.Conv2d(in_idx.numel(), keep.numel(), module.kernel_size, module.stride, module.padding,
                             module.dilation, 1, module.bias is not None, module.padding_mode).to(w.device, w.dtype)
            with torch.no_grad():
                conv.weight.copy_(w.index_select(0, keep).index_select(1, in_idx))
                if module.bias is not None:
                    conv.bias.copy_(module.bias.detach()[keep])
            _set_child(new, name, conv)
            prev_keep, pending_bn = keep, keep
        elif isinstance(module, nn.BatchNorm2d) and pending_bn is not None:
            bn = nn.BatchNorm2d(pending_bn.numel(), eps=module.eps, momentum=module.momentum).to(module.running_mean.device)
            with torch.no_grad():
                bn.weight.copy_(module.weight.detach()[pending_bn])
                bn.bias.copy_(module.bias.detach()[pending_bn])
                bn.running_mean.copy_(module.running_mean[pending_bn])
                bn.running_var.copy_(module.running_var[pending_bn])
                bn.num_batches_tracked.copy_(module.num_batches_tracked)
            _set_child(new, name, bn)
            pending_bn = None
        elif isinstance(module, nn.Linear) and prev_keep is not None:
            last_channels = int(prev_keep.max().item()) + 1
            # find how many inputs each channel feeds (spatial size after flatten)
            convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
            per = module.in_features // convs[-1].out_channels
            idx = (prev_keep[:, None] * per + torch.arange(per, device=prev_keep.device)).flatten()
            fc = nn.Linear(idx.numel(), module.out_features, bias=module.bias is not None).to(module.weight.device)
            with torch.no_grad():
                fc.weight.copy_(module.weight.detach()[:, idx])
                if module.bias is not None:
                    fc.bias.copy_(module.bias.detach())
            _set_child(new, name, fc)
            prev_keep = None
    return new


def plot_sparsity_vs_accuracy(records, out_path, dense_accuracy=None, title="VGG13 on CIFAR-10: accuracy vs sparsity"):
    points = [(str(r["label"]), float(r["sparsity"]), float(r["accuracy"])) for r in records]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    if points:
        ax.plot([p[1] for p in points], [p[2] for p in points], linestyle="none", marker="o", color="#0072B2")
        for label, s, a in points:
            ax.annotate(f"{label}\n({100 * s:.1f}%, {a:.2f}%)", (s, a), textcoords="offset points", xytext=(5, 5), fontsize=7)
    if dense_accuracy is not None:
        ax.axhline(float(dense_accuracy), color="#E69F00", linestyle="--", label=f"dense {dense_accuracy:.2f}%")
        ax.legend(loc="lower left")
    ax.xaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    ax.set_xlabel("overall sparsity")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_path, dpi=FIGURE_DPI)
    plt.close(fig)
    return points


def plot_mask(weight, out_path, title=""):
    w = weight.detach().to("cpu", torch.float64)
    image = (w.reshape(w.shape[0], -1) != 0).to(torch.float64).numpy()
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.imshow(image, cmap=ListedColormap(list(MASK_COLOURS)), vmin=0, vmax=1, interpolation="nearest", aspect="auto")
    ax.legend(handles=[Patch(color=MASK_COLOURS[1], label="kept"), Patch(color=MASK_COLOURS[0], label="pruned")],
              loc="upper right", fontsize=7)
    ax.set_title(title)
    ax.set_xlabel("input channel x kernel position")
    ax.set_ylabel("filter")
    fig.savefig(out_path, dpi=FIGURE_DPI)
    plt.close(fig)
    return image
