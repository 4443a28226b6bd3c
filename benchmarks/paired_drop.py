"""Is a pruned model's accuracy drop more than noise?  Compare it with the dense model image by image.

    python benchmarks/paired_drop.py pretrained/vgg13_cifar10.pt results/Imp_unstructured_0.80_acc_89.96.pt

For each model, on the test set in float32: its accuracy, the drop against the dense model (points), the images
the two disagree on (b: the dense model right and the pruned one wrong; c: the reverse) and the paired standard
error of the drop, sqrt(b + c - (b - c)^2 / n) / n.  Both models see the same images, so this error is much
smaller than that of one accuracy (about 0.3 points at 90 % on 10,000 images); a drop within one or two of it
is what another seed could give.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hw2.data import load_dataset, make_loaders  # noqa: E402
from hw2.report import load_model  # noqa: E402
from hw2.train import exact_float32, exact_layout  # noqa: E402


def predictions(path: Path, loader) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted and true labels of the model saved at ``path`` (plain, masked or compacted), in float32."""
    layout = exact_layout("cpu")  # as evaluate() measures every accuracy
    model = load_model(path)[0].to(memory_format=layout)
    predicted, labels = [], []
    with torch.no_grad(), exact_float32():
        for x, y in loader:
            predicted.append(model(x.contiguous(memory_format=layout)).argmax(1))
            labels.append(y)
    return torch.cat(predicted), torch.cat(labels)


def paired(dense: torch.Tensor, pruned: torch.Tensor, labels: torch.Tensor) -> dict:
    """Accuracy, drop and its paired standard error (points) of ``pruned`` against ``dense`` predictions."""
    n = len(labels)
    dense_right, pruned_right = dense == labels, pruned == labels
    b = int((dense_right & ~pruned_right).sum())
    c = int((~dense_right & pruned_right).sum())
    return {"accuracy": 100 * int(pruned_right.sum()) / n, "drop": 100 * (b - c) / n,
            "dense_right_pruned_wrong": b, "dense_wrong_pruned_right": c,
            "paired_standard_error_of_drop": 100 * math.sqrt(b + c - (b - c) ** 2 / n) / n}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dense", type=Path, help="the dense model (e.g. pretrained/vgg13_cifar10.pt)")
    parser.add_argument("models", type=Path, nargs="+", help="pruned models (.pt) to compare with it")
    parser.add_argument("--dataset", choices=("cifar10", "synthetic"), default="cifar10")
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    for path in (args.dense, *args.models):
        if not path.is_file():
            parser.error(f"{path}: no such file")
    _, loader = make_loaders(load_dataset(args.dataset, args.data_dir, download=False), 256, "cpu")
    dense, labels = predictions(args.dense, loader)
    figures = {"dense": str(args.dense), "dense_accuracy": 100 * int((dense == labels).sum()) / len(labels),
               "images": len(labels), "models": {}}
    print(f"dense {args.dense.name}: {figures['dense_accuracy']:.2f}% on {len(labels)} test images (float32)")
    for path in args.models:
        pruned, _ = predictions(path, loader)
        result = figures["models"][str(path)] = paired(dense, pruned, labels)
        print(f"{path.name}: {result['accuracy']:.2f}%, drop {result['drop']:.2f} +- "
              f"{result['paired_standard_error_of_drop']:.2f} points (paired standard error; "
              f"{result['dense_right_pruned_wrong']} images lost, {result['dense_wrong_pruned_right']} gained)")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
