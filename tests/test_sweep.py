"""The pruning sweep without retraining (``main.py --method sweep``), on synthetic data with the reference functions."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from hw2 import sweep
from hw2.data import make_loaders, make_synthetic
from hw2.models import build_model_for_images, prunable_weights
from hw2.train import fit


@pytest.fixture(scope="module")
def trained_mlp():
    """LeNet-300-100 trained for a few seconds on synthetic 3x32x32 data, with its test loader."""
    torch.manual_seed(0)
    data = make_synthetic(seed=0)
    train_loader, test_loader = make_loaders(data, 32, "cpu", seed=0)
    model = build_model_for_images("lenet300_100", data.num_classes, (3, 32, 32))
    fit(model, train_loader, test_loader, 3, 0.01, "cpu", progress=False)
    return model, test_loader


@pytest.mark.parametrize("arch, shape", [("vgg13", (3, 32, 32)), ("lenet5", (1, 28, 28)), ("resnet18", (3, 32, 32))])
def test_layer_ratios_cover_every_layer_but_the_output_layer(arch, shape):
    model = build_model_for_images(arch, 10, shape)
    names = list(prunable_weights(model))
    assert sweep.layer_ratios(model, 0.5) == {name: 0.5 for name in names[:-1]}
    filters = sweep.layer_ratios(model, 0.5, "filter")
    assert filters and all(prunable_weights(model)[name].dim() == 4 for name in filters)


def test_sweep_prunes_more_at_each_ratio_and_leaves_the_model_and_output_layer_alone(ref, monkeypatch, trained_mlp):
    monkeypatch.setattr(sweep, "pruning", ref)  # the reference apply_pruning in place of the stubs
    model, test_loader = trained_mlp
    before = {k: v.clone() for k, v in model.state_dict().items()}
    records = sweep.prune_sweep(model, test_loader, "cpu", ratios=(0.0, 0.5, 0.9, 0.99))
    assert [r["ratio"] for r in records] == [0.0, 0.5, 0.9, 0.99]
    sparsities = [r["sparsity"] for r in records]
    assert sparsities[0] == 0.0 and sparsities == sorted(sparsities)
    output_share = model.fc3.weight.numel() / sum(w.numel() for w in prunable_weights(model).values())
    for r in records:  # every layer but the output layer at the ratio: overall = ratio * (1 - output share)
        assert r["sparsity"] == pytest.approx(r["ratio"] * (1 - output_share), abs=1e-3)
    from hw2.train import evaluate
    assert records[0]["accuracy"] == pytest.approx(evaluate(model, test_loader, "cpu", exact=True))
    assert records[-1]["accuracy"] <= records[0]["accuracy"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), f"{key} changed: the sweep must prune copies"


def test_sweep_rejects_a_ratio_of_one(ref, monkeypatch, trained_mlp):
    monkeypatch.setattr(sweep, "pruning", ref)
    model, test_loader = trained_mlp
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        sweep.prune_sweep(model, test_loader, "cpu", ratios=(1.0,))


def run_main(project, *args):
    return subprocess.run([sys.executable, str(project / "hw2" / "main.py"), *args], cwd=project,
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)


def test_main_sweep_prints_the_table_and_writes_json_and_plot(reference_dir, tmp_path):
    out = tmp_path / "sweep"
    result = run_main(reference_dir, "--method", "sweep", "--arch", "lenet300_100", "--dataset", "synthetic",
                      "--dense-epochs", "3", "--sweep-ratios", "0", "0.5", "0.9", "--no-progress", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    log = json.loads((out / "sweep_lenet300_100_synthetic_unstructured.json").read_text())
    assert [r["ratio"] for r in log["records"]] == [0.0, 0.5, 0.9]
    assert log["output_layer_kept"] == "fc3.weight" and log["retrained"] is False
    assert (out / "sweep_lenet300_100_synthetic_unstructured.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "ratio  sparsity  accuracy" in result.stdout


def test_main_sweep_ratio_out_of_range_is_one_line_and_leaves_no_file(reference_dir, tmp_path):
    out = tmp_path / "sweep"
    result = run_main(reference_dir, "--method", "sweep", "--dataset", "synthetic", "--sweep-ratios", "0.5", "1.2",
                      "--out", str(out))
    assert result.returncode == 2
    assert "--sweep-ratios" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_main_other_arch_without_config_says_which_flag_is_missing(reference_dir, tmp_path):
    result = run_main(reference_dir, "--method", "omp", "--type", "unstructured", "--arch", "lenet5",
                      "--dataset", "synthetic", "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "--config" in result.stderr


def test_the_sweep_starts_from_the_same_dense_model_as_a_pruning_run(reference_dir, tmp_path):
    """--seed alone decides the dense model trained from scratch, whatever --method drew before it."""
    common = ("--arch", "lenet300_100", "--dataset", "synthetic", "--dense-epochs", "2", "--no-progress")
    sweep = run_main(reference_dir, "--method", "sweep", "--sweep-ratios", "0", *common, "--out", str(tmp_path / "s"))
    pruned = run_main(reference_dir, "--method", "omp", "--scope", "global", "--global-sparsity", "0.5", "--epochs", "1",
                      *common, "--out", str(tmp_path / "p"))
    assert sweep.returncode == 0 and pruned.returncode == 0, (sweep.stderr + pruned.stderr)[-3000:]
    dense = [next(line for line in r.stdout.splitlines() if line.startswith("dense ")) for r in (sweep, pruned)]
    assert dense[0] == dense[1]
