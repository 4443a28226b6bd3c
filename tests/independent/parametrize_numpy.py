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


import copy
import numbers

from torch.nn.utils import parametrize


# ---------------------------------------------------------------------------------------------
# YAML
# ---------------------------------------------------------------------------------------------
def _is_ratio(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(float(value)) \
        and 0.0 <= float(value) < 1.0


def read_prune_ratios_from_yaml(file_name, model):
    """Read layer-wise prune ratios (see the assignment's contract)."""
    text = Path(file_name).read_text()
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else "?"
        raise ValueError(f"{file_name}: malformed YAML at line {line}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{file_name}: malformed YAML: {exc}") from None
    if not isinstance(root, yaml.MappingNode):
        raise ValueError(f"{file_name}: expected a mapping with a 'prune_ratios' key")
    ratios_node = None
    for key_node, value_node in root.value:
        if key_node.value == "prune_ratios":
            ratios_node = value_node
    if ratios_node is None or not isinstance(ratios_node, yaml.MappingNode):
        raise ValueError(f"{file_name}: no 'prune_ratios' mapping")
    valid = list(prunable_weights(model).keys())
    constructor = yaml.SafeLoader("")  # only used to turn scalar nodes into Python values
    out: dict[str, float] = {}
    for key_node, value_node in ratios_node.value:
        name = constructor.construct_object(key_node)
        if not isinstance(name, str):
            raise ValueError(f"{file_name}: layer names must be strings, got {name!r} "
                             f"(line {key_node.start_mark.line + 1})")
        if name in out:
            raise ValueError(f"{file_name}: layer {name} is given twice (line {key_node.start_mark.line + 1})")
        if name not in valid:
            raise ValueError(f"{file_name}: {name} is not a Conv2d/Linear weight of the model; "
                             f"valid names: {', '.join(valid)}")
        value = constructor.construct_object(value_node, deep=True)
        if not _is_ratio(value):
            raise ValueError(f"{file_name}: ratio of {name} must be a number in [0, 1), got {value!r}")
        out[name] = float(value)
    return out


# ---------------------------------------------------------------------------------------------
# masks
# ---------------------------------------------------------------------------------------------
def _lowest_k_mask(scores: np.ndarray, k: int) -> np.ndarray:
    """1-D keep mask with zeros at the k smallest scores (stable: lower index first on ties)."""
    keep = np.ones(scores.shape[0], dtype=np.float64)
    if k > 0:
        order = np.argsort(scores, kind="stable")
        keep[order[:k]] = 0.0
    return keep


def unstructured_prune(tensor, sparsity):
    """Mask with zeros at the round(sparsity * n) smallest |w| (see the contract)."""
    magnitudes = tensor.detach().to("cpu", torch.float64).abs().reshape(-1).numpy()
    k = int(round(float(sparsity) * magnitudes.size))
    keep = _lowest_k_mask(magnitudes, k)
    return torch.from_numpy(keep).reshape(tensor.shape).to(device=tensor.device, dtype=tensor.dtype)


def filter_prune(tensor, sparsity):
    """Mask zeroing the round(sparsity * C_out) filters of smallest L2 norm (see the contract)."""
    flat = tensor.detach().to("cpu", torch.float64).reshape(tensor.shape[0], -1).numpy()
    norms = np.sqrt((flat * flat).sum(axis=1))
    k = int(round(float(sparsity) * tensor.shape[0]))
    keep_rows = _lowest_k_mask(norms, k)
    mask = np.broadcast_to(keep_rows.reshape((-1,) + (1,) * (tensor.dim() - 1)), tuple(tensor.shape)).copy()
    return torch.from_numpy(mask).to(device=tensor.device, dtype=tensor.dtype)


class _Mask(nn.Module):
    """Parametrization: weight = original * mask."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, x):
        return x * self.mask


def _split(name: str):
    module_name, _, attr = name.rpartition(".")
    return module_name, attr


def _attach_mask(model: nn.Module, name: str, mask: torch.Tensor) -> None:
    """Attach (or update) a masking parametrization on parameter ``name``."""
    module_name, attr = _split(name)
    module = model.get_submodule(module_name)
    if parametrize.is_parametrized(module, attr):
        for p in module.parametrizations[attr]:
            if isinstance(p, _Mask):
                p.mask.copy_(mask.to(p.mask.device, p.mask.dtype))
                break
        else:
            module.parametrizations[attr].append(_Mask(mask.clone()))
        with torch.no_grad():
            module.parametrizations[attr].original.mul_(mask.to(module.parametrizations[attr].original.dtype))
        return
    current = getattr(module, attr)
    with torch.no_grad():
        if isinstance(current, nn.Parameter):
            current.mul_(mask.to(current.dtype))
    if hasattr(module, attr + "_orig"):  # torch.nn.utils.prune hook: write the new mask into it
        old = getattr(module, attr + "_mask")
        with torch.no_grad():
            old.copy_(old * mask.to(old.dtype))
            getattr(module, attr + "_orig").mul_(mask.to(old.dtype))
            setattr(module, attr, getattr(module, attr + "_orig") * old)
        return
    parametrize.register_parametrization(module, attr, _Mask(mask.to(current.device, current.dtype).clone()))


def _batchnorm_after(model: nn.Module) -> dict[str, str]:
    """Conv module name -> the BatchNorm module name that follows it (in registration order)."""
    pairs = {}
    last_conv = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            last_conv = (name, module)
        elif isinstance(module, nn.BatchNorm2d) and last_conv is not None:
            if module.num_features == last_conv[1].out_channels:
                pairs[last_conv[0]] = name
            last_conv = None
        elif isinstance(module, nn.Linear):
            last_conv = None
    return pairs


def apply_pruning(model, sparsity_type, prune_ratio_dict):
    """Compute and attach masks for every layer in ``prune_ratio_dict`` (see the contract)."""
    if sparsity_type not in SPARSITY_TYPES:
        raise ValueError(f"unknown sparsity_type {sparsity_type!r}; choose one of {SPARSITY_TYPES}")
    weights = prunable_weights(model)
    bn_of = _batchnorm_after(model) if sparsity_type == "filter" else {}
    masks: dict[str, torch.Tensor] = {}
    for name, ratio in prune_ratio_dict.items():
        if name not in weights:
            raise ValueError(f"{name} is not a Conv2d/Linear weight of the model")
        w = weights[name].detach()
        if sparsity_type == "unstructured":
            mask = unstructured_prune(w, ratio)
        else:
            mask = filter_prune(w, ratio)
        _attach_mask(model, name, mask)
        masks[name] = mask
        module_name, _ = _split(name)
        if sparsity_type == "filter" and module_name in bn_of:
            channel_keep = mask.reshape(mask.shape[0], -1)[:, 0].clone()
            for attr in ("weight", "bias"):
                bn_name = f"{bn_of[module_name]}.{attr}"
                _attach_mask(model, bn_name, channel_keep)
                masks[bn_name] = channel_keep
    return masks


def test_sparsity(model, sparsity_type="unstructured"):
    """Per-layer and overall sparsity of the Conv2d / Linear weights (see the contract)."""
    layers, zero_filters = {}, {}
    total_zeros = total = 0
    rows = []
    for name, w in prunable_weights(model).items():
        w = w.detach()
        zeros = int((w == 0).sum().item())
        n = w.numel()
        layers[name] = zeros / n if n else 0.0
        total_zeros += zeros
        total += n
        row = f"{name:<24} {zeros:>10d} {n:>10d} {layers[name]:>9.4f}"
        if sparsity_type == "filter":
            dead = int((w.reshape(w.shape[0], -1) == 0).all(dim=1).sum().item())
            zero_filters[name] = dead
            row += f" {dead:>5d}/{w.shape[0]}"
        rows.append(row)
    print(f"{'layer':<24} {'zeros':>10} {'total':>10} {'sparsity':>9}" + ("  filters" if sparsity_type == "filter" else ""))
    print("\n".join(rows))
    overall = total_zeros / total if total else 0.0
    print(f"overall sparsity: {overall:.4f} ({total_zeros}/{total})")
    out = {"overall": overall, "layers": layers}
    if sparsity_type == "filter":
        out["zero_filters"] = zero_filters
    return out


def masked_retrain(model, prune_masks, optimizer, loss_fn, train_loader, test_loader, num_epochs, device,
                   scheduler=None, progress=True):
    """Retrain with every mask in force (attached as parametrizations when they are not yet)."""
    params = dict(model.named_parameters())
    for name, mask in prune_masks.items():
        module_name, attr = _split(name)
        module = model.get_submodule(module_name)
        if parametrize.is_parametrized(module, attr) or hasattr(module, attr + "_orig"):
            continue  # already masked (ours, or torch.nn.utils.prune)
        if name in params:
            _attach_mask(model, name, mask.to(params[name].device, params[name].dtype))
    history = []
    for epoch in range(num_epochs):
        stats = train_epoch(model, train_loader, optimizer, loss_fn, device, scheduler,
                            desc=f"masked retraining, epoch {epoch + 1}", progress=progress)
        stats["test_accuracy"] = evaluate(model, test_loader, device, exact=True)
        stats["epoch"] = epoch + 1
        history.append(stats)
    return history


def _prune_and_retrain(model, sparsity_type, ratios, iteration, *, train_loader, test_loader, epochs, device,
                       lr, weight_decay, progress):
    masks = apply_pruning(model, sparsity_type, ratios)
    sparsity = test_sparsity(model, sparsity_type)["overall"]
    before = evaluate(model, test_loader, device, exact=True)
    optimizer = make_optimizer(model, lr, weight_decay=weight_decay)
    scheduler = make_scheduler(optimizer, max(1, epochs * len(train_loader)))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)
    history = masked_retrain(model, masks, optimizer, loss_fn, train_loader, test_loader, epochs, device,
                             scheduler, progress)
    after = history[-1]["test_accuracy"] if history else before
    return {"iteration": iteration, "ratios": dict(ratios), "sparsity": sparsity,
            "accuracy_before_retrain": before, "accuracy": after}


def oneshot_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, train_loader, test_loader, epochs, device,
                            lr=0.01, weight_decay=5e-4, progress=True):
    """OMP: prune once, then masked retraining."""
    return [_prune_and_retrain(model, sparsity_type, dict(prune_ratio_dict), 1, train_loader=train_loader,
                               test_loader=test_loader, epochs=epochs, device=device, lr=lr,
                               weight_decay=weight_decay, progress=progress)]


def iterative_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, iterations=3, train_loader, test_loader,
                              epochs, device, lr=0.01, weight_decay=5e-4, progress=True):
    """IMP with a geometric schedule: keep fraction (1 - target) ** (t / iterations)."""
    if iterations < MIN_IMP_ITERATIONS:
        raise ValueError(f"iterations must be at least {MIN_IMP_ITERATIONS}, got {iterations}")
    log = []
    for t in range(1, iterations + 1):
        if t == iterations:
            ratios = dict(prune_ratio_dict)
        else:
            ratios = {name: 1.0 - (1.0 - target) ** (t / iterations) for name, target in prune_ratio_dict.items()}
        log.append(_prune_and_retrain(model, sparsity_type, ratios, t, train_loader=train_loader,
                                      test_loader=test_loader, epochs=epochs, device=device, lr=lr,
                                      weight_decay=weight_decay, progress=progress))
    return log


# ---------------------------------------------------------------------------------------------
# compaction
# ---------------------------------------------------------------------------------------------
def _fold_parametrizations(model: nn.Module) -> None:
    for module in list(model.modules()):
        if parametrize.is_parametrized(module):
            for attr in list(module.parametrizations.keys()):
                parametrize.remove_parametrizations(module, attr, leave_parametrized=True)


def _slice_param(module: nn.Module, attr: str, index: torch.Tensor, dim: int) -> None:
    old = getattr(module, attr)
    new = old.detach().index_select(dim, index.to(old.device)).clone()
    if isinstance(old, nn.Parameter):
        setattr(module, attr, nn.Parameter(new, requires_grad=old.requires_grad))
    else:
        setattr(module, attr, new)


def prune_channels_after_filter_prune(model):
    """A smaller dense copy without the all-zero filters (see the contract)."""
    small = copy_without_pruning(model)  # folds torch.nn.utils.prune masks
    _fold_parametrizations(small)
    ordered = [m for m in small.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear))]
    keep = None  # indices of the surviving channels of the previous conv
    channels = 0
    for module in ordered:
        if isinstance(module, nn.Conv2d):
            if keep is not None:
                _slice_param(module, "weight", keep, 1)
                module.in_channels = len(keep)
            w = module.weight.detach()
            channels = w.shape[0]
            keep = torch.nonzero(w.reshape(w.shape[0], -1).abs().sum(dim=1) != 0).reshape(-1)
            _slice_param(module, "weight", keep, 0)
            if module.bias is not None:
                _slice_param(module, "bias", keep, 0)
            module.out_channels = len(keep)
        elif isinstance(module, nn.BatchNorm2d) and keep is not None:
            for attr in ("weight", "bias", "running_mean", "running_var"):
                if getattr(module, attr) is not None:
                    _slice_param(module, attr, keep, 0)
            module.num_features = len(keep)
        elif isinstance(module, nn.Linear):
            if keep is not None:
                per = module.in_features // channels  # flattened positions per channel
                cols = (keep.reshape(-1, 1) * per + torch.arange(per)).reshape(-1)
                _slice_param(module, "weight", cols, 1)
                module.in_features = len(cols)
            keep = None
    return small


# ---------------------------------------------------------------------------------------------
# plots
# ---------------------------------------------------------------------------------------------
def plot_sparsity_vs_accuracy(records, out_path, dense_accuracy=None,
                              title="VGG13 on CIFAR-10: accuracy vs sparsity"):
    """One point per record at (sparsity, accuracy); saved as PNG."""
    points = [(str(rec["label"]), float(rec["sparsity"]), float(rec["accuracy"])) for rec in records]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for label, s, a in points:
        ax.scatter([s], [a], s=40, label=label, zorder=3)
        ax.annotate(label, (s, a), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if dense_accuracy is not None:
        ax.axhline(dense_accuracy, color="grey", linestyle="--", label=f"dense ({dense_accuracy:.2f}%)")
    ax.set_xlabel("overall sparsity")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if points:
        ax.legend(fontsize=8)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, format="png", dpi=FIGURE_DPI, bbox_inches="tight")
    plt.close(fig)
    return points


def plot_mask(weight, out_path, title=""):
    """Kept (1) / pruned (0) image, one row per filter; saved as PNG."""
    w = weight.detach().to("cpu", torch.float64)
    image = (w.reshape(w.shape[0], -1) != 0).numpy().astype(np.int64)
    fig, ax = plt.subplots(figsize=(8, max(2.0, 8 * image.shape[0] / max(1, image.shape[1]))))
    ax.imshow(image, interpolation="nearest", aspect="auto", cmap=ListedColormap(MASK_COLOURS), vmin=0, vmax=1)
    ax.set_xlabel("C_in * kH * kW")
    ax.set_ylabel("filter")
    ax.set_title(title)
    ax.legend(handles=[Patch(color=MASK_COLOURS[1], label="kept"), Patch(color=MASK_COLOURS[0], label="pruned")],
              loc="upper right", fontsize=8)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=FIGURE_DPI)
    plt.close(fig)
    return image
