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


# ----------------------------------------------------------------------------------------------
# helpers (solution E: defensive student)
# ----------------------------------------------------------------------------------------------
import math
import numbers


def _check_fraction(value, what: str = "sparsity") -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{what} must be a number in [0, 1), got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0.0 or value >= 1.0:
        raise ValueError(f"{what} must be in [0, 1), got {value!r}")
    return value


def _magnitude_dtype(tensor: torch.Tensor) -> torch.dtype:
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


def _resolve(model: nn.Module, param_name: str):
    """(module, attribute) for a ``named_parameters()``-style name, whether or not a prune hook is attached."""
    module_name, _, attr = param_name.rpartition(".")
    try:
        module = model.get_submodule(module_name) if module_name else model
    except AttributeError:
        raise ValueError(f"{param_name!r}: the model has no module {module_name!r}") from None
    if not (hasattr(module, attr) or hasattr(module, attr + "_orig")):
        raise ValueError(f"{param_name!r}: module {module_name!r} has no parameter {attr!r}")
    return module, attr


def _current_value(module: nn.Module, attr: str) -> torch.Tensor:
    """The effective value of a (possibly masked) parameter, recomputed now (not the cached one of the last forward)."""
    if hasattr(module, attr + "_mask") and hasattr(module, attr + "_orig"):
        return (getattr(module, attr + "_orig") * getattr(module, attr + "_mask")).detach()
    return getattr(module, attr).detach()


class _UniqueKeyLoader(yaml.SafeLoader):
    pass


def _construct_unique_mapping(loader, node, deep=False):
    if not isinstance(node, yaml.MappingNode):
        raise yaml.constructor.ConstructorError(None, None, f"expected a mapping, found {node.id}", node.start_mark)
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(None, None, "unhashable key", key_node.start_mark) from None
        if key in seen:
            raise ValueError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1} "
                             f"(first given at line {seen[key] + 1})")
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


# ----------------------------------------------------------------------------------------------
def read_prune_ratios_from_yaml(file_name: str | Path, model: nn.Module) -> dict[str, float]:
    path = Path(file_name)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f"line {mark.line + 1}" if mark is not None else "unknown line"
        raise ValueError(f"{path}: malformed YAML at {line}: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: malformed YAML: {exc}") from None
    if not isinstance(data, dict) or "prune_ratios" not in data:
        raise ValueError(f"{path}: no top-level 'prune_ratios' mapping")
    ratios = data["prune_ratios"]
    if not isinstance(ratios, dict):
        raise ValueError(f"{path}: 'prune_ratios' must be a mapping of parameter name -> ratio, got {type(ratios).__name__}")
    valid = list(prunable_weights(model))
    out: dict[str, float] = {}
    for name, ratio in ratios.items():
        if not isinstance(name, str) or name not in valid:
            raise ValueError(f"{path}: {name!r} is not a Conv2d/Linear weight of the model; valid names: {', '.join(valid)}")
        if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) or not math.isfinite(float(ratio)) \
                or not 0.0 <= float(ratio) < 1.0:
            raise ValueError(f"{path}: the ratio of {name} must be a number in [0, 1), got {ratio!r}")
        out[name] = float(ratio)
    return out


def unstructured_prune(tensor: torch.Tensor, sparsity: float) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"tensor must be a torch.Tensor, got {type(tensor).__name__}")
    sparsity = _check_fraction(sparsity)
    n = tensor.numel()
    k = round(sparsity * n)
    mask = torch.ones(tensor.shape, dtype=tensor.dtype, device=tensor.device)
    if k == 0:
        return mask
    mags = tensor.detach().reshape(-1).abs().to(_magnitude_dtype(tensor))
    order = torch.sort(mags, stable=True).indices  # ties: lower flat index first
    flat = mask.view(-1)
    flat[order[:k]] = 0
    return mask


def filter_prune(tensor: torch.Tensor, sparsity: float) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"tensor must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dim() < 2:
        raise ValueError(f"filter_prune needs a weight with an output dimension and inputs (2-D or 4-D), got shape {tuple(tensor.shape)}")
    sparsity = _check_fraction(sparsity)
    c_out = tensor.shape[0]
    k = round(sparsity * c_out)
    mask = torch.ones(tensor.shape, dtype=tensor.dtype, device=tensor.device)
    if k == 0:
        return mask
    norms = tensor.detach().reshape(c_out, -1).to(_magnitude_dtype(tensor)).norm(p=2, dim=1)
    order = torch.sort(norms, stable=True).indices  # ties: lower filter index first
    mask[order[:k]] = 0
    return mask


def _following_batchnorm(model: nn.Module, conv_name: str):
    """The BatchNorm registered right after ``conv_name`` for its output channels, or None."""
    modules = list(model.named_modules())
    names = [n for n, _ in modules]
    idx = names.index(conv_name)
    conv = modules[idx][1]
    out_channels = conv.out_channels if isinstance(conv, nn.Conv2d) else conv.out_features
    for name, module in modules[idx + 1:]:
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            return None
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if module.num_features == out_channels and module.affine:
                return name, module
            return None
    return None


def _attach(module: nn.Module, attr: str, mask: torch.Tensor) -> torch.Tensor:
    prune.custom_from_mask(module, attr, mask)  # combines with an existing mask (product)
    return getattr(module, attr + "_mask").detach().clone()


def apply_pruning(model: nn.Module, sparsity_type: str, prune_ratio_dict: dict[str, float]) -> dict[str, torch.Tensor]:
    if sparsity_type not in SPARSITY_TYPES:
        raise ValueError(f"unknown sparsity_type {sparsity_type!r}; choose one of {SPARSITY_TYPES}")
    valid = prunable_weights(model)
    plan = []
    for name, ratio in prune_ratio_dict.items():
        if name not in valid:
            raise ValueError(f"{name!r} is not a Conv2d/Linear weight of the model; valid names: {', '.join(valid)}")
        plan.append((name, _check_fraction(ratio, f"ratio of {name}")))
    masks: dict[str, torch.Tensor] = {}
    for name, ratio in plan:
        module, attr = _resolve(model, name)
        weight = _current_value(module, attr)
        if sparsity_type == "unstructured":
            mask = unstructured_prune(weight, ratio)
        else:
            mask = filter_prune(weight, ratio)
        masks[name] = _attach(module, attr, mask)
        if sparsity_type == "filter":
            module_name = name.rpartition(".")[0]
            found = _following_batchnorm(model, module_name)
            if found is not None:
                bn_name, bn = found
                channel = (masks[name].reshape(masks[name].shape[0], -1) != 0).any(dim=1)
                for bn_attr in ("weight", "bias"):
                    if _current_value(bn, bn_attr) is None:
                        continue
                    param = getattr(bn, bn_attr + "_orig", getattr(bn, bn_attr))
                    m = channel.to(device=param.device, dtype=param.dtype)
                    masks[f"{bn_name}.{bn_attr}"] = _attach(bn, bn_attr, m)
    return masks


def _measure(model: nn.Module, sparsity_type: str) -> dict:
    if sparsity_type not in SPARSITY_TYPES:
        raise ValueError(f"unknown sparsity_type {sparsity_type!r}; choose one of {SPARSITY_TYPES}")
    layers, zero_filters, rows = {}, {}, []
    total_zeros = total = 0
    for name in prunable_weights(model):
        module, attr = _resolve(model, name)
        w = _current_value(module, attr)
        zeros = int((w == 0).sum().item())
        n = w.numel()
        total_zeros += zeros
        total += n
        layers[name] = zeros / n if n else 0.0
        row = [name, zeros, n, layers[name]]
        if sparsity_type == "filter":
            c = w.shape[0]
            zf = int((w.reshape(c, -1) == 0).all(dim=1).sum().item()) if w.dim() > 0 else 0
            zero_filters[name] = zf
            row += [zf, c]
        rows.append(row)
    result = {"overall": total_zeros / total if total else 0.0, "layers": layers}
    if sparsity_type == "filter":
        result["zero_filters"] = zero_filters
    return result, rows


def test_sparsity(model: nn.Module, sparsity_type: str = "unstructured") -> dict:
    result, rows = _measure(model, sparsity_type)
    header = f"{'layer':<24} {'zeros':>10} {'total':>10} {'sparsity':>9}"
    if sparsity_type == "filter":
        header += f" {'zero filt':>10}"
    print(header)
    for row in rows:
        line = f"{row[0]:<24} {row[1]:>10d} {row[2]:>10d} {row[3]:>9.4f}"
        if sparsity_type == "filter":
            line += f" {f'{row[4]}/{row[5]}':>10}"
        print(line)
    print(f"overall sparsity: {result['overall']:.4f}")
    return result


def masked_retrain(model: nn.Module, prune_masks: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
                   loss_fn, train_loader, test_loader, num_epochs: int, device, scheduler=None,
                   progress: bool = True) -> list[dict]:
    if isinstance(num_epochs, bool) or not isinstance(num_epochs, numbers.Integral) or num_epochs < 0:
        raise ValueError(f"num_epochs must be a whole number >= 0, got {num_epochs!r}")
    targets = []  # (tensor to keep masked in place, mask on its device and dtype)
    for name, mask in prune_masks.items():
        module, attr = _resolve(model, name)
        param = getattr(module, attr + "_orig") if hasattr(module, attr + "_orig") else getattr(module, attr)
        if tuple(mask.shape) != tuple(param.shape):
            raise ValueError(f"mask of {name} has shape {tuple(mask.shape)}, the parameter {tuple(param.shape)}")
        targets.append((param, mask.detach().to(device=param.device, dtype=param.dtype)))

    @torch.no_grad()
    def reapply():
        for param, mask in targets:
            param.mul_(mask)

    reapply()
    history = []
    for epoch in range(num_epochs):
        stats = train_epoch(model, train_loader, optimizer, loss_fn, device, scheduler, reapply,
                            desc=f"masked retrain {epoch + 1}/{num_epochs}", progress=progress)
        stats["test_accuracy"] = evaluate(model, test_loader, device)
        stats["epoch"] = epoch + 1
        history.append(stats)
    return history


def _retrain(model, masks, train_loader, test_loader, epochs, device, lr, weight_decay, progress):
    optimizer = make_optimizer(model, lr, weight_decay=weight_decay)
    scheduler = make_scheduler(optimizer, max(1, epochs * len(train_loader)))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)
    return masked_retrain(model, masks, optimizer, loss_fn, train_loader, test_loader, epochs, device,
                          scheduler=scheduler, progress=progress)


def _prune_step(model, sparsity_type, ratios, iteration, *, train_loader, test_loader, epochs, device, lr,
                weight_decay, progress):
    masks = apply_pruning(model, sparsity_type, ratios)
    sparsity = _measure(model, sparsity_type)[0]["overall"]
    before = evaluate(model, test_loader, device, exact=True)
    history = _retrain(model, masks, train_loader, test_loader, epochs, device, lr, weight_decay, progress)
    after = evaluate(model, test_loader, device, exact=True)
    return {"iteration": iteration, "ratios": dict(ratios), "sparsity": sparsity,
            "accuracy_before_retrain": before, "accuracy": after, "history": history}


def oneshot_magnitude_prune(model: nn.Module, sparsity_type: str, prune_ratio_dict: dict[str, float], *,
                            train_loader, test_loader, epochs: int, device, lr: float = 0.01,
                            weight_decay: float = 5e-4, progress: bool = True) -> list[dict]:
    if sparsity_type not in SPARSITY_TYPES:
        raise ValueError(f"unknown sparsity_type {sparsity_type!r}; choose one of {SPARSITY_TYPES}")
    return [_prune_step(model, sparsity_type, dict(prune_ratio_dict), 1, train_loader=train_loader,
                        test_loader=test_loader, epochs=epochs, device=device, lr=lr,
                        weight_decay=weight_decay, progress=progress)]


def iterative_magnitude_prune(model: nn.Module, sparsity_type: str, prune_ratio_dict: dict[str, float], *,
                              iterations: int = 3, train_loader, test_loader, epochs: int, device,
                              lr: float = 0.01, weight_decay: float = 5e-4, progress: bool = True) -> list[dict]:
    if isinstance(iterations, bool) or not isinstance(iterations, numbers.Integral) or iterations < MIN_IMP_ITERATIONS:
        raise ValueError(f"iterations must be a whole number >= {MIN_IMP_ITERATIONS}, got {iterations!r}")
    if sparsity_type not in SPARSITY_TYPES:
        raise ValueError(f"unknown sparsity_type {sparsity_type!r}; choose one of {SPARSITY_TYPES}")
    targets = {name: _check_fraction(r, f"ratio of {name}") for name, r in prune_ratio_dict.items()}
    log = []
    for t in range(1, iterations + 1):
        if t == iterations:
            ratios = dict(targets)
        else:
            ratios = {name: min(target, 1.0 - (1.0 - target) ** (t / iterations)) for name, target in targets.items()}
        log.append(_prune_step(model, sparsity_type, ratios, t, train_loader=train_loader, test_loader=test_loader,
                               epochs=epochs, device=device, lr=lr, weight_decay=weight_decay, progress=progress))
    return log


def prune_channels_after_filter_prune(model: nn.Module) -> nn.Module:
    if not (hasattr(model, "features") and hasattr(model, "classifier")):
        raise ValueError("prune_channels_after_filter_prune needs a VGG-style model with .features and .classifier")
    new = copy_without_pruning(model)
    features = new.features
    keep_in = None  # indices of the input channels kept for the next layer
    last_conv_out = None
    with torch.no_grad():
        for idx, module in enumerate(list(features)):
            if isinstance(module, nn.Conv2d):
                if module.groups != 1:
                    raise ValueError("grouped convolutions are not supported")
                w = module.weight.detach()
                keep = (w.reshape(w.shape[0], -1) != 0).any(dim=1).nonzero().flatten()
                if keep.numel() == 0:  # every filter pruned: PyTorch cannot run a 0-channel conv; keep one zero filter
                    keep = torch.zeros(1, dtype=torch.long, device=w.device)
                w_new = w[keep]
                if keep_in is not None:
                    w_new = w_new[:, keep_in]
                conv = nn.Conv2d(w_new.shape[1], w_new.shape[0], module.kernel_size, stride=module.stride,
                                 padding=module.padding, dilation=module.dilation, bias=module.bias is not None,
                                 padding_mode=module.padding_mode).to(device=w.device, dtype=w.dtype)
                conv.weight.copy_(w_new)
                if module.bias is not None:
                    conv.bias.copy_(module.bias.detach()[keep])
                features[idx] = conv
                keep_in = keep
                last_conv_out = w.shape[0]
            elif isinstance(module, nn.BatchNorm2d) and keep_in is not None and module.num_features == last_conv_out:
                bn = nn.BatchNorm2d(len(keep_in), eps=module.eps, momentum=module.momentum, affine=module.affine,
                                    track_running_stats=module.track_running_stats)
                ref = module.running_mean if module.running_mean is not None else module.weight
                bn = bn.to(device=ref.device, dtype=ref.dtype)
                if module.affine:
                    bn.weight.copy_(module.weight.detach()[keep_in])
                    bn.bias.copy_(module.bias.detach()[keep_in])
                if module.track_running_stats:
                    bn.running_mean.copy_(module.running_mean[keep_in])
                    bn.running_var.copy_(module.running_var[keep_in])
                    bn.num_batches_tracked.copy_(module.num_batches_tracked)
                features[idx] = bn
        if keep_in is not None:
            holder, attr_name = new, "classifier"
            linear = new.classifier
            if isinstance(linear, nn.Sequential):
                first = next((i for i, m in enumerate(linear) if isinstance(m, nn.Linear)), None)
                if first is None:
                    raise ValueError("the classifier has no Linear layer")
                holder, attr_name, linear = linear, str(first), linear[first]
            if not isinstance(linear, nn.Linear):
                raise ValueError("the classifier must be a Linear layer (or a Sequential starting with one)")
            if linear.in_features % last_conv_out:
                raise ValueError(f"classifier in_features {linear.in_features} is not a multiple of {last_conv_out} channels")
            spatial = linear.in_features // last_conv_out
            cols = (keep_in.reshape(-1, 1) * spatial + torch.arange(spatial, device=keep_in.device)).flatten()
            w = linear.weight.detach()
            fc = nn.Linear(len(cols), linear.out_features, bias=linear.bias is not None).to(device=w.device, dtype=w.dtype)
            fc.weight.copy_(w[:, cols])
            if linear.bias is not None:
                fc.bias.copy_(linear.bias.detach())
            if isinstance(holder, nn.Sequential):
                holder[int(attr_name)] = fc
            else:
                setattr(holder, attr_name, fc)
    new.train(model.training)
    return new


def plot_sparsity_vs_accuracy(records: list[dict], out_path: str | Path, dense_accuracy: float | None = None,
                              title: str = "VGG13 on CIFAR-10: accuracy vs sparsity") -> list[tuple[str, float, float]]:
    points = []
    for i, rec in enumerate(records):
        missing = [k for k in ("label", "sparsity", "accuracy") if k not in rec]
        if missing:
            raise ValueError(f"record {i} lacks {', '.join(missing)}")
        points.append((str(rec["label"]), float(rec["sparsity"]), float(rec["accuracy"])))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    try:
        markers = "osD^vP*X"
        for i, (label, s, a) in enumerate(points):
            ax.scatter([s], [a], marker=markers[i % len(markers)], s=60, label=label, zorder=3)
            ax.annotate(f"{label}\n{a:.2f}%", (s, a), textcoords="offset points", xytext=(6, 6), fontsize=8)
        if dense_accuracy is not None:
            ax.axhline(float(dense_accuracy), color="grey", linestyle="--", label=f"dense ({float(dense_accuracy):.2f}%)")
        ax.set_xlabel("overall sparsity (fraction of zero Conv2d/Linear weights)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        if points or dense_accuracy is not None:
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_path, dpi=FIGURE_DPI, format="png")
    finally:
        plt.close(fig)
    return points


def plot_mask(weight: torch.Tensor, out_path: str | Path, title: str = "") -> np.ndarray:
    if not isinstance(weight, torch.Tensor):
        raise ValueError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
    if weight.dim() < 1:
        raise ValueError("plot_mask needs a weight with at least one dimension")
    w = weight.detach()
    image = (w.reshape(w.shape[0], -1) != 0).cpu().numpy().astype(np.uint8)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    rows, cols = image.shape
    fig, ax = plt.subplots(figsize=(min(12.0, max(4.0, cols / 40)), min(8.0, max(2.5, rows / 15))))
    try:
        ax.imshow(image, cmap=ListedColormap(MASK_COLOURS), vmin=0, vmax=1, interpolation="nearest", aspect="auto")
        ax.set_xlabel("input channel x kernel position")
        ax.set_ylabel("filter (output channel)")
        kept = image.mean() if image.size else 0.0
        ax.set_title(f"{title}\nkept {kept:.1%}, pruned {1 - kept:.1%}" if title else f"kept {kept:.1%}, pruned {1 - kept:.1%}")
        ax.legend(handles=[Patch(color=MASK_COLOURS[1], label="kept"), Patch(color=MASK_COLOURS[0], label="pruned")],
                  loc="upper right", fontsize=8, framealpha=0.9)
        fig.tight_layout()
        fig.savefig(out_path, dpi=FIGURE_DPI, format="png")
    finally:
        plt.close(fig)
    return image
