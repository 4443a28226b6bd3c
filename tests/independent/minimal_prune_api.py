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


# solution F: a minimal student, leaning on torch.nn.utils.prune and hw2.train
def read_prune_ratios_from_yaml(file_name: str | Path, model: nn.Module) -> dict[str, float]:
    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader, node):
        keys = [loader.construct_object(k) for k, _ in node.value]
        if len(keys) != len(set(keys)):
            raise ValueError(f"{file_name}: a name is given twice (line {node.start_mark.line + 1})")
        return loader.construct_mapping(node)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        data = yaml.load(Path(file_name).read_text(), Loader=Loader)
    except yaml.YAMLError as e:
        raise ValueError(f"malformed YAML in {file_name}: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("prune_ratios"), dict):
        raise ValueError(f"{file_name}: no prune_ratios mapping")
    valid = prunable_weights(model)
    for name, r in data["prune_ratios"].items():
        if name not in valid:
            raise ValueError(f"unknown layer {name!r}; valid names: {list(valid)}")
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 <= r < 1:
            raise ValueError(f"ratio of {name} must be a number in [0, 1), got {r!r}")
    return {name: float(r) for name, r in data["prune_ratios"].items()}


def unstructured_prune(tensor: torch.Tensor, sparsity: float) -> torch.Tensor:
    # prune.l1_unstructured uses topk: ties in any order, and .view(-1) fails on channels_last weights
    mask = torch.ones_like(tensor, memory_format=torch.contiguous_format)
    mask.view(-1)[tensor.detach().abs().flatten().sort(stable=True).indices[:round(sparsity * tensor.numel())]] = 0
    return mask


def filter_prune(tensor: torch.Tensor, sparsity: float) -> torch.Tensor:
    mask = torch.ones_like(tensor, memory_format=torch.contiguous_format)
    mask[tensor.detach().flatten(1).norm(dim=1).sort(stable=True).indices[:round(sparsity * len(tensor))]] = 0
    return mask


def apply_pruning(model: nn.Module, sparsity_type: str, prune_ratio_dict: dict[str, float]) -> dict[str, torch.Tensor]:
    if sparsity_type not in SPARSITY_TYPES:
        raise ValueError(f"unknown sparsity_type {sparsity_type!r}")
    fn = unstructured_prune if sparsity_type == "unstructured" else filter_prune
    modules = dict(model.named_modules())
    names = list(modules)
    masks = {}
    for name, ratio in prune_ratio_dict.items():
        mod_name = name.rsplit(".", 1)[0]
        module = modules[mod_name]
        prune.custom_from_mask(module, "weight", fn(module.weight.detach(), ratio))
        masks[name] = module.weight_mask
        nxt = names.index(mod_name) + 1
        if sparsity_type == "filter" and nxt < len(names) and isinstance(modules[names[nxt]], nn.BatchNorm2d):
            bn = modules[names[nxt]]
            channel = module.weight_mask.flatten(1).amax(1)
            for attr in ("weight", "bias"):
                prune.custom_from_mask(bn, attr, channel)
                masks[f"{names[nxt]}.{attr}"] = getattr(bn, attr + "_mask")
    return masks


def test_sparsity(model: nn.Module, sparsity_type: str = "unstructured") -> dict:
    ws = prunable_weights(model)
    zeros = {n: int((w == 0).sum()) for n, w in ws.items()}
    out = {"overall": sum(zeros.values()) / sum(w.numel() for w in ws.values()),
           "layers": {n: zeros[n] / w.numel() for n, w in ws.items()}}
    if sparsity_type == "filter":
        out["zero_filters"] = {n: int((w.flatten(1) == 0).all(1).sum()) for n, w in ws.items()}
    for n, w in ws.items():
        extra = f"  {out['zero_filters'][n]}/{w.shape[0]} filters" if sparsity_type == "filter" else ""
        print(f"{n:24s} {zeros[n]:9d} {w.numel():9d} {out['layers'][n]:.4f}{extra}")
    print(f"overall sparsity {out['overall']:.4f}")
    return out


def masked_retrain(model: nn.Module, prune_masks: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
                   loss_fn, train_loader, test_loader, num_epochs: int, device, scheduler=None,
                   progress: bool = True) -> list[dict]:
    params = dict(model.named_parameters())  # with hooks the names end in _orig: the hooks do the masking

    def reapply():
        with torch.no_grad():
            for n, m in prune_masks.items():
                if n in params:
                    params[n].mul_(m)

    history = []
    for _ in range(num_epochs):
        stats = train_epoch(model, train_loader, optimizer, loss_fn, device, scheduler, reapply, progress=progress)
        stats["test_accuracy"] = evaluate(model, test_loader, device)
        history.append(stats)
    return history


def _prune_and_retrain(model, sparsity_type, ratios, iteration, train_loader, test_loader, epochs, device, lr,
                       weight_decay, progress):
    masks = apply_pruning(model, sparsity_type, ratios)
    sparsity = test_sparsity(model, sparsity_type)["overall"]
    before = evaluate(model, test_loader, device)
    optimizer = make_optimizer(model, lr, weight_decay=weight_decay)
    scheduler = make_scheduler(optimizer, epochs * len(train_loader))
    masked_retrain(model, masks, optimizer, nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING), train_loader,
                   test_loader, epochs, device, scheduler, progress)
    return {"iteration": iteration, "ratios": dict(ratios), "sparsity": sparsity,
            "accuracy_before_retrain": before, "accuracy": evaluate(model, test_loader, device)}


def oneshot_magnitude_prune(model: nn.Module, sparsity_type: str, prune_ratio_dict: dict[str, float], *,
                            train_loader, test_loader, epochs: int, device, lr: float = 0.01,
                            weight_decay: float = 5e-4, progress: bool = True) -> list[dict]:
    return [_prune_and_retrain(model, sparsity_type, prune_ratio_dict, 1, train_loader, test_loader, epochs, device,
                               lr, weight_decay, progress)]


def iterative_magnitude_prune(model: nn.Module, sparsity_type: str, prune_ratio_dict: dict[str, float], *,
                              iterations: int = 3, train_loader, test_loader, epochs: int, device,
                              lr: float = 0.01, weight_decay: float = 5e-4, progress: bool = True) -> list[dict]:
    if iterations < MIN_IMP_ITERATIONS:
        raise ValueError(f"iterations must be at least {MIN_IMP_ITERATIONS}, got {iterations}")
    return [_prune_and_retrain(model, sparsity_type,
                               {n: r if t == iterations else 1 - (1 - r) ** (t / iterations) for n, r in prune_ratio_dict.items()},
                               t, train_loader, test_loader, epochs, device, lr, weight_decay, progress)
            for t in range(1, iterations + 1)]


def prune_channels_after_filter_prune(model: nn.Module) -> nn.Module:
    new = copy_without_pruning(model)
    keep = None
    with torch.no_grad():
        for m in new.features:
            if isinstance(m, nn.Conv2d):
                out_keep = m.weight.flatten(1).ne(0).any(1)
                w = m.weight[out_keep]
                m.weight = nn.Parameter(w if keep is None else w[:, keep])
                m.out_channels, m.in_channels = m.weight.shape[:2]
                keep = out_keep
            elif isinstance(m, nn.BatchNorm2d):
                m.weight, m.bias = nn.Parameter(m.weight[keep]), nn.Parameter(m.bias[keep])
                m.running_mean, m.running_var = m.running_mean[keep], m.running_var[keep]
                m.num_features = int(keep.sum())
        new.classifier.weight = nn.Parameter(new.classifier.weight[:, keep])
        new.classifier.in_features = int(keep.sum())
    return new


def plot_sparsity_vs_accuracy(records: list[dict], out_path: str | Path, dense_accuracy: float | None = None,
                              title: str = "VGG13 on CIFAR-10: accuracy vs sparsity") -> list[tuple[str, float, float]]:
    points = [(r["label"], r["sparsity"], r["accuracy"]) for r in records]
    fig, ax = plt.subplots()
    for label, s, a in points:
        ax.scatter(s, a, label=label)
    if dense_accuracy is not None:
        ax.axhline(dense_accuracy, linestyle="--", color="black", label="dense")
    ax.set(xlabel="overall sparsity", ylabel="test accuracy (%)", title=title)
    ax.legend()
    fig.savefig(out_path, dpi=FIGURE_DPI)
    plt.close(fig)
    return points


def plot_mask(weight: torch.Tensor, out_path: str | Path, title: str = "") -> np.ndarray:
    img = (weight.detach().reshape(weight.shape[0], -1) != 0).cpu().numpy().astype(float)
    fig, ax = plt.subplots()
    ax.imshow(img, cmap=ListedColormap(MASK_COLOURS), vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    ax.legend(handles=[Patch(color=MASK_COLOURS[1], label="kept"), Patch(color=MASK_COLOURS[0], label="pruned")])
    ax.set_title(title)
    fig.savefig(out_path, dpi=FIGURE_DPI)
    plt.close(fig)
    return img
