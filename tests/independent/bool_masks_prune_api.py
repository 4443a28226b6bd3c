"""HW2 pruning, an independent solution. Written from the student release alone: bool masks,
torch.nn.utils.prune.custom_from_mask, kthvalue thresholds with ties pruned in position order, a linear IMP
schedule, compaction by setattr on a deep copy.
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


# ---------------------------------------------------------------------------------------------
# Helpers of my own (not graded on their own)
# ---------------------------------------------------------------------------------------------
def _count(sparsity: float, n: int) -> int:
    sparsity = float(sparsity)
    if not (0.0 <= sparsity <= 1.0):  # also catches NaN
        raise ValueError(f"sparsity must be a fraction in [0, 1), got {sparsity!r}")
    return max(0, min(n, int(round(sparsity * n))))


def _keep_all_but_smallest(scores: torch.Tensor, k: int) -> torch.Tensor:
    n = scores.numel()
    keep = torch.ones(n, dtype=torch.bool, device=scores.device)
    if k <= 0:
        return keep
    if k >= n:
        return ~keep
    threshold = torch.kthvalue(scores, k).values
    below = scores < threshold
    keep[below] = False
    tied = (scores == threshold).nonzero().flatten()
    need = k - int(below.sum())
    keep[tied[:need]] = False
    return keep


def _split_name(name: str) -> tuple[str, str]:
    module_name, _, tensor_name = name.rpartition(".")
    return module_name, tensor_name


def _module(model: nn.Module, module_name: str) -> nn.Module:
    return model.get_submodule(module_name) if module_name else model


def _current(module: nn.Module, tensor_name: str) -> torch.Tensor:
    orig = getattr(module, tensor_name + "_orig", None)
    mask = getattr(module, tensor_name + "_mask", None)
    if orig is not None and mask is not None:
        return (orig * mask).detach()
    return getattr(module, tensor_name).detach()


def _trainable(module: nn.Module, tensor_name: str) -> torch.Tensor:
    orig = module._parameters.get(tensor_name + "_orig")
    return orig if orig is not None else getattr(module, tensor_name)


def _layer_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _batchnorm_after(model: nn.Module, conv_name: str) -> tuple[str, nn.Module] | None:
    modules = list(model.named_modules())
    names = [n for n, _ in modules]
    if conv_name not in names:
        return None
    conv = modules[names.index(conv_name)][1]
    for name, module in modules[names.index(conv_name) + 1:]:
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if module.affine and module.num_features == conv.weight.shape[0]:
                return name, module
            return None
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            return None
    return None


def _attach(module: nn.Module, tensor_name: str, mask: torch.Tensor) -> torch.Tensor:
    reference = _trainable(module, tensor_name)
    prune.custom_from_mask(module, tensor_name, mask.to(device=reference.device, dtype=reference.dtype))
    return getattr(module, tensor_name + "_mask").detach().clone()


def _attach_filter_mask(model: nn.Module, name: str, filter_keep: torch.Tensor) -> dict[str, torch.Tensor]:
    module_name, tensor_name = _split_name(name)
    module = _module(model, module_name)
    weight = _current(module, tensor_name)
    keep = filter_keep.to(weight.device).bool()
    full = keep.view(-1, *([1] * (weight.dim() - 1))).expand(weight.shape).contiguous()
    masks = {name: _attach(module, tensor_name, full)}
    found = _batchnorm_after(model, module_name)
    if found is not None:
        bn_name, bn = found
        for part in ("weight", "bias"):
            masks[f"{bn_name}.{part}"] = _attach(bn, part, keep)
    return masks


def _accuracy(model: nn.Module, loader, device) -> float:
    model.eval()
    correct, seen = 0, 0
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            logits = model(x).float()
            correct += int((logits.argmax(dim=1) == y).sum())
            seen += int(y.numel())
    return 100.0 * correct / max(seen, 1)


def _retraining_setup(model: nn.Module, lr: float, weight_decay: float, total_steps: int):
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.dim() > 1 else no_decay).append(parameter)
    optimizer = torch.optim.SGD([{"params": decay, "weight_decay": weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=lr, momentum=0.9, nesterov=True)
    total = max(1, int(total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1.0 + float(np.cos(np.pi * min(step / total, 1.0)))))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)
    return optimizer, scheduler, loss_fn


def _prune_and_retrain_round(model, sparsity_type, ratios, iteration, *, train_loader, test_loader, epochs, device,
                             lr, weight_decay, progress) -> dict:
    masks = apply_pruning(model, sparsity_type, ratios)
    sparsity = test_sparsity(model, sparsity_type)["overall"]
    before = _accuracy(model, test_loader, device)
    optimizer, scheduler, loss_fn = _retraining_setup(model, lr, weight_decay, epochs * len(train_loader))
    history = masked_retrain(model, masks, optimizer, loss_fn, train_loader, test_loader, epochs, device,
                             scheduler=scheduler, progress=progress)
    after = history[-1]["test_accuracy"] if history else before
    print(f"round {iteration}: sparsity {sparsity:.4f}, test accuracy {before:.2f}% -> {after:.2f}%")
    return {"iteration": iteration, "ratios": dict(ratios), "sparsity": sparsity,
            "accuracy_before_retrain": before, "accuracy": after}


def read_prune_ratios_from_yaml(file_name: str | Path, model: nn.Module) -> dict[str, float]:
    class _UniqueKeyLoader(yaml.SafeLoader):
        pass

    def _mapping(loader, node, deep=False):
        loader.flatten_mapping(node)
        seen = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:
                raise ValueError(f"{file_name}: line {key_node.start_mark.line + 1}: unhashable key {key!r}") from None
            if duplicate:
                raise ValueError(f"{file_name}: line {key_node.start_mark.line + 1}: {key!r} is given twice")
            seen.add(key)
        return loader.construct_mapping(node, deep=deep)

    _UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)

    text = Path(file_name).read_text()
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "unknown line"
        raise ValueError(f"{file_name}: malformed YAML at {where}: {exc}") from None
    if not isinstance(data, dict) or "prune_ratios" not in data:
        raise ValueError(f"{file_name}: no top-level 'prune_ratios' mapping")
    ratios = data["prune_ratios"]
    if not isinstance(ratios, dict):
        raise ValueError(f"{file_name}: 'prune_ratios' must be a mapping of layer name -> ratio, "
                         f"got {type(ratios).__name__}")
    valid = list(prunable_weights(model))
    result: dict[str, float] = {}
    for name, ratio in ratios.items():
        if not isinstance(name, str) or name not in valid:
            raise ValueError(f"{file_name}: {name!r} is not a Conv2d/Linear weight of the model; "
                             f"valid names: {', '.join(valid)}")
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
            raise ValueError(f"{file_name}: the ratio of {name} must be a number in [0, 1), got {ratio!r}")
        ratio = float(ratio)
        if not (0.0 <= ratio < 1.0):  # NaN fails this too
            raise ValueError(f"{file_name}: the ratio of {name} must be in [0, 1), got {ratio!r}")
        result[name] = ratio
    return result


def unstructured_prune(tensor: torch.Tensor, sparsity: float) -> torch.Tensor:
    scores = tensor.detach().abs().reshape(-1).float()
    keep = _keep_all_but_smallest(scores, _count(sparsity, scores.numel()))
    return keep.reshape(tensor.shape)


def filter_prune(tensor: torch.Tensor, sparsity: float) -> torch.Tensor:
    weight = tensor.detach()
    norms = weight.reshape(weight.shape[0], -1).float().norm(p=2, dim=1)
    keep = _keep_all_but_smallest(norms, _count(sparsity, weight.shape[0]))
    return keep.view(-1, *([1] * (weight.dim() - 1))).expand(weight.shape).contiguous()


def apply_pruning(model: nn.Module, sparsity_type: str, prune_ratio_dict: dict[str, float]) -> dict[str, torch.Tensor]:
    if sparsity_type not in SPARSITY_TYPES:
        raise ValueError(f"unknown sparsity_type {sparsity_type!r}; choose one of {SPARSITY_TYPES}")
    valid = prunable_weights(model)
    masks: dict[str, torch.Tensor] = {}
    for name, ratio in prune_ratio_dict.items():
        if name not in valid:
            raise ValueError(f"{name!r} is not a Conv2d/Linear weight of the model; valid names: {', '.join(valid)}")
        module_name, tensor_name = _split_name(name)
        module = _module(model, module_name)
        weight = _current(module, tensor_name)  # the weights as they are now (after any retraining)
        if sparsity_type == "unstructured":
            masks[name] = _attach(module, tensor_name, unstructured_prune(weight, ratio))
        else:
            filter_keep = filter_prune(weight, ratio).reshape(weight.shape[0], -1).all(dim=1)
            masks.update(_attach_filter_mask(model, name, filter_keep))
    return masks


def test_sparsity(model: nn.Module, sparsity_type: str = "unstructured") -> dict:
    layers: dict[str, float] = {}
    zero_filters: dict[str, int] = {}
    total_zeros, total = 0, 0
    rows = []
    for module_name, module in _layer_modules(model):
        name = f"{module_name}.weight" if module_name else "weight"
        weight = _current(module, "weight")
        zeros, count = int((weight == 0).sum()), weight.numel()
        layers[name] = zeros / count
        total_zeros += zeros
        total += count
        filters = int((weight.reshape(weight.shape[0], -1) == 0).all(dim=1).sum())
        zero_filters[name] = filters
        rows.append((name, zeros, count, zeros / count, filters, weight.shape[0]))
    overall = total_zeros / total if total else 0.0
    header = f"{'layer':<24}{'zeros':>12}{'total':>12}{'sparsity':>10}"
    if sparsity_type == "filter":
        header += f"{'zero filters':>16}"
    print(header)
    for name, zeros, count, fraction, filters, out in rows:
        line = f"{name:<24}{zeros:>12}{count:>12}{fraction:>10.4f}"
        if sparsity_type == "filter":
            line += f"{f'{filters}/{out}':>16}"
        print(line)
    print(f"{'overall':<24}{total_zeros:>12}{total:>12}{overall:>10.4f}")
    report = {"overall": overall, "layers": layers}
    if sparsity_type == "filter":
        report["zero_filters"] = zero_filters
    return report


def masked_retrain(model: nn.Module, prune_masks: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
                   loss_fn, train_loader, test_loader, num_epochs: int, device, scheduler=None,
                   progress: bool = True) -> list[dict]:
    from tqdm import tqdm

    from hw2.train import autocast

    # The parameters the optimizer moves, each with its mask (on its device and dtype): after every step the
    # pruned entries are set back to exactly zero in place, whichever state the model is in.
    held = []
    for name, mask in prune_masks.items():
        module_name, tensor_name = _split_name(name)
        parameter = _trainable(_module(model, module_name), tensor_name)
        held.append((parameter, mask.to(device=parameter.device, dtype=parameter.dtype)))

    def enforce() -> None:
        with torch.no_grad():
            for parameter, mask in held:
                parameter.mul_(mask)

    enforce()
    history = []
    for epoch in range(num_epochs):
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        batches = tqdm(train_loader, desc=f"masked retrain {epoch + 1}/{num_epochs}", leave=False,
                       disable=not progress)
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            with autocast(device):
                logits = model(x)
                loss = loss_fn(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            enforce()
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.detach().argmax(dim=1) == y).sum())
            seen += len(y)
        test_accuracy = _accuracy(model, test_loader, device)
        entry = {"epoch": epoch + 1, "loss": loss_sum / max(seen, 1), "accuracy": 100.0 * correct / max(seen, 1),
                 "test_accuracy": test_accuracy}
        history.append(entry)
        if progress:
            print(f"masked retrain epoch {epoch + 1}/{num_epochs}: loss {entry['loss']:.3f}, "
                  f"train {entry['accuracy']:.2f}%, test {test_accuracy:.2f}%")
    return history


def oneshot_magnitude_prune(model: nn.Module, sparsity_type: str, prune_ratio_dict: dict[str, float], *,
                            train_loader, test_loader, epochs: int, device, lr: float = 0.01,
                            weight_decay: float = 5e-4, progress: bool = True) -> list[dict]:
    if sparsity_type not in SPARSITY_TYPES:
        raise ValueError(f"unknown sparsity_type {sparsity_type!r}; choose one of {SPARSITY_TYPES}")
    entry = _prune_and_retrain_round(model, sparsity_type, dict(prune_ratio_dict), 1, train_loader=train_loader,
                                     test_loader=test_loader, epochs=epochs, device=device, lr=lr,
                                     weight_decay=weight_decay, progress=progress)
    return [entry]


def iterative_magnitude_prune(model: nn.Module, sparsity_type: str, prune_ratio_dict: dict[str, float], *,
                              iterations: int = 3, train_loader, test_loader, epochs: int, device,
                              lr: float = 0.01, weight_decay: float = 5e-4, progress: bool = True) -> list[dict]:
    if iterations < MIN_IMP_ITERATIONS:
        raise ValueError(f"iterative pruning needs at least {MIN_IMP_ITERATIONS} rounds, got iterations={iterations}")
    if sparsity_type not in SPARSITY_TYPES:
        raise ValueError(f"unknown sparsity_type {sparsity_type!r}; choose one of {SPARSITY_TYPES}")
    targets = dict(prune_ratio_dict)
    log = []
    for t in range(1, iterations + 1):
        # linear in sparsity: t/iterations of each layer's target, exactly the target in the last round
        ratios = {name: (target if t == iterations else target * t / iterations) for name, target in targets.items()}
        log.append(_prune_and_retrain_round(model, sparsity_type, ratios, t, train_loader=train_loader,
                                            test_loader=test_loader, epochs=epochs, device=device, lr=lr,
                                            weight_decay=weight_decay, progress=progress))
    return log


def prune_channels_after_filter_prune(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        new = copy_without_pruning(model)  # a deep copy with plain parameters, zeros in place; model untouched
        new = new.to(memory_format=torch.contiguous_format)
        keep_prev: torch.Tensor | None = None  # channels kept by the last conv
        prev_channels = None  # that conv's original number of filters
        for name, module in list(new.named_modules()):
            parent_name, _, child = name.rpartition(".")
            parent = _module(new, parent_name)
            if isinstance(module, nn.Conv2d):
                if module.groups != 1:
                    raise ValueError(f"{name}: grouped convolutions are not supported")
                weight = module.weight
                keep = (weight.reshape(weight.shape[0], -1) != 0).any(dim=1).nonzero().flatten()
                if keep.numel() == 0:  # every filter pruned: keep one (all zero) so the model still runs
                    keep = torch.zeros(1, dtype=torch.long, device=weight.device)
                weight = torch.index_select(weight, 0, keep)
                if keep_prev is not None and weight.shape[1] == prev_channels:
                    weight = torch.index_select(weight, 1, keep_prev)
                conv = nn.Conv2d(weight.shape[1], weight.shape[0], module.kernel_size, stride=module.stride,
                                 padding=module.padding, dilation=module.dilation, bias=module.bias is not None,
                                 padding_mode=module.padding_mode).to(device=weight.device, dtype=weight.dtype)
                conv.weight.copy_(weight)
                if module.bias is not None:
                    conv.bias.copy_(torch.index_select(module.bias, 0, keep))
                conv.train(module.training)
                setattr(parent, child, conv)
                keep_prev, prev_channels = keep, module.out_channels
            elif isinstance(module, nn.BatchNorm2d) and keep_prev is not None and module.num_features == prev_channels:
                bn = nn.BatchNorm2d(keep_prev.numel(), eps=module.eps, momentum=module.momentum, affine=module.affine,
                                    track_running_stats=module.track_running_stats)
                bn = bn.to(device=keep_prev.device)
                if module.affine:
                    bn.weight.copy_(torch.index_select(module.weight, 0, keep_prev))
                    bn.bias.copy_(torch.index_select(module.bias, 0, keep_prev))
                if module.track_running_stats:
                    bn.running_mean.copy_(torch.index_select(module.running_mean, 0, keep_prev))
                    bn.running_var.copy_(torch.index_select(module.running_var, 0, keep_prev))
                    bn.num_batches_tracked.copy_(module.num_batches_tracked)
                bn.train(module.training)
                setattr(parent, child, bn)
            elif isinstance(module, nn.Linear) and keep_prev is not None:
                weight = module.weight
                if weight.shape[1] % prev_channels == 0:  # flattened (C, H, W): each channel owns a block of inputs
                    per_channel = weight.shape[1] // prev_channels
                    columns = (keep_prev.view(-1, 1) * per_channel
                               + torch.arange(per_channel, device=keep_prev.device).view(1, -1)).flatten()
                    weight = torch.index_select(weight, 1, columns)
                linear = nn.Linear(weight.shape[1], weight.shape[0], bias=module.bias is not None)
                linear = linear.to(device=weight.device, dtype=weight.dtype)
                linear.weight.copy_(weight)
                if module.bias is not None:
                    linear.bias.copy_(module.bias)
                linear.train(module.training)
                setattr(parent, child, linear)
                keep_prev, prev_channels = None, None  # a Linear's outputs are not pruned here
    return new


def plot_sparsity_vs_accuracy(records: list[dict], out_path: str | Path, dense_accuracy: float | None = None,
                              title: str = "VGG13 on CIFAR-10: accuracy vs sparsity") -> list[tuple[str, float, float]]:
    points = [(str(r["label"]), float(r["sparsity"]), float(r["accuracy"])) for r in records]
    fig, ax = plt.subplots(figsize=(7, 5))
    markers = ["o", "s", "^", "D", "v", "P", "X", "*"]
    for i, (label, sparsity, accuracy) in enumerate(points):
        ax.scatter([sparsity], [accuracy], s=60, marker=markers[i % len(markers)], label=label, zorder=3)
        ax.annotate(f"{accuracy:.2f}%", (sparsity, accuracy), textcoords="offset points", xytext=(6, 6), fontsize=8)
    if dense_accuracy is not None:
        ax.axhline(float(dense_accuracy), color="gray", linestyle="--", linewidth=1,
                   label=f"dense ({float(dense_accuracy):.2f}%)")
    ax.set_xlabel("overall sparsity (fraction of zero conv/linear weights)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_xlim(-0.02, 1.02)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if points or dense_accuracy is not None:
        ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out_path, dpi=FIGURE_DPI, format="png")
    plt.close(fig)
    return points


def plot_mask(weight: torch.Tensor, out_path: str | Path, title: str = "") -> np.ndarray:
    w = weight.detach().float().cpu()
    image = (w.reshape(w.shape[0], -1) != 0).numpy().astype(np.uint8)  # (C_out, C_in*kH*kW), 1 = kept
    rows, cols = image.shape
    fig, ax = plt.subplots(figsize=(min(12.0, max(4.0, cols / 40)), min(8.0, max(2.5, rows / 25))))
    ax.imshow(image, cmap=ListedColormap(MASK_COLOURS), vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    ax.set_xlabel("input weights of a filter (C_in x kH x kW)" if w.dim() > 2 else "input features")
    ax.set_ylabel("filter (output channel)")
    kept = float(image.mean()) if image.size else 0.0
    ax.set_title(f"{title}\nkept {100 * kept:.1f}%, pruned {100 * (1 - kept):.1f}%" if title
                 else f"kept {100 * kept:.1f}%, pruned {100 * (1 - kept):.1f}%")
    ax.legend(handles=[Patch(color=MASK_COLOURS[1], label="kept"), Patch(color=MASK_COLOURS[0], label="pruned")],
              loc="upper right", fontsize=8, framealpha=0.9)
    fig.tight_layout()
    fig.savefig(out_path, dpi=FIGURE_DPI, format="png")
    plt.close(fig)
    return image


# ---------------------------------------------------------------------------------------------
# Bonus (not required for HW2): global magnitude pruning, one threshold across layers
# ---------------------------------------------------------------------------------------------
def global_unstructured_prune(tensors: dict[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    names = list(tensors)
    if not names:
        return {}
    flats = [tensors[n].detach().abs().reshape(-1).float().cpu() for n in names]
    scores = torch.cat(flats)
    keep = _keep_all_but_smallest(scores, _count(sparsity, scores.numel()))  # ties: first positions pruned first
    masks, start = {}, 0
    for name, flat in zip(names, flats):
        tensor = tensors[name]
        part = keep[start:start + flat.numel()]
        start += flat.numel()
        masks[name] = part.reshape(tensor.shape).to(device=tensor.device, dtype=tensor.dtype)
    return masks


def global_magnitude_prune(model: nn.Module, sparsity: float, layer_names: list[str] | None = None, *,
                           iterations: int = 1, train_loader, test_loader, epochs: int, device,
                           lr: float = 0.01, weight_decay: float = 5e-4, progress: bool = True) -> list[dict]:
    if iterations < 1 or iterations == 2:
        raise ValueError(f"iterations must be 1 (one-shot) or at least 3 (iterative), got {iterations}")
    valid = prunable_weights(model)
    names = list(valid) if layer_names is None else list(layer_names)
    bad = [n for n in names if n not in valid]
    if bad:
        raise ValueError(f"not Conv2d/Linear weights of the model: {', '.join(map(str, bad))}; "
                         f"valid names: {', '.join(valid)}")
    if not (0.0 <= float(sparsity) < 1.0):
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}")
    log = []
    for t in range(1, iterations + 1):
        target = float(sparsity) if t == iterations else 1.0 - (1.0 - float(sparsity)) ** (t / iterations)
        current = {n: _current(_module(model, _split_name(n)[0]), _split_name(n)[1]) for n in names}
        new_masks = global_unstructured_prune(current, target)
        masks = {}
        for name, mask in new_masks.items():
            module_name, tensor_name = _split_name(name)
            masks[name] = _attach(_module(model, module_name), tensor_name, mask)
        report = test_sparsity(model, "unstructured")
        before = _accuracy(model, test_loader, device)
        optimizer, scheduler, loss_fn = _retraining_setup(model, lr, weight_decay, epochs * len(train_loader))
        history = masked_retrain(model, masks, optimizer, loss_fn, train_loader, test_loader, epochs, device,
                                 scheduler=scheduler, progress=progress)
        after = history[-1]["test_accuracy"] if history else before
        log.append({"iteration": t, "ratios": {"global": target}, "sparsity": report["overall"],
                    "layer_sparsity": report["layers"], "accuracy_before_retrain": before, "accuracy": after})
    return log


# ---------------------------------------------------------------------------------------------
# Bonus (not required for HW2): ThiNet-style filter selection, a data-driven criterion
# ---------------------------------------------------------------------------------------------
def next_layer_contributions(model: nn.Module, conv_name: str, images: torch.Tensor, samples: int = 1024,
                             seed: int = 0) -> torch.Tensor:
    modules = list(model.named_modules())
    names = [n for n, _ in modules]
    if conv_name not in names or not isinstance(modules[names.index(conv_name)][1], nn.Conv2d):
        raise ValueError(f"{conv_name!r} is not a Conv2d of the model")
    conv = modules[names.index(conv_name)][1]
    following = [(n, m) for n, m in modules[names.index(conv_name) + 1:] if isinstance(m, (nn.Conv2d, nn.Linear))]
    if not following:
        raise ValueError(f"{conv_name!r} has no Conv2d or Linear layer after it")
    next_name, next_layer = following[0]
    channels = conv.out_channels
    captured = {}

    def grab(_module, inputs):
        captured["x"] = inputs[0].detach()

    handle = next_layer.register_forward_pre_hook(grab)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(images)
    finally:
        handle.remove()
        model.train(was_training)
    x = captured["x"].float()
    w_next = _current(next_layer, "weight").float().to(x.device)
    if x.dim() < 2 or x.shape[1] != channels or w_next.shape[1] != channels:
        raise ValueError(f"the input of {next_name} has {x.shape[1] if x.dim() > 1 else '?'} channels, not one per "
                         f"filter of {conv_name} ({channels})")
    gen = torch.Generator().manual_seed(seed)
    n_images, outputs = x.shape[0], w_next.shape[0]
    sample_n = torch.randint(0, n_images, (samples,), generator=gen).to(x.device)
    sample_o = torch.randint(0, outputs, (samples,), generator=gen).to(x.device)
    if isinstance(next_layer, nn.Linear):
        x = x.reshape(n_images, channels)
        contributions = w_next[sample_o] * x[sample_n]  # (M, C)
        return contributions.float().cpu()
    if next_layer.groups != 1:
        raise ValueError(f"{next_name}: grouped convolutions are not supported")
    kh, kw = next_layer.kernel_size
    sh, sw = next_layer.stride
    dh, dw = next_layer.dilation
    if isinstance(next_layer.padding, str):
        raise ValueError(f"{next_name}: string padding is not supported")
    ph, pw = next_layer.padding
    padded = nn.functional.pad(x, (pw, pw, ph, ph))
    out_h = (x.shape[2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (x.shape[3] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    position = torch.randint(0, out_h * out_w, (samples,), generator=gen).to(x.device)
    rows = (position // out_w) * sh
    cols = (position % out_w) * sw
    di = torch.arange(kh, device=x.device) * dh
    dj = torch.arange(kw, device=x.device) * dw
    c = torch.arange(channels, device=x.device)
    patches = padded[sample_n.view(-1, 1, 1, 1), c.view(1, -1, 1, 1),
                     (rows.view(-1, 1, 1, 1) + di.view(1, 1, -1, 1)),
                     (cols.view(-1, 1, 1, 1) + dj.view(1, 1, 1, -1))]  # (M, C, kh, kw)
    contributions = (patches * w_next[sample_o]).sum(dim=(2, 3))  # (M, C)
    return contributions.float().cpu()


def thinet_select_filters(contributions: torch.Tensor, sparsity: float) -> torch.Tensor:
    values = contributions.detach().to(torch.float64)
    channels = values.shape[1]
    k = _count(sparsity, channels)
    running = torch.zeros(values.shape[0], dtype=torch.float64, device=values.device)
    removed = torch.zeros(channels, dtype=torch.bool, device=values.device)
    for _ in range(k):
        cost = ((running.view(-1, 1) + values) ** 2).sum(dim=0)  # (C,)
        cost[removed] = float("inf")
        best = int(torch.argmin(cost))  # first minimum: ties go to the lower index
        removed[best] = True
        running += values[:, best]
    return (~removed).to(contributions.dtype)


def apply_thinet_pruning(model: nn.Module, prune_ratio_dict: dict[str, float], images: torch.Tensor,
                         samples: int = 1024) -> dict[str, torch.Tensor]:
    valid = prunable_weights(model)
    masks: dict[str, torch.Tensor] = {}
    for name, ratio in prune_ratio_dict.items():
        module_name, _ = _split_name(name)
        if name not in valid or not isinstance(_module(model, module_name), nn.Conv2d):
            raise ValueError(f"{name!r} is not a Conv2d weight of the model")
        contributions = next_layer_contributions(model, module_name, images, samples=samples)
        keep = thinet_select_filters(contributions, ratio).bool()
        masks.update(_attach_filter_mask(model, name, keep))
    return masks
