"""ThiNet-style filter selection (``--criterion thinet``): the reference functions' properties and main.py's flag."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from hw2 import pruning as stubs
from hw2.models import VGG13, build_model_for_images, prunable_weights

SMALL_WIDTHS = [8, 8, 16, 16, 16, 16, 32, 32, 32, 32]


def small_vgg(seed: int = 0) -> VGG13:
    torch.manual_seed(seed)
    return VGG13(widths=SMALL_WIDTHS).eval()


@pytest.mark.parametrize("sparsity", [0.0, 0.25, 0.5, 0.9])
def test_thinet_removes_exactly_the_requested_number_of_filters(ref, sparsity):
    contributions = torch.randn(200, 12, generator=torch.Generator().manual_seed(0))
    copy = contributions.clone()
    keep = ref.thinet_select_filters(contributions, sparsity)
    assert keep.shape == (12,) and set(keep.unique().tolist()) <= {0.0, 1.0}
    assert int((keep == 0).sum()) == round(sparsity * 12)
    assert torch.equal(contributions, copy)


def test_thinet_first_removes_the_filter_that_changes_the_next_layer_least(ref):
    scales = torch.tensor([3.0, 0.5, 2.0, 0.0, 1.0])  # filter 3 contributes nothing, then 1, then 4
    contributions = torch.randn(300, 5, generator=torch.Generator().manual_seed(1)) * scales
    assert torch.equal(ref.thinet_select_filters(contributions, 0.2), torch.tensor([1.0, 1, 1, 0, 1]))
    assert torch.equal(ref.thinet_select_filters(contributions, 0.4), torch.tensor([1.0, 0, 1, 0, 1]))


def test_thinet_prefers_filters_whose_contributions_cancel(ref):
    base = torch.randn(400, generator=torch.Generator().manual_seed(2))
    # filters 0 and 1 cancel each other exactly; filter 2 alone is smaller than either, but not than their sum
    contributions = torch.stack([2 * base, -2 * base, 1.5 * torch.randn(400, generator=torch.Generator().manual_seed(3)),
                                 5 * base], dim=1)
    keep = ref.thinet_select_filters(contributions, 0.5)
    assert int((keep == 0).sum()) == 2 and keep[2] == 0  # greedy: the smallest first ...
    norms = contributions.pow(2).sum(0)
    assert norms[2] == norms.min()


def test_contributions_have_one_column_per_filter_and_zero_for_a_dead_filter(ref):
    model = small_vgg()
    with torch.no_grad():
        model.features[0].weight[2] = 0
        model.features[1].weight[2] = 0  # BatchNorm scale and shift of that channel: dead end to end
        model.features[1].bias[2] = 0
    images = torch.randn(4, 3, 32, 32)
    contributions = ref.next_layer_contributions(model, "features.0", images, samples=64)
    assert contributions.shape == (64, 8)
    assert torch.all(contributions[:, 2] == 0) and contributions[:, [0, 1, 3]].abs().sum() > 0
    last = ref.next_layer_contributions(model, "features.31", images, samples=32)  # next layer: the classifier
    assert last.shape == (32, 32)


def test_contributions_reject_a_layer_that_is_not_a_conv_and_a_next_layer_of_other_width(ref):
    with pytest.raises(ValueError, match="conv layers"):
        ref.next_layer_contributions(small_vgg(), "classifier", torch.randn(2, 3, 32, 32))
    resnet = build_model_for_images("resnet18", 10, (3, 32, 32)).eval()
    with pytest.raises(ValueError, match="VGG-style"):
        ref.next_layer_contributions(resnet, "layer2.0.conv2", torch.randn(2, 3, 32, 32), samples=8)


def test_apply_thinet_pruning_zeroes_whole_filters_and_their_batchnorm(ref):
    model = small_vgg()
    ratios = {"features.0.weight": 0.5, "features.14.weight": 0.25}
    masks = ref.apply_thinet_pruning(model, ratios, torch.randn(8, 3, 32, 32), samples=128)
    for name, ratio in ratios.items():
        weight = prunable_weights(model)[name].detach()
        dead = (weight.flatten(1) == 0).all(1)
        assert int(dead.sum()) == round(ratio * weight.shape[0])
        bn = model.get_submodule(f"features.{int(name.split('.')[1]) + 1}")
        assert torch.all(bn.weight[dead] == 0) and torch.all(bn.bias[dead] == 0)
    assert "features.1.weight" in masks and "features.15.bias" in masks


def test_thinet_functions_are_stubs_in_the_student_version():
    with pytest.raises(NotImplementedError, match="thinet_select_filters"):
        stubs.thinet_select_filters(torch.randn(4, 3), 0.3)


def run_main(project, *args):
    return subprocess.run([sys.executable, str(project / "hw2" / "main.py"), *args], cwd=project,
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)


def test_main_criterion_thinet_saves_an_imp_thinet_model(reference_dir, tmp_path):
    config = tmp_path / "lenet5_filter.yaml"
    config.write_text("prune_ratios:\n  conv1.weight: 0.5\n  conv2.weight: 0.5\n")
    out = tmp_path / "thinet"
    result = run_main(reference_dir, "--method", "imp", "--criterion", "thinet", "--arch", "lenet5", "--config", str(config),
                      "--dataset", "synthetic", "--epochs", "1", "--dense-epochs", "2", "--no-progress", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    entry = json.loads((out / "run_log.json").read_text())["models"]["Imp_thinet"]
    assert entry["iterations"] == 3 and entry["file"].startswith("Imp_thinet_")
    assert entry["layer_sparsity"]["conv1.weight"] == pytest.approx(0.5) and entry["layer_sparsity"]["fc1.weight"] == 0


def test_main_criterion_thinet_with_unstructured_is_a_one_line_error(reference_dir, tmp_path):
    result = run_main(reference_dir, "--method", "omp", "--criterion", "thinet", "--type", "unstructured",
                      "--dataset", "synthetic", "--out", str(tmp_path / "x"))
    assert result.returncode == 2 and "--type filter" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "x").exists()
