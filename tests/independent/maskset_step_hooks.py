"""HW2 pruning, an independent solution. Written from the student release alone: a MaskSet class, optimizer step post-
hooks, topk ranking, a cubic IMP schedule, compaction that rewrites each layer in place.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import matplotlib

matplotlib.use("Agg")  # figures go to files; no screen needed
import matplotlib.pyplot as plt
import numpy as np
import torch
import yaml
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
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
# Building blocks: where a masked tensor lives, a set of masks that knows how to hold itself,
# and a layer-wise pruner.  The graded functions below are thin, typed front-ends to these.
# ---------------------------------------------------------------------------------------------
def _split_name(name: str) -> tuple[str, str]:
    module_name, _, tensor_name = name.rpartition(".")
    return module_name, tensor_name


def _pruning_hook(module: nn.Module, tensor_name: str) -> prune.BasePruningMethod | None:
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, prune.BasePruningMethod) and hook._tensor_name == tensor_name:
            return hook
    return None


def _storage(module: nn.Module, tensor_name: str) -> torch.Tensor:
    orig = module._parameters.get(f"{tensor_name}_orig")
    if orig is not None:
        return orig
    tensor = module._parameters.get(tensor_name)
    if tensor is None:
        tensor = module._buffers.get(tensor_name)
    if tensor is None:
        raise ValueError(f"{type(module).__name__} has no tensor {tensor_name!r}")
    return tensor


def _current(module: nn.Module, tensor_name: str) -> torch.Tensor:
    orig = module._parameters.get(f"{tensor_name}_orig")
    mask = module._buffers.get(f"{tensor_name}_mask")
    if orig is not None and mask is not None:
        return (orig * mask).detach()
    return getattr(module, tensor_name).detach()


def _broadcast_mask(mask: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    if mask.dim() == 1 and len(shape) > 1 and mask.numel() == shape[0]:
        return mask.reshape(-1, *([1] * (len(shape) - 1)))
    return mask


def _following_batchnorm(model: nn.Module, module_name: str) -> str | None:
    leaves = [(name, module) for name, module in model.named_modules() if not any(True for _ in module.children())]
    names = [name for name, _ in leaves]
    if module_name not in names:
        return None
    index = names.index(module_name)
    if index + 1 >= len(leaves):
        return None
    layer = leaves[index][1]
    channels = getattr(layer, "out_channels", getattr(layer, "out_features", None))
    name, follower = leaves[index + 1]
    if isinstance(follower, nn.modules.batchnorm._BatchNorm) and follower.num_features == channels:
        return name
    return None


class MaskSet:

    def __init__(self, masks: dict[str, torch.Tensor] | None = None) -> None:
        self._masks: dict[str, torch.Tensor] = dict(masks or {})

    def __setitem__(self, name: str, mask: torch.Tensor) -> None:
        self._masks[name] = mask

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._masks[name]

    def __contains__(self, name: object) -> bool:
        return name in self._masks

    def __len__(self) -> int:
        return len(self._masks)

    def items(self):
        return self._masks.items()

    def update(self, other: "MaskSet") -> None:
        self._masks.update(other._masks)

    def as_dict(self) -> dict[str, torch.Tensor]:
        return dict(self._masks)

    def attach(self, model: nn.Module) -> None:
        with torch.no_grad():
            for name, mask in self._masks.items():
                module_name, tensor_name = _split_name(name)
                module = model.get_submodule(module_name)
                storage = _storage(module, tensor_name)
                mask = _broadcast_mask(mask, storage.shape).to(storage.device, storage.dtype).expand_as(storage)
                hook = _pruning_hook(module, tensor_name)
                if hook is None:
                    prune.custom_from_mask(module, tensor_name, mask.clone())
                else:  # already masked: replace the mask in place, refresh the computed tensor now
                    module._buffers[f"{tensor_name}_mask"].copy_(mask)
                    setattr(module, tensor_name, hook.apply_mask(module))

    def zero_(self, model: nn.Module) -> None:
        with torch.no_grad():
            for name, mask in self._masks.items():
                module_name, tensor_name = _split_name(name)
                storage = _storage(model.get_submodule(module_name), tensor_name)
                storage.mul_(_broadcast_mask(mask, storage.shape).to(storage.device, storage.dtype))

    @contextmanager
    def enforced(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> Iterator[None]:
        self.zero_(model)
        handle = optimizer.register_step_post_hook(lambda _optimizer, _args, _kwargs: self.zero_(model))
        try:
            yield
        finally:
            handle.remove()


class Pruner:

    def __init__(self, sparsity_type: str) -> None:
        if sparsity_type not in SPARSITY_TYPES:
            raise ValueError(f"unknown sparsity_type {sparsity_type!r}; choose one of {', '.join(SPARSITY_TYPES)}")
        self.sparsity_type = sparsity_type

    def layer_mask(self, weight: torch.Tensor, ratio: float) -> torch.Tensor:
        # looked up at call time, so a replaced module-level function is the one used
        rank = unstructured_prune if self.sparsity_type == "unstructured" else filter_prune
        return rank(weight, ratio)

    @staticmethod
    def _combined(module: nn.Module, tensor_name: str, new: torch.Tensor) -> torch.Tensor:
        old = module._buffers.get(f"{tensor_name}_mask")
        return new if old is None else new * old.to(new.device, new.dtype)

    def filter_masks(self, model: nn.Module, module_name: str, keep: torch.Tensor) -> MaskSet:
        module = model.get_submodule(module_name)
        weight = _current(module, "weight")
        keep = keep.reshape(-1).to(weight.device, weight.dtype)
        masks = MaskSet()
        full = _broadcast_mask(keep, weight.shape).expand_as(weight).clone()
        full = self._combined(module, "weight", full)
        masks[f"{module_name}.weight"] = full
        channels = (full.reshape(full.shape[0], -1) != 0).any(dim=1)
        batchnorm_name = _following_batchnorm(model, module_name)
        if batchnorm_name is not None:
            batchnorm = model.get_submodule(batchnorm_name)
            for tensor_name in ("weight", "bias"):
                if getattr(batchnorm, tensor_name, None) is None:
                    continue
                value = _current(batchnorm, tensor_name)
                masks[f"{batchnorm_name}.{tensor_name}"] = self._combined(
                    batchnorm, tensor_name, channels.to(value.device, value.dtype))
        return masks

    def prune(self, model: nn.Module, ratios: dict[str, float]) -> MaskSet:
        valid = prunable_weights(model)
        unknown = [name for name in ratios if name not in valid]
        if unknown:
            raise ValueError(f"not Conv2d/Linear weights of the model: {', '.join(unknown)}; valid: {', '.join(valid)}")
        masks = MaskSet()
        for name, ratio in ratios.items():
            module_name, tensor_name = _split_name(name)
            module = model.get_submodule(module_name)
            weight = _current(module, tensor_name)
            mask = _broadcast_mask(self.layer_mask(weight.clone(), float(ratio)), weight.shape)
            mask = mask.to(weight.device, weight.dtype).expand_as(weight).clone()
            if self.sparsity_type == "unstructured":
                masks[name] = self._combined(module, tensor_name, mask)
            else:
                masks.update(self.filter_masks(model, module_name, (mask.reshape(mask.shape[0], -1) != 0).any(dim=1)))
        masks.attach(model)
        return masks


def _cubic_ratio(target: float, step: int, steps: int) -> float:
    if step >= steps:
        return float(target)
    return float(target) * (1.0 - (1.0 - step / steps) ** 3)


def _make_retrain_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.SGD:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for module in model.modules():
        is_layer = isinstance(module, (nn.Conv2d, nn.Linear))
        for name, parameter in module.named_parameters(recurse=False):
            if parameter.requires_grad:
                (decay if is_layer and name in ("weight", "weight_orig") else no_decay).append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD([g for g in groups if g["params"]], lr=lr, momentum=0.9, nesterov=True)


@dataclass
class _Retraining:
    train_loader: object
    test_loader: object
    epochs: int
    device: object
    lr: float
    weight_decay: float
    progress: bool

    def accuracy(self, model: nn.Module) -> float:
        return evaluate(model, self.test_loader, self.device, exact=True)

    def __call__(self, model: nn.Module, masks: dict[str, torch.Tensor]) -> tuple[float, float]:
        before = self.accuracy(model)
        optimizer = _make_retrain_optimizer(model, self.lr, self.weight_decay)
        scheduler = make_scheduler(optimizer, max(1, self.epochs * len(self.train_loader)))
        loss_fn = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)
        history = masked_retrain(model, masks, optimizer, loss_fn, self.train_loader, self.test_loader, self.epochs,
                                 self.device, scheduler, self.progress)
        after = history[-1]["test_accuracy"] if history else before
        return before, after


class _RatioFile:

    def __init__(self, file_name: str | Path) -> None:
        self.path = Path(file_name)
        self.text = self.path.read_text()

    def _error(self, what: str, line: int | None = None) -> ValueError:
        return ValueError(f"{self.path}{f', line {line}' if line else ''}: {what}")

    def entries(self) -> list[tuple[str, object, int]]:
        try:
            root = yaml.compose(self.text, Loader=yaml.SafeLoader)
            data = yaml.safe_load(self.text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
            line = mark.line + 1 if mark is not None else None
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise self._error(f"malformed YAML: {problem}", line) from None
        if not isinstance(root, yaml.MappingNode) or not isinstance(data, dict):
            raise self._error("no top-level 'prune_ratios' mapping")
        top = [(key, value) for key, value in root.value if isinstance(key, yaml.ScalarNode) and key.value == "prune_ratios"]
        if len(top) > 1:
            raise self._error("'prune_ratios' given twice", top[1][0].start_mark.line + 1)
        if not top or not isinstance(top[0][1], yaml.MappingNode) or not isinstance(data.get("prune_ratios"), dict):
            raise self._error("no top-level 'prune_ratios' mapping (layer name -> ratio)")
        ratios = data["prune_ratios"]
        seen: dict[str, int] = {}
        entries = []
        for key, _ in top[0][1].value:
            line = key.start_mark.line + 1
            if not isinstance(key, yaml.ScalarNode):
                raise self._error("a key of prune_ratios is not a layer name", line)
            name = key.value
            if name in seen:
                raise self._error(f"layer {name!r} given twice (first on line {seen[name]})", line)
            seen[name] = line
            if name not in ratios:  # a key YAML reads as something other than a string (e.g. 1, null)
                raise self._error(f"{name!r} is not a layer name", line)
            entries.append((name, ratios[name], line))
        return entries


def read_prune_ratios_from_yaml(file_name: str | Path, model: nn.Module) -> dict[str, float]:
    valid = list(prunable_weights(model))
    source = _RatioFile(file_name)
    ratios: dict[str, float] = {}
    for name, value, line in source.entries():
        if name not in valid:
            raise source._error(f"{name!r} is not a Conv2d/Linear weight of the model; valid names: {', '.join(valid)}", line)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise source._error(f"the ratio of {name} is {value!r}, not a number in [0, 1)", line)
        if not math.isfinite(value) or not 0.0 <= value < 1.0:
            raise source._error(f"the ratio of {name} is {value!r}, outside [0, 1)", line)
        ratios[name] = float(value)
    return ratios


def unstructured_prune(tensor: torch.Tensor, sparsity: float) -> torch.Tensor:
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    scores = tensor.detach().abs().reshape(-1).float()  # logical order, whatever the memory layout
    count = min(scores.numel(), int(round(sparsity * scores.numel())))
    keep = torch.ones(scores.numel(), dtype=tensor.dtype, device=tensor.device)
    if count > 0:
        keep[torch.topk(scores, count, largest=False).indices] = 0
    return keep.reshape(tensor.shape)


def filter_prune(tensor: torch.Tensor, sparsity: float) -> torch.Tensor:
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    weight = tensor.detach().float()
    if weight.dim() == 1:  # one entry per output
        norms = weight.abs()
    else:
        norms = torch.linalg.vector_norm(weight, ord=2, dim=tuple(range(1, weight.dim())))  # (C_out,)
    count = min(norms.numel(), int(round(sparsity * norms.numel())))
    keep = torch.ones(norms.numel(), dtype=tensor.dtype, device=tensor.device)
    if count > 0:
        keep[torch.topk(norms, count, largest=False).indices] = 0
    return _broadcast_mask(keep, tensor.shape).expand(tensor.shape).clone()


def apply_pruning(model: nn.Module, sparsity_type: str, prune_ratio_dict: dict[str, float]) -> dict[str, torch.Tensor]:
    return Pruner(sparsity_type).prune(model, prune_ratio_dict).as_dict()


def test_sparsity(model: nn.Module, sparsity_type: str = "unstructured") -> dict:
    if sparsity_type not in SPARSITY_TYPES:
        raise ValueError(f"unknown sparsity_type {sparsity_type!r}; choose one of {', '.join(SPARSITY_TYPES)}")
    layers: dict[str, float] = {}
    zero_filters: dict[str, int] = {}
    total_zeros = total = 0
    rows = []
    for name, _ in prunable_weights(model).items():
        module_name, tensor_name = _split_name(name)
        weight = _current(model.get_submodule(module_name), tensor_name)
        zeros, count = int((weight == 0).sum()), weight.numel()
        layers[name] = zeros / count if count else 0.0
        total_zeros, total = total_zeros + zeros, total + count
        row = f"{name:<28} {zeros:>10} {count:>10} {layers[name]:>9.4f}"
        if sparsity_type == "filter":
            zero_filters[name] = int((weight.reshape(weight.shape[0], -1) == 0).all(dim=1).sum())
            row += f" {zero_filters[name]:>6} / {weight.shape[0]}"
        rows.append(row)
    overall = total_zeros / total if total else 0.0
    header = f"{'layer':<28} {'zeros':>10} {'total':>10} {'sparsity':>9}" + (" zero filters" if sparsity_type == "filter" else "")
    print("\n".join([header, *rows, f"{'overall':<28} {total_zeros:>10} {total:>10} {overall:>9.4f}"]))
    report: dict = {"overall": overall, "layers": layers}
    if sparsity_type == "filter":
        report["zero_filters"] = zero_filters
    return report


def masked_retrain(model: nn.Module, prune_masks: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
                   loss_fn, train_loader, test_loader, num_epochs: int, device, scheduler=None,
                   progress: bool = True) -> list[dict]:
    masks = MaskSet(prune_masks)
    history: list[dict] = []
    with masks.enforced(model, optimizer):
        for epoch in range(num_epochs):
            stats = train_epoch(model, train_loader, optimizer, loss_fn, device, scheduler,
                                desc=f"masked retrain {epoch + 1}/{num_epochs}", progress=progress)
            stats["test_accuracy"] = evaluate(model, test_loader, device, exact=True)
            stats["epoch"] = epoch + 1
            history.append(stats)
    return history


def oneshot_magnitude_prune(model: nn.Module, sparsity_type: str, prune_ratio_dict: dict[str, float], *,
                            train_loader, test_loader, epochs: int, device, lr: float = 0.01,
                            weight_decay: float = 5e-4, progress: bool = True) -> list[dict]:
    retrain = _Retraining(train_loader, test_loader, epochs, device, lr, weight_decay, progress)
    ratios = dict(prune_ratio_dict)
    masks = apply_pruning(model, sparsity_type, ratios)
    sparsity = test_sparsity(model, sparsity_type)["overall"]
    before, after = retrain(model, masks)
    return [{"iteration": 1, "ratios": ratios, "sparsity": sparsity, "accuracy_before_retrain": before,
             "accuracy": after}]


def iterative_magnitude_prune(model: nn.Module, sparsity_type: str, prune_ratio_dict: dict[str, float], *,
                              iterations: int = 3, train_loader, test_loader, epochs: int, device,
                              lr: float = 0.01, weight_decay: float = 5e-4, progress: bool = True) -> list[dict]:
    if iterations < MIN_IMP_ITERATIONS:
        raise ValueError(f"iterative pruning needs at least {MIN_IMP_ITERATIONS} rounds, got iterations={iterations}")
    if sparsity_type not in SPARSITY_TYPES:
        raise ValueError(f"unknown sparsity_type {sparsity_type!r}; choose one of {', '.join(SPARSITY_TYPES)}")
    retrain = _Retraining(train_loader, test_loader, epochs, device, lr, weight_decay, progress)
    targets = dict(prune_ratio_dict)
    log: list[dict] = []
    for step in range(1, iterations + 1):
        ratios = {name: _cubic_ratio(target, step, iterations) for name, target in targets.items()}
        masks = apply_pruning(model, sparsity_type, ratios)  # ranks the weights as the last retraining left them
        sparsity = test_sparsity(model, sparsity_type)["overall"]
        before, after = retrain(model, masks)
        print(f"IMP round {step}/{iterations}: sparsity {sparsity:.4f}, accuracy {before:.2f}% -> {after:.2f}%")
        log.append({"iteration": step, "ratios": ratios, "sparsity": sparsity, "accuracy_before_retrain": before,
                    "accuracy": after})
    return log


def prune_channels_after_filter_prune(model: nn.Module) -> nn.Module:
    compact = copy_without_pruning(model)  # a deep copy with the masks folded in; ``model`` untouched
    compact.to(memory_format=torch.contiguous_format)
    kept: torch.Tensor | None = None  # indices of the channels that reach the next layer
    width: int | None = None  # the number of those channels before compaction
    with torch.no_grad():
        for name, module in compact.named_modules():
            if isinstance(module, nn.Conv2d):
                if module.groups != 1:
                    raise ValueError(f"{name}: grouped convolutions are not supported")
                # this conv's nonzero filters, judged on its full weight (before its inputs shrink)
                alive = (module.weight.reshape(module.out_channels, -1) != 0).any(dim=1)
                if not bool(alive.any()):
                    alive[0] = True  # keep the network runnable: one (zero) channel
                outputs = alive.nonzero().reshape(-1)
                weight = module.weight[outputs]
                if kept is not None:
                    if module.in_channels != width:
                        raise ValueError(f"{name} reads {module.in_channels} channels where {width} come in: "
                                         "not a plain VGG-style chain")
                    weight = weight[:, kept]
                    module.in_channels = len(kept)
                width, kept = module.out_channels, outputs
                module.weight = nn.Parameter(weight.clone())
                if module.bias is not None:
                    module.bias = nn.Parameter(module.bias[kept].clone())
                module.out_channels = len(kept)
            elif isinstance(module, nn.BatchNorm2d) and kept is not None and module.num_features == width:
                for tensor_name in ("weight", "bias"):
                    if getattr(module, tensor_name) is not None:
                        setattr(module, tensor_name, nn.Parameter(getattr(module, tensor_name)[kept].clone()))
                for tensor_name in ("running_mean", "running_var"):
                    if getattr(module, tensor_name) is not None:
                        setattr(module, tensor_name, getattr(module, tensor_name)[kept].clone())
                module.num_features = len(kept)
            elif isinstance(module, nn.Linear) and kept is not None:
                if module.in_features % width:
                    raise ValueError(f"{name} reads {module.in_features} features, not a multiple of {width} channels")
                spatial = module.in_features // width  # features are channel-major after flatten
                columns = (kept.reshape(-1, 1) * spatial + torch.arange(spatial, device=kept.device)).reshape(-1)
                module.weight = nn.Parameter(module.weight[:, columns].clone())
                module.in_features = len(columns)
                kept = width = None  # a Linear's outputs stay as they are
    return compact


def plot_sparsity_vs_accuracy(records: list[dict], out_path: str | Path, dense_accuracy: float | None = None,
                              title: str = "VGG13 on CIFAR-10: accuracy vs sparsity") -> list[tuple[str, float, float]]:
    points = [(str(record.get("label", f"model {i}")), float(record["sparsity"]), float(record["accuracy"]))
              for i, record in enumerate(records, 1)]
    figure = Figure(figsize=(6.4, 4.4))
    axes = figure.subplots()
    markers = ("o", "s", "^", "D", "v", "P", "X", "*")
    for i, (label, sparsity, accuracy) in enumerate(points):
        axes.scatter([sparsity], [accuracy], marker=markers[i % len(markers)], s=60, zorder=3, label=label)
        axes.annotate(f"{label}\n{accuracy:.2f}%", (sparsity, accuracy), textcoords="offset points", xytext=(6, 6),
                      fontsize=8)
    if dense_accuracy is not None:
        axes.axhline(float(dense_accuracy), color="0.4", linestyle="--", linewidth=1,
                     label=f"dense ({float(dense_accuracy):.2f}%)")
    axes.set_xlim(0.0, 1.0)
    axes.set_xlabel("overall sparsity (fraction of zero Conv2d/Linear weights)")
    axes.set_ylabel("test accuracy (%)")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    if points or dense_accuracy is not None:
        axes.legend(loc="lower left", fontsize=8)
    figure.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_path, dpi=FIGURE_DPI, format="png")
    return points


def plot_mask(weight: torch.Tensor, out_path: str | Path, title: str = "") -> np.ndarray:
    weight = weight.detach().cpu()
    image = (weight != 0).reshape(weight.shape[0], -1).numpy().astype(np.uint8)  # (C_out, C_in*kH*kW)
    rows, columns = image.shape
    figure = Figure(figsize=(min(12.0, max(4.0, columns / 40)), min(8.0, max(2.5, rows / 40))))
    axes = figure.subplots()
    axes.imshow(image, cmap=ListedColormap(MASK_COLOURS), vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    axes.set_xlabel("weight within the filter (C_in x kH x kW)")
    axes.set_ylabel("filter (output channel)")
    kept = float(image.mean()) if image.size else 0.0
    axes.set_title(f"{title}\n{100 * (1 - kept):.1f}% pruned" if title else f"{100 * (1 - kept):.1f}% pruned")
    axes.legend(handles=[Patch(color=MASK_COLOURS[1], label="kept"), Patch(color=MASK_COLOURS[0], label="pruned")],
                loc="upper right", fontsize=8, framealpha=0.9)
    figure.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_path, dpi=FIGURE_DPI, format="png")
    return image


# ---------------------------------------------------------------------------------------------
# Bonus (not required for HW2): global magnitude pruning, one threshold across layers
# ---------------------------------------------------------------------------------------------
def global_unstructured_prune(tensors: dict[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    names = list(tensors)
    if not names:
        return {}
    scores = torch.cat([tensors[name].detach().abs().reshape(-1).float().cpu() for name in names])
    count = min(scores.numel(), int(round(sparsity * scores.numel())))
    keep = torch.ones(scores.numel())
    if count > 0:
        keep[torch.argsort(scores, stable=True)[:count]] = 0  # stable: ties go by position in the concatenation
    masks, start = {}, 0
    for name in names:
        tensor = tensors[name]
        masks[name] = keep[start:start + tensor.numel()].reshape(tensor.shape).to(tensor.device, tensor.dtype)
        start += tensor.numel()
    return masks


def global_magnitude_prune(model: nn.Module, sparsity: float, layer_names: list[str] | None = None, *,
                           iterations: int = 1, train_loader, test_loader, epochs: int, device,
                           lr: float = 0.01, weight_decay: float = 5e-4, progress: bool = True) -> list[dict]:
    if iterations != 1 and iterations < MIN_IMP_ITERATIONS:
        raise ValueError(f"iterations must be 1 (one-shot) or at least {MIN_IMP_ITERATIONS}, got {iterations}")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    valid = prunable_weights(model)
    names = list(valid) if layer_names is None else list(layer_names)
    unknown = [name for name in names if name not in valid]
    if unknown or not names:
        raise ValueError(f"not Conv2d/Linear weights of the model: {', '.join(unknown) or '(none given)'}; "
                         f"valid: {', '.join(valid)}")
    retrain = _Retraining(train_loader, test_loader, epochs, device, lr, weight_decay, progress)
    log: list[dict] = []
    for step in range(1, iterations + 1):
        target = sparsity if step == iterations else 1.0 - (1.0 - sparsity) ** (step / iterations)
        modules = {name: model.get_submodule(_split_name(name)[0]) for name in names}
        current = {name: _current(modules[name], "weight") for name in names}
        chosen = global_unstructured_prune(current, target)
        masks = MaskSet({name: Pruner._combined(modules[name], "weight", chosen[name]) for name in names})
        masks.attach(model)
        report = test_sparsity(model, "unstructured")
        before, after = retrain(model, masks.as_dict())
        print(f"global round {step}/{iterations}: target {target:.4f}, sparsity {report['overall']:.4f}, "
              f"accuracy {before:.2f}% -> {after:.2f}%")
        log.append({"iteration": step, "ratios": {"global": target}, "sparsity": report["overall"],
                    "layer_sparsity": report["layers"], "accuracy_before_retrain": before, "accuracy": after})
    return log


# ---------------------------------------------------------------------------------------------
# Bonus (not required for HW2): ThiNet-style filter selection, a data-driven criterion
# ---------------------------------------------------------------------------------------------
def next_layer_contributions(model: nn.Module, conv_name: str, images: torch.Tensor, samples: int = 1024,
                             seed: int = 0) -> torch.Tensor:
    modules = dict(model.named_modules())
    conv = modules.get(conv_name)
    if not isinstance(conv, nn.Conv2d):
        raise ValueError(f"{conv_name!r} is not a Conv2d of the model")
    layers = [name for name, module in model.named_modules() if isinstance(module, (nn.Conv2d, nn.Linear))]
    index = layers.index(conv_name)
    if index + 1 >= len(layers):
        raise ValueError(f"{conv_name!r} has no Conv2d or Linear layer after it")
    following = modules[layers[index + 1]]
    captured: dict[str, torch.Tensor] = {}

    def grab(_module: nn.Module, inputs: tuple) -> None:
        captured.setdefault("x", inputs[0].detach())

    handle = following.register_forward_pre_hook(grab)
    modes = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            model(images)
    finally:
        handle.remove()
        for module, mode in modes:
            module.train(mode)
    x = captured["x"].float()
    channels = conv.out_channels
    weight = _current(following, "weight").float()
    generator = torch.Generator().manual_seed(seed)
    images_count = x.shape[0]
    sample = torch.randint(images_count, (samples,), generator=generator)
    unit = torch.randint(weight.shape[0], (samples,), generator=generator)
    if isinstance(following, nn.Conv2d):
        if x.shape[1] != channels or following.groups != 1 or following.in_channels != channels:
            raise ValueError(f"the input of the layer after {conv_name!r} does not have one channel per filter")
        (kh, kw), (sh, sw), (dh, dw) = following.kernel_size, following.stride, following.dilation
        padding = following.padding
        if isinstance(padding, str):
            padding = (0, 0) if padding == "valid" else (dh * (kh - 1) // 2, dw * (kw - 1) // 2)
        ph, pw = padding
        padded = nn.functional.pad(x, (pw, pw, ph, ph))
        out_h = (x.shape[2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        out_w = (x.shape[3] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        y0 = torch.randint(out_h, (samples,), generator=generator) * sh
        x0 = torch.randint(out_w, (samples,), generator=generator) * sw
        rows = (y0.reshape(-1, 1) + torch.arange(kh) * dh).to(x.device)  # (M, kH)
        cols = (x0.reshape(-1, 1) + torch.arange(kw) * dw).to(x.device)  # (M, kW)
        sample, unit = sample.to(x.device), unit.to(x.device)
        patches = padded[sample.reshape(-1, 1, 1, 1), torch.arange(channels, device=x.device).reshape(1, -1, 1, 1),
                         rows.reshape(samples, 1, kh, 1), cols.reshape(samples, 1, 1, kw)]  # (M, C, kH, kW)
        contributions = (patches * weight[unit]).sum(dim=(2, 3))
    else:
        flat = x.reshape(images_count, -1)
        if flat.shape[1] % channels:
            raise ValueError(f"the input of the layer after {conv_name!r} does not have one channel per filter")
        sample, unit = sample.to(x.device), unit.to(x.device)
        contributions = (flat[sample] * weight[unit]).reshape(samples, channels, -1).sum(dim=2)
    return contributions.float().cpu()


def thinet_select_filters(contributions: torch.Tensor, sparsity: float) -> torch.Tensor:
    values = contributions.detach().double()
    filters = values.shape[1]
    count = min(filters, int(round(sparsity * filters)))
    removed = torch.zeros(filters, dtype=torch.bool)
    change = torch.zeros(values.shape[0], dtype=torch.float64, device=values.device)
    for _ in range(count):
        cost = ((change.reshape(-1, 1) + values) ** 2).sum(dim=0).cpu()
        cost[removed] = math.inf
        best = int(torch.argmin(cost))  # the first of equal minima: ties go to the lower index
        removed[best] = True
        change = change + values[:, best]
    keep = torch.ones(filters, dtype=contributions.dtype)
    keep[removed] = 0
    return keep


def apply_thinet_pruning(model: nn.Module, prune_ratio_dict: dict[str, float], images: torch.Tensor,
                         samples: int = 1024) -> dict[str, torch.Tensor]:
    pruner = Pruner("filter")
    masks = MaskSet()
    for name, ratio in prune_ratio_dict.items():
        module_name, tensor_name = _split_name(name)
        if tensor_name != "weight" or not isinstance(dict(model.named_modules()).get(module_name), nn.Conv2d):
            raise ValueError(f"{name!r} is not a Conv2d weight of the model")
        contributions = next_layer_contributions(model, module_name, images, samples)
        keep = thinet_select_filters(contributions, float(ratio))
        layer = pruner.filter_masks(model, module_name, keep)
        layer.attach(model)  # in force before the next layer is measured
        masks.update(layer)
    return masks.as_dict()
