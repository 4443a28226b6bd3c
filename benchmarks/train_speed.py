"""Training-speed benchmark, in one run: float32 against bf16 (``--compare precision``), or the
on-device data path against a plain DataLoader path (``--compare data``).

    python benchmarks/train_speed.py --compare precision --device cpu --steps 20   # CPU fp32 vs bf16, s/epoch
    python benchmarks/train_speed.py                       # data paths, CIFAR-10 under data/, CUDA if present
    python benchmarks/train_speed.py --dataset synthetic --max-images 256 --epochs 1   # smoke run on a CPU

``--compare precision`` trains the same VGG13 on the same batches once in float32 and once in
bf16 autocast + channels_last (``--precision bf16``), and prints both and their ratio; bf16 only
pays off where the hardware does it natively (CUDA, AVX-512 BF16 or AMX CPUs).
``--steps N`` times N steps per epoch and scales to a full epoch (a CPU epoch of VGG13 takes minutes).

``--compare data`` trains the same VGG13 with the same step on both data paths, so the
difference is the data path alone:

* fast: ``hw2.data.DeviceLoader`` (uint8 data set on the device, crop+flip per sample on the device);
* dataloader: ``torch.utils.data.DataLoader`` over PIL images with torchvision's
  RandomCrop(32, padding=4) / RandomHorizontalFlip / ToTensor / Normalize and worker processes
  (if torchvision is not installed, the same transforms written in plain torch, and the report says so).

Prints seconds per epoch and images per second of each (median of the timed epochs, after one
warm-up epoch) and their ratio; ``--json PATH`` also writes them.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from hw2.checkpoint import write_json  # noqa: E402
from hw2.data import DataError, ImageData, load_dataset, make_loaders  # noqa: E402
from hw2.models import build_model  # noqa: E402
from hw2.train import (add_run_args, at_least, cpu_has_native_bf16, default_batch_size, device_description,  # noqa: E402
                       make_optimizer, precision_name, prepare_model, resolve_device, set_precision, train_epoch)


class PilImages(torch.utils.data.Dataset):
    """Images as PIL, one at a time, through a per-image transform: what a plain torchvision pipeline does."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images = images.permute(0, 2, 3, 1).numpy()  # (N, H, W, C) uint8
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def per_image_transform(mean, std):
    """torchvision's standard CIFAR augmentation, or its plain-torch equivalent; returns (transform, name)."""
    try:
        from torchvision import transforms

        return transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                   transforms.ToTensor(), transforms.Normalize(mean, std)]), "torchvision transforms"
    except Exception:  # torchvision missing or built for another torch
        import numpy as np

        mean_t, std_t = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)

        def transform(image):
            x = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float().div(255)
            x = nn.functional.pad(x, (4, 4, 4, 4))
            i, j = torch.randint(0, 9, (2,)).tolist()
            x = x[:, i:i + 32, j:j + 32]
            if torch.rand(()) < 0.5:
                x = x.flip(2)
            return (x - mean_t) / std_t

        return transform, "plain-torch per-image transforms (torchvision not importable)"


class FirstSteps:
    """The first ``steps`` batches of each pass over ``loader``."""

    def __init__(self, loader, steps: int):
        self.loader, self.steps = loader, min(steps, len(loader))

    def __len__(self):
        return self.steps

    def __iter__(self):
        for step, batch in enumerate(self.loader):
            if step == self.steps:
                return
            yield batch


class ToDevice:
    """Wrap a DataLoader so its batches arrive on ``device`` in the training layout, like DeviceLoader's."""

    def __init__(self, loader, device):
        self.loader, self.device = loader, device

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        from hw2.train import uses_bf16

        fmt = torch.channels_last if uses_bf16(self.device) else torch.contiguous_format
        for x, y in self.loader:
            yield x.to(self.device, non_blocking=True).contiguous(memory_format=fmt), y.to(self.device, non_blocking=True)


def time_epochs(loader, data: ImageData, device, epochs: int, lr: float, steps: int | None = None) -> list[float]:
    """Seconds per full epoch of each timed epoch; with ``steps``, timed on that many steps and scaled."""
    full_steps = len(loader)
    if steps:
        loader = FirstSteps(loader, steps)
    torch.manual_seed(0)
    model = prepare_model(build_model("vgg13", num_classes=data.num_classes), device)
    optimizer = make_optimizer(model, lr)
    loss_fn = nn.CrossEntropyLoss()
    seconds = []
    for epoch in range(epochs + 1):  # epoch 0 warms up (cuDNN autotuning, worker start-up, allocator)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        train_epoch(model, loader, optimizer, loss_fn, device, desc=f"epoch {epoch}", progress=False)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if epoch > 0:
            seconds.append((time.perf_counter() - start) * full_steps / len(loader))
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/train_speed.py", description=__doc__.split("\n\n")[0])
    add_run_args(parser)
    parser.add_argument("--compare", choices=("data", "precision"), default="data",
                        help="data: on-device loader vs DataLoader; precision: fp32 vs bf16 on the on-device loader (default: %(default)s)")
    parser.add_argument("--epochs", type=at_least(1), default=3, help="timed epochs per path, after one warm-up epoch (default: %(default)s)")
    parser.add_argument("--steps", type=at_least(1), default=None,
                        help="time only the first N steps of each epoch and scale to a full epoch (default: whole epochs)")
    parser.add_argument("--workers", type=at_least(0), default=8, help="DataLoader worker processes (default: %(default)s)")
    parser.add_argument("--max-images", type=at_least(1), default=None, help="train on the first N images only (CPU smoke runs)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    try:
        set_precision(args.precision)
        device = resolve_device(args.device)
        data = load_dataset(args.dataset, args.data_dir, seed=args.seed)
    except (ValueError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.max_images:
        data.train_images, data.train_labels = data.train_images[:args.max_images], data.train_labels[:args.max_images]
    batch_size = args.batch_size or default_batch_size(args.dataset)
    images = len(data.train_labels) // batch_size * batch_size  # both paths drop the last partial batch
    fast_loader, _ = make_loaders(data, batch_size, device, seed=args.seed)
    results = {"device": device_description(device), "torch": torch.__version__, "dataset": data.name,
               "images_per_epoch": images, "batch_size": batch_size, "timed_epochs": args.epochs,
               "timed_steps_per_epoch": min(args.steps, len(fast_loader)) if args.steps else len(fast_loader),
               "compare": args.compare, "command": "python benchmarks/train_speed.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    print(f"VGG13 on {data.name}, {images} images/epoch, batch {batch_size}, {results['device']}, torch {torch.__version__}"
          + (f"; timing {results['timed_steps_per_epoch']} of {len(fast_loader)} steps per epoch, scaled" if args.steps else ""))
    if args.compare == "precision":
        results["cpu_native_bf16"] = cpu_has_native_bf16()
        paths = [(precision, precision, fast_loader) for precision in ("fp32", "bf16")]
        baseline, contender = "fp32", "bf16"
    else:
        transform, transform_name = per_image_transform(data.mean, data.std)
        plain_loader = ToDevice(torch.utils.data.DataLoader(
            PilImages(data.train_images, data.train_labels, transform), batch_size=batch_size, shuffle=True,
            drop_last=True, num_workers=args.workers, pin_memory=device.type == "cuda",
            persistent_workers=args.workers > 0), device)
        results.update({"workers": args.workers, "dataloader_transforms": transform_name, "precision": precision_name(device)})
        paths = [("fast", args.precision, fast_loader), ("dataloader", args.precision, plain_loader)]
        baseline, contender = "dataloader", "fast"
    for name, precision, loader in paths:
        set_precision(precision)
        seconds = time_epochs(loader, data, device, args.epochs, lr=0.05, steps=args.steps)
        median = statistics.median(seconds)
        results[name] = {"seconds_per_epoch": median, "images_per_second": images / median, "epochs_seconds": seconds,
                         "precision": precision_name(device)}
        print(f"{name:<11} {median:8.2f} s/epoch  {images / median:10.0f} images/s  ({precision_name(device)})")
    results["speedup"] = results[baseline]["seconds_per_epoch"] / results[contender]["seconds_per_epoch"]
    if args.compare == "precision":
        print(f"bf16 is {results['speedup']:.2f}x float32 (s/epoch ratio; native bf16 on this CPU: {results.get('cpu_native_bf16')})")
    else:
        print(f"fast path is {results['speedup']:.1f}x the DataLoader path ({results['dataloader_transforms']}, {args.workers} workers)")
    if args.json:
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
