"""Prune the pretrained VGG13: one-shot (OMP) or iterative (IMP), unstructured or filter.

    python main.py --method imp --type filter      # from hw2/
    python hw2/main.py --method all                 # from the repo root: all four models

Writes under --out (default results/): the pruned models named
``{Omp|Imp}_{type}_{sparsity:.2f}_acc_{accuracy:.2f}.pt``, a mask figure per
model, the comparison figure ``sparsity_vs_accuracy.png`` and the run log
``run_log.json``.  This file is provided: it calls your functions in hw2/pruning.py.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python main.py): make the hw2 package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from hw2 import REPO_ROOT  # noqa: E402
from hw2 import pruning  # noqa: E402
from hw2.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, write_json  # noqa: E402
from hw2.data import DataError, load_dataset, make_loaders  # noqa: E402
from hw2.models import VGG13, build_model, build_model_for_images, make_pruning_permanent  # noqa: E402
from hw2.train import (add_run_args, at_least, default_batch_size, evaluate, fit, make_optimizer, make_scheduler,  # noqa: E402
                       device_description, precision_name, prepare_model, resolve_device, scaled_lr, seed_everything, set_precision)

METHODS = ("omp", "imp")
TARGETS = {"unstructured": 0.80, "filter": 0.40}  # overall sparsity each type must reach
TARGET_TOLERANCE = 0.005  # the grader's: achieved overall sparsity within this of the target
DEFAULT_CONFIGS = {kind: REPO_ROOT / "configs" / f"{kind}_{target:.2f}.yaml" for kind, target in TARGETS.items()}
DEFAULT_PRETRAINED = REPO_ROOT / "pretrained" / "vgg13_cifar10.pt"
RUN_LOG = "run_log.json"
THINET_IMAGES = 256  # training images ThiNet measures the next layers' inputs on
COMPARISON_FIGURE = "sparsity_vs_accuracy.png"


def arch_title(arch: str) -> str:
    """How figures and messages name the network: ``VGG13`` for the homework's, else the ``--arch`` name."""
    return "VGG13" if arch == "vgg13" else arch


def model_label(method: str, sparsity_type: str) -> str:
    """``Omp_unstructured``, ``Imp_filter``, ...: the prefix of the file names."""
    return f"{method.capitalize()}_{sparsity_type}"


def model_file_name(method: str, sparsity_type: str, sparsity: float, accuracy: float) -> str:
    """``Imp_filter_0.40_acc_92.87.pt``: achieved overall sparsity and test accuracy (percent), 2 decimals."""
    return f"{model_label(method, sparsity_type)}_{sparsity:.2f}_acc_{accuracy:.2f}.pt"


class OneLineErrorParser(argparse.ArgumentParser):
    """Bad flags get one line that names the problem (and where to look), not a usage dump."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see python main.py --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="python main.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Prune the pretrained VGG13 on CIFAR-10 with your functions from hw2/pruning.py.",
        epilog="example: python main.py --method imp --type filter --epochs 2 --iterations 3")
    parser.add_argument("--method", required=True, choices=[*METHODS, "all", "sweep"],
                        help="omp: prune once then retrain; imp: prune in --iterations rounds; all: both (and both types unless --type); "
                             "sweep: prune at each --sweep-ratios without retraining (see hw2/sweep.py)")
    parser.add_argument("--type", dest="sparsity_type", choices=sorted(TARGETS),
                        help="unstructured (target 0.80 overall) or filter (target 0.40); required with --method omp/imp")
    parser.add_argument("--config", type=Path,
                        help="YAML with prune_ratios for --type (default: configs/unstructured_0.80.yaml or configs/filter_0.40.yaml)")
    parser.add_argument("--epochs", type=at_least(0), default=1,
                        help="masked-retraining epochs after each pruning step; 1 keeps --method all to about half an hour "
                             "on a CPU, more recovers more accuracy (default: %(default)s)")
    parser.add_argument("--iterations", type=int, default=3, help="IMP rounds, at least 3 (default: %(default)s)")
    parser.add_argument("--lr", type=at_least(0, float, above=True), default=0.02,
                        help="peak retraining learning rate at batch 512 (scaled with --batch-size), cosine decay (default: %(default)s)")
    parser.add_argument("--pretrained", type=Path, default=None,
                        help="dense checkpoint to start from (default: pretrained/vgg13_cifar10.pt; with --dataset synthetic "
                             "and no file given, a dense model is trained on the synthetic data first)")
    parser.add_argument("--dense-epochs", type=at_least(1), default=6,
                        help="epochs of that dense training, also used for --arch other than vgg13 without --pretrained (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results",
                        help="folder for models, figures and run_log.json (default: results/ at the repo root)")
    parser.add_argument("--no-progress", action="store_true", help="hide the per-epoch progress bars")
    parser.add_argument("--scope", choices=("layer", "global"), default="layer",
                        help="layer: each layer pruned to its YAML ratio; global: one magnitude threshold across the layers "
                             "(those of --config, else every conv and linear layer) to --global-sparsity, unstructured only "
                             "(default: %(default)s)")
    parser.add_argument("--criterion", choices=("norm", "thinet"), default="norm",
                        help="filter pruning: norm = smallest L2 norm (your filter_prune); thinet = the filters whose removal "
                             f"least changes the next layer's input on {THINET_IMAGES} training images (default: %(default)s)")
    parser.add_argument("--global-sparsity", type=float, default=0.80,
                        help="--scope global: target fraction of zeros over those layers (default: %(default)s)")
    parser.add_argument("--sweep-ratios", type=float, nargs="+", default=None, metavar="RATIO",
                        help="--method sweep: per-layer prune ratios in [0, 1) (default: 0 .25 .5 .6 .7 .8 .9 .95 .97 .99)")
    add_run_args(parser)
    return parser


def plan_jobs(args, parser) -> list[tuple[str, str, Path]]:
    """(method, type, config) for every model this run makes; checks flag combinations first."""
    if args.method == "sweep":  # no retraining, no YAML: the sweep sets one ratio for every layer
        if any(not 0.0 <= r < 1.0 for r in args.sweep_ratios or ()):
            parser.error(f"--sweep-ratios must each be in [0, 1), got {args.sweep_ratios}")
        return []
    if args.criterion == "thinet":
        if args.sparsity_type == "unstructured" or args.scope == "global":
            parser.error("--criterion thinet chooses whole filters: use --type filter (or leave --type out) and --scope layer")
        args.sparsity_type = "filter"
    if args.scope == "global":
        if args.sparsity_type == "filter":
            parser.error("--scope global prunes single weights by one threshold: use --type unstructured (or leave --type out)")
        if not 0.0 <= args.global_sparsity < 1.0:
            parser.error(f"--global-sparsity must be in [0, 1), got {args.global_sparsity}")
        args.sparsity_type = "unstructured"
    elif args.arch != "vgg13" and args.config is None:
        parser.error(f"--arch {args.arch} needs --config: the default YAML files name VGG13's layers")
    if args.method != "all" and args.sparsity_type is None:
        parser.error("--type is required with --method omp/imp (unstructured or filter)")
    if args.config is not None and args.sparsity_type is None:
        parser.error("--config needs --type: it holds the ratios of one sparsity type")
    methods = METHODS if args.method == "all" else (args.method,)
    if "imp" in methods and args.iterations < pruning.MIN_IMP_ITERATIONS:
        parser.error(f"--iterations must be at least {pruning.MIN_IMP_ITERATIONS} for imp, got {args.iterations}")
    kinds = (args.sparsity_type,) if args.sparsity_type else tuple(TARGETS)
    if args.config is not None and not args.config.is_file():
        parser.error(f"--config {args.config}: no such file (the templates are in configs/)")
    if args.scope == "global":  # no --config: every conv and linear layer shares the threshold
        return [(method, "unstructured", args.config) for method in methods]
    return [(method, kind, args.config or DEFAULT_CONFIGS[kind]) for kind in kinds for method in methods]


def check_plot_functions() -> None:
    """Call both plotting functions on tiny inputs before any training: a stub stops the run at once."""
    with tempfile.TemporaryDirectory() as tmp:
        pruning.plot_mask(torch.ones(2, 1, 3, 3), Path(tmp) / "mask.png", title="check")
        pruning.plot_sparsity_vs_accuracy([{"label": "Omp_unstructured", "sparsity": 0.8, "accuracy": 90.0}],
                                          Path(tmp) / "points.png", 91.0, title="check")


def load_dense_model(args, data, device, train_loader, test_loader) -> tuple[torch.nn.Module, str]:
    """The dense starting model and a line saying where it came from.

    VGG13 loads ``--pretrained`` (default pretrained/vgg13_cifar10.pt); only on
    synthetic data with no file is it trained first.  Other ``--arch`` load
    ``--pretrained`` when given, else are trained for ``--dense-epochs``.
    """
    image_shape = tuple(data.train_images.shape[1:])  # (C, H, W)
    path = args.pretrained or (DEFAULT_PRETRAINED if args.arch == "vgg13" else None)
    must_load = args.pretrained is not None or (args.arch == "vgg13" and args.dataset != "synthetic")
    if path is not None and (path.is_file() or must_load):
        if not path.is_file():
            raise CheckpointError(f"pretrained checkpoint {path} not found; train it with 'python -m hw2.train --out {path}' "
                                  "(needs a GPU for CIFAR-10, see pretrained/README.md) or pass --pretrained PATH")
        state_dict, _ = load_checkpoint(path)
        if args.arch == "vgg13":
            model = VGG13.from_state_dict(state_dict)
            if model.classifier.out_features != data.num_classes:
                raise CheckpointError(f"{path} has {model.classifier.out_features} classes but {data.name} has {data.num_classes}")
        else:
            model = build_model_for_images(args.arch, data.num_classes, image_shape)
            try:
                model.load_state_dict(state_dict)
            except RuntimeError as exc:
                raise CheckpointError(f"{path} does not fit --arch {args.arch} on {data.name}: "
                                      f"{str(exc).strip().splitlines()[0]}") from None
        return prepare_model(model, device), f"loaded {path}"
    model = prepare_model(build_model_for_images(args.arch, data.num_classes, image_shape), device)
    fit(model, train_loader, test_loader, args.dense_epochs, scaled_lr(0.2, train_loader.batch_size), device,
        label_smoothing=0.1, warmup_fraction=0.1, desc="dense", progress=not args.no_progress)
    return model, f"trained on {data.name} for {args.dense_epochs} epochs (no --pretrained given)"


def thinet_prune(model, ratios, iterations, args, device, train_loader, test_loader) -> list[dict]:
    """OMP (1 round) or IMP filter pruning with your ``apply_thinet_pruning``, each round followed by ``masked_retrain``.

    The same loop and per-round ratios as ``oneshot_magnitude_prune`` /
    ``iterative_magnitude_prune``; only the choice of filters differs.
    """
    images = next(iter(train_loader))[0][:THINET_IMAGES]  # (B, C, H, W), augmented training images
    lr = scaled_lr(args.lr, train_loader.batch_size)
    steps = []
    for step in range(1, iterations + 1):
        step_ratios = {name: target if step == iterations else 1.0 - (1.0 - target) ** (step / iterations)
                       for name, target in ratios.items()}
        masks = pruning.apply_thinet_pruning(model, step_ratios, images)
        sparsity = pruning.test_sparsity(model, "filter")["overall"]
        before = evaluate(model, test_loader, device)
        optimizer = make_optimizer(model, lr)
        scheduler = make_scheduler(optimizer, max(1, args.epochs * len(train_loader)))
        history = pruning.masked_retrain(model, masks, optimizer, torch.nn.CrossEntropyLoss(), train_loader, test_loader,
                                         args.epochs, device, scheduler, not args.no_progress)
        after = history[-1]["test_accuracy"] if history else before
        print(f"thinet step {step}: sparsity {sparsity:.4f}, accuracy {before:.2f}% -> {after:.2f}% after {args.epochs} epoch(s)")
        steps.append({"iteration": step, "ratios": step_ratios, "sparsity": sparsity,
                      "accuracy_before_retrain": before, "accuracy": after})
    return steps


def default_mask_layer(ratios: dict[str, float]) -> str:
    """The layer whose mask figure is drawn: the most pruned one (the first of equals)."""
    return max(ratios, key=lambda name: ratios[name])


def prune_one(method, sparsity_type, ratios, config, dense, args, dataset, device, train_loader, test_loader) -> dict:
    """Run one method/type, save the model and its mask figure; return its run-log entry."""
    # Omp_global_0.80_acc_...: one threshold across layers; Omp_thinet_0.40_acc_...: filters chosen by ThiNet
    kind = "global" if args.scope == "global" else "thinet" if args.criterion == "thinet" else sparsity_type
    label = model_label(method, kind)
    if args.scope == "global":
        print(f"\n=== {label}: one threshold to {args.global_sparsity:.2f} over {', '.join(ratios) if ratios else 'all conv and linear layers'} ===")
    else:
        print(f"\n=== {label}: target overall sparsity {TARGETS[sparsity_type]:.2f}, ratios from {config} ===")
    model = copy.deepcopy(dense)
    start = time.perf_counter()
    common = dict(train_loader=train_loader, test_loader=test_loader, epochs=args.epochs, device=device,
                  lr=scaled_lr(args.lr, train_loader.batch_size), progress=not args.no_progress)
    if args.criterion == "thinet":
        steps = thinet_prune(model, ratios, 1 if method == "omp" else args.iterations, args, device, train_loader, test_loader)
    elif args.scope == "global":  # one threshold across the layers of the YAML (all conv/linear layers without one)
        steps = pruning.global_magnitude_prune(model, args.global_sparsity, list(ratios) or None,
                                               iterations=1 if method == "omp" else args.iterations, **common)
    elif method == "omp":  # copies: a function that edits its dict must not change the ratios logged and reused here
        steps = pruning.oneshot_magnitude_prune(model, sparsity_type, dict(ratios), **common)
    else:
        steps = pruning.iterative_magnitude_prune(model, sparsity_type, dict(ratios), iterations=args.iterations, **common)
    seconds = time.perf_counter() - start
    make_pruning_permanent(model)
    report = pruning.test_sparsity(model, sparsity_type)
    accuracy = evaluate(model, test_loader, device, exact=True)  # float32, as the grader re-measures it
    name = model_file_name(method, kind, report["overall"], accuracy)
    target = args.global_sparsity if args.scope == "global" else TARGETS[sparsity_type]
    if abs(report["overall"] - target) > TARGET_TOLERANCE:
        print(f"warning: {label} reached overall sparsity {report['overall']:.4f}, not within {TARGET_TOLERANCE} of the "
              f"target {target:.2f}" + ("" if args.scope == "global" else f": tune the ratios in {config}"), file=sys.stderr)
    entry = {"file": name, "label": label, "arch": args.arch, "dataset": dataset, "method": method, "type": sparsity_type, "config": str(config),
             "target": target, "scope": args.scope,
             "ratios": ratios, "sparsity": report["overall"],
             "layer_sparsity": report["layers"], "accuracy": accuracy,
             "accuracy_before_retrain": steps[0]["accuracy_before_retrain"],
             "iterations": len(steps), "epochs_per_iteration": args.epochs, "steps": steps,
             "seconds": round(seconds, 2)}
    for stale in args.out.glob(f"{label}_*_acc_*.pt"):  # one file per method/type: the newest run's
        stale.unlink()
    save_checkpoint(args.out / name, model.state_dict(), entry)
    mask_layer = default_mask_layer(ratios or report["layers"])
    weight = model.get_submodule(mask_layer.rpartition(".")[0]).weight
    pruning.plot_mask(weight, args.out / f"mask_{label}.png",
                      title=f"{arch_title(args.arch)} {label} ({report['overall']:.2f} sparsity): {mask_layer}")
    print(f"saved {args.out / name} ({seconds:.0f} s)")
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    jobs = plan_jobs(args, parser)
    try:
        set_precision(args.precision)
        device = resolve_device(args.device)
        seed_everything(args.seed)
        blank = build_model(args.arch, num_classes=10)
        ratios = {config: pruning.read_prune_ratios_from_yaml(config, blank) if config else {}
                  for _, _, config in jobs}  # fail before training
        if jobs:
            check_plot_functions()
        data = load_dataset(args.dataset, args.data_dir, seed=args.seed)
        batch_size = args.batch_size or default_batch_size(args.dataset)
        train_loader, test_loader = make_loaders(data, batch_size, device, seed=args.seed)
        dense, origin = load_dense_model(args, data, device, train_loader, test_loader)
    except (NotImplementedError, ValueError, DataError, CheckpointError) as exc:  # one line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    dense_accuracy = evaluate(dense, test_loader, device, exact=True)
    print(f"data: {data.name} ({len(data.train_labels)} train / {len(data.test_labels)} test images) on {device}, "
          f"training in {precision_name(device)} (accuracies measured in fp32)")
    print(f"dense {arch_title(args.arch)} {origin}: test accuracy {dense_accuracy:.2f}%")
    if args.method == "sweep":
        from hw2.sweep import SWEEP_RATIOS, run_sweep

        try:
            run_sweep(dense, test_loader, device, args.out, args.arch, data.name, tuple(args.sweep_ratios or SWEEP_RATIOS),
                      args.sparsity_type or "unstructured", origin)
        except NotImplementedError as exc:  # a stub not written yet: say which, no traceback
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0

    log_path = args.out / RUN_LOG
    log = {"models": {}}
    if log_path.is_file():  # earlier runs of other methods/types on the same data and network stay in the log
        try:
            log = json.loads(log_path.read_text())
        except ValueError:
            print(f"warning: {log_path} is not valid JSON; starting a new run log", file=sys.stderr)
        if (log.get("dataset"), log.get("arch")) != (data.name, args.arch) and log.get("models"):
            print(f"warning: {log_path} was from a {log.get('arch')} run on {log.get('dataset')}; starting a new run log "
                  f"(the other model files in {args.out} are from that run: rerun them or use a new --out)", file=sys.stderr)
            log = {"models": {}}
    log.update({"arch": args.arch, "dataset": data.name, "device": device_description(device), "torch": torch.__version__,
                "precision": precision_name(device), "seed": args.seed,
                "dense_accuracy": dense_accuracy, "dense_origin": origin, "batch_size": batch_size})
    log.setdefault("models", {})
    for method, sparsity_type, config in jobs:
        try:
            entry = prune_one(method, sparsity_type, ratios[config], config, dense, args, data.name, device, train_loader,
                              test_loader)
        except NotImplementedError as exc:  # a stub not written yet: say which, no traceback
            print(f"error: {exc}", file=sys.stderr)
            return 2
        log["models"][entry["label"]] = entry
        write_json(log_path, log)

    records = list(log["models"].values())
    pruning.plot_sparsity_vs_accuracy(records, args.out / COMPARISON_FIGURE, dense_accuracy,
                                      title=f"{arch_title(args.arch)} on {data.name}: pruned models, accuracy vs sparsity")
    print(f"\n{'model':<20}{'sparsity':>9}{'before':>9}{'after':>9}{'drop':>7}{'seconds':>9}")
    for r in records:
        print(f"{r['label']:<20}{r['sparsity']:>9.4f}{r['accuracy_before_retrain']:>9.2f}{r['accuracy']:>9.2f}"
              f"{dense_accuracy - r['accuracy']:>7.2f}{r['seconds']:>9.0f}")
    for r in records:  # the global-pruning study tabulates every IMP step
        if r.get("scope") == "global" and len(r["steps"]) > 1:
            print(f"\n{r['label']} per step\n{'step':>6}{'sparsity':>10}{'accuracy':>10}{'drop':>7}")
            for step in r["steps"]:
                print(f"{step['iteration']:>6}{step['sparsity']:>10.4f}{step['accuracy']:>10.2f}"
                      f"{dense_accuracy - step['accuracy']:>7.2f}")
    print(f"dense accuracy {dense_accuracy:.2f}%; outputs in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
