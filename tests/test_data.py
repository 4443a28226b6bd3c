"""Data loading and the on-device augmentation."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from grader.solution import REPO_ROOT
from hw2.data import DataError, DeviceLoader, cutout, load_cifar10, make_loaders, make_synthetic, random_crop_flip

SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def test_random_crop_flip_is_a_shifted_window_of_the_padded_image():
    torch.manual_seed(0)
    images = torch.randint(1, 256, (64, 3, 8, 8), dtype=torch.uint8)  # no zeros: padding is recognisable
    out = random_crop_flip(images, pad=2, generator=torch.Generator().manual_seed(1))
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    flipped = 0
    for i in range(64):
        windows = [padded[i, :, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        plain = any(torch.equal(out[i], w) for w in windows)
        mirrored = any(torch.equal(out[i], w.flip(2)) for w in windows)
        assert plain or mirrored
        flipped += mirrored and not plain
    assert 10 < flipped < 54, "flips should happen about half the time"


def test_cutout_zeroes_one_clipped_square_per_image_in_every_channel():
    x = torch.randn(200, 3, 12, 12).abs() + 1  # no zeros before the cut
    out = cutout(x.clone(), 4, torch.Generator().manual_seed(0))
    cut = out == 0
    assert torch.equal(cut[:, 0], cut[:, 1]) and torch.equal(cut[:, 0], cut[:, 2]), "the same square in every channel"
    assert torch.equal(out[~cut], x[~cut]), "pixels outside the square are untouched"
    areas = set()
    for square in cut[:, 0]:
        rows, cols = square.any(1).nonzero().flatten(), square.any(0).nonzero().flatten()
        assert len(rows) and len(cols), "every image loses some pixels (the centre is always inside)"
        assert len(rows) <= 4 and len(cols) <= 4 and int(square.sum()) == len(rows) * len(cols), "one axis-aligned rectangle"
        assert torch.equal(rows, torch.arange(rows[0], rows[-1] + 1)) and torch.equal(cols, torch.arange(cols[0], cols[-1] + 1))
        areas.add(int(square.sum()))
    assert 16 in areas and min(areas) < 16, "whole squares inside the image, clipped ones at the border"


def test_cutout_is_off_by_default_and_only_on_training_batches():
    data = make_synthetic(num_train=64, num_test=16, seed=0)
    plain_train, plain_test = make_loaders(data, 16, "cpu", seed=3)
    cut_train, cut_test = make_loaders(data, 16, "cpu", seed=3, cutout=8)
    zero = ((torch.zeros(1, 3, 1, 1) - torch.tensor(data.mean).view(1, 3, 1, 1)) / torch.tensor(data.std).view(1, 3, 1, 1))
    (a, _), (b, _) = next(iter(plain_train)), next(iter(cut_train))  # same crops in the first batch (the cut draws later)
    changed = (a != b).any(1)  # (B, H, W)
    assert changed.flatten(1).any(1).all() and (b.permute(0, 2, 3, 1)[changed] == 0).all()
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(plain_test, cut_test))
    assert zero.abs().min() > 0, "a black pixel is not 0 after normalisation, so 0 marks the cut"


def test_device_loader_normalises_and_covers_every_image_once_per_epoch():
    data = make_synthetic(num_train=100, num_test=30, seed=0)
    loader = DeviceLoader(data.train_images, data.train_labels, 32, data.mean, data.std, train=True, seed=0, drop_last=True)
    batches = list(loader)
    assert len(batches) == len(loader) == 3 and all(x.shape == (32, 3, 32, 32) and x.dtype == torch.float32 for x, _ in batches)
    test = DeviceLoader(data.test_images, data.test_labels, 16, data.mean, data.std, train=False)
    labels = torch.cat([y for _, y in test])
    assert torch.equal(labels, data.test_labels), "the test loader keeps order and drops nothing"
    x = torch.cat([x for x, _ in test])
    expected = (data.test_images.float() / 255 - torch.tensor(data.mean).view(1, 3, 1, 1)) / torch.tensor(data.std).view(1, 3, 1, 1)
    assert torch.allclose(x, expected, atol=1e-5)


def test_loaders_are_reproducible_with_a_seed():
    data = make_synthetic(num_train=64, num_test=16, seed=0)
    first = [y for _, y in make_loaders(data, 16, "cpu", seed=3)[0]]
    second = [y for _, y in make_loaders(data, 16, "cpu", seed=3)[0]]
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_synthetic_data_is_deterministic_and_cifar_shaped():
    a, b = make_synthetic(seed=5), make_synthetic(seed=5)
    assert torch.equal(a.train_images, b.train_images) and a.train_images.shape[1:] == (3, 32, 32)
    assert a.train_images.dtype == torch.uint8 and set(a.train_labels.tolist()) == set(range(10))


def test_missing_cifar10_without_download_names_the_fix(tmp_path):
    with pytest.raises(DataError, match="--dataset synthetic"):
        load_cifar10(tmp_path, download=False)


@pytest.mark.skipif(not (SHARED_DATA / "cifar10-jpeg.tar.gz").is_file(), reason="../shared/data/cifar10-jpeg.tar.gz not present")
def test_reads_the_cifar10_jpeg_copy_whose_md5_differs_from_the_official(tmp_path):
    subprocess.run([sys.executable, str(SHARED_DATA / "make_cifar10.py"), str(tmp_path)], check=True, capture_output=True)
    data = load_cifar10(tmp_path, download=False)
    assert data.train_images.shape == (50000, 3, 32, 32) and data.test_images.shape == (10000, 3, 32, 32)
    assert torch.bincount(data.test_labels).tolist() == [1000] * 10
    mean = data.train_images[:5000].float().div(255).mean(dim=(0, 2, 3))
    assert torch.allclose(mean, torch.tensor(data.mean), atol=0.01)


class _RunsCode:
    """A pickle that calls a function when loaded (here: writes a file), as a hostile batch file could."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_batch_file_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    import pickle

    import numpy as np

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    honest = {"data": np.zeros((2, 3072), dtype=np.uint8), "labels": [0, 1]}
    for name in [f"data_batch_{i}" for i in range(1, 6)]:
        (folder / name).write_bytes(pickle.dumps(honest, protocol=2))
    marker = tmp_path / "ran"
    (folder / "test_batch").write_bytes(pickle.dumps({"data": _RunsCode(marker), "labels": [0]}))
    with pytest.raises(DataError, match="not a CIFAR-10 batch file"):
        load_cifar10(tmp_path, download=False)
    assert not marker.exists()
    (folder / "test_batch").write_bytes(pickle.dumps(honest))  # the same layout, honest: read
    assert len(load_cifar10(tmp_path, download=False).test_labels) == 2
