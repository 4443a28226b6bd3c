"""Data (provided): CIFAR-10 in the official python layout, or small synthetic CIFAR-shaped data.

The whole split lives as one uint8 tensor ``(N, 3, 32, 32)`` on the training
device; ``DeviceLoader`` cuts batches from it and does the augmentation (random
crop with 4 pixels of zero padding, horizontal flip) per sample on that device.
No DataLoader workers, no per-image Python: on a GPU an epoch is bound by the model.
"""
from __future__ import annotations

import hashlib
import pickle
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"  # of the official archive; checked on download only
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)  # per channel, of the training images in [0, 1]
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class DataError(RuntimeError):
    """The data set is missing or unreadable; the message says what to do."""


@dataclass
class ImageData:
    """A data set held in memory: uint8 images ``(N, C, H, W)`` and int64 labels ``(N,)``."""
    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    mean: tuple
    std: tuple
    classes: tuple
    augment: bool = True  # random crop + flip of training batches; off for digits and clothes (flips change digits)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# ---------------------------------------------------------------------------------------------
# CIFAR-10
# ---------------------------------------------------------------------------------------------
class _BatchUnpickler(pickle.Unpickler):
    """Unpickles what a CIFAR batch holds (dicts, lists, bytes, numpy arrays) and nothing else: a pickle may name
    any callable, and a batch file that does is refused instead of run."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}  # how protocol 2 stores bytes

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a CIFAR batch")
        return super().find_class(module, name)


def _read_batches(folder: Path, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for name in names:
        with open(folder / name, "rb") as f:
            try:
                entry = _BatchUnpickler(f, encoding="latin1").load()
            except pickle.UnpicklingError as exc:
                raise DataError(f"{folder / name} is not a CIFAR-10 batch file ({exc}); delete {folder} and run "
                                "again to download a fresh copy") from None
        images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(entry["labels"] if "labels" in entry else entry["fine_labels"])
    return torch.from_numpy(np.concatenate(images)), torch.tensor(labels, dtype=torch.int64)


def _download(url: str, dest: Path, md5: str) -> None:
    partial = dest.with_suffix(dest.suffix + ".part")
    digest = hashlib.md5()
    with urllib.request.urlopen(url, timeout=30) as response:
        dest.parent.mkdir(parents=True, exist_ok=True)  # only once the server answered: offline leaves nothing behind
        with open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length", 0)) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {dest.name}") as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    if digest.hexdigest() != md5:
        partial.unlink(missing_ok=True)
        raise DataError(f"download of {url} is corrupt (md5 {digest.hexdigest()} != {md5}); try again")
    partial.replace(dest)


def load_cifar10(data_dir: Path, download: bool = True) -> ImageData:
    """CIFAR-10 from ``data_dir/cifar-10-batches-py``; downloaded (md5-checked) when missing.

    Files already on disk are read as they are: a re-encoded copy with other
    md5 sums is fine.
    """
    data_dir = Path(data_dir)
    folder = data_dir / CIFAR10_FOLDER
    train_names = [f"data_batch_{i}" for i in range(1, 6)]
    if not all((folder / n).is_file() for n in train_names + ["test_batch"]):
        if not download:
            raise DataError(f"CIFAR-10 not found in --data-dir {data_dir} (expected {folder}/data_batch_1..5, test_batch); "
                            "put it there or use --dataset synthetic")
        archive = data_dir / "cifar-10-python.tar.gz"
        try:
            if not archive.is_file():
                _download(CIFAR10_URL, archive, CIFAR10_MD5)
        except OSError as exc:
            raise DataError(f"CIFAR-10 is not in --data-dir {data_dir} and downloading it failed ({exc.__class__.__name__}: "
                            f"{getattr(exc, 'reason', exc)}); copy {CIFAR10_FOLDER}/ into --data-dir, or use --dataset synthetic") from None
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(data_dir, filter="data")
    train_x, train_y = _read_batches(folder, train_names)
    test_x, test_y = _read_batches(folder, ["test_batch"])
    return ImageData("cifar10", train_x, train_y, test_x, test_y, CIFAR10_MEAN, CIFAR10_STD, CIFAR10_CLASSES)


# ---------------------------------------------------------------------------------------------
# Synthetic CIFAR-shaped data: learnable in seconds on a CPU, for tests and smoke runs
# ---------------------------------------------------------------------------------------------
def make_synthetic(num_train: int = 320, num_test: int = 200, num_classes: int = 10, seed: int = 0,
                   image_size: int = 32, channels: int = 3) -> ImageData:
    """Each class is a smooth random colour pattern; an image is its class pattern plus noise."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(num_classes, channels, 4, 4, generator=gen)
    templates = torch.nn.functional.interpolate(coarse, size=(image_size, image_size), mode="bilinear", align_corners=False)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(n) % num_classes
        labels = labels[torch.randperm(n, generator=gen)]
        noise = 0.12 * torch.randn(n, channels, image_size, image_size, generator=gen)
        images = (templates[labels] * 0.8 + 0.1 + noise).clamp(0, 1)
        return (images * 255).round().to(torch.uint8), labels

    train_x, train_y = split(num_train)
    test_x, test_y = split(num_test)
    mean = tuple(train_x.float().div(255).mean(dim=(0, 2, 3)).tolist())
    std = tuple(train_x.float().div(255).std(dim=(0, 2, 3)).tolist())
    return ImageData("synthetic", train_x, train_y, test_x, test_y, mean, std, tuple(f"class{i}" for i in range(num_classes)))


# ---------------------------------------------------------------------------------------------
# MNIST and Fashion-MNIST: 28x28 grey images in the idx format (gzipped or not)
# ---------------------------------------------------------------------------------------------
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
MNIST_LIKE = {
    # name: (folder under --data-dir, torchvision's folder, system folder, download base URL, md5 of each .gz, classes)
    "mnist": ("mnist", "MNIST/raw", "/usr/share/datasets/mnist", "https://ossci-datasets.s3.amazonaws.com/mnist/",
              ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
               "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"),
              tuple(str(d) for d in range(10))),
    "fashion-mnist": ("fashion-mnist", "FashionMNIST/raw", "/usr/share/datasets/fashion-mnist",  # apt-get install dataset-fashion-mnist
                      "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
                      ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
                       "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"),
                      ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")),
}


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (``.gz`` or plain): uint8 array of the shape its header gives."""
    import gzip

    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:  # magic: 0, 0, dtype 0x08 = uint8, ndim
        raise DataError(f"{path} is not a uint8 idx file (bad magic number)")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DataError(f"{path} is truncated: header says {shape}, found {data.size} values")
    return data.reshape(shape)


def find_idx_folder(name: str, data_dir: Path) -> Path | None:
    """The first folder holding all four idx files of ``name``: --data-dir's, torchvision's layout, then the system one."""
    folder, torchvision_folder, system_folder = MNIST_LIKE[name][:3]
    for candidate in (Path(data_dir) / folder, Path(data_dir) / torchvision_folder, Path(system_folder)):
        if all((candidate / f"{f}.gz").is_file() or (candidate / f).is_file() for f in IDX_FILES):
            return candidate
    return None


def load_mnist_like(name: str, data_dir: Path, download: bool = True) -> ImageData:
    """MNIST or Fashion-MNIST as uint8 ``(N, 1, 28, 28)``; downloaded into ``data_dir/<name>`` (md5-checked) when missing.

    Files already on disk (for example Debian's ``dataset-fashion-mnist`` in
    ``/usr/share/datasets/fashion-mnist``) are read as they are.
    """
    folder_name, _, system_folder, base_url, md5s, classes = MNIST_LIKE[name]
    folder = find_idx_folder(name, data_dir)
    if folder is None:
        folder = Path(data_dir) / folder_name
        hint = (f"put the four idx .gz files in {folder}/"
                + (" or run 'apt-get install dataset-fashion-mnist'" if name == "fashion-mnist" else "")
                + ", or use --dataset synthetic")
        if not download:
            raise DataError(f"{name} not found in --data-dir {data_dir} nor {system_folder}; {hint}")
        try:
            for file_name, md5 in zip(IDX_FILES, md5s):
                if not (folder / f"{file_name}.gz").is_file():
                    _download(f"{base_url}{file_name}.gz", folder / f"{file_name}.gz", md5)
        except OSError as exc:
            raise DataError(f"{name} is not in --data-dir {data_dir} nor {system_folder} and downloading it failed "
                            f"({exc.__class__.__name__}: {getattr(exc, 'reason', exc)}); {hint}") from None

    def part(file_name: str) -> np.ndarray:
        gz = folder / f"{file_name}.gz"
        return read_idx(gz if gz.is_file() else folder / file_name)

    train_x, train_y, test_x, test_y = (part(f) for f in IDX_FILES)
    train_images = torch.from_numpy(train_x.copy()).unsqueeze(1)  # (60000, 1, 28, 28)
    test_images = torch.from_numpy(test_x.copy()).unsqueeze(1)
    mean = (float(train_images.float().div(255).mean()),)
    std = (float(train_images.float().div(255).std()),)
    return ImageData(name, train_images, torch.from_numpy(train_y.astype(np.int64)),
                     test_images, torch.from_numpy(test_y.astype(np.int64)), mean, std, classes, augment=False)


DATASETS = {"cifar10": "CIFAR-10, official python layout under --data-dir",
            "synthetic": "small generated CIFAR-shaped data (offline, seconds on a CPU)"}
DATASETS.update({"mnist": "MNIST digits, idx files under --data-dir/mnist (downloaded when missing)",
                 "fashion-mnist": "Fashion-MNIST, idx files under --data-dir/fashion-mnist or /usr/share/datasets/fashion-mnist"})


def load_dataset(name: str, data_dir: Path, seed: int = 0, download: bool = True) -> ImageData:
    """Load a data set by its ``--dataset`` name."""
    if name == "cifar10":
        return load_cifar10(data_dir, download=download)
    if name == "synthetic":
        return make_synthetic(seed=seed)
    if name in MNIST_LIKE:
        return load_mnist_like(name, data_dir, download=download)
    raise DataError(f"unknown --dataset {name!r}; choose one of {sorted(DATASETS)}")


# ---------------------------------------------------------------------------------------------
# Batches on the device
# ---------------------------------------------------------------------------------------------
def random_crop_flip(images: torch.Tensor, pad: int, generator: torch.Generator | None) -> torch.Tensor:
    """Per-sample random crop (zero padding ``pad``) and horizontal flip of a uint8 batch ``(N, C, H, W)``."""
    n, _, h, w = images.shape
    device = images.device
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))  # (N, C, H+2p, W+2p)
    dy = torch.randint(0, 2 * pad + 1, (n, 1), device=device, generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n, 1), device=device, generator=generator)
    flip = torch.rand(n, 1, device=device, generator=generator) < 0.5
    rows = dy + torch.arange(h, device=device)  # (N, H)
    cols_fwd = dx + torch.arange(w, device=device)  # (N, W)
    cols = torch.where(flip, cols_fwd.flip(1), cols_fwd)
    batch = torch.arange(n, device=device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)
    return out.permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, size: int, generator: torch.Generator | None) -> torch.Tensor:
    """Zero one ``size`` x ``size`` square per image of a normalised batch ``(N, C, H, W)``, in place.

    The square's centre is uniform over the image, so near a border only part of it is cut
    (DeVries & Taylor, 2017). Zero is the mean after normalisation.
    """
    n, _, h, w = x.shape
    device = x.device
    cy = torch.randint(0, h, (n, 1), device=device, generator=generator)
    cx = torch.randint(0, w, (n, 1), device=device, generator=generator)
    rows = torch.arange(h, device=device) - cy + size // 2  # (N, H): inside when 0 <= . < size
    cols = torch.arange(w, device=device) - cx + size // 2
    inside = ((rows >= 0) & (rows < size))[:, :, None] & ((cols >= 0) & (cols < size))[:, None, :]  # (N, H, W)
    return x.masked_fill_(inside[:, None], 0.0)


class DeviceLoader:
    """Iterate ``(images, labels)`` batches cut from uint8 tensors that live on ``device``.

    Images come out as normalised float32 ``(B, C, H, W)`` (channels_last when training in bf16).
    ``train=True`` shuffles and augments each epoch; ``train=False`` keeps order.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, mean, std,
                 train: bool, device: torch.device | str = "cpu", seed: int = 0, drop_last: bool = False,
                 augment: bool = True, cutout: int = 0):
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size = batch_size
        self.train = train
        self.drop_last = drop_last
        self.augment = augment  # only with train=True
        self.cutout = cutout  # side of the square cut from each training image (0: none)
        self.mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std, device=self.device).view(1, -1, 1, 1) * 255
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        n = len(self.labels)
        order = torch.randperm(n, device=self.device, generator=self.generator) if self.train else torch.arange(n, device=self.device)
        from hw2.train import uses_bf16  # the model's layout follows the training precision

        memory_format = torch.channels_last if uses_bf16(self.device) else torch.contiguous_format
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            images = self.images[idx]
            if self.train and self.augment:
                images = random_crop_flip(images, pad=4, generator=self.generator)
            x = (images.float() - self.mean) / self.std
            if self.train and self.augment and self.cutout:
                x = cutout(x, self.cutout, self.generator)
            x = x.contiguous(memory_format=memory_format)
            yield x, self.labels[idx]


def make_loaders(data: ImageData, batch_size: int, device, seed: int = 0,
                 eval_batch_size: int = 1024, cutout: int = 0) -> tuple[DeviceLoader, DeviceLoader]:
    """Train loader (shuffled, augmented, last partial batch dropped when there are several) and test loader.

    ``cutout`` > 0 also zeroes a random square of that side in every training image.
    """
    drop_last = len(data.train_labels) > batch_size
    train = DeviceLoader(data.train_images, data.train_labels, batch_size, data.mean, data.std, True, device, seed, drop_last,
                         augment=data.augment, cutout=cutout)
    test = DeviceLoader(data.test_images, data.test_labels, eval_batch_size, data.mean, data.std, False, device, seed)
    return train, test
