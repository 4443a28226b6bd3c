"""MNIST / Fashion-MNIST loading (idx files), and the real-data check on Fashion-MNIST.

The real-data check trains LeNet-5 on Fashion-MNIST on the CPU, then prunes it
to 0.80 unstructured sparsity with OMP and with IMP (masked retraining), and
asserts that IMP stays within 1 point of the dense model.  It needs the data
(``apt-get install dataset-fashion-mnist``, or the idx files under
``data/fashion-mnist/``) and is skipped with that reason when it is absent.
With ``HW2_WRITE_RESULTS_LOGS=1`` it also writes its figures to
``results_logs/lenet5_fashion_mnist_unstructured_0.80.json``, the file the README's table cites
(a plain test run leaves the repository untouched).
"""
from __future__ import annotations

import gzip
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np
import pytest

from grader.solution import REPO_ROOT
from hw2.data import DataError, IDX_FILES, find_idx_folder, load_dataset, read_idx

RESULTS_LOG = REPO_ROOT / "results_logs" / "lenet5_fashion_mnist_unstructured_0.80.json"
CHECK_ARGS = ["--method", "all", "--type", "unstructured", "--arch", "lenet5", "--dataset", "fashion-mnist",
              "--config", "configs/lenet5_unstructured_0.80.yaml", "--dense-epochs", "8", "--epochs", "2",
              "--iterations", "3", "--batch-size", "128", "--lr", "0.1", "--seed", "0", "--no-progress"]
TIME_LIMIT_S = 300  # the budget: 5 minutes on 2 CPUs


def write_idx(path, array: np.ndarray) -> None:
    """Write a uint8 idx file (gzipped): magic 0 0 8 ndim, big-endian sizes, then the bytes."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def fake_idx_folder(folder, train: int = 12, test: int = 5, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (train, 28, 28)),
              "train-labels-idx1-ubyte": rng.integers(0, 10, (train,)),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (test, 28, 28)),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, (test,))}
    folder.mkdir(parents=True)
    for name, array in arrays.items():
        write_idx(folder / f"{name}.gz", array)
    return arrays


def test_read_idx_returns_the_array_written(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (3, 28, 28)).astype(np.uint8)
    write_idx(tmp_path / "x.gz", array)
    assert np.array_equal(read_idx(tmp_path / "x.gz"), array)


def test_read_idx_rejects_a_file_that_is_not_idx(tmp_path):
    (tmp_path / "bad").write_bytes(b"PK\x03\x04 not an idx file")
    with pytest.raises(DataError, match="magic"):
        read_idx(tmp_path / "bad")


@pytest.mark.parametrize("name, folder", [("fashion-mnist", "fashion-mnist"), ("mnist", "mnist"), ("mnist", "MNIST/raw")])
def test_idx_data_under_data_dir_loads_as_grey_28x28_without_augmentation(tmp_path, name, folder):
    arrays = fake_idx_folder(tmp_path / folder)
    data = load_dataset(name, tmp_path)
    assert data.train_images.shape == (12, 1, 28, 28) and data.test_images.shape == (5, 1, 28, 28)
    assert np.array_equal(data.train_images[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert data.train_labels.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert data.num_classes == 10 and data.augment is False and len(data.mean) == 1


def test_missing_mnist_offline_is_one_line_naming_data_dir_and_leaves_nothing(tmp_path, monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # nothing listens there: offline
    data_dir = tmp_path / "data"
    with pytest.raises(DataError) as info:
        load_dataset("mnist", data_dir)
    message = str(info.value)
    assert "\n" not in message and str(data_dir) in message and "--dataset synthetic" in message
    assert not data_dir.exists()


def test_idx_file_names_are_the_official_ones():
    assert IDX_FILES == ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@pytest.mark.slow
def test_lenet5_on_fashion_mnist_imp_keeps_accuracy_within_one_point_of_dense(reference_dir, tmp_path):
    if find_idx_folder("fashion-mnist", REPO_ROOT / "data") is None:
        pytest.skip("Fashion-MNIST not found (apt-get install dataset-fashion-mnist, or put the idx .gz files in "
                    "data/fashion-mnist/)")
    out = tmp_path / "fashion"
    # One thread: as fast as two on LeNet-5 when the machine is idle, and far faster when it is not.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "hw2/main.py", *CHECK_ARGS, "--out", str(out)], cwd=reference_dir,
                            capture_output=True, text=True, env=env, timeout=2 * TIME_LIMIT_S)
    seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stderr[-3000:]
    log = json.loads((out / "run_log.json").read_text())
    dense = log["dense_accuracy"]
    omp, imp = log["models"]["Omp_unstructured"], log["models"]["Imp_unstructured"]
    log_path = RESULTS_LOG if os.environ.get("HW2_WRITE_RESULTS_LOGS") == "1" else tmp_path / RESULTS_LOG.name
    log_path.parent.mkdir(exist_ok=True)
    log_path.write_text(json.dumps({
        "what": "LeNet-5 on Fashion-MNIST: dense, then OMP and IMP to 0.80 unstructured sparsity with masked retraining",
        "command": "python hw2/main.py " + " ".join(CHECK_ARGS) + "  (exported reference, OMP_NUM_THREADS=1)",
        "data": "Fashion-MNIST, official 60,000 train / 10,000 test idx files (Debian dataset-fashion-mnist)",
        "machine": f"{os.cpu_count()}-core CPU ({platform.machine()}), no GPU", "torch": log["torch"],
        "seconds_total": round(seconds, 1), "dense_accuracy": dense,
        "models": {label: {"sparsity": round(m["sparsity"], 4), "accuracy": m["accuracy"],
                           "accuracy_before_retrain": m["accuracy_before_retrain"],
                           "drop": round(dense - m["accuracy"], 2), "iterations": m["iterations"],
                           "epochs_per_iteration": m["epochs_per_iteration"], "seconds": m["seconds"],
                           "steps": [{k: s[k] for k in ("iteration", "sparsity", "accuracy_before_retrain", "accuracy")}
                                     for s in m["steps"]]}
                   for label, m in (("Omp_unstructured", omp), ("Imp_unstructured", imp))},
    }, indent=2) + "\n")
    assert imp["sparsity"] >= 0.80 and omp["sparsity"] >= 0.80
    assert imp["accuracy"] >= dense - 1.0, f"IMP {imp['accuracy']:.2f}% vs dense {dense:.2f}%"
