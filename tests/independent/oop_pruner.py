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


# ---------------------------------------------------------------------------------------------
# YAML
# ---------------------------------------------------------------------------------------------
class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping."""


def _construct_mapping_no_duplicates(loader, node, deep=False):
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ValueError(f"line {key_node.start_mark.line + 1}: {key!r} is given twice "
                             f"(first on line {seen[key] + 1})")
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping_no_duplicates)


def read_prune_ratios_from_yaml(file_name, model):
    text = Path(file_name).read_text()
    try:
        document = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "somewhere"
        raise ValueError(f"{file_name}: malformed YAML at {where}: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("prune_ratios"), dict):
        raise ValueError(f"{file_name}: expected a top-level 'prune_ratios' mapping of layer name -> ratio")
    valid = list(prunable_weights(model))
    ratios = {}
    for name, value in document["prune_ratios"].items():
        if name not in valid:
            raise ValueError(f"{file_name}: {name!r} is not a Conv2d/Linear weight of the model; valid names: "
                             + ", ".join(valid))
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 <= value < 1.0):
            raise ValueError(f"{file_name}: ratio of {name} must be a number in [0, 1), got {value!r}")
        ratios[name] = float(value)
    return ratios


# ---------------------------------------------------------------------------------------------
# masks
# ---------------------------------------------------------------------------------------------
def unstructured_prune(tensor, sparsity):
    magnitudes = tensor.detach().abs().reshape(-1)
    k = int(round(sparsity * magnitudes.numel()))
    keep = torch.ones(magnitudes.numel(), dtype=torch.bool, device=tensor.device)
    if k > 0:
        order = torch.argsort(magnitudes.float(), stable=True)
        keep[order[:k]] = False
    return keep.reshape(tensor.shape)


def filter_prune(tensor, sparsity):
    n_filters = tensor.shape[0]
    norms = tensor.detach().float().reshape(n_filters, -1).norm(p=2, dim=1)
    k = int(round(sparsity * n_filters))
    keep_filter = torch.ones(n_filters, dtype=torch.bool, device=tensor.device)
    if k > 0:
        keep_filter[torch.argsort(norms, stable=True)[:k]] = False
    view_shape = (n_filters,) + (1,) * (tensor.dim() - 1)
    return keep_filter.reshape(view_shape).expand(tensor.shape).clone()


# ---------------------------------------------------------------------------------------------
# The Pruner: masks keyed by module objects, kept in force by a forward pre-hook of its own
# ---------------------------------------------------------------------------------------------
def _raw(module, pname):
    """The tensor that holds the values: ``<pname>_orig`` under torch.nn.utils.prune, else the parameter."""
    return getattr(module, pname + "_orig", None) if hasattr(module, pname + "_orig") else getattr(module, pname)


class Pruner:
    def __init__(self):
        self.masks = {}  # module -> {param name: bool mask}
        self.handles = []

    def set_mask(self, module, pname, mask):
        self.masks.setdefault(module, {})[pname] = mask.bool()

    @torch.no_grad()
    def enforce(self, module=None):
        items = self.masks.items() if module is None else [(module, self.masks.get(module, {}))]
        for mod, per_param in items:
            for pname, mask in per_param.items():
                raw = _raw(mod, pname)
                raw.copy_(torch.where(mask.to(raw.device), raw, torch.zeros((), dtype=raw.dtype, device=raw.device)))

    def _pre_hook(self, module, inputs):
        self.enforce(module)

    def attach(self, model):
        old = getattr(model, "_pruner", None)
        if old is not None:
            old.detach()
        for module in self.masks:
            self.handles.append(module.register_forward_pre_hook(self._pre_hook))
        model._pruner = self
        self.enforce()
        return self

    def detach(self):
        for handle in self.handles:
            handle.remove()
        self.handles = []

    @classmethod
    def from_named_masks(cls, model, named_masks):
        modules = dict(model.named_modules())
        pruner = cls()
        for full_name, mask in named_masks.items():
            module_name, _, pname = full_name.rpartition(".")
            pruner.set_mask(modules[module_name], pname, mask)
        return pruner


def _following_batchnorm(model, conv):
    """The first BatchNorm registered after ``conv`` with one channel per filter of it."""
    found = False
    for name, module in model.named_modules():
        if module is conv:
            found = True
        elif found and isinstance(module, (nn.Conv2d, nn.Linear)):
            return None, None
        elif found and isinstance(module, nn.modules.batchnorm._BatchNorm):
            return (name, module) if module.num_features == conv.weight.shape[0] else (None, None)
    return None, None


def apply_pruning(model, sparsity_type, prune_ratio_dict):
    if sparsity_type not in SPARSITY_TYPES:
        raise ValueError(f"unknown sparsity_type {sparsity_type!r}; choose one of {SPARSITY_TYPES}")
    modules = dict(model.named_modules())
    old = getattr(model, "_pruner", None)
    pruner = Pruner()
    if old is not None:  # keep masks of layers not named this time
        for module, per_param in old.masks.items():
            for pname, mask in per_param.items():
                pruner.set_mask(module, pname, mask)
    returned = {}
    for full_name, ratio in prune_ratio_dict.items():
        module_name, _, pname = full_name.rpartition(".")
        module = modules[module_name]
        weight = getattr(module, pname).detach()
        if sparsity_type == "unstructured":
            mask = unstructured_prune(weight, ratio)
        else:
            mask = filter_prune(weight, ratio)
        pruner.set_mask(module, pname, mask)
        returned[full_name] = mask
        if sparsity_type == "filter":
            bn_name, bn = _following_batchnorm(model, module)
            if bn is not None:
                keep = mask.reshape(mask.shape[0], -1)[:, 0].clone()
                for bn_param in ("weight", "bias"):
                    pruner.set_mask(bn, bn_param, keep)
                    returned[f"{bn_name}.{bn_param}"] = keep
    pruner.attach(model)
    return returned


def test_sparsity(model, sparsity_type="unstructured"):
    layers, zero_filters = {}, {}
    zeros_total = count_total = 0
    print(f"{'layer':<28}{'zeros':>10}{'total':>10}{'sparsity':>10}" + (f"{'0-filters':>12}" if sparsity_type == "filter" else ""))
    for name, weight in prunable_weights(model).items():
        w = weight.detach()
        zeros = int((w == 0).sum().item())
        total = w.numel()
        layers[name] = zeros / total
        zeros_total += zeros
        count_total += total
        row_zero = (w.reshape(w.shape[0], -1) == 0).all(dim=1)
        zero_filters[name] = int(row_zero.sum().item())
        line = f"{name:<28}{zeros:>10}{total:>10}{layers[name]:>10.4f}"
        if sparsity_type == "filter":
            line += f"{zero_filters[name]:>6}/{w.shape[0]}"
        print(line)
    overall = zeros_total / max(count_total, 1)
    print(f"overall sparsity: {overall:.4f}")
    result = {"overall": overall, "layers": layers}
    if sparsity_type == "filter":
        result["zero_filters"] = zero_filters
    return result


def masked_retrain(model, prune_masks, optimizer, loss_fn, train_loader, test_loader, num_epochs, device,
                   scheduler=None, progress=True):
    pruner = Pruner.from_named_masks(model, prune_masks).attach(model)
    history = []
    for epoch in range(num_epochs):
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        for images, labels in train_loader:
            images, labels = images.to(device), labels.to(device)
            optimizer.zero_grad()
            logits = model(images)
            loss = loss_fn(logits, labels)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            pruner.enforce()
            loss_sum += loss.item() * len(labels)
            correct += (logits.argmax(1) == labels).sum().item()
            seen += len(labels)
        entry = {"loss": loss_sum / max(seen, 1), "accuracy": 100.0 * correct / max(seen, 1),
                 "test_accuracy": evaluate(model, test_loader, device)}
        if progress:
            print(f"retrain epoch {epoch + 1}/{num_epochs}: {entry}")
        history.append(entry)
    return history


def _retrain(model, masks, train_loader, test_loader, epochs, device, lr, weight_decay, progress):
    optimizer = make_optimizer(model, lr, weight_decay=weight_decay)
    scheduler = make_scheduler(optimizer, max(1, epochs * len(train_loader)))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)
    return masked_retrain(model, masks, optimizer, loss_fn, train_loader, test_loader, epochs, device, scheduler, progress)


def oneshot_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, train_loader, test_loader, epochs, device,
                            lr=0.01, weight_decay=5e-4, progress=True):
    ratios = dict(prune_ratio_dict)
    masks = apply_pruning(model, sparsity_type, ratios)
    sparsity = test_sparsity(model, sparsity_type)["overall"]
    before = evaluate(model, test_loader, device)
    _retrain(model, masks, train_loader, test_loader, epochs, device, lr, weight_decay, progress)
    return [{"iteration": 1, "ratios": ratios, "sparsity": sparsity, "accuracy_before_retrain": before,
             "accuracy": evaluate(model, test_loader, device)}]


def iterative_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, iterations=3, train_loader, test_loader,
                              epochs, device, lr=0.01, weight_decay=5e-4, progress=True):
    if iterations < MIN_IMP_ITERATIONS:
        raise ValueError(f"IMP needs at least {MIN_IMP_ITERATIONS} iterations, got {iterations}")
    targets = dict(prune_ratio_dict)
    # the schedule, in percent: the same fraction of the remaining weights each round
    schedule_percent = [{name: 100.0 * (1.0 - (1.0 - target) ** (t / iterations)) for name, target in targets.items()}
                        for t in range(1, iterations + 1)]
    schedule = [{name: pct / 100.0 for name, pct in round_pct.items()} for round_pct in schedule_percent]
    schedule[-1] = dict(targets)
    log = []
    for t, ratios in enumerate(schedule, start=1):
        masks = apply_pruning(model, sparsity_type, ratios)
        sparsity = test_sparsity(model, sparsity_type)["overall"]
        before = evaluate(model, test_loader, device)
        _retrain(model, masks, train_loader, test_loader, epochs, device, lr, weight_decay, progress)
        log.append({"iteration": t, "ratios": dict(ratios), "sparsity": sparsity, "accuracy_before_retrain": before,
                    "accuracy": evaluate(model, test_loader, device)})
    return log


def prune_channels_after_filter_prune(model):
    small = copy_without_pruning(model)
    pruner = getattr(small, "_pruner", None)
    if pruner is not None:
        pruner.detach()
        del small._pruner
    small.eval()
    keep_in = None  # input channels kept, from the previous conv
    last_bn_keep = None
    for name, module in list(small.features.named_children()):
        if isinstance(module, nn.Conv2d):
            w = module.weight.detach()
            keep_out = (w.reshape(w.shape[0], -1) != 0).any(dim=1)
            if keep_in is not None:
                w = w[:, keep_in]
            w = w[keep_out]
            new = nn.Conv2d(w.shape[1], w.shape[0], module.kernel_size, module.stride, module.padding,
                            module.dilation, module.groups, module.bias is not None, module.padding_mode)
            with torch.no_grad():
                new.weight.copy_(w)
                if module.bias is not None:
                    new.bias.copy_(module.bias.detach()[keep_out])
            setattr(small.features, name, new)
            keep_in = keep_out
            last_bn_keep = keep_out
        elif isinstance(module, nn.BatchNorm2d) and last_bn_keep is not None:
            keep = last_bn_keep
            new = nn.BatchNorm2d(int(keep.sum()), module.eps, module.momentum, module.affine, module.track_running_stats)
            with torch.no_grad():
                if module.affine:
                    new.weight.copy_(module.weight.detach()[keep])
                    new.bias.copy_(module.bias.detach()[keep])
                if module.track_running_stats:
                    new.running_mean.copy_(module.running_mean[keep])
                    new.running_var.copy_(module.running_var[keep])
                    new.num_batches_tracked.copy_(module.num_batches_tracked)
            setattr(small.features, name, new)
            last_bn_keep = None
    old_fc = small.classifier
    if keep_in is not None:
        per_channel = old_fc.in_features // keep_in.numel()
        cols = keep_in.repeat_interleave(per_channel)
        new_fc = nn.Linear(int(cols.sum()), old_fc.out_features, old_fc.bias is not None)
        with torch.no_grad():
            new_fc.weight.copy_(old_fc.weight.detach()[:, cols])
            if old_fc.bias is not None:
                new_fc.bias.copy_(old_fc.bias.detach())
        small.classifier = new_fc
    return small


def plot_sparsity_vs_accuracy(records, out_path, dense_accuracy=None, title="VGG13 on CIFAR-10: accuracy vs sparsity"):
    points = [(r["label"], float(r["sparsity"]), float(r["accuracy"])) for r in records]
    plt.figure(figsize=(6, 4.5))
    plt.plot([p[1] for p in points], [p[2] for p in points], "-o", color="#0072B2", label="pruned models")
    for label, x, y in points:
        plt.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if dense_accuracy is not None:
        plt.axhline(dense_accuracy, color="grey", linestyle="--", label=f"dense ({dense_accuracy:.2f}%)")
    plt.xlabel("overall sparsity")
    plt.ylabel("test accuracy (%)")
    plt.title(title)
    plt.legend()
    plt.savefig(out_path, dpi=FIGURE_DPI)
    plt.close()
    return points


def plot_mask(weight, out_path, title=""):
    w = weight.detach().cpu()
    image = (w.reshape(w.shape[0], -1) != 0).numpy().astype(np.uint8)
    plt.figure(figsize=(8, 4))
    plt.imshow(image, cmap=ListedColormap(MASK_COLOURS), vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    plt.legend(handles=[Patch(color=MASK_COLOURS[1], label="kept"), Patch(color=MASK_COLOURS[0], label="pruned")],
               loc="upper right")
    plt.xlabel("C_in x kH x kW")
    plt.ylabel("filter")
    plt.title(title)
    plt.savefig(out_path, dpi=FIGURE_DPI)
    plt.close()
    return image
