"""HW2 pruning, an independent solution. Written from the student release alone: NumPy float64 ranking (argpartition),
plain weights, gradient hooks plus re-masking after each step, a cubic IMP schedule, a compacted model of brand-new
modules.
"""
from __future__ import annotations

import copy
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
# Private helpers (NumPy rankings, mask bookkeeping without torch.nn.utils.prune)
# ---------------------------------------------------------------------------------------------
def _as_float64(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to(device="cpu", dtype=torch.float64).reshape(-1).numpy().copy()


def _count_to_prune(sparsity: float, units: int) -> int:
    sparsity = float(sparsity)
    if not 0.0 <= sparsity <= 1.0:  # False for NaN too
        raise ValueError(f"sparsity must be a fraction in [0, 1), got {sparsity!r}")
    return int(min(units, max(0, round(sparsity * units))))  # Python's round, as main.py counts the targets


def _smallest_positions(scores: np.ndarray, count: int) -> np.ndarray:
    if count <= 0:
        return np.empty(0, dtype=np.int64)
    if count >= scores.size:
        return np.arange(scores.size)
    return np.argpartition(scores, count - 1)[:count]


def _to_mask_tensor(keep: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    dtype = like.dtype if (like.is_floating_point() or like.is_complex()) else torch.float32
    out = torch.from_numpy(keep.astype(np.float64)).reshape(like.shape)
    return out.to(device=like.device, dtype=dtype)


def _split_name(name: str) -> tuple[str, str]:
    module_name, _, tensor_name = name.rpartition(".")
    return module_name, tensor_name


def _trainable_tensor(model: nn.Module, name: str) -> torch.Tensor:
    module_name, tensor_name = _split_name(name)
    try:
        module = model.get_submodule(module_name) if module_name else model
    except AttributeError as exc:
        raise ValueError(f"the model has no module {module_name!r} (from mask name {name!r})") from exc
    params = module._parameters
    if params.get(tensor_name) is not None:
        return params[tensor_name]
    if params.get(f"{tensor_name}_orig") is not None:
        return params[f"{tensor_name}_orig"]
    tensor = getattr(module, tensor_name, None)
    if isinstance(tensor, torch.Tensor):
        return tensor
    raise ValueError(f"the model has no tensor {name!r}")


@torch.no_grad()
def _impose_mask(model: nn.Module, name: str, mask: torch.Tensor) -> None:
    module_name, tensor_name = _split_name(name)
    module = model.get_submodule(module_name) if module_name else model
    target = _trainable_tensor(model, name)
    target.mul_(mask.to(device=target.device, dtype=target.dtype))
    buffer = module._buffers.get(f"{tensor_name}_mask")
    if buffer is not None:
        buffer.mul_(mask.to(device=buffer.device, dtype=buffer.dtype))
        setattr(module, tensor_name, target * buffer)


def _bn_after(model: nn.Module, weight_name: str) -> str | None:
    module_name, _ = _split_name(weight_name)
    found = False
    channels = None
    for name, module in model.named_modules():
        if not found:
            if name == module_name:
                found = True
                channels = getattr(module, "out_channels", getattr(module, "out_features", None))
            continue
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            return None
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.num_features == channels:
            return name
    return None


def _filter_keep_vector(mask: torch.Tensor) -> torch.Tensor:
    return (mask.reshape(mask.shape[0], -1) != 0).any(dim=1)


def _bn_masks(model: nn.Module, weight_name: str, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    bn_name = _bn_after(model, weight_name)
    if bn_name is None:
        return {}
    bn = model.get_submodule(bn_name)
    out = {}
    keep = _filter_keep_vector(mask)
    for part in ("weight", "bias"):
        tensor = getattr(bn, part, None)
        if isinstance(tensor, torch.Tensor):
            out[f"{bn_name}.{part}"] = keep.to(device=tensor.device, dtype=tensor.dtype)
    return out


def _percent_accuracy(model: nn.Module, loader, device) -> float:
    return float(evaluate(model, loader, device))


def _retrain_tools(model: nn.Module, lr: float, weight_decay: float, epochs: int, train_loader):
    optimizer = make_optimizer(model, lr, weight_decay=weight_decay)
    scheduler = make_scheduler(optimizer, max(1, epochs * len(train_loader)))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)
    return optimizer, scheduler, loss_fn


def _cubic_schedule(target: float, step: int, rounds: int) -> float:
    if step >= rounds:
        return float(target)
    return float(target) * (1.0 - (1.0 - step / rounds) ** 3)


class _NoDuplicatesLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key given twice in one mapping (plain ``safe_load`` keeps the last)."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:  # an unhashable key (a list, a mapping)
            raise yaml.constructor.ConstructorError("while constructing a mapping", node.start_mark,
                                                    "found an unhashable key", key_node.start_mark) from None
        if duplicate:
            raise ValueError(f"{key!r} is given twice (line {key_node.start_mark.line + 1})")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_NoDuplicatesLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def read_prune_ratios_from_yaml(file_name: str | Path, model: nn.Module) -> dict[str, float]:
    path = Path(file_name)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    try:
        document = yaml.load(text, Loader=_NoDuplicatesLoader)
    except ValueError as exc:  # a key given twice (_NoDuplicatesLoader)
        raise ValueError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"{path}: malformed YAML{where}: {problem}") from None
    if not isinstance(document, dict) or "prune_ratios" not in document:
        raise ValueError(f"{path}: no top-level 'prune_ratios' mapping (layer name -> ratio)")
    table = document["prune_ratios"]
    if not isinstance(table, dict):
        raise ValueError(f"{path}: 'prune_ratios' must map layer names to ratios, got {type(table).__name__}")
    valid = list(prunable_weights(model))
    ratios: dict[str, float] = {}
    for name, ratio in table.items():
        if not isinstance(name, str) or name not in valid:
            raise ValueError(f"{path}: {name!r} is not a Conv2d/Linear weight of the model; valid names: "
                             + ", ".join(valid))
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
            raise ValueError(f"{path}: the ratio of {name} must be a number in [0, 1), got {ratio!r}")
        value = float(ratio)
        if not (0.0 <= value < 1.0):  # False for NaN too
            raise ValueError(f"{path}: the ratio of {name} must be in [0, 1), got {ratio!r}")
        ratios[name] = value
    return ratios


def unstructured_prune(tensor: torch.Tensor, sparsity: float) -> torch.Tensor:
    magnitudes = np.abs(_as_float64(tensor))
    doomed = _smallest_positions(magnitudes, _count_to_prune(sparsity, magnitudes.size))
    keep = np.ones(magnitudes.size, dtype=np.uint8)
    keep[doomed] = 0
    return _to_mask_tensor(keep, tensor)


def filter_prune(tensor: torch.Tensor, sparsity: float) -> torch.Tensor:
    if tensor.dim() == 0:
        raise ValueError("filter_prune needs a tensor with at least one dimension (filters on dim 0)")
    filters = tensor.shape[0]
    rows = _as_float64(tensor).reshape(filters, -1)
    norms = np.sqrt(np.einsum("ij,ij->i", rows, rows))
    doomed = _smallest_positions(norms, _count_to_prune(sparsity, filters))
    keep_rows = np.ones(filters, dtype=np.uint8)
    keep_rows[doomed] = 0
    keep = np.repeat(keep_rows, rows.shape[1]) if rows.shape[1] else keep_rows[:0]
    return _to_mask_tensor(keep, tensor)


def apply_pruning(model: nn.Module, sparsity_type: str, prune_ratio_dict: dict[str, float]) -> dict[str, torch.Tensor]:
    if sparsity_type not in SPARSITY_TYPES:
        raise ValueError(f"unknown sparsity_type {sparsity_type!r}; choose one of {', '.join(SPARSITY_TYPES)}")
    weights = prunable_weights(model)
    unknown = [name for name in prune_ratio_dict if name not in weights]
    if unknown:
        raise ValueError(f"not Conv2d/Linear weights of the model: {', '.join(unknown)}")
    masks: dict[str, torch.Tensor] = {}
    for name, ratio in prune_ratio_dict.items():
        current = weights[name].detach()  # as it is now (a prune hook's computed weight included)
        if sparsity_type == "unstructured":
            mask = unstructured_prune(current, ratio)
            mask = mask * (current != 0).to(mask.dtype)  # weights that are already zero stay pruned
        else:
            mask = filter_prune(current, ratio)
            dead = (current.reshape(current.shape[0], -1) == 0).all(dim=1)  # filters already all zero
            if bool(dead.any()):
                mask = mask * (~dead).to(mask.dtype).reshape(-1, *([1] * (current.dim() - 1)))
        _impose_mask(model, name, mask)
        masks[name] = mask
        if sparsity_type == "filter":
            for bn_name, bn_mask in _bn_masks(model, name, mask).items():
                _impose_mask(model, bn_name, bn_mask)
                masks[bn_name] = bn_mask
    return masks


def test_sparsity(model: nn.Module, sparsity_type: str = "unstructured") -> dict:
    if sparsity_type not in SPARSITY_TYPES:
        raise ValueError(f"unknown sparsity_type {sparsity_type!r}; choose one of {', '.join(SPARSITY_TYPES)}")
    layers: dict[str, float] = {}
    zero_filters: dict[str, int] = {}
    zeros_total, size_total = 0, 0
    header = f"{'layer':<28}{'zeros':>12}{'total':>12}{'sparsity':>10}" + (f"{'zero filters':>16}" if sparsity_type == "filter" else "")
    print(header)
    print("-" * len(header))
    for name, weight in prunable_weights(model).items():
        w = weight.detach()
        is_zero = w == 0
        zeros, size = int(is_zero.sum()), w.numel()
        zeros_total += zeros
        size_total += size
        layers[name] = zeros / size if size else 0.0
        line = f"{name:<28}{zeros:>12d}{size:>12d}{layers[name]:>10.4f}"
        if sparsity_type == "filter":
            zero_filters[name] = int(is_zero.reshape(w.shape[0], -1).all(dim=1).sum()) if w.dim() else 0
            line += f"{zero_filters[name]:>9d} / {w.shape[0]:<5d}"
        print(line)
    overall = zeros_total / size_total if size_total else 0.0
    print(f"overall sparsity: {overall:.4f} ({zeros_total} of {size_total} Conv2d/Linear weights are zero)")
    report = {"overall": overall, "layers": layers}
    if sparsity_type == "filter":
        report["zero_filters"] = zero_filters
    return report


def masked_retrain(model: nn.Module, prune_masks: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
                   loss_fn, train_loader, test_loader, num_epochs: int, device, scheduler=None,
                   progress: bool = True) -> list[dict]:
    # Per masked tensor: the leaf that trains (the parameter, or weight_orig under a prune hook) and the mask in
    # that tensor's layout (channels_last after bf16 preparation).
    held: list[tuple[torch.Tensor, torch.Tensor]] = []
    for name, mask in prune_masks.items():
        target = _trainable_tensor(model, name)
        if tuple(mask.shape) != tuple(target.shape):
            mask = mask.reshape(-1, *([1] * (target.dim() - 1))) if mask.numel() == target.shape[0] else mask
            mask = torch.broadcast_to(mask, target.shape)
        laid_out = torch.empty_like(target, requires_grad=False).copy_(mask.detach().to(target.device))
        held.append((target, laid_out))

    def reimpose() -> None:
        with torch.no_grad():
            for target, mask in held:
                target.mul_(mask)

    handles = []
    for target, mask in held:
        if target.requires_grad:  # gradients of pruned entries are zero, so momentum never builds up there
            handles.append(target.register_hook(lambda grad, m=mask: grad * m.to(grad.dtype)))
    history: list[dict] = []
    try:
        reimpose()  # the first forward pass already sees exact zeros
        for epoch in range(num_epochs):
            model.train()
            stats = train_epoch(model, train_loader, optimizer, loss_fn, device, scheduler, after_step=reimpose,
                                desc=f"masked retrain {epoch + 1}/{num_epochs}", progress=progress)
            reimpose()
            stats["test_accuracy"] = _percent_accuracy(model, test_loader, device)
            stats["epoch"] = epoch + 1
            history.append(stats)
            print(f"masked retrain epoch {epoch + 1}/{num_epochs}: loss {stats['loss']:.3f}, "
                  f"train {stats['accuracy']:.2f}%, test {stats['test_accuracy']:.2f}%", flush=True)
    finally:
        for handle in handles:
            handle.remove()
    return history


def oneshot_magnitude_prune(model: nn.Module, sparsity_type: str, prune_ratio_dict: dict[str, float], *,
                            train_loader, test_loader, epochs: int, device, lr: float = 0.01,
                            weight_decay: float = 5e-4, progress: bool = True) -> list[dict]:
    if sparsity_type not in SPARSITY_TYPES:
        raise ValueError(f"unknown sparsity_type {sparsity_type!r}; choose one of {', '.join(SPARSITY_TYPES)}")
    ratios = {name: float(r) for name, r in prune_ratio_dict.items()}
    masks = apply_pruning(model, sparsity_type, ratios)
    sparsity = test_sparsity(model, sparsity_type)["overall"]
    before = _percent_accuracy(model, test_loader, device)
    optimizer, scheduler, loss_fn = _retrain_tools(model, lr, weight_decay, epochs, train_loader)
    history = masked_retrain(model, masks, optimizer, loss_fn, train_loader, test_loader, epochs, device,
                             scheduler, progress)
    after = history[-1]["test_accuracy"] if history else before
    print(f"OMP ({sparsity_type}): sparsity {sparsity:.4f}, accuracy {before:.2f}% -> {after:.2f}%")
    return [{"iteration": 1, "ratios": ratios, "sparsity": sparsity,
             "accuracy_before_retrain": before, "accuracy": after}]


def iterative_magnitude_prune(model: nn.Module, sparsity_type: str, prune_ratio_dict: dict[str, float], *,
                              iterations: int = 3, train_loader, test_loader, epochs: int, device,
                              lr: float = 0.01, weight_decay: float = 5e-4, progress: bool = True) -> list[dict]:
    if sparsity_type not in SPARSITY_TYPES:
        raise ValueError(f"unknown sparsity_type {sparsity_type!r}; choose one of {', '.join(SPARSITY_TYPES)}")
    if int(iterations) != iterations or iterations < MIN_IMP_ITERATIONS:
        raise ValueError(f"iterative pruning needs at least {MIN_IMP_ITERATIONS} rounds, got iterations={iterations}")
    iterations = int(iterations)
    targets = {name: float(r) for name, r in prune_ratio_dict.items()}
    log: list[dict] = []
    for step in range(1, iterations + 1):
        ratios = {name: _cubic_schedule(target, step, iterations) for name, target in targets.items()}
        masks = apply_pruning(model, sparsity_type, ratios)  # ranks the weights as the last retraining left them
        sparsity = test_sparsity(model, sparsity_type)["overall"]
        before = _percent_accuracy(model, test_loader, device)
        optimizer, scheduler, loss_fn = _retrain_tools(model, lr, weight_decay, epochs, train_loader)
        history = masked_retrain(model, masks, optimizer, loss_fn, train_loader, test_loader, epochs, device,
                                 scheduler, progress)
        after = history[-1]["test_accuracy"] if history else before
        print(f"IMP ({sparsity_type}) round {step}/{iterations}: sparsity {sparsity:.4f}, "
              f"accuracy {before:.2f}% -> {after:.2f}%")
        log.append({"iteration": step, "ratios": ratios, "sparsity": sparsity,
                    "accuracy_before_retrain": before, "accuracy": after})
    return log


def prune_channels_after_filter_prune(model: nn.Module) -> nn.Module:
    source = copy_without_pruning(model)  # plain parameters, zeros folded in; ``model`` itself is not touched
    if not isinstance(getattr(source, "features", None), nn.Sequential) or not hasattr(source, "classifier"):
        raise ValueError("prune_channels_after_filter_prune expects a VGG-style model (features, then classifier)")
    was_training = model.training
    layers: list[nn.Module] = []
    alive: torch.Tensor | None = None  # kept channels of the tensor flowing through ``features`` (None: all)
    channels = None
    for module in source.features:
        if isinstance(module, nn.Conv2d):
            if module.groups != 1:
                raise ValueError("grouped convolutions are not supported")
            weight = module.weight.detach()
            inputs = alive if alive is not None else torch.arange(weight.shape[1], device=weight.device)
            outputs = (weight.reshape(weight.shape[0], -1) != 0).any(dim=1).nonzero().reshape(-1)
            conv = nn.Conv2d(len(inputs), len(outputs), module.kernel_size, stride=module.stride,
                             padding=module.padding, dilation=module.dilation, bias=module.bias is not None,
                             padding_mode=module.padding_mode, device=weight.device, dtype=weight.dtype)
            with torch.no_grad():
                conv.weight.copy_(weight.index_select(0, outputs).index_select(1, inputs))
                if module.bias is not None:
                    conv.bias.copy_(module.bias.detach().index_select(0, outputs))
            layers.append(conv)
            alive, channels = outputs, weight.shape[0]
        elif isinstance(module, nn.BatchNorm2d):
            index = alive if alive is not None else torch.arange(module.num_features)
            ref = module.running_mean if module.running_mean is not None else module.weight
            bn = nn.BatchNorm2d(len(index), eps=module.eps, momentum=module.momentum, affine=module.affine,
                                track_running_stats=module.track_running_stats, device=ref.device, dtype=ref.dtype)
            with torch.no_grad():
                if module.affine:
                    bn.weight.copy_(module.weight.detach().index_select(0, index))
                    bn.bias.copy_(module.bias.detach().index_select(0, index))
                if module.track_running_stats:
                    bn.running_mean.copy_(module.running_mean.index_select(0, index))
                    bn.running_var.copy_(module.running_var.index_select(0, index))
                    bn.num_batches_tracked.copy_(module.num_batches_tracked)
            layers.append(bn)
        else:
            layers.append(copy.deepcopy(module))
    features = nn.Sequential(*layers)

    def shrink_linear(linear: nn.Linear, keep_features: torch.Tensor | None) -> nn.Linear:
        weight = linear.weight.detach()
        if keep_features is None:
            keep_features = torch.arange(weight.shape[1], device=weight.device)
        new = nn.Linear(len(keep_features), weight.shape[0], bias=linear.bias is not None,
                        device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            new.weight.copy_(weight.index_select(1, keep_features))
            if linear.bias is not None:
                new.bias.copy_(linear.bias.detach())
        return new

    def flat_features(linear: nn.Linear) -> torch.Tensor | None:
        if alive is None:
            return None
        per_channel, rest = divmod(linear.in_features, channels)
        if rest:
            raise ValueError(f"the classifier reads {linear.in_features} features, not a multiple of {channels} channels")
        offsets = torch.arange(per_channel, device=alive.device)
        return (alive.reshape(-1, 1) * per_channel + offsets.reshape(1, -1)).reshape(-1)

    head = source.classifier
    if isinstance(head, nn.Linear):
        classifier = shrink_linear(head, flat_features(head))
    elif isinstance(head, nn.Sequential):
        parts, done = [], False
        for module in head:
            if isinstance(module, nn.Linear) and not done:
                parts.append(shrink_linear(module, flat_features(module)))
                done = True
            else:
                parts.append(copy.deepcopy(module))
        classifier = nn.Sequential(*parts)
    else:
        raise ValueError(f"unsupported classifier {type(head).__name__}")
    source.features = features
    source.classifier = classifier
    source.train(was_training)
    return source


def plot_sparsity_vs_accuracy(records: list[dict], out_path: str | Path, dense_accuracy: float | None = None,
                              title: str = "VGG13 on CIFAR-10: accuracy vs sparsity") -> list[tuple[str, float, float]]:
    points = [(str(r["label"]), float(r["sparsity"]), float(r["accuracy"])) for r in records]
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    markers = "osD^vP*X"
    for i, (label, x, y) in enumerate(points):
        ax.scatter([x], [y], s=60, marker=markers[i % len(markers)], zorder=3, label=label)
        ax.annotate(f"{label}\n{y:.2f}%", (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8)
    if dense_accuracy is not None:
        ax.axhline(float(dense_accuracy), color="0.3", linestyle="--", linewidth=1.2,
                   label=f"dense ({float(dense_accuracy):.2f}%)")
    ax.set_xlabel("overall sparsity (fraction of zero Conv2d/Linear weights)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if points or dense_accuracy is not None:
        ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=FIGURE_DPI, format="png")
    plt.close(fig)
    return points


def plot_mask(weight: torch.Tensor, out_path: str | Path, title: str = "") -> np.ndarray:
    w = weight.detach().to("cpu")
    if w.dim() == 0:
        raise ValueError("plot_mask needs a weight with at least one dimension")
    image = (w.reshape(w.shape[0], -1) != 0).numpy().astype(np.uint8)  # (C_out, C_in*kH*kW)
    rows, cols = image.shape
    width = min(12.0, max(4.0, cols / 40 + 2))
    height = min(12.0, max(3.0, rows / 40 + 1.5))
    fig, ax = plt.subplots(figsize=(width, height))
    ax.imshow(image, cmap=ListedColormap(MASK_COLOURS), vmin=0, vmax=1, interpolation="nearest", aspect="auto")
    ax.set_xlabel("C_in x kH x kW (flattened)" if w.dim() > 2 else "input features")
    ax.set_ylabel("output filter")
    kept = int(image.sum())
    ax.set_title(f"{title}\nkept {kept} of {image.size} ({kept / max(image.size, 1):.1%})" if title else
                 f"kept {kept} of {image.size} ({kept / max(image.size, 1):.1%})")
    ax.legend(handles=[Patch(color=MASK_COLOURS[1], label="kept"), Patch(color=MASK_COLOURS[0], label="pruned")],
              loc="upper right", bbox_to_anchor=(1.0, -0.12), ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=FIGURE_DPI, format="png")
    plt.close(fig)
    return image


# ---------------------------------------------------------------------------------------------
# Bonus (not required for HW2): global magnitude pruning, one threshold across layers
# ---------------------------------------------------------------------------------------------
def global_unstructured_prune(tensors: dict[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    names = list(tensors)
    flats = [np.abs(_as_float64(tensors[name])) for name in names]
    sizes = [f.size for f in flats]
    everything = np.concatenate(flats) if flats else np.empty(0)
    count = _count_to_prune(sparsity, everything.size)
    keep = np.ones(everything.size, dtype=np.uint8)
    if count:
        order = np.argsort(everything, kind="stable")  # equal magnitudes: earlier position first
        keep[order[:count]] = 0
    masks = {}
    start = 0
    for name, size in zip(names, sizes):
        masks[name] = _to_mask_tensor(keep[start:start + size], tensors[name])
        start += size
    return masks


def global_magnitude_prune(model: nn.Module, sparsity: float, layer_names: list[str] | None = None, *,
                           iterations: int = 1, train_loader, test_loader, epochs: int, device,
                           lr: float = 0.01, weight_decay: float = 5e-4, progress: bool = True) -> list[dict]:
    if int(iterations) != iterations or iterations < 1 or iterations == 2:
        raise ValueError(f"iterations must be 1 (one-shot) or at least {MIN_IMP_ITERATIONS}, got {iterations}")
    iterations = int(iterations)
    weights = prunable_weights(model)
    names = list(weights) if layer_names is None else list(layer_names)
    bad = [name for name in names if name not in weights]
    if bad:
        raise ValueError(f"not Conv2d/Linear weights of the model: {', '.join(map(str, bad))}; valid: {', '.join(weights)}")
    if len(set(names)) != len(names):
        raise ValueError("a layer is named twice in layer_names")
    if not (0.0 <= float(sparsity) < 1.0):
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    log: list[dict] = []
    for step in range(1, iterations + 1):
        target = float(sparsity) if step == iterations else 1.0 - (1.0 - float(sparsity)) ** (step / iterations)
        current = {name: tensor.detach() for name, tensor in prunable_weights(model).items() if name in names}
        masks = global_unstructured_prune(current, target)
        for name, mask in masks.items():
            mask = mask * (current[name] != 0).to(mask.dtype)
            masks[name] = mask
            _impose_mask(model, name, mask)
        report = test_sparsity(model, "unstructured")
        before = _percent_accuracy(model, test_loader, device)
        optimizer, scheduler, loss_fn = _retrain_tools(model, lr, weight_decay, epochs, train_loader)
        history = masked_retrain(model, masks, optimizer, loss_fn, train_loader, test_loader, epochs, device,
                                 scheduler, progress)
        after = history[-1]["test_accuracy"] if history else before
        log.append({"iteration": step, "ratios": {"global": target}, "sparsity": report["overall"],
                    "layer_sparsity": dict(report["layers"]), "accuracy_before_retrain": before, "accuracy": after})
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
    names = list(modules)
    following = [n for n in names[names.index(conv_name) + 1:] if isinstance(modules[n], (nn.Conv2d, nn.Linear))]
    if not following:
        raise ValueError(f"{conv_name!r} has no Conv2d or Linear layer after it")
    nxt = modules[following[0]]
    filters = conv.out_channels
    captured: list[torch.Tensor] = []
    handle = nxt.register_forward_pre_hook(lambda module, args: captured.append(args[0].detach()))
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            model(images)
    finally:
        handle.remove()
        for m, mode in modes:
            m.train(mode)
    if not captured:
        raise ValueError(f"the layer after {conv_name!r} was not reached by the forward pass")
    x = captured[0].float()
    w_next = nxt.weight.detach().float()  # the masked weight when a prune hook is attached
    gen = torch.Generator().manual_seed(seed)
    n_images = x.shape[0]
    if isinstance(nxt, nn.Conv2d):
        if nxt.groups != 1 or x.shape[1] != filters:
            raise ValueError(f"the input of {following[0]!r} has {x.shape[1]} channels, not one per filter of "
                             f"{conv_name!r} ({filters})")
        if not isinstance(nxt.padding, tuple) or nxt.padding_mode != "zeros":
            raise ValueError(f"{following[0]!r}: only explicit zero padding is supported")
        (kh, kw), (sh, sw), (dh, dw), (ph, pw) = nxt.kernel_size, nxt.stride, nxt.dilation, nxt.padding
        padded = torch.nn.functional.pad(x, (pw, pw, ph, ph))
        out_h = (padded.shape[2] - dh * (kh - 1) - 1) // sh + 1
        out_w = (padded.shape[3] - dw * (kw - 1) - 1) // sw + 1
        n_idx = torch.randint(n_images, (samples,), generator=gen)
        o_idx = torch.randint(nxt.out_channels, (samples,), generator=gen)
        p_idx = torch.randint(out_h * out_w, (samples,), generator=gen)
        rows = (p_idx // out_w).reshape(-1, 1) * sh + torch.arange(kh).reshape(1, -1) * dh  # (M, kH)
        cols = (p_idx % out_w).reshape(-1, 1) * sw + torch.arange(kw).reshape(1, -1) * dw  # (M, kW)
        dev = padded.device
        patches = padded[n_idx.to(dev).reshape(-1, 1, 1), :, rows.to(dev).reshape(-1, kh, 1),
                         cols.to(dev).reshape(-1, 1, kw)]  # (M, kH, kW, C)
        patches = patches.permute(0, 3, 1, 2).reshape(samples, filters, -1).cpu()  # (M, C, kH*kW)
        kernels = w_next[o_idx.to(w_next.device)].reshape(samples, filters, -1).cpu()
        out = (patches * kernels).sum(dim=2)
    else:
        flat = x.reshape(n_images, -1)
        per_channel, rest = divmod(flat.shape[1], filters)
        if rest or per_channel == 0:
            raise ValueError(f"the input of {following[0]!r} has {flat.shape[1]} features, not a whole number per "
                             f"filter of {conv_name!r} ({filters})")
        n_idx = torch.randint(n_images, (samples,), generator=gen)
        o_idx = torch.randint(nxt.out_features, (samples,), generator=gen)
        xs = flat[n_idx.to(flat.device)].reshape(samples, filters, per_channel).cpu()
        ws = w_next[o_idx.to(w_next.device)].reshape(samples, filters, per_channel).cpu()
        out = (xs * ws).sum(dim=2)
    return out.to(dtype=torch.float32, device="cpu").contiguous()


def thinet_select_filters(contributions: torch.Tensor, sparsity: float) -> torch.Tensor:
    a = contributions.detach().to(device="cpu", dtype=torch.float64).numpy()
    if a.ndim != 2:
        raise ValueError(f"contributions must be (M, C), got shape {tuple(a.shape)}")
    channels = a.shape[1]
    count = _count_to_prune(sparsity, channels)
    removed = np.zeros(channels, dtype=bool)
    running = np.zeros(a.shape[0], dtype=np.float64)
    for _ in range(count):
        scores = ((running[:, None] + a) ** 2).sum(axis=0)
        scores[removed] = np.inf
        best = int(np.argmin(scores))  # first minimum: ties go to the lower index
        removed[best] = True
        running += a[:, best]
    keep = (~removed).astype(np.float64)
    return torch.from_numpy(keep).to(dtype=contributions.dtype if contributions.is_floating_point() else torch.float32)


def apply_thinet_pruning(model: nn.Module, prune_ratio_dict: dict[str, float], images: torch.Tensor,
                         samples: int = 1024) -> dict[str, torch.Tensor]:
    weights = prunable_weights(model)
    masks: dict[str, torch.Tensor] = {}
    for name, ratio in prune_ratio_dict.items():
        module_name, _ = _split_name(name)
        if name not in weights or not isinstance(model.get_submodule(module_name), nn.Conv2d):
            raise ValueError(f"{name!r} is not a Conv2d weight of the model")
        contributions = next_layer_contributions(model, module_name, images, samples)
        keep = thinet_select_filters(contributions, ratio)
        current = prunable_weights(model)[name].detach()
        mask = keep.to(device=current.device, dtype=current.dtype).reshape(-1, *([1] * (current.dim() - 1)))
        mask = mask.expand_as(current).clone()
        _impose_mask(model, name, mask)
        masks[name] = mask
        for bn_name, bn_mask in _bn_masks(model, name, mask).items():
            _impose_mask(model, bn_name, bn_mask)
            masks[bn_name] = bn_mask
    return masks
