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

import copy
import functools
import math
import operator

SPARSITY_TYPES = ("unstructured", "filter")
MIN_IMP_ITERATIONS = 3
# Colour-blind-safe pair (Okabe-Ito): blue = kept, orange = pruned.
MASK_COLOURS = ("#E69F00", "#0072B2")  # index 0 = pruned, index 1 = kept
FIGURE_DPI = 150


def _numel(shape):
    return functools.reduce(operator.mul, shape, 1)


# ---------------------------------------------------------------------------------------------
# YAML: collect every problem, raise one ValueError
# ---------------------------------------------------------------------------------------------
class _Pairs(list):
    """A YAML mapping as (key, value, line) triples, duplicates kept."""


def _pairs_loader():
    class PairsLoader(yaml.SafeLoader):
        pass

    def mapping_as_pairs(loader, node):
        return _Pairs((loader.construct_object(k, deep=True), loader.construct_object(v, deep=True),
                       k.start_mark.line + 1) for k, v in node.value)

    PairsLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping_as_pairs)
    return PairsLoader


def read_prune_ratios_from_yaml(file_name, model):
    try:
        document = yaml.load(Path(file_name).read_text(), Loader=_pairs_loader())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else "?"
        raise ValueError(f"{file_name}: malformed YAML (line {line}): {getattr(exc, 'problem', exc)}") from None
    errors = []
    if not isinstance(document, _Pairs):
        raise ValueError(f"{file_name}: the file must be a mapping with a 'prune_ratios' key")
    top = [(k, v) for k, v, _ in document if k == "prune_ratios"]
    if len(top) != 1 or not isinstance(top[0][1], _Pairs):
        raise ValueError(f"{file_name}: expected exactly one 'prune_ratios' mapping of layer name -> ratio")
    valid = list(prunable_weights(model))
    ratios = {}
    for name, value, line in top[0][1]:
        if not isinstance(name, str) or name not in valid:
            errors.append(f"line {line}: {name!r} is not a Conv2d/Linear weight of the model")
        elif name in ratios:
            errors.append(f"line {line}: {name} is given twice")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errors.append(f"line {line}: the ratio of {name} is {value!r}, not a number")
        elif not (value >= 0 and value < 1):
            errors.append(f"line {line}: the ratio of {name} is {value}, not in [0, 1)")
        if isinstance(name, str) and name not in ratios:
            ratios[name] = value
    if any("not a Conv2d/Linear weight" in e for e in errors):
        errors.append("valid names: " + ", ".join(valid))
    if errors:
        raise ValueError(f"{file_name}: " + "; ".join(errors))
    return {name: float(value) for name, value in ratios.items()}


# ---------------------------------------------------------------------------------------------
# masks
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def _smallest_k_mask(scores, k):
    """Float 0/1 vector: 0 at the k smallest entries of the 1-D ``scores``."""
    mask = torch.ones_like(scores)
    if k > 0:
        _, idx = torch.sort(scores, stable=True)
        mask.index_fill_(0, idx[:k], 0.0)
    return mask


@torch.no_grad()
def unstructured_prune(tensor, sparsity):
    n = _numel(tensor.shape)
    flat = tensor.abs().reshape(n).to(torch.float32)
    mask = _smallest_k_mask(flat, round(sparsity * n))
    return mask.reshape(tensor.shape).to(dtype=tensor.dtype, device=tensor.device)


@torch.no_grad()
def filter_prune(tensor, sparsity):
    rows = tensor.reshape(tensor.shape[0], -1).to(torch.float32)
    norms = rows.pow(2).sum(dim=1).sqrt()
    keep = _smallest_k_mask(norms, round(sparsity * tensor.shape[0]))
    return (keep.reshape((-1,) + (1,) * (tensor.dim() - 1)) * torch.ones(tensor.shape, device=tensor.device)).to(tensor.dtype)


def _module_of(model, full_name):
    module_name, _, pname = full_name.rpartition(".")
    return functools.reduce(lambda m, part: getattr(m, part), module_name.split(".") if module_name else [], model), pname


def _bn_after(model, conv_name):
    names = [name for name, _ in model.named_modules()]
    modules = dict(model.named_modules())
    after = names[names.index(conv_name) + 1:]
    for name in after:
        module = modules[name]
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            return None
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            return name if module.num_features == modules[conv_name].weight.shape[0] else None
    return None


def apply_pruning(model, sparsity_type, prune_ratio_dict):
    if sparsity_type not in SPARSITY_TYPES:
        raise ValueError(f"sparsity_type must be one of {SPARSITY_TYPES}, got {sparsity_type!r}")
    chooser = unstructured_prune if sparsity_type == "unstructured" else filter_prune
    masks = {}
    for full_name, ratio in prune_ratio_dict.items():
        module, pname = _module_of(model, full_name)
        mask = chooser(getattr(module, pname).detach(), ratio)
        prune.custom_from_mask(module, pname, mask)
        masks[full_name] = getattr(module, pname + "_mask").detach().clone()
        if sparsity_type == "filter":
            bn_name = _bn_after(model, full_name.rpartition(".")[0])
            if bn_name is not None:
                bn = dict(model.named_modules())[bn_name]
                channel_mask = mask.reshape(mask.shape[0], -1)[:, 0]
                for bn_pname in ("weight", "bias"):
                    prune.custom_from_mask(bn, bn_pname, channel_mask.to(getattr(bn, bn_pname).dtype))
                    masks[f"{bn_name}.{bn_pname}"] = getattr(bn, bn_pname + "_mask").detach().clone()
    return masks


@torch.no_grad()
def _zeros_and_total(weight):
    return int((weight == 0).sum()), weight.numel()


def test_sparsity(model, sparsity_type="unstructured"):
    weights = prunable_weights(model)
    counts = {name: _zeros_and_total(w.detach()) for name, w in weights.items()}
    zeros, total = functools.reduce(lambda acc, zt: (acc[0] + zt[0], acc[1] + zt[1]), counts.values(), (0, 0))
    report = {"overall": zeros / total if total else 0.0,
              "layers": {name: z / t for name, (z, t) in counts.items()}}
    zero_filters = {name: int((w.detach().reshape(w.shape[0], -1) == 0).all(dim=1).sum()) for name, w in weights.items()}
    for name, (z, t) in counts.items():
        extra = f"  {zero_filters[name]}/{weights[name].shape[0]} filters" if sparsity_type == "filter" else ""
        print(f"{name:<24} {z:>9} / {t:<9} {z / t:.4f}{extra}")
    print(f"overall sparsity {report['overall']:.4f}")
    if sparsity_type == "filter":
        report["zero_filters"] = zero_filters
    return report


@torch.no_grad()
def _reapply(model, prune_masks):
    for full_name, mask in prune_masks.items():
        module, pname = _module_of(model, full_name)
        target = getattr(module, pname + "_orig") if hasattr(module, pname + "_orig") else getattr(module, pname)
        target.mul_(mask.to(device=target.device, dtype=target.dtype))


def masked_retrain(model, prune_masks, optimizer, loss_fn, train_loader, test_loader, num_epochs, device,
                   scheduler=None, progress=True):
    _reapply(model, prune_masks)
    after_step = functools.partial(_reapply, model, prune_masks)
    history = []
    for epoch in range(num_epochs):
        stats = train_epoch(model, train_loader, optimizer, loss_fn, device, scheduler, after_step,
                            desc=f"masked retrain {epoch + 1}/{num_epochs}", progress=progress)
        stats["test_accuracy"] = evaluate(model, test_loader, device)
        history.append(stats)
    return history


def _sgd_cosine(model, lr, weight_decay, total_steps):
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    optimizer = torch.optim.SGD([{"params": decay, "weight_decay": weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=lr, momentum=0.9, nesterov=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step / max(1, total_steps), 1.0))))
    return optimizer, scheduler


def _prune_and_retrain(model, sparsity_type, ratios, iteration, *, train_loader, test_loader, epochs, device, lr,
                       weight_decay, progress):
    masks = apply_pruning(model, sparsity_type, ratios)
    sparsity = test_sparsity(model, sparsity_type)["overall"]
    before = evaluate(model, test_loader, device)
    optimizer, scheduler = _sgd_cosine(model, lr, weight_decay, epochs * len(train_loader))
    masked_retrain(model, masks, optimizer, nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING), train_loader,
                   test_loader, epochs, device, scheduler, progress)
    return {"iteration": iteration, "ratios": dict(ratios), "sparsity": sparsity, "accuracy_before_retrain": before,
            "accuracy": evaluate(model, test_loader, device)}


def oneshot_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, train_loader, test_loader, epochs, device,
                            lr=0.01, weight_decay=5e-4, progress=True):
    return [_prune_and_retrain(model, sparsity_type, dict(prune_ratio_dict), 1, train_loader=train_loader,
                               test_loader=test_loader, epochs=epochs, device=device, lr=lr,
                               weight_decay=weight_decay, progress=progress)]


def iterative_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, iterations=3, train_loader, test_loader,
                              epochs, device, lr=0.01, weight_decay=5e-4, progress=True):
    if iterations < MIN_IMP_ITERATIONS:
        raise ValueError(f"iterations must be >= {MIN_IMP_ITERATIONS}, got {iterations}")

    def ratios_at(t):
        if t == iterations:
            return dict(prune_ratio_dict)
        return {name: 1.0 - (1.0 - target) ** (t / iterations) for name, target in prune_ratio_dict.items()}

    kwargs = dict(train_loader=train_loader, test_loader=test_loader, epochs=epochs, device=device, lr=lr,
                  weight_decay=weight_decay, progress=progress)
    return functools.reduce(lambda log, t: log + [_prune_and_retrain(model, sparsity_type, ratios_at(t), t, **kwargs)],
                            range(1, iterations + 1), [])


@torch.no_grad()
def prune_channels_after_filter_prune(model):
    plain = copy_without_pruning(model).eval()
    layers = []
    keep_in = None
    keep_bn = None
    for module in plain.features:
        if isinstance(module, nn.Conv2d):
            weight = module.weight
            keep_out = weight.reshape(weight.shape[0], -1).ne(0).any(dim=1)
            w = weight[keep_out] if keep_in is None else weight[keep_out][:, keep_in]
            conv = nn.Conv2d(w.shape[1], w.shape[0], kernel_size=module.kernel_size, stride=module.stride,
                             padding=module.padding, dilation=module.dilation, groups=module.groups,
                             bias=module.bias is not None)
            conv.weight.copy_(w)
            if module.bias is not None:
                conv.bias.copy_(module.bias[keep_out])
            layers.append(conv)
            keep_in = keep_bn = keep_out
        elif isinstance(module, nn.BatchNorm2d) and keep_bn is not None:
            bn = nn.BatchNorm2d(int(keep_bn.sum()), eps=module.eps, momentum=module.momentum)
            bn.weight.copy_(module.weight[keep_bn])
            bn.bias.copy_(module.bias[keep_bn])
            bn.running_mean.copy_(module.running_mean[keep_bn])
            bn.running_var.copy_(module.running_var[keep_bn])
            bn.num_batches_tracked.copy_(module.num_batches_tracked)
            layers.append(bn)
            keep_bn = None
        else:
            layers.append(copy.deepcopy(module))
    plain.features = nn.Sequential(*layers)
    fc = plain.classifier
    cols = keep_in.repeat_interleave(fc.in_features // keep_in.numel())
    linear = nn.Linear(int(cols.sum()), fc.out_features, bias=fc.bias is not None)
    linear.weight.copy_(fc.weight[:, cols])
    if fc.bias is not None:
        linear.bias.copy_(fc.bias)
    plain.classifier = linear
    return plain


def plot_sparsity_vs_accuracy(records, out_path, dense_accuracy=None, title="VGG13 on CIFAR-10: accuracy vs sparsity"):
    points = [(str(r["label"]), float(r["sparsity"]), float(r["accuracy"])) for r in records]
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [p[1] for p in points]
    ys = [p[2] for p in points]
    ax.scatter(xs, ys, color="#0072B2", zorder=3)
    for label, x, y in points:
        ax.annotate(label, (x, y), xytext=(3, 3), textcoords="offset points", fontsize=8)
    if dense_accuracy is not None:
        ax.hlines(dense_accuracy, 0.0, 1.0, colors="grey", linestyles="dashed", label="dense")
        ax.legend()
    ax.set_xlim(0, 1)
    ax.set_xlabel("overall sparsity")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out_path, dpi=FIGURE_DPI)
    plt.close(fig)
    return points


def plot_mask(weight, out_path, title=""):
    rows = weight.detach().cpu().reshape(weight.shape[0], -1)
    image = rows.ne(0).to(torch.int64).numpy()
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.imshow(image, cmap=ListedColormap(MASK_COLOURS), vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    ax.legend(handles=[Patch(color=MASK_COLOURS[1], label="kept"), Patch(color=MASK_COLOURS[0], label="pruned")])
    ax.set_title(title)
    fig.savefig(out_path, dpi=FIGURE_DPI)
    plt.close(fig)
    return image
