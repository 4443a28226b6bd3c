"""Per-layer analysis for the walkthrough (provided, not graded).

* ``describe_layers``: every prunable weight with its shape and size, i.e. the
  exact names to put in the YAML files and where the weights are.
* ``plot_weight_histograms``: how the weight magnitudes of each conv layer are
  distributed (what magnitude pruning cuts into).
* ``sensitivity_scan`` / ``plot_sensitivity``: accuracy after pruning ONE layer
  at a time to 0.1 .. 0.9, with no retraining.  It prunes with *your*
  ``unstructured_prune`` / ``filter_prune`` from ``hw2/pruning.py``.

Library code: everything arrives as arguments; nothing reads globals or the CLI.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures go to files; the notebook shows them with IPython.display.Image
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from hw2 import pruning
from hw2.models import prunable_weights
from hw2.train import evaluate

FIGURE_DPI = pruning.FIGURE_DPI  # one resolution for every figure of the project
SCAN_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # per-layer prune ratios of the scan (fractions)
DENSE_COLOUR = "#555555"  # reference lines for the dense model, in every figure


@dataclass(frozen=True)
class LayerInfo:
    """One prunable weight: its YAML name, shape and number of weights."""
    name: str
    shape: tuple[int, ...]
    weights: int
    share: float  # fraction of all prunable weights of the model


def describe_layers(model: nn.Module, print_table: bool = True) -> list[LayerInfo]:
    """The Conv2d and Linear weights of ``model`` (the names the YAML files use), in model order.

    Prints a table (name, shape, weights, share) and the total parameter count
    (prunable weights plus BatchNorm parameters and biases) when ``print_table``.
    """
    weights = prunable_weights(model)
    total_prunable = sum(w.numel() for w in weights.values())
    rows = [LayerInfo(name, tuple(w.shape), w.numel(), w.numel() / total_prunable) for name, w in weights.items()]
    if print_table:
        all_parameters = sum(p.numel() for p in model.parameters())
        header = f"{'parameter name (YAML key)':<26}{'shape':<20}{'weights':>12}{'share':>8}"
        lines = [header, "-" * len(header)]
        lines += [f"{r.name:<26}{str(r.shape):<20}{r.weights:>12,}{r.share:>8.1%}" for r in rows]
        lines += ["-" * len(header), f"{'prunable weights':<46}{total_prunable:>12,}",
                  f"{'BatchNorm and bias parameters':<46}{all_parameters - total_prunable:>12,}",
                  f"{'all parameters':<46}{all_parameters:>12,}"]
        print("\n".join(lines))
    return rows


def overall_sparsity(model: nn.Module) -> float:
    """Zero weights / all weights over the Conv2d and Linear weights (the convention of ``hw2/__init__.py``)."""
    weights = [w.detach() for w in prunable_weights(model).values()]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def _save(fig, out_path: str | Path) -> Path:
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=FIGURE_DPI)
    plt.close(fig)
    return out_path


# ---------------------------------------------------------------------------------------------
# Weight-magnitude histograms
# ---------------------------------------------------------------------------------------------
def plot_weight_histograms(model: nn.Module, out_path: str | Path, title: str,
                           ratios: dict[str, float] | None = None, bins: int = 60) -> dict[str, np.ndarray]:
    """One histogram of ``|w|`` per conv layer, in a grid, saved as a PNG.

    Args:
        model: the network (dense, or pruned with zeros in its weights).
        out_path: where to write the PNG.
        title: names the model and its state, e.g. ``"VGG13 dense"``; the
            overall sparsity is appended.
        ratios: optional parameter name -> prune ratio; for each, a dashed line
            marks the magnitude below which unstructured pruning at that ratio cuts.
        bins: histogram bins per layer.

    Returns:
        dict name -> counts (``bins`` integers) of the NONZERO weights; zeros
        (pruned weights) are reported in each panel's text instead of as a bar.
    """
    convs = {name: w.detach().float().cpu() for name, w in prunable_weights(model).items() if w.dim() == 4}
    columns = 5
    rows = -(-len(convs) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.0 * columns, 2.6 * rows + 0.8), squeeze=False)
    counts: dict[str, np.ndarray] = {}
    for ax, (name, weight) in zip(axes.flat, convs.items()):
        magnitude = weight.abs().flatten()
        nonzero = magnitude[magnitude > 0].numpy()
        upper = float(nonzero.max()) if nonzero.size else 1.0  # every nonzero weight lands in a bin
        counts[name], _, _ = ax.hist(nonzero, bins=bins, range=(0.0, upper), color="#0072B2")
        counts[name] = counts[name].astype(np.int64)
        zeros = magnitude.numel() - nonzero.size
        ax.set_title(f"{name} {tuple(weight.shape)}\nzeros (pruned): {zeros / magnitude.numel():.1%}", fontsize=8)
        if ratios and ratios.get(name, 0.0) > 0:
            k = int(round(ratios[name] * magnitude.numel()))
            threshold = magnitude.kthvalue(max(k, 1)).values.item()
            ax.axvline(threshold, color="#D55E00", linestyle="--", linewidth=1.2,
                       label=f"cut at ratio {ratios[name]:.2f}")
            ax.legend(fontsize=6, loc="lower left", framealpha=0.9)
        ax.set_xlabel("|weight| (unitless)", fontsize=7)
        ax.set_ylabel("weights per bin (count)", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(convs):]:
        ax.axis("off")
    fig.suptitle(f"{title}: |weight| per conv layer, overall sparsity {overall_sparsity(model):.2f}", fontsize=11)
    fig.tight_layout()
    _save(fig, out_path)
    return counts


# ---------------------------------------------------------------------------------------------
# Per-layer sensitivity scan
# ---------------------------------------------------------------------------------------------
@dataclass
class SensitivityScan:
    """Accuracy (percent) after pruning one layer alone to each ratio, with no retraining."""
    sparsity_type: str
    ratios: tuple[float, ...]
    dense_accuracy: float
    accuracy: dict[str, list[float]] = field(default_factory=dict)  # layer name -> one accuracy per ratio

    def max_ratio_within(self, max_drop: float) -> dict[str, float]:
        """Per layer, the largest scanned ratio whose accuracy is at most ``max_drop`` points below dense (0.0 if none)."""
        return {name: max((r for r, a in zip(self.ratios, accs) if self.dense_accuracy - a <= max_drop), default=0.0)
                for name, accs in self.accuracy.items()}


def _batchnorm_after(model: nn.Module, conv_name: str) -> nn.BatchNorm2d | None:
    """The BatchNorm that normalises ``conv_name``'s output (the next module, in VGG13)."""
    conv = model.get_submodule(conv_name)
    names = [name for name, _ in model.named_modules()]
    for name in names[names.index(conv_name) + 1:]:
        module = model.get_submodule(name)
        if isinstance(module, nn.BatchNorm2d) and module.num_features == conv.out_channels:
            return module
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            return None
    return None


@torch.no_grad()
def sensitivity_scan(model: nn.Module, test_loader, device, sparsity_type: str,
                     ratios: tuple[float, ...] = SCAN_RATIOS, layers: list[str] | None = None) -> SensitivityScan:
    """Prune each layer alone to each ratio (no retraining), measure test accuracy, restore the layer.

    Uses ``pruning.unstructured_prune`` or ``pruning.filter_prune`` (yours).  For
    ``filter``, a pruned filter's BatchNorm scale and shift are zeroed too, as
    ``apply_pruning`` does, so the channel is dead end to end.  ``model`` is
    left exactly as it was.

    Args:
        model: a network without pruning masks attached (e.g. the dense model).
        test_loader: batches of ``(images, labels)``; a subset of the test set is fine.
        device: where the model and batches are.
        sparsity_type: ``"unstructured"`` or ``"filter"``.
        ratios: prune ratios to try per layer, fractions in [0, 1).
        layers: parameter names to scan; default every conv weight.

    Returns:
        SensitivityScan with one accuracy (percent) per layer and ratio.
    """
    if sparsity_type not in pruning.SPARSITY_TYPES:
        raise ValueError(f"unknown sparsity type {sparsity_type!r}; choose one of {', '.join(pruning.SPARSITY_TYPES)}")
    if any(name.endswith("_orig") for name, _ in model.named_parameters()):
        raise ValueError("sensitivity_scan needs a model without pruning masks attached; pass the dense model "
                         "(or hw2.models.copy_without_pruning(model))")
    weights = {name: w for name, w in prunable_weights(model).items() if w.dim() == 4}
    layers = list(weights) if layers is None else list(layers)
    unknown = [name for name in layers if name not in weights]
    if unknown:
        raise ValueError(f"cannot scan {unknown}: not conv weights of {type(model).__name__}; valid: {', '.join(weights)}")
    prune_fn = pruning.unstructured_prune if sparsity_type == "unstructured" else pruning.filter_prune
    was_training = model.training
    scan = SensitivityScan(sparsity_type, tuple(ratios), evaluate(model, test_loader, device))
    for name in layers:
        weight = weights[name]
        batchnorm = _batchnorm_after(model, name.rpartition(".")[0]) if sparsity_type == "filter" else None
        saved = [weight.detach().clone()]
        if batchnorm is not None:
            saved += [batchnorm.weight.detach().clone(), batchnorm.bias.detach().clone()]
        scan.accuracy[name] = []
        for ratio in ratios:
            mask = prune_fn(weight.detach(), ratio)
            weight.mul_(mask)
            if batchnorm is not None:
                channel_alive = mask.flatten(1)[:, 0]  # (C_out,), 1 = filter kept
                batchnorm.weight.mul_(channel_alive)
                batchnorm.bias.mul_(channel_alive)
            scan.accuracy[name].append(evaluate(model, test_loader, device))
            weight.copy_(saved[0])
            if batchnorm is not None:
                batchnorm.weight.copy_(saved[1])
                batchnorm.bias.copy_(saved[2])
    model.train(was_training)
    return scan


def plot_sensitivity(scan: SensitivityScan, out_path: str | Path, model_name: str = "VGG13",
                     images: int | None = None) -> dict[str, list[float]]:
    """One line per layer: accuracy (no retraining) against that layer's prune ratio; dense accuracy as a reference.

    Colours run from dark (first conv) to yellow (last conv), viridis, which
    reads the same with colour-blindness; markers alternate for adjacent layers.
    ``images``, when given, is how many test images each point was measured on (stated in the title).

    Returns:
        dict layer name -> the accuracies drawn (percent), one per ratio.
    """
    fig, ax = plt.subplots(figsize=(8.0, 4.8))
    x = [100 * r for r in scan.ratios]
    colours = plt.get_cmap("viridis")(np.linspace(0.0, 0.9, max(len(scan.accuracy), 1)))
    markers = "os^Dv"
    for i, (name, accs) in enumerate(scan.accuracy.items()):
        ax.plot(x, accs, marker=markers[i % len(markers)], markersize=4, color=colours[i], label=name)
    ax.axhline(scan.dense_accuracy, color=DENSE_COLOUR, linestyle="--", linewidth=1,
               label=f"dense ({scan.dense_accuracy:.2f}%)")
    ax.set_xlabel(f"{scan.sparsity_type} prune ratio of that one layer (% of its {'filters' if scan.sparsity_type == 'filter' else 'weights'})")
    ax.set_ylabel("test accuracy, no retraining (%)")
    ax.set_xlim(0, 100)
    ax.set_title(f"{model_name} sensitivity: {scan.sparsity_type} magnitude pruning of one layer at a time,\n"
                 f"layer sparsity {min(scan.ratios):.1f} to {max(scan.ratios):.1f}, no retraining"
                 + (f", on {images:,} test images" if images else ""), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), title="pruned layer", title_fontsize=7)
    fig.tight_layout()
    _save(fig, out_path)
    return {name: list(accs) for name, accs in scan.accuracy.items()}
