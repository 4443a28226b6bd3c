"""Pruning sweep without retraining: how much of a trained model can go before accuracy falls?

    python hw2/main.py --method sweep --arch lenet5 --dataset fashion-mnist          # trains the dense LeNet-5 first
    python hw2/main.py --method sweep --pretrained pretrained/vgg13_cifar10.pt       # VGG13 on CIFAR-10
    python hw2/main.py --method sweep --type filter --sweep-ratios 0 0.1 0.2 0.3 0.4 0.5

Each ratio is applied to every prunable layer except the output layer, with
your ``apply_pruning`` (``unstructured``: the smallest ``|w|``, i.e. the
smallest L1 norm of single weights; ``filter``: whole conv filters, by your
``filter_prune``), and the pruned copy is evaluated as it is: no retraining,
no BatchNorm recalibration.  Under ``--out`` it writes
``sweep_{arch}_{dataset}_{type}.json`` (the table) and ``.png`` (accuracy
against ratio) and prints the table.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures go to files
import matplotlib.pyplot as plt  # noqa: E402
from torch import nn  # noqa: E402

from hw2 import pruning  # noqa: E402
from hw2.checkpoint import write_json  # noqa: E402
from hw2.models import copy_without_pruning, prunable_weights  # noqa: E402
from hw2.train import evaluate  # noqa: E402

SWEEP_RATIOS = (0.0, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99)  # fraction pruned in every layer but the output


def output_layer(model: nn.Module) -> str:
    """Name of the output layer's weight: the last registered Conv2d/Linear weight (``classifier.weight``, ``fc.weight``, ...)."""
    return list(prunable_weights(model))[-1]


def layer_ratios(model: nn.Module, ratio: float, sparsity_type: str = "unstructured") -> dict[str, float]:
    """``ratio`` for every prunable weight except the output layer (for ``filter``: conv weights only)."""
    last = output_layer(model)
    return {name: ratio for name, weight in prunable_weights(model).items()
            if name != last and (sparsity_type == "unstructured" or weight.dim() == 4)}


def overall_sparsity(model: nn.Module) -> float:
    """Zero weights / all Conv2d and Linear weights (the convention of ``hw2/__init__.py``)."""
    weights = list(prunable_weights(model).values())
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def prune_sweep(model: nn.Module, test_loader, device, ratios=SWEEP_RATIOS,
                sparsity_type: str = "unstructured") -> list[dict]:
    """Prune a copy of ``model`` at each ratio (no retraining) and measure it; ``model`` is left as it is.

    Returns:
        list[dict], one per ratio in order: ``"ratio"`` (per layer), ``"sparsity"``
        (overall, output layer included), ``"accuracy"`` (test, percent, float32).
    """
    records = []
    for ratio in ratios:
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"sweep ratios must be in [0, 1), got {ratio}")
        pruned = copy_without_pruning(model)
        if ratio > 0:
            pruning.apply_pruning(pruned, sparsity_type, layer_ratios(pruned, ratio, sparsity_type))
        records.append({"ratio": float(ratio), "sparsity": overall_sparsity(pruned),
                        "accuracy": evaluate(pruned, test_loader, device, exact=True)})
    return records


def plot_sweep(records: list[dict], out_path: Path, title: str, dense_accuracy: float | None = None) -> None:
    """Accuracy (percent) against the per-layer prune ratio (percent), one line; saved as a PNG."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.plot([100 * r["ratio"] for r in records], [r["accuracy"] for r in records], marker="o", color="#0072B2",
            label="pruned, not retrained")
    if dense_accuracy is not None:
        ax.axhline(dense_accuracy, color="#555555", linestyle="--", linewidth=1, label=f"dense ({dense_accuracy:.2f}%)")
    ax.set_xlabel("prune ratio of every layer but the output layer (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=150)
    plt.close(fig)


def format_table(records: list[dict], dense_accuracy: float) -> str:
    lines = [f"{'ratio':>7}{'sparsity':>10}{'accuracy':>10}{'drop':>8}"]
    for r in records:
        lines.append(f"{r['ratio']:>7.2f}{r['sparsity']:>10.4f}{r['accuracy']:>10.2f}{dense_accuracy - r['accuracy']:>8.2f}")
    return "\n".join(lines)


def run_sweep(model: nn.Module, test_loader, device, out_dir: Path, arch: str, dataset: str, ratios=SWEEP_RATIOS,
              sparsity_type: str = "unstructured", dense_origin: str = "") -> dict:
    """The sweep of ``main.py --method sweep``: table printed, JSON and PNG under ``out_dir``; returns the JSON dict."""
    dense_accuracy = evaluate(model, test_loader, device, exact=True)
    records = prune_sweep(model, test_loader, device, ratios, sparsity_type)
    stem = f"sweep_{arch}_{dataset}_{sparsity_type}"
    result = {"arch": arch, "dataset": dataset, "type": sparsity_type, "output_layer_kept": output_layer(model),
              "dense_accuracy": dense_accuracy, "dense_origin": dense_origin, "retrained": False, "records": records}
    write_json(Path(out_dir) / f"{stem}.json", result)
    plot_sweep(records, Path(out_dir) / f"{stem}.png",
               f"{arch} on {dataset}: {sparsity_type} pruning without retraining", dense_accuracy)
    print(format_table(records, dense_accuracy))
    print(f"wrote {Path(out_dir) / stem}.json and .png")
    return result

