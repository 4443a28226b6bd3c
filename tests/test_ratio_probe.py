"""benchmarks/ratio_probe.py: the BatchNorm re-estimation it ranks configurations with, and its errors."""
from __future__ import annotations

import importlib.util

import torch

from grader.solution import REPO_ROOT
from hw2.models import VGG13

spec = importlib.util.spec_from_file_location("ratio_probe", REPO_ROOT / "benchmarks" / "ratio_probe.py")
ratio_probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ratio_probe)


def test_batchnorm_statistics_become_those_of_the_calibration_images_and_weights_stay():
    torch.manual_seed(0)
    model = VGG13(widths=[4, 4, 8, 8, 8, 8, 8, 8, 8, 8]).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.fill_(5.0)  # stale statistics, as after pruning
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    images = torch.randn(64, 3, 32, 32)
    ratio_probe.recalibrate_batchnorm(model, images, fast=False, batch=16)
    with torch.no_grad():
        first = model.features[0](images)  # what the first BatchNorm sees
    assert torch.allclose(model.features[1].running_mean, first.mean((0, 2, 3)), atol=1e-5), \
        "equal batches averaged: the running mean is the mean over all calibration images"
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items()), "only BatchNorm statistics change"
    assert not model.training


def test_missing_files_are_one_line_errors(tmp_path, capsys):
    code = ratio_probe.main(["--type", "filter", str(tmp_path / "nope.yaml"), "--pretrained", str(tmp_path / "none.pt")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "nope.yaml" in err and "none.pt" in err
