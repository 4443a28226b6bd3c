"""Training and evaluation loop (provided).

On CUDA the model runs in channels_last with bf16 autocast; on a CPU in float32.
Each epoch shows a progress bar with the running loss and accuracy.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import random
import sys
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm import tqdm


def autocast(device: torch.device):
    """bf16 autocast on CUDA, nothing elsewhere."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_model(model: nn.Module, device) -> nn.Module:
    """Move ``model`` to ``device`` (channels_last on CUDA) and return it."""
    device = torch.device(device)
    model = model.to(device)
    if device.type == "cuda":
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
    """Turn off TF32 matmuls/convolutions for the duration (CUDA's default lets convs use TF32)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@torch.no_grad()
def evaluate(model: nn.Module, loader, device, exact: bool = False) -> float:
    """Top-1 accuracy in percent on ``loader`` (eval mode, no augmentation).

    ``exact=True`` evaluates in plain float32 (no bf16, no TF32), so the figure
    matches what a CPU re-measurement gives; use it for reported accuracies.
    """
    model.eval()
    correct = torch.zeros((), device=device, dtype=torch.int64)
    seen = 0
    with exact_float32() if exact else contextlib.nullcontext():
        for x, y in loader:
            with contextlib.nullcontext() if exact else autocast(device):
                logits = model(x)
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
        after_step: Callable[[], None] | None = None, progress: bool = True) -> list[dict]:
    """Train for ``epochs`` with SGD + the schedule above; returns one log entry per epoch."""
    optimizer = make_optimizer(model, lr, weight_decay=weight_decay)
    scheduler = make_scheduler(optimizer, epochs * len(train_loader), warmup_fraction)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    history = []
    for epoch in range(epochs):
        stats = train_epoch(model, train_loader, optimizer, loss_fn, device, scheduler, after_step,
                            desc=f"{desc} {epoch + 1}/{epochs}", progress=progress)
        stats["test_accuracy"] = evaluate(model, test_loader, device)
        stats["epoch"] = epoch + 1
        history.append(stats)
    return history


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
    import argparse
    import json
    import time

    from hw2 import REPO_ROOT
    from hw2.checkpoint import atomic_write_bytes, write_json
    from hw2.data import DataError, load_dataset, make_loaders
    from hw2.models import build_model_for_images

    parser = argparse.ArgumentParser(prog="python -m hw2.train", description="Train the dense model that pruning starts from.")
    add_run_args(parser)
    parser.add_argument("--epochs", type=at_least(1), default=40, help="training epochs (default: %(default)s)")
    parser.add_argument("--lr", type=at_least(0, float, above=True), default=0.2, help="peak learning rate at batch 512 (scaled with --batch-size), SGD Nesterov (default: %(default)s)")
    parser.add_argument("--weight-decay", type=at_least(0, float), default=5e-4, help="L2 on conv/linear weights (default: %(default)s)")
    parser.add_argument("--label-smoothing", type=at_least(0, float), default=0.1, help="(default: %(default)s)")
    parser.add_argument("--warmup", type=at_least(0, float), default=0.1, help="fraction of steps with linear LR warm-up (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "pretrained" / "vgg13_cifar10.pt",
                        help="where to write the state_dict; a JSON log goes beside it (default: pretrained/vgg13_cifar10.pt)")
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device)
        data = load_dataset(args.dataset, args.data_dir, seed=args.seed)
    except (ValueError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    seed_everything(args.seed)
    batch_size = args.batch_size or default_batch_size(args.dataset)
    train_loader, test_loader = make_loaders(data, batch_size, device, seed=args.seed)
    model = prepare_model(build_model_for_images(args.arch, data.num_classes, tuple(data.train_images.shape[1:])), device)
    print(f"training dense {args.arch} on {data.name} ({len(data.train_labels)} images) for {args.epochs} epochs on {device}")
    start = time.perf_counter()
    history = fit(model, train_loader, test_loader, args.epochs, scaled_lr(args.lr, batch_size), device, args.weight_decay,
                  args.label_smoothing, args.warmup, desc="dense")
    seconds = time.perf_counter() - start
    accuracy = evaluate(model, test_loader, device, exact=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(args.out, lambda f: torch.save(state, f))
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    write_json(args.out.with_suffix(".json"), {
        "command": "python -m hw2.train " + " ".join(sys.argv[1:] if argv is None else argv),
        "arch": args.arch, "dataset": data.name, "device": gpu, "torch": torch.__version__, "epochs": args.epochs,
        "batch_size": batch_size, "lr": args.lr, "weight_decay": args.weight_decay,
        "label_smoothing": args.label_smoothing, "warmup": args.warmup, "seed": args.seed,
        "seconds": round(seconds, 1), "test_accuracy": accuracy, "history": history})
    print(f"test accuracy {accuracy:.2f}% after {seconds:.0f} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
