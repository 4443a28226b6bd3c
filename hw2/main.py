"""Prune the pretrained VGG13: one-shot (OMP) or iterative (IMP), unstructured or filter.

    python main.py --method imp --type filter      # from hw2/
    python hw2/main.py --method all                 # from the repo root: all four models
    python main.py --plot-only                      # redraw every figure from results/ (seconds, no data)

Before any training (and before loading data) each YAML is read and checked: the layers
this ``--type`` can prune, a layer given twice, ratios in [0, 1), and the overall sparsity
the ratios give, computed from the layer sizes.  A config that misses its target stops the
run with one line (``--allow-off-target`` runs it anyway).

Writes under --out (default results/): the pruned models named
``{Omp|Imp}_{type}_{sparsity:.2f}_acc_{accuracy:.2f}.pt``, a mask figure per
model, the comparison figure ``sparsity_vs_accuracy.png`` and the run log
``run_log.json``.  Models and log are made in a fresh folder beside --out
(``results.partial-XXXX/``) and moved in only when every model of the run is done,
so a crash or Ctrl-C leaves --out as it was.  A run of some methods/types replaces
those models (files, log entries, mask figures) and keeps the others.  Figures are
drawn last, from the saved models: a plotting function not written yet costs its
figure only (the run exits 1 naming it), and ``--plot-only`` draws them again.

Relative paths on the command line are relative to where you type the command.
Exit status: 0 done; 1 done but figures missing; 2 nothing run (the line says why);
130 interrupted.  This file is provided: it calls your functions in hw2/pruning.py.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python main.py): make the hw2 package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import yaml  # noqa: E402

from hw2 import REPO_ROOT  # noqa: E402
from hw2 import pruning  # noqa: E402
from hw2.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, write_json  # noqa: E402
from hw2.data import DataError, load_dataset, make_loaders  # noqa: E402
from hw2.models import (VGG13, build_model_for_images, make_pruning_permanent, plain_state_dict,  # noqa: E402
                        prunable_weights)
from hw2.train import (LABEL_SMOOTHING, add_run_args, at_least, default_batch_size, evaluate, fit,  # noqa: E402
                       make_optimizer, make_scheduler, device_description, precision_name, prepare_model, resolve_device,
                       scaled_lr, seed_everything, set_precision)

METHODS = ("omp", "imp")
TARGETS = {"unstructured": 0.80, "filter": 0.40}  # overall sparsity each type must reach
TARGET_TOLERANCE = 0.005  # the grader's: achieved overall sparsity within this of the target
DEFAULT_CONFIGS = {kind: REPO_ROOT / "configs" / f"{kind}_{target:.2f}.yaml" for kind, target in TARGETS.items()}
EXAMPLE_CONFIG = REPO_ROOT / "configs" / "vgg13_example.yaml"  # every VGG13 layer name with its size
DEFAULT_PRETRAINED = REPO_ROOT / "pretrained" / "vgg13_cifar10.pt"
DEFAULT_OUT = REPO_ROOT / "results"
RUN_LOG = "run_log.json"
THINET_IMAGES = 256  # training images ThiNet measures the next layers' inputs on
COMPARISON_FIGURE = "sparsity_vs_accuracy.png"
# (C, H, W) of each --dataset's images: the layer sizes of a network are known before its data is loaded
IMAGE_SHAPES = {"cifar10": (3, 32, 32), "synthetic": (3, 32, 32), "mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28)}
EXIT_FIGURES_MISSING, EXIT_ERROR, EXIT_INTERRUPTED = 1, 2, 130


class RunError(Exception):
    """A problem found before (or while) running, told in one line: main prints ``error: ...`` and exits 2."""


def arch_title(arch: str) -> str:
    """How figures and messages name the network: ``VGG13`` for the homework's, else the ``--arch`` name."""
    return "VGG13" if arch == "vgg13" else arch


def model_label(method: str, sparsity_type: str) -> str:
    """``Omp_unstructured``, ``Imp_filter``, ...: the prefix of the file names."""
    return f"{method.capitalize()}_{sparsity_type}"


def model_file_name(method: str, sparsity_type: str, sparsity: float, accuracy: float) -> str:
    """``Imp_filter_0.40_acc_92.87.pt``: achieved overall sparsity and test accuracy (percent), 2 decimals."""
    return f"{model_label(method, sparsity_type)}_{sparsity:.2f}_acc_{accuracy:.2f}.pt"


def model_kind(sparsity_type: str, args) -> str:
    """What names a model: ``global`` (one threshold across layers), ``thinet`` (filters chosen by ThiNet), else the type."""
    return "global" if args.scope == "global" else "thinet" if args.criterion == "thinet" else sparsity_type


def shown(path: Path) -> str:
    """``path`` the way to type it from the current folder: as given when relative, else relative when near
    (``../configs/filter_0.40.yaml`` from hw2/), else absolute."""
    path = Path(path)
    if not path.is_absolute():
        return str(path)
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return str(path)
    return str(path) if relative.split(os.sep)[:3] == ["..", "..", ".."] else relative


def project_relative(path: Path | None) -> str | None:
    """``path`` relative to the project folder when it lies inside it (``configs/filter_0.40.yaml``), else as
    given (None: no YAML, as for ``--scope global``): what run_log.json records, so a log reads the same on every
    machine."""
    if path is None:
        return None
    project = Path(__file__).resolve().parent.parent
    try:
        return Path(path).resolve().relative_to(project).as_posix()
    except ValueError:
        return str(path)


def where_else(path: Path) -> Path | None:
    """Where a relative path that does not exist here probably points: the same path from the repo root
    (``configs/x.yaml`` typed in hw2/), or, for a bare YAML file name, that file in configs/."""
    if path.is_absolute():
        return None
    candidates = [REPO_ROOT / path]
    if path.suffix in (".yaml", ".yml"):
        candidates.append(REPO_ROOT / "configs" / path.name)
    return next((c for c in candidates if c.exists()), None)


def redraw_command(out: Path) -> str:
    """The command that redraws the figures, typed as this run was (``python main.py`` from hw2/, ``python hw2/main.py``...)."""
    script = shown(Path(sys.argv[0]).resolve()) if sys.argv[0].endswith("main.py") else "main.py"
    return f"python {script} --plot-only" + ("" if out.resolve() == DEFAULT_OUT else f" --out {shown(out)}")


def missing_path_hint(path: Path) -> str:
    """``did you mean ../configs/x.yaml?`` or where relative paths start from."""
    other = where_else(path)
    if other is not None:
        return f"did you mean {shown(other)}? (relative paths are from where you run the command)"
    return f"relative paths are from where you run the command, here {os.getcwd()}" if not path.is_absolute() else ""


class OneLineErrorParser(argparse.ArgumentParser):
    """Bad flags get one line that names the problem (and where to look), not a usage dump."""

    def error(self, message: str):
        self.exit(EXIT_ERROR, f"error: {message} (see python main.py --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="python main.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Prune the pretrained VGG13 on CIFAR-10 with your functions from hw2/pruning.py.\n\n"
                    "Each YAML is checked before any training (layer names, a layer given twice, ratios in [0, 1), the overall\n"
                    "sparsity its ratios give).  Models and run_log.json are moved into --out only when the run completes\n"
                    "(a crash or Ctrl-C leaves it as it was); figures are drawn last and --plot-only redraws them.\n"
                    "Relative paths are relative to where you type the command.  Exit status: 0 done, 1 done but figures\n"
                    "missing (the last line names the functions to write), 2 nothing run (one line says why), 130 interrupted.",
        epilog="examples:\n  python main.py --method imp --type filter --epochs 2 --iterations 3\n"
               "  python main.py --plot-only          # after writing the plotting functions: figures from results/")
    parser.add_argument("--method", choices=[*METHODS, "all", "sweep"],
                        help="omp: prune once then retrain; imp: prune in --iterations rounds; all: both (and both types unless --type); "
                             "sweep: prune at each --sweep-ratios without retraining (see hw2/sweep.py); required unless --plot-only")
    parser.add_argument("--plot-only", action="store_true",
                        help="no training and no data: redraw every figure (a mask figure per model, sparsity_vs_accuracy.png) "
                             "from the models and run_log.json in --out, in seconds")
    parser.add_argument("--type", dest="sparsity_type", choices=sorted(TARGETS),
                        help="unstructured (target 0.80 overall) or filter (target 0.40); required with --method omp/imp")
    parser.add_argument("--config", type=Path,
                        help="YAML with prune_ratios for --type (default: configs/unstructured_0.80.yaml or configs/filter_0.40.yaml "
                             "at the repo root); filter: conv weights only, unstructured: conv and linear weights")
    parser.add_argument("--allow-off-target", action="store_true",
                        help=f"run even when a YAML's ratios give an overall sparsity more than {TARGET_TOLERANCE} from the target "
                             "(computed from the layer sizes before training; without this flag such a run stops at once)")
    parser.add_argument("--epochs", type=at_least(0), default=1,
                        help="masked-retraining epochs after each pruning step; 1 keeps --method all under 40 minutes "
                             "on a 2-core CPU with bf16, more recovers more accuracy; 0 (no retraining) only with --dataset synthetic, "
                             "as a smoke test (default: %(default)s)")
    parser.add_argument("--iterations", type=int, default=3, help="IMP rounds, at least 3 (default: %(default)s)")
    parser.add_argument("--lr", type=at_least(0, float, above=True), default=0.01,
                        help="peak retraining learning rate at batch 512 (scaled with --batch-size), cosine decay (default: %(default)s)")
    parser.add_argument("--pretrained", type=Path, default=None,
                        help="dense checkpoint to start from (default: pretrained/vgg13_cifar10.pt; with --dataset synthetic "
                             "and no file given, a dense model is trained on the synthetic data first)")
    parser.add_argument("--dense-epochs", type=at_least(1), default=6,
                        help="epochs of that dense training, also used for --arch other than vgg13 without --pretrained (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="folder for models, figures and run_log.json (default: results/ at the repo root); a run fills a "
                             "fresh results.partial-XXXX/ beside it and moves its files in when it completes, replacing "
                             "only the models it made")
    parser.add_argument("--no-progress", action="store_true", help="hide the per-epoch progress bars")
    parser.add_argument("--scope", choices=("layer", "global"), default="layer",
                        help="layer: each layer pruned to its YAML ratio; global: one magnitude threshold across the layers "
                             "(those of --config, else every conv and linear layer) to --global-sparsity, unstructured only "
                             "(default: %(default)s)")
    parser.add_argument("--criterion", choices=("norm", "thinet"), default="norm",
                        help="filter pruning: norm = smallest L2 norm (your filter_prune); thinet = the filters whose removal "
                             f"least changes the next layer's input on {THINET_IMAGES} training images; a thinet run off its "
                             "target warns instead of stopping (default: %(default)s)")
    parser.add_argument("--global-sparsity", type=float, default=0.80,
                        help="--scope global: target fraction of zeros over those layers (default: %(default)s)")
    parser.add_argument("--sweep-ratios", type=float, nargs="+", default=None, metavar="RATIO",
                        help="--method sweep: per-layer prune ratios in [0, 1) (default: 0 .25 .5 .6 .7 .8 .9 .95 .97 .99)")
    add_run_args(parser)
    return parser


def check_paths(args, parser) -> None:
    """--out must be a folder; a relative --pretrained / --config / --data-dir typed from the wrong folder is named with the right one."""
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {shown(args.out)} is a file; give a folder path (it is created when missing)")
    if args.plot_only:
        return
    if args.config is not None and not args.config.is_file():
        hint = missing_path_hint(args.config) or f"the templates are in {shown(REPO_ROOT / 'configs')}/"
        parser.error(f"--config {args.config}: no such file; {hint}")
    if args.pretrained is not None and not args.pretrained.is_file():
        hint = missing_path_hint(args.pretrained) or "the included checkpoint is pretrained/vgg13_cifar10.pt"
        parser.error(f"--pretrained {args.pretrained}: no such file; {hint}")
    data_dir = where_else(args.data_dir) if not args.data_dir.exists() else None
    if args.dataset != "synthetic" and data_dir is not None:  # else the data would be downloaded into a new folder here
        parser.error(f"--data-dir {args.data_dir}: no such folder in {os.getcwd()}; the data is in {shown(data_dir)}: "
                     f"use --data-dir {shown(data_dir)}")


def plan_jobs(args, parser) -> list[tuple[str, str, Path | None]]:
    """(method, type, config) for every model this run makes; checks flag combinations first."""
    if args.plot_only:
        if args.method is not None:
            parser.error("--plot-only draws the figures of the run already in --out: leave --method out")
        return []
    if args.method is None:
        parser.error("--method is required: omp, imp, all or sweep (or --plot-only to redraw the figures)")
    if args.method == "sweep":  # no retraining, no YAML: the sweep sets one ratio for every layer
        if any(not 0.0 <= r < 1.0 for r in args.sweep_ratios or ()):
            parser.error(f"--sweep-ratios must each be in [0, 1), got {args.sweep_ratios}")
        return []
    if args.epochs == 0 and args.dataset != "synthetic":
        parser.error("--epochs 0 skips the masked retraining every pruning step needs: use --epochs 1 or more "
                     "(0 is for smoke tests with --dataset synthetic)")
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
    if args.scope == "global":  # no --config: every conv and linear layer shares the threshold
        return [(method, "unstructured", args.config) for method in methods]
    return [(method, kind, args.config or DEFAULT_CONFIGS[kind]) for kind in kinds for method in methods]


# ---------------------------------------------------------------------------------------------
# The YAML, checked by main.py itself before any training
# ---------------------------------------------------------------------------------------------
class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses a key given twice (plain safe_load silently keeps the last value)."""

    def construct_mapping(self, node, deep=False):
        first_line = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                seen = key in first_line
            except TypeError:  # an unhashable key: SafeLoader names it below
                continue
            if seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key!r} is given twice (first at line {first_line[key]}) and YAML would keep only the "
                                "last value: give each layer once", key_node.start_mark)
            first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def dense_checkpoint(args) -> Path | None:
    """The checkpoint the dense model is loaded from (None: it is trained here, on synthetic data or for another --arch)."""
    path = args.pretrained or (DEFAULT_PRETRAINED if args.arch == "vgg13" else None)
    must_load = args.pretrained is not None or (args.arch == "vgg13" and args.dataset != "synthetic")
    return path if path is not None and (path.is_file() or must_load) else None


def sized_model(args) -> torch.nn.Module:
    """A model with the layer names and sizes this run prunes, without data: VGG13 as the dense checkpoint's widths say."""
    path = dense_checkpoint(args)
    if args.arch == "vgg13" and path is not None and path.is_file():
        return VGG13.from_state_dict(load_checkpoint(path)[0])
    return build_model_for_images(args.arch, 10, IMAGE_SHAPES[args.dataset])


def text_hint(ratio) -> str:
    """For a ratio YAML read as text although it reads as a number ("0.5" in quotes, or 1e-1, which YAML 1.1 reads
    as text for want of a dot): how to write it as a number."""
    if not isinstance(ratio, str):
        return ""
    try:
        number = float(ratio)
    except ValueError:
        return ""
    return f" (text to YAML: write it as {number!r})" if math.isfinite(number) else ""


def read_config(path: Path, model: torch.nn.Module, sparsity_type: str, arch: str) -> dict[str, float]:
    """main.py's own reading of a prune-ratio YAML, checked for ``sparsity_type``; raises RunError (one line).

    Filter pruning removes conv filters, so it may name conv (4-D) weights only;
    unstructured pruning any Conv2d or Linear weight; BatchNorm and biases never.
    """
    where = shown(path)
    try:
        config = yaml.load(path.read_text(), Loader=UniqueKeyLoader)
    except OSError as exc:
        raise RunError(f"cannot read {where}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if isinstance(exc, yaml.constructor.ConstructorError):  # well-formed, but a key given twice (or unhashable)
            raise RunError(f"{where}: {line}{problem}") from None
        raise RunError(f"{where}: malformed YAML at {line}{problem}; fix that line (format: {shown(EXAMPLE_CONFIG)})") from None
    if not isinstance(config, dict) or not isinstance(config.get("prune_ratios"), dict):
        raise RunError(f"{where}: expected a top-level mapping 'prune_ratios:' of layer name -> ratio "
                       f"(format: {shown(EXAMPLE_CONFIG)})")
    unknown = [key for key in config if key != "prune_ratios"]
    if unknown:
        raise RunError(f"{where}: unknown top-level key {unknown[0]!r}; the file holds 'prune_ratios' only")
    weights = prunable_weights(model)
    allowed = [name for name, weight in weights.items() if sparsity_type == "unstructured" or weight.dim() == 4]
    ratios = {}
    for name, ratio in config["prune_ratios"].items():
        if name in weights and name not in allowed:
            raise RunError(f"{where}: {name!r} is a Linear weight and --type filter removes conv filters only: remove it "
                           f"from the file (conv weights: {', '.join(allowed)})")
        if name not in weights:
            raise RunError(f"{where}: {name!r} is not a Conv2d or Linear weight of {arch_title(arch)} (BatchNorm weights and "
                           f"biases are never pruned); names for --type {sparsity_type}: {', '.join(allowed)}")
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio < 1.0:
            unit = "weights" if sparsity_type == "unstructured" else "filters"
            raise RunError(f"{where}: the ratio of {name!r} is {ratio!r}{text_hint(ratio)}; it must be a number in "
                           f"[0, 1), the fraction of that layer's {unit} to prune")
        ratios[name] = float(ratio)
    return ratios


def implied_sparsity(model: torch.nn.Module, sparsity_type: str, ratios: dict[str, float]) -> float:
    """The overall sparsity ``ratios`` give, from the layer sizes alone.

    Zeros the masks put in the Conv2d and Linear weights over all those weights,
    counted as the reference prunes: ``round(ratio * numel)`` weights per layer,
    or for ``filter`` ``round(ratio * C_out)`` whole filters of ``C_in*kH*kW``
    weights each.  The next layer's weights that read a removed channel stay
    nonzero and are not counted (as in ``test_sparsity`` and the grader).
    """
    weights = prunable_weights(model)
    zeros = 0
    for name, ratio in ratios.items():
        weight = weights[name]
        units = weight.shape[0] if sparsity_type == "filter" else weight.numel()  # filters, or single weights
        zeros += round(ratio * units) * (weight.numel() // units)
    return zeros / sum(weight.numel() for weight in weights.values())


def check_student_reading(config: Path, model: torch.nn.Module, ratios: dict[str, float]) -> None:
    """Your ``read_prune_ratios_from_yaml`` must return the mapping main.py read from the same file."""
    call = f"your read_prune_ratios_from_yaml({shown(config)})"
    try:
        theirs = pruning.read_prune_ratios_from_yaml(config, model)
    except ValueError as exc:
        raise RunError(f"{call} raised ValueError on a file main.py reads as valid: {exc}; fix it in hw2/pruning.py") from None
    if not isinstance(theirs, dict):
        raise RunError(f"{call} returned a {type(theirs).__name__}, not a dict of layer name -> ratio; fix it in hw2/pruning.py")
    differs = next((name for name in {**ratios, **theirs} if theirs.get(name) != ratios.get(name)), None)
    if differs is not None:
        def value(mapping):
            return repr(mapping[differs]) if differs in mapping else "no entry"

        raise RunError(f"{call} returned {value(theirs)} for {differs!r} where the file has {value(ratios)}; it must "
                       "return the file's mapping: fix it in hw2/pruning.py")


def check_configs(args, jobs, model) -> dict[Path | None, dict[str, float]]:
    """Read every YAML of the run (main.py's checks, then your ``read_prune_ratios_from_yaml``, which must agree);
    stop when a graded config cannot reach its target.  Returns config -> ratios."""
    ratios: dict[Path | None, dict[str, float]] = {}
    off_target = []
    for _, sparsity_type, config in jobs:
        if config in ratios:
            continue
        if config is None:  # --scope global without --config: every conv and linear layer
            ratios[config] = {}
            continue
        ratios[config] = read_config(config, model, sparsity_type, args.arch)
        check_student_reading(config, model, ratios[config])
        if args.scope == "layer":  # global: the threshold reaches --global-sparsity over the named layers by construction
            implied = implied_sparsity(model, sparsity_type, ratios[config])
            if abs(implied - TARGETS[sparsity_type]) > TARGET_TOLERANCE:
                off_target.append(f"the ratios in {shown(config)} give overall sparsity {implied:.4f}, "
                                  f"the {sparsity_type} target is {TARGETS[sparsity_type]:.2f}")
    if off_target:
        sizes = f" (layer sizes: {shown(EXAMPLE_CONFIG)})" if args.arch == "vgg13" else ""
        line = "; ".join(off_target) + f" (+-{TARGET_TOLERANCE}): edit the ratios{sizes}"
        if args.allow_off_target or args.criterion == "thinet":
            print(f"warning: {line}; running anyway", file=sys.stderr)
        else:
            raise RunError(f"{line}, or add --allow-off-target to run anyway")
    return ratios


def earlier_run_log(args, labels: list[str]) -> dict:
    """The run log in --out that this run adds to (same network and data: its other models stay).

    Refuses, before any training, a run that would leave models of another
    network or data set beside its own.
    """
    path = args.out / RUN_LOG
    if not path.is_file():
        return {"models": {}}
    try:
        log = json.loads(path.read_text())
    except ValueError:
        log = None
    if not isinstance(log, dict) or not isinstance(log.get("models"), dict):
        print(f"warning: {shown(path)} is not a run log; starting a new one", file=sys.stderr)
        return {"models": {}}
    if (log.get("dataset"), log.get("arch")) != (args.dataset, args.arch) and log["models"]:
        others = [label for label, entry in log["models"].items() if label not in labels and isinstance(entry, dict)
                  and entry.get("file") and (args.out / str(entry["file"])).is_file()]
        if others:
            raise RunError(f"{shown(args.out)} holds {', '.join(others)} from a {log.get('arch')} run on {log.get('dataset')}; "
                           f"this {args.arch} run on {args.dataset} would leave them beside its own models: give it "
                           f"another --out, or run --method all, or delete those files and {RUN_LOG}")
        print(f"warning: {shown(path)} was from a {log.get('arch')} run on {log.get('dataset')}; starting a new run log",
              file=sys.stderr)
        return {"models": {}}
    return log


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
def load_dense_model(args, data, device, train_loader, test_loader) -> tuple[torch.nn.Module, str]:
    """The dense starting model and a line saying where it came from.

    VGG13 loads ``--pretrained`` (default pretrained/vgg13_cifar10.pt); only on
    synthetic data with no file is it trained first.  Other ``--arch`` load
    ``--pretrained`` when given, else are trained for ``--dense-epochs``.
    """
    image_shape = tuple(data.train_images.shape[1:])  # (C, H, W)
    path = dense_checkpoint(args)
    if path is not None:
        if not path.is_file():
            raise CheckpointError(f"pretrained checkpoint {shown(path)} not found; train it with 'python -m hw2.train --out "
                                  f"{shown(path)}' (see pretrained/README.md: 80 min on a 2-core CPU with bf16) or pass --pretrained PATH")
        state_dict, _ = load_checkpoint(path)
        if args.arch == "vgg13":
            model = VGG13.from_state_dict(state_dict)
            if model.classifier.out_features != data.num_classes:
                raise CheckpointError(f"{shown(path)} has {model.classifier.out_features} classes but {data.name} has {data.num_classes}")
        else:
            model = build_model_for_images(args.arch, data.num_classes, image_shape)
            try:
                model.load_state_dict(state_dict)
            except RuntimeError as exc:
                raise CheckpointError(f"{shown(path)} does not fit --arch {args.arch} on {data.name}: "
                                      f"{str(exc).strip().splitlines()[0]}") from None
        return prepare_model(model, device), f"loaded {shown(path)}"
    seed_everything(args.seed)  # the same dense model for every --method (the config checks drew random numbers)
    model = prepare_model(build_model_for_images(args.arch, data.num_classes, image_shape), device)
    fit(model, train_loader, test_loader, args.dense_epochs, scaled_lr(0.2, train_loader.batch_size), device,
        label_smoothing=LABEL_SMOOTHING, warmup_fraction=0.1, desc="dense", progress=not args.no_progress)
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
        loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)
        history = pruning.masked_retrain(model, masks, optimizer, loss_fn, train_loader, test_loader,
                                         args.epochs, device, scheduler, not args.no_progress)
        after = history[-1]["test_accuracy"] if history else before
        print(f"thinet step {step}: sparsity {sparsity:.4f}, accuracy {before:.2f}% -> {after:.2f}% after {args.epochs} epoch(s)")
        steps.append({"iteration": step, "ratios": step_ratios, "sparsity": sparsity,
                      "accuracy_before_retrain": before, "accuracy": after})
    return steps


def prune_one(method, sparsity_type, ratios, config, dense, args, dataset, device, train_loader, test_loader,
              folder: Path) -> dict:
    """Run one method/type and save the model into ``folder``; return its run-log entry."""
    kind = model_kind(sparsity_type, args)  # Omp_global_0.80_acc_...: one threshold; Omp_thinet_0.40_acc_...: ThiNet's filters
    label = model_label(method, kind)
    if args.scope == "global":
        print(f"\n=== {label}: one threshold to {args.global_sparsity:.2f} over {', '.join(ratios) if ratios else 'all conv and linear layers'} ===")
    else:
        print(f"\n=== {label}: target overall sparsity {TARGETS[sparsity_type]:.2f}, ratios from {shown(config)} ===")
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
              f"target {target:.2f}" + ("" if args.scope == "global" else f": tune the ratios in {shown(config)}"), file=sys.stderr)
    entry = {"file": name, "label": label, "arch": args.arch, "dataset": dataset, "method": method, "type": sparsity_type,
             "config": project_relative(config), "target": target, "scope": args.scope,
             "ratios": ratios, "sparsity": report["overall"],
             "layer_sparsity": report["layers"], "accuracy": accuracy,
             "accuracy_before_retrain": steps[-1]["accuracy_before_retrain"],  # right after the last pruning
             "iterations": len(steps), "epochs_per_iteration": args.epochs, "lr": args.lr, "steps": steps,
             "seconds": round(seconds, 2)}
    save_checkpoint(folder / name, plain_state_dict(model, dense.state_dict().keys()), entry)
    print(f"{name} done ({seconds:.0f} s)")
    return entry


# ---------------------------------------------------------------------------------------------
# Outputs: a fresh folder, moved into --out when the run completed; figures last
# ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def signals_held():
    """Hold Ctrl-C and SIGTERM for the few renames that move a finished run into --out; yields the signals received."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def move_into(staging: Path, out: Path, labels: list[str]) -> bool:
    """Move every file of ``staging`` into ``out``, the run log last; drop the earlier files of ``labels``
    (their models and mask figures) and the comparison figure, which are redrawn next.
    Returns whether Ctrl-C (or SIGTERM) came meanwhile: it is held off until the move is done."""
    out.mkdir(parents=True, exist_ok=True)
    new = {path.name for path in staging.iterdir()}
    stale = [path for label in labels for path in (*out.glob(f"{label}_*_acc_*.pt"), out / f"mask_{label}.png")]
    stale = [path for path in (*stale, out / COMPARISON_FIGURE) if path.name not in new and path.exists()]
    with signals_held() as received:
        for name in sorted(new - {RUN_LOG}) + [RUN_LOG]:
            os.replace(staging / name, out / name)
        for path in stale:
            path.unlink(missing_ok=True)
    return bool(received)


def draw(function, name: str, scratch: Path, out: Path, *args, **kwargs) -> str | None:
    """Call a plotting function of hw2/pruning.py on ``scratch/name`` and move the PNG into ``out``;
    return why it was not drawn (None when it was)."""
    path = scratch / name
    try:
        function(*args, path, **kwargs)
    except NotImplementedError as exc:
        return str(exc)
    except Exception as exc:  # a plotting bug costs its figure, never the models
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"{function.__name__} raised {type(exc).__name__}: {first}; fix it in hw2/pruning.py"
    if not path.is_file():
        return f"{function.__name__} returned without writing the file it was given; fix it in hw2/pruning.py"
    os.replace(path, out / name)
    return None


def draw_figures(out: Path, log: dict, labels: list[str]) -> dict[str, str]:
    """Draw the mask figure of each model in ``labels`` (from its file in ``out``, read with weights_only) and the
    comparison figure of every model in the log.  Prints one line per figure not drawn; returns name -> reason."""
    missing: dict[str, str] = {}
    arch = arch_title(log.get("arch", "vgg13"))
    with tempfile.TemporaryDirectory(prefix=f"{out.resolve().name}.figures-", dir=out.resolve().parent) as tmp:
        for label in labels:
            name = f"mask_{label}.png"
            entry = log["models"][label]
            try:
                state_dict, _ = load_checkpoint(out / entry["file"])
                mask_layer = default_mask_layer(entry.get("ratios") or entry["layer_sparsity"])
                weight = state_dict[mask_layer]
            except (CheckpointError, KeyError, TypeError, ValueError) as exc:
                missing[name] = f"its model {entry.get('file')!r} cannot be read from {shown(out)}: {exc}"
            else:
                reason = draw(pruning.plot_mask, name, Path(tmp), out, weight,
                              title=f"{arch} {label} ({entry['sparsity']:.2f} sparsity): {mask_layer}")
                if reason:
                    missing[name] = reason
        if log["models"]:
            reason = draw(pruning.plot_sparsity_vs_accuracy, COMPARISON_FIGURE, Path(tmp), out, list(log["models"].values()),
                          dense_accuracy=log.get("dense_accuracy"),
                          title=f"{arch} on {log.get('dataset')}: pruned models, accuracy vs sparsity")
            if reason:
                missing[COMPARISON_FIGURE] = reason
    for name, reason in missing.items():
        print(f"skipped {name}: {reason}", file=sys.stderr)
    return missing


def figures_left(out: Path, missing: dict[str, str]) -> str:
    """The last line of a run whose figures are not all drawn: what to write or fix, and the command that redraws them."""
    to_write = sorted({reason.partition(":")[0] for reason in missing.values() if "write it in hw2/pruning.py" in reason})
    todo = f"write {' and '.join(to_write)} in hw2/pruning.py" if to_write else "fix what the lines above say"
    return (f"error: {len(missing)} figure(s) not drawn ({', '.join(missing)}); the models and {RUN_LOG} are saved: "
            f"{todo}, then run {redraw_command(out)}")


def default_mask_layer(ratios: dict[str, float]) -> str:
    """The layer whose mask figure is drawn: the most pruned one (the first of equals)."""
    return max(ratios, key=lambda name: ratios[name])


def plot_only(args) -> int:
    """``--plot-only``: every figure again, from the models and run log in --out; no data, no training."""
    log_path = args.out / RUN_LOG
    try:
        log = json.loads(log_path.read_text())
    except (OSError, ValueError) as exc:
        reason = "not found" if isinstance(exc, OSError) else "not valid JSON"
        print(f"error: {shown(log_path)} {reason}: --plot-only redraws the figures of a finished run; run "
              f"python main.py --method ... first (or point --out at its folder)", file=sys.stderr)
        return EXIT_ERROR
    if not isinstance(log, dict) or not isinstance(log.get("models"), dict) or not log["models"]:
        print(f"error: {shown(log_path)} lists no models: run python main.py --method ... first", file=sys.stderr)
        return EXIT_ERROR
    missing = draw_figures(args.out, log, list(log["models"]))
    drawn = [f"mask_{label}.png" for label in log["models"]] + [COMPARISON_FIGURE]
    drawn = [name for name in drawn if name not in missing]
    if drawn:
        print(f"drew {', '.join(drawn)} in {shown(args.out)}")
    if missing:
        print(figures_left(args.out, missing), file=sys.stderr)
        return EXIT_FIGURES_MISSING
    return 0


def print_summary(log: dict, out: Path) -> None:
    records = list(log["models"].values())
    dense_accuracy = log["dense_accuracy"]
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
    print(f"dense accuracy {dense_accuracy:.2f}%; outputs in {shown(out)}")


def run(args, jobs) -> int:
    try:
        set_precision(args.precision)
        device = resolve_device(args.device)
        seed_everything(args.seed)
        ratios = check_configs(args, jobs, sized_model(args)) if jobs else {}  # before data and training
        labels = list(dict.fromkeys(model_label(method, model_kind(kind, args)) for method, kind, _ in jobs))
        log = earlier_run_log(args, labels) if jobs else {}
        data = load_dataset(args.dataset, args.data_dir, seed=args.seed)
        batch_size = args.batch_size or default_batch_size(args.dataset)
        train_loader, test_loader = make_loaders(data, batch_size, device, seed=args.seed)
        dense, origin = load_dense_model(args, data, device, train_loader, test_loader)
    except (RunError, NotImplementedError, ValueError, DataError, CheckpointError) as exc:  # one line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    dense_accuracy = evaluate(dense, test_loader, device, exact=True)
    print(f"data: {data.name} ({len(data.train_labels)} train / {len(data.test_labels)} test images) on {device}, "
          f"training in {precision_name(device)} (accuracies measured in fp32)")
    print(f"dense {arch_title(args.arch)} {origin}: test accuracy {dense_accuracy:.2f}%")
    if args.method == "sweep":  # two files written at the very end: nothing to stage
        from hw2.sweep import SWEEP_RATIOS, run_sweep

        try:
            run_sweep(dense, test_loader, device, args.out, args.arch, data.name, tuple(args.sweep_ratios or SWEEP_RATIOS),
                      args.sparsity_type or "unstructured", origin)
        except NotImplementedError as exc:  # a stub not written yet: say which, no traceback
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_ERROR
        return 0

    log.update({"arch": args.arch, "dataset": data.name, "device": device_description(device), "torch": torch.__version__,
                "precision": precision_name(device), "seed": args.seed,
                "dense_accuracy": dense_accuracy, "dense_origin": origin, "batch_size": batch_size})
    log.setdefault("models", {})
    out = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{out.name}.partial-", dir=out.parent))
    moved = False
    try:
        for method, sparsity_type, config in jobs:
            entry = prune_one(method, sparsity_type, ratios[config], config, dense, args, data.name, device, train_loader,
                              test_loader, staging)
            log["models"][entry["label"]] = entry
        write_json(staging / RUN_LOG, log)
        interrupted = move_into(staging, args.out, labels)
        moved = True  # --out holds this run now
        if interrupted:
            raise KeyboardInterrupt
    except NotImplementedError as exc:  # a stub not written yet: say which, no traceback
        print(f"error: {exc}; {shown(args.out)} is left as it was", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        if moved:
            print(f"interrupted: the models and {RUN_LOG} are in {shown(args.out)}; draw the figures with "
                  f"{redraw_command(args.out)}", file=sys.stderr)
        else:
            print(f"interrupted: {shown(args.out)} is left as it was (this run's models were discarded)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BaseException as exc:  # a bug (traceback next) or SIGTERM
        how = "stopped" if isinstance(exc, SystemExit) else "the run failed (traceback below)"
        print(f"{how}: {shown(args.out)} is left as it was (this run's models were discarded)", file=sys.stderr)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"\nsaved {', '.join(log['models'][label]['file'] for label in labels)} and {RUN_LOG} in {shown(args.out)}")
    try:
        missing = draw_figures(args.out, log, labels)
    except KeyboardInterrupt:
        print(f"interrupted while drawing: the models and {RUN_LOG} are in {shown(args.out)}; draw the figures with "
              f"{redraw_command(args.out)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print_summary(log, args.out)
    if missing:
        print(figures_left(args.out, missing), file=sys.stderr)
        return EXIT_FIGURES_MISSING
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    jobs = plan_jobs(args, parser)
    check_paths(args, parser)
    try:
        return plot_only(args) if args.plot_only else run(args, jobs)
    except KeyboardInterrupt:  # before the run wrote anything
        print(f"interrupted: {shown(args.out)} is left as it was", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # a kill cleans up like Ctrl-C
    sys.exit(main())
