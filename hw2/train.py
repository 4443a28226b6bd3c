"""Training and evaluation loop (provided).

Training runs in bf16 autocast + channels_last where the hardware does bf16
natively (CUDA, or a CPU with AVX-512 BF16 / AMX), in float32 elsewhere; choose
with ``--precision {auto,fp32,bf16}`` (see ``set_precision``).  Every accuracy
that is reported, written into a file name or graded is measured in float32
(``evaluate``'s default), so the training precision never moves a grade.
Each epoch shows a progress bar with the running loss and accuracy.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import random
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm import tqdm

from hw2.models import copy_without_pruning


PRECISIONS = ("auto", "fp32", "bf16")
LABEL_SMOOTHING = 0.1  # the dense recipe's; masked retraining keeps the loss the dense model was trained with
_precision = "auto"  # set once per run by set_precision (the --precision flag)
# ``python -m hw2.train``'s defaults on CIFAR-10: the recipe of the shipped pretrained/vgg13_cifar10.pt (its model card)
DENSE_RECIPE = {"epochs": 36, "lr": 0.4, "batch_size": 256, "cutout": 8}
# on other data (synthetic, Fashion-MNIST): plainer defaults; the batch size is default_batch_size's
OTHER_RECIPE = {"epochs": 40, "lr": 0.2, "cutout": 0}


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (oneDNN reports AVX-512 BF16 or AMX); emulated bf16 is slower than float32."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def set_precision(precision: str) -> None:
    """Training precision for this process: ``auto`` (bf16 where native, else float32), ``fp32`` or ``bf16``."""
    global _precision
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    _precision = precision


def uses_bf16(device) -> bool:
    """Whether training on ``device`` runs in bf16 autocast + channels_last under the current precision."""
    device = torch.device(device)
    if _precision == "fp32" or device.type not in ("cuda", "cpu"):
        return False
    if _precision == "bf16":
        return True
    return device.type == "cuda" or cpu_has_native_bf16()


def precision_name(device) -> str:
    """``"bf16"`` or ``"fp32"``: what training on ``device`` uses (recorded in the run logs)."""
    return "bf16" if uses_bf16(device) else "fp32"


def autocast(device: torch.device):
    """bf16 autocast when ``uses_bf16(device)``, nothing otherwise."""
    device = torch.device(device)
    if uses_bf16(device):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_model(model: nn.Module, device) -> nn.Module:
    """Move ``model`` to ``device`` (channels_last when training in bf16) and return it."""
    device = torch.device(device)
    model = model.to(device)
    if uses_bf16(device):
        model = model.to(memory_format=torch.channels_last)
    return model


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; anything else is passed to ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name} asked for CUDA but no GPU is visible; use --device cpu or auto")
    return device


def train_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer, loss_fn: Callable, device,
                scheduler=None, after_step: Callable[[], None] | None = None, desc: str = "train",
                progress: bool = True) -> dict[str, float]:
    """One pass over ``loader``; returns ``{"loss": mean loss, "accuracy": percent}``.

    ``scheduler`` (if any) steps once per batch.  ``after_step`` (if any) runs
    after every optimizer step, e.g. to re-apply pruning masks.
    """
    model.train()
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    seen = 0
    bar = tqdm(loader, desc=desc, leave=False, disable=not progress, dynamic_ncols=True)
    for step, (x, y) in enumerate(bar):
        with autocast(device):
            logits = model(x)
            loss = loss_fn(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if after_step is not None:
            after_step()
        total_loss += loss.detach() * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
        if progress and (step % 10 == 0 or step == len(loader) - 1):  # .item() syncs: not every step
            bar.set_postfix(loss=f"{total_loss.item() / seen:.3f}", acc=f"{100 * correct.item() / seen:.1f}%")
    bar.close()
    if seen == 0:
        raise ValueError("the training loader yielded no batches; lower --batch-size")
    return {"loss": total_loss.item() / seen, "accuracy": 100.0 * correct.item() / seen}


@contextlib.contextmanager
def exact_float32():
    """Plain float32 for the duration: TF32 matmuls/convolutions off (CUDA's default lets convs use TF32), and
    autocast off, also when called inside an autocast region (an evaluation from within a training step)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with contextlib.ExitStack() as stack:
            for device_type in ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",):
                stack.enter_context(torch.autocast(device_type, enabled=False))
            yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@torch.no_grad()
def exact_layout(device) -> torch.memory_format:
    """The memory layout of every float32 evaluation on ``device``: channels_last on the CPU (oneDNN's float32
    convolutions run VGG13 about 20% faster in it than contiguous), contiguous elsewhere.  One layout for every
    caller, the model in training and a file the grader loads alike, so both run the same kernels."""
    return torch.channels_last if torch.device(device).type == "cpu" else torch.contiguous_format


def evaluate(model: nn.Module, loader, device, exact: bool = True) -> float:
    """Top-1 accuracy in percent on ``loader`` (eval mode, no augmentation).

    By default (``exact=True``) in plain float32 (no bf16, no TF32), whatever the
    training precision, so the figure matches what a CPU re-measurement gives:
    every accuracy that is logged, reported or graded.  ``exact=False`` evaluates
    at the training precision (bf16 autocast where training uses it): 2-3x faster
    on a bf16 CPU, for ranking candidates only.
    """
    model.eval()  # the model given is left in eval mode, whether a copy of it is evaluated or itself
    layout = exact_layout(device)
    if exact and any(p.dim() == 4 and not p.is_contiguous(memory_format=layout) for p in model.parameters()):
        # each memory layout takes its own float32 kernels: evaluate a copy in the one layout every caller uses
        # (masks folded in: a deep copy fails while torch.nn.utils.prune's computed weights are non-leaf)
        model = copy_without_pruning(model).to(memory_format=layout)
    model.eval()
    correct = torch.zeros((), device=device, dtype=torch.int64)
    seen = 0
    with exact_float32() if exact else contextlib.nullcontext():
        for x, y in loader:
            with contextlib.nullcontext() if exact else autocast(device):
                logits = model((x.contiguous(memory_format=layout) if x.dim() == 4 else x.contiguous()) if exact else x)
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
    return 100.0 * correct.item() / max(seen, 1)


def make_optimizer(model: nn.Module, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4) -> torch.optim.SGD:
    """SGD with Nesterov momentum; no weight decay on BatchNorm parameters and biases."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)


def make_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float = 0.0):
    """Per-step schedule: linear warm-up over ``warmup_fraction`` of the steps, then cosine decay to 0."""
    warmup = int(total_steps * warmup_fraction)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def fit(model: nn.Module, train_loader, test_loader, epochs: int, lr: float, device, weight_decay: float = 5e-4,
        label_smoothing: float = 0.0, warmup_fraction: float = 0.0, desc: str = "train",
        after_step: Callable[[], None] | None = None, progress: bool = True,
        state_path: Path | None = None, resume: bool = False, eval_every: int = 1) -> list[dict]:
    """Train for ``epochs`` with SGD + the schedule above; returns one log entry per epoch.

    With ``state_path``, the whole training state (model, optimizer, schedule
    position, RNG states, history) is written there atomically after every
    epoch; ``resume=True`` continues from that file when it exists, so a
    stopped run ends exactly as an uninterrupted one would.  The test set is
    scored every ``eval_every`` epochs and after the last (``None`` in between).
    """
    optimizer = make_optimizer(model, lr, weight_decay=weight_decay)
    scheduler = make_scheduler(optimizer, epochs * len(train_loader), warmup_fraction)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    generator = getattr(train_loader, "generator", None)
    history: list[dict] = []
    if state_path is not None and resume and Path(state_path).is_file():
        history = _load_training_state(state_path, model, optimizer, scheduler, generator, epochs, len(train_loader))
        print(f"resuming from {state_path}: {len(history)} of {epochs} epochs done")
    for epoch in range(len(history), epochs):
        start = time.perf_counter()
        stats = train_epoch(model, train_loader, optimizer, loss_fn, device, scheduler, after_step,
                            desc=f"{desc} {epoch + 1}/{epochs}", progress=progress)
        scored = (epoch + 1) % eval_every == 0 or epoch + 1 == epochs
        stats["test_accuracy"] = evaluate(model, test_loader, device) if scored else None
        stats["epoch"] = epoch + 1
        stats["seconds"] = round(time.perf_counter() - start, 1)
        history.append(stats)
        if state_path is not None:
            _save_training_state(state_path, model, optimizer, scheduler, generator, epochs, len(train_loader), history)
        print(f"{desc} epoch {epoch + 1}/{epochs}: loss {stats['loss']:.3f}, train {stats['accuracy']:.2f}% "
              + (f"test {stats['test_accuracy']:.2f}% " if scored else "") + f"({stats['seconds']:.0f} s)", flush=True)
    return history


def _save_training_state(path, model, optimizer, scheduler, generator, epochs, steps_per_epoch, history) -> None:
    from hw2.checkpoint import atomic_write_bytes

    state = {"model": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "torch_rng": torch.get_rng_state(), "python_rng": random.getstate(),
             "loader_rng": generator.get_state() if generator is not None else None,
             "epochs": epochs, "steps_per_epoch": steps_per_epoch, "history": history}
    atomic_write_bytes(Path(path), lambda f: torch.save(state, f))


def _load_training_state(path, model, optimizer, scheduler, generator, epochs, steps_per_epoch) -> list[dict]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if (state["epochs"], state["steps_per_epoch"]) != (epochs, steps_per_epoch):
        raise ValueError(f"{path} is a run of {state['epochs']} epochs x {state['steps_per_epoch']} steps, not "
                         f"{epochs} x {steps_per_epoch}; resume with the same --epochs and --batch-size, or delete it to start over")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    random.setstate(state["python_rng"])
    if generator is not None and state["loader_rng"] is not None:
        generator.set_state(state["loader_rng"])
    return list(state["history"])


# ---------------------------------------------------------------------------------------------
# Command line: shared flags, and dense training of the starting model
# ---------------------------------------------------------------------------------------------
def at_least(minimum: float, kind: type = int, *, above: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: a number of ``kind`` that is >= ``minimum`` (> with ``above``); else a one-line error."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'a whole number' if kind is int else 'a number'}, got {text!r}") from None
        if value < minimum or (above and value == minimum):
            raise argparse.ArgumentTypeError(f"must be {'>' if above else '>='} {minimum:g}, got {text}")
        return value

    return parse


def add_run_args(parser) -> None:
    """Flags shared by ``hw2/main.py`` and ``python -m hw2.train``: data, device, seed, batch size."""
    from hw2 import REPO_ROOT
    from hw2.data import DATASETS
    from hw2.models import ARCHITECTURES

    parser.add_argument("--arch", default="vgg13", choices=sorted(ARCHITECTURES),
                        help="network: vgg13 (the homework), resnet18/resnet50 (CIFAR), lenet5/lenet300_100 (28x28 grey) (default: %(default)s)")
    parser.add_argument("--dataset", default="cifar10", choices=sorted(DATASETS),
                        help="cifar10: the real data under --data-dir; synthetic: small generated data, offline, about a minute on a CPU (default: %(default)s)")
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT / "data",
                        help="folder holding cifar-10-batches-py/ (downloaded there when missing) (default: data/ at the repo root)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present, else CPU), cpu, cuda, cuda:1, ... (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the data order, augmentation and initialisation (default: %(default)s)")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="training precision: auto = bf16 autocast + channels_last where the hardware does bf16 natively "
                             "(CUDA, AVX-512 BF16 or AMX CPUs), else fp32; accuracies are always measured in fp32 (default: %(default)s)")
    parser.add_argument("--batch-size", type=at_least(1), default=None,
                        help="training batch size, images (default: 512 for cifar10, 32 for synthetic)")


def default_batch_size(dataset: str) -> int:
    """512 images per step on real data; 32 on the small synthetic set, so an epoch has 10 steps
    (enough for BatchNorm's running statistics to follow the pruned weights)."""
    return 32 if dataset == "synthetic" else 512


def scaled_lr(lr_at_512: float, batch_size: int) -> float:
    """Learning rates are given per 512 images and scaled linearly with the batch size."""
    return lr_at_512 * batch_size / 512


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def main(argv: list[str] | None = None) -> int:
    """``python -m hw2.train``: train the dense VGG13 that pruning starts from."""
    from hw2 import REPO_ROOT
    from hw2.checkpoint import atomic_write_bytes, write_json
    from hw2.data import DataError, load_dataset, make_loaders
    from hw2.models import build_model_for_images

    parser = argparse.ArgumentParser(prog="python -m hw2.train", description="Train the dense model that pruning starts from.")
    add_run_args(parser)
    def flags(recipe: dict) -> str:
        return ", ".join(f"{key.replace('_', '-')} {value}" for key, value in recipe.items())
    parser.epilog = f"Defaults: on cifar10 the shipped model's: {flags(DENSE_RECIPE)}; elsewhere {flags(OTHER_RECIPE)} (see pretrained/README.md)."
    parser.add_argument("--epochs", type=at_least(1), default=None, help="training epochs (default: see below)")
    parser.add_argument("--lr", type=at_least(0, float, above=True), default=None,
                        help="peak learning rate at batch 512 (scaled with --batch-size), SGD Nesterov (default: see below)")
    parser.add_argument("--weight-decay", type=at_least(0, float), default=5e-4, help="L2 on conv/linear weights (default: %(default)s)")
    parser.add_argument("--label-smoothing", type=at_least(0, float), default=LABEL_SMOOTHING, help="(default: %(default)s)")
    parser.add_argument("--warmup", type=at_least(0, float), default=0.1, help="fraction of steps with linear LR warm-up (default: %(default)s)")
    parser.add_argument("--cutout", type=at_least(0), default=None,
                        help="side in pixels of a random square zeroed in each training image, on top of crop and flip; 0: none (default: see below)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "pretrained" / "vgg13_cifar10.pt",
                        help="where to write the state_dict; a JSON log goes beside it (default: pretrained/vgg13_cifar10.pt)")
    parser.add_argument("--eval-every", type=at_least(1), default=1,
                        help="score the test set every N epochs and after the last (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars; one line per epoch (for logs)")
    parser.add_argument("--resume", action="store_true",
                        help="continue a stopped run from the state file beside --out (OUT.state.pt, written after every epoch)")
    args = parser.parse_args(argv)
    for key, value in (DENSE_RECIPE if args.dataset == "cifar10" else OTHER_RECIPE).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    try:
        set_precision(args.precision)
        device = resolve_device(args.device)
        data = load_dataset(args.dataset, args.data_dir, seed=args.seed)
    except (ValueError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    seed_everything(args.seed)
    batch_size = args.batch_size or default_batch_size(args.dataset)
    train_loader, test_loader = make_loaders(data, batch_size, device, seed=args.seed, cutout=args.cutout)
    model = prepare_model(build_model_for_images(args.arch, data.num_classes, tuple(data.train_images.shape[1:])), device)
    state_path = args.out.with_suffix(".state.pt")
    print(f"training dense {args.arch} on {data.name} ({len(data.train_labels)} images) for {args.epochs} epochs on {device} "
          f"({precision_name(device)}); state after each epoch in {state_path}")
    try:
        history = fit(model, train_loader, test_loader, args.epochs, scaled_lr(args.lr, batch_size), device, args.weight_decay,
                      args.label_smoothing, args.warmup, desc="dense", progress=not args.no_progress,
                      state_path=state_path, resume=args.resume, eval_every=args.eval_every)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    seconds = sum(entry["seconds"] for entry in history)  # training time over all (resumed) parts
    accuracy = evaluate(model, test_loader, device, exact=True)  # float32, whatever the training precision
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(args.out, lambda f: torch.save(state, f))
    write_json(args.out.with_suffix(".json"), {
        "command": "python -m hw2.train " + " ".join(sys.argv[1:] if argv is None else argv),
        "arch": args.arch, "dataset": data.name, "device": device_description(device), "torch": torch.__version__,
        "precision": precision_name(device), "epochs": args.epochs,
        "batch_size": batch_size, "lr": args.lr, "weight_decay": args.weight_decay,
        "label_smoothing": args.label_smoothing, "warmup": args.warmup, "cutout": args.cutout, "seed": args.seed,
        "seconds": round(seconds, 1), "test_accuracy": accuracy, "test_accuracy_measured_in": "float32",
        "sha256": file_sha256(args.out), "history": history})
    state_path.unlink(missing_ok=True)  # finished: the model file replaces the resumable state
    print(f"test accuracy {accuracy:.2f}% (float32) after {seconds:.0f} s of training; wrote {args.out}")
    return 0


def device_description(device) -> str:
    """The GPU's name, or the CPU's model name and the number of cores torch uses."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    name = None
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        pass
    name = name or platform.processor() or platform.machine()  # elsewhere (platform.processor may run a command)
    return f"cpu: {name}, {torch.get_num_threads()} threads"


def file_sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


if __name__ == "__main__":
    sys.exit(main())
