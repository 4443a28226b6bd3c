"""Global magnitude pruning (``--scope global``): the reference functions' properties and main.py's flag."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from hw2 import pruning as stubs
from hw2.data import make_loaders, make_synthetic
from hw2.models import build_model_for_images, prunable_weights


def seeded_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {"a.weight": torch.randn(8, 3, 3, 3, generator=gen),  # small magnitudes: loses more
            "b.weight": 3 * torch.randn(10, 20, generator=gen),
            "c.weight": torch.randn(5, generator=gen)}


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.8, 0.99])
def test_global_prune_uses_one_threshold_across_tensors(ref, sparsity):
    tensors = seeded_tensors()
    copies = {k: v.clone() for k, v in tensors.items()}
    masks = ref.global_unstructured_prune(tensors, sparsity)
    assert list(masks) == list(tensors)
    total = sum(t.numel() for t in tensors.values())
    zeros = sum(int((m == 0).sum()) for m in masks.values())
    assert abs(zeros - sparsity * total) <= 1  # floor or ceil
    pruned = torch.cat([t[m == 0].abs() for t, m in zip(tensors.values(), masks.values())])
    kept = torch.cat([t[m == 1].abs() for t, m in zip(tensors.values(), masks.values())])
    if len(pruned) and len(kept):
        assert pruned.max() <= kept.min()
    for name, mask in masks.items():
        assert mask.shape == tensors[name].shape and set(mask.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(tensors[name], copies[name])


def test_global_prune_matches_torch_global_unstructured(ref):
    tensors = seeded_tensors(1)
    modules = {name: nn.Module() for name in tensors}
    for name, module in modules.items():
        module.weight = nn.Parameter(tensors[name].clone())
    prune.global_unstructured([(m, "weight") for m in modules.values()], pruning_method=prune.L1Unstructured, amount=0.6)
    masks = ref.global_unstructured_prune(tensors, 0.6)
    for name, module in modules.items():
        assert torch.equal(masks[name], module.weight_mask), name


def test_global_prune_gives_layers_different_sparsities(ref):
    masks = ref.global_unstructured_prune(seeded_tensors(), 0.5)
    sparsities = {name: float((m == 0).float().mean()) for name, m in masks.items()}
    assert sparsities["a.weight"] > 0.6 > 0.4 > sparsities["b.weight"]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    data = make_synthetic(num_train=64, num_test=32, seed=0)
    train_loader, test_loader = make_loaders(data, 16, "cpu", seed=0)
    return build_model_for_images("lenet300_100", 10, (3, 32, 32)), train_loader, test_loader


def test_global_imp_lands_on_the_target_and_keeps_pruned_weights_zero(ref, tiny):
    dense, train_loader, test_loader = tiny
    model = build_model_for_images("lenet300_100", 10, (3, 32, 32))
    model.load_state_dict(dense.state_dict())
    names = ["fc1.weight", "fc2.weight"]
    steps = ref.global_magnitude_prune(model, 0.9, names, iterations=3, train_loader=train_loader,
                                       test_loader=test_loader, epochs=1, device="cpu", lr=0.01, progress=False)
    assert [s["iteration"] for s in steps] == [1, 2, 3]
    targets = [s["ratios"]["global"] for s in steps]
    assert targets == sorted(targets) and targets[-1] == 0.9
    weights = prunable_weights(model)
    total = sum(weights[n].numel() for n in names)
    zeros = sum(int((weights[n] == 0).sum()) for n in names)
    assert abs(zeros - 0.9 * total) <= 1
    assert int((weights["fc3.weight"] == 0).sum()) == 0  # not named: not pruned
    for name in names:  # masks attached and in force after the retraining
        module = model.get_submodule(name.rpartition(".")[0])
        assert torch.all(module.weight[module.weight_mask == 0] == 0)


def test_global_prune_rejects_two_rounds_and_unknown_layers(ref, tiny):
    model, train_loader, test_loader = tiny
    common = dict(train_loader=train_loader, test_loader=test_loader, epochs=0, device="cpu", progress=False)
    with pytest.raises(ValueError, match="iterations=2"):
        ref.global_magnitude_prune(model, 0.5, None, iterations=2, **common)
    with pytest.raises(ValueError, match="valid names"):
        ref.global_magnitude_prune(model, 0.5, ["features.0.weight"], **common)


def test_global_functions_are_stubs_in_the_student_version():
    with pytest.raises(NotImplementedError, match="global_unstructured_prune"):
        stubs.global_unstructured_prune(seeded_tensors(), 0.5)


def run_main(project, *args):
    return subprocess.run([sys.executable, str(project / "hw2" / "main.py"), *args], cwd=project,
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)


def test_main_scope_global_saves_an_omp_global_model_at_the_target(reference_dir, tmp_path):
    out = tmp_path / "global"
    result = run_main(reference_dir, "--method", "omp", "--scope", "global", "--global-sparsity", "0.7",
                      "--arch", "lenet300_100", "--dataset", "synthetic", "--epochs", "1", "--dense-epochs", "2",
                      "--no-progress", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    entry = json.loads((out / "run_log.json").read_text())["models"]["Omp_global"]
    assert entry["scope"] == "global" and entry["target"] == 0.7 and entry["sparsity"] == pytest.approx(0.7, abs=1e-4)
    assert (out / entry["file"]).is_file() and entry["file"].startswith("Omp_global_0.70_acc_")


def test_main_scope_global_with_filter_is_a_one_line_error(reference_dir, tmp_path):
    result = run_main(reference_dir, "--method", "omp", "--scope", "global", "--type", "filter",
                      "--dataset", "synthetic", "--out", str(tmp_path / "x"))
    assert result.returncode == 2 and "--type unstructured" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


def test_global_prune_reaches_every_conv_of_a_resnet18_including_shortcuts(ref):
    torch.manual_seed(0)
    data = make_synthetic(num_train=16, num_test=8, seed=0)
    train_loader, test_loader = make_loaders(data, 8, "cpu", seed=0)
    model = build_model_for_images("resnet18", 10, (3, 32, 32))
    steps = ref.global_magnitude_prune(model, 0.5, None, iterations=1, train_loader=train_loader,
                                       test_loader=test_loader, epochs=0, device="cpu", progress=False)
    weights = prunable_weights(model)
    assert steps[0]["sparsity"] == pytest.approx(0.5, abs=1e-6)
    assert "layer2.0.shortcut.0.weight" in steps[0]["layer_sparsity"]
    sparsities = {name: float((w == 0).float().mean()) for name, w in weights.items()}
    assert max(sparsities.values()) - min(sparsities.values()) > 0.1  # one threshold: layers differ
