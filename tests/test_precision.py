"""Training precision (bf16 autocast vs float32) and resumable dense training.

bf16 may only change how fast a model trains, never a reported or graded accuracy:
those are measured in float32, in one memory layout (``exact_layout``: channels_last on the CPU), whether the
model comes from training or from a file the grader loads.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch.nn.utils import prune

from hw2 import train
from hw2.checkpoint import load_checkpoint
from hw2.data import make_loaders, make_synthetic
from hw2.models import VGG13, build_model, copy_without_pruning
from hw2.train import evaluate, fit, prepare_model, set_precision

NARROW = [8, 8, 16, 16, 32, 32, 32, 32, 32, 32]  # VGG13's layer names, 8x fewer channels: seconds on a CPU


@pytest.fixture(autouse=True)
def restore_precision():
    yield
    set_precision("auto")


@pytest.mark.parametrize("precision, expected", [("fp32", False), ("bf16", True)])
def test_precision_flag_decides_autocast_and_layout(precision, expected):
    set_precision(precision)
    assert train.uses_bf16("cpu") is expected
    model = prepare_model(build_model("vgg13", num_classes=10, widths=NARROW), "cpu")
    assert model.features[0].weight.is_contiguous(memory_format=torch.channels_last) is expected
    with train.autocast("cpu"):
        dtype = torch.nn.functional.linear(torch.randn(2, 4), torch.randn(3, 4)).dtype
    assert dtype == (torch.bfloat16 if expected else torch.float32)


def test_auto_uses_bf16_on_a_cpu_only_where_it_is_native(monkeypatch):
    set_precision("auto")
    for native in (False, True):
        monkeypatch.setattr(train, "cpu_has_native_bf16", lambda native=native: native)
        assert train.uses_bf16("cpu") is native and train.precision_name("cpu") == ("bf16" if native else "fp32")


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="fp32"):
        set_precision("fp16")


def test_exact_evaluation_of_a_bf16_trained_model_equals_a_fresh_float32_load():
    """What main.py names a file after (exact=True on the bf16, channels_last model) is what the grader re-measures."""
    set_precision("bf16")
    torch.manual_seed(0)
    data = make_synthetic(seed=0)
    train_loader, test_loader = make_loaders(data, 32, "cpu")
    model = prepare_model(build_model("vgg13", num_classes=10, widths=NARROW), "cpu")
    fit(model, train_loader, test_loader, 2, 0.05, "cpu", progress=False)
    named = evaluate(model, test_loader, "cpu", exact=True)
    assert model.features[0].weight.is_contiguous(memory_format=torch.channels_last), "exact evaluation left the model as it was"
    set_precision("fp32")  # the grader: a contiguous float32 model built from the saved state_dict
    fresh = VGG13.from_state_dict({k: v.contiguous() for k, v in model.state_dict().items()})
    _, grader_loader = make_loaders(data, 256, "cpu")
    assert f"{named:.2f}" == f"{evaluate(fresh, grader_loader, 'cpu', exact=True):.2f}"
    assert fresh.features[0].weight.is_contiguous(), "the grader's model is evaluated as a copy, itself left as loaded"
    assert 10.0 < named  # it learned something: the comparison is not between two untrained models


def test_exact_evaluation_works_right_after_pruning_a_channels_last_model():
    """prune hooks leave a computed, non-leaf weight until the next forward; exact evaluation must not trip on it."""
    set_precision("bf16")
    torch.manual_seed(0)
    _, test_loader = make_loaders(make_synthetic(seed=0), 64, "cpu")
    model = prepare_model(build_model("vgg13", num_classes=10, widths=NARROW), "cpu")  # channels_last weights
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            prune.custom_from_mask(module, "weight", torch.rand_like(module.weight) > 0.5)  # grad on: weight has a grad_fn
    assert model.features[0].weight.grad_fn is not None
    pruned = evaluate(model, test_loader, "cpu", exact=True)
    set_precision("fp32")
    plain = VGG13.from_state_dict({k: v.contiguous() for k, v in copy_without_pruning(model).state_dict().items()})
    assert pruned == evaluate(plain, test_loader, "cpu", exact=True)
    assert hasattr(model.features[0], "weight_mask"), "the evaluated model keeps its masks"


def test_exact_evaluation_from_inside_an_autocast_region_is_float32():
    """An evaluation started inside a bf16 training step (a hook, a student's loop) still measures in float32."""
    torch.manual_seed(0)
    model = build_model("vgg13", num_classes=10, widths=NARROW).eval()
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        outside = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert model(x).dtype == torch.bfloat16  # the region does cast: the check below can fail
            with train.exact_float32():
                inside = model(x)
    assert inside.dtype == torch.float32 and torch.equal(inside, outside)
    _, test_loader = make_loaders(make_synthetic(seed=0), 64, "cpu")
    figure = evaluate(model, test_loader, "cpu", exact=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert evaluate(model, test_loader, "cpu", exact=True) == figure


def _fit_run(state_path, epochs, stop_after_steps=None, resume=False):
    """Train NARROW VGG13 on synthetic data; optionally stop with KeyboardInterrupt after some steps."""
    set_precision("fp32")
    train.seed_everything(0)
    data = make_synthetic(seed=0)
    train_loader, test_loader = make_loaders(data, 32, "cpu", seed=0)
    model = prepare_model(build_model("vgg13", num_classes=10, widths=NARROW), "cpu")
    steps = [0]

    def after_step():
        steps[0] += 1
        if stop_after_steps is not None and steps[0] == stop_after_steps:
            raise KeyboardInterrupt

    history = fit(model, train_loader, test_loader, epochs, 0.05, "cpu", progress=False, after_step=after_step,
                  state_path=state_path, resume=resume)
    return model, history


def test_a_stopped_run_resumed_ends_exactly_as_an_uninterrupted_one(tmp_path):
    straight, straight_history = _fit_run(tmp_path / "straight.state.pt", 3)
    state = tmp_path / "stopped.state.pt"
    with pytest.raises(KeyboardInterrupt):
        _fit_run(state, 3, stop_after_steps=15)  # epoch 1 (10 steps) saved, stopped half-way through epoch 2
    assert len(torch.load(state, weights_only=True)["history"]) == 1
    assert not list(tmp_path.glob(".*.tmp")), "the state file is written atomically"
    resumed, resumed_history = _fit_run(state, 3, resume=True)
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    assert [h["loss"] for h in resumed_history] == [h["loss"] for h in straight_history]


def test_resume_with_other_epochs_is_refused_with_the_fix(tmp_path):
    state = tmp_path / "run.state.pt"
    _fit_run(state, 1)
    with pytest.raises(ValueError, match="same --epochs"):
        _fit_run(state, 2, resume=True)


def test_train_cli_records_precision_and_float32_accuracy_and_removes_its_state(tmp_path):
    out = tmp_path / "dense.pt"
    result = subprocess.run([sys.executable, "-m", "hw2.train", "--dataset", "synthetic", "--epochs", "1",
                             "--precision", "bf16", "--no-progress", "--out", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    log = json.loads(out.with_suffix(".json").read_text())
    assert log["precision"] == "bf16" and log["test_accuracy_measured_in"] == "float32"
    state_dict, _ = load_checkpoint(out)
    assert all(v.is_contiguous() for v in state_dict.values())
    assert not out.with_suffix(".state.pt").exists(), "a finished run leaves no resumable state behind"
    import hashlib
    assert log["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()


def test_evaluate_measures_in_float32_unless_told_otherwise():
    """Every logged accuracy (a student's masked_retrain calls evaluate plainly) is float32 under bf16 training;
    exact=False is the opt-in fast path (bf16 autocast) for ranking candidates."""
    set_precision("bf16")
    data = make_synthetic(seed=0)
    _, test_loader = make_loaders(data, 64, "cpu")
    model = prepare_model(build_model("vgg13", num_classes=10, widths=NARROW), "cpu")
    seen = []
    model.classifier.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    evaluate(model, test_loader, "cpu")
    assert set(seen) == {torch.float32}
    seen.clear()
    evaluate(model, test_loader, "cpu", exact=False)
    assert set(seen) == {torch.bfloat16}


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_exact_evaluation_leaves_the_given_model_in_eval_mode_in_either_layout(layout):
    """A retraining loop that forgets model.train() after evaluating must train in eval mode, whichever layout its
    weights have (a contiguous model is evaluated as a channels_last copy on the CPU): the bug shows the same way."""
    torch.manual_seed(0)
    _, test_loader = make_loaders(make_synthetic(seed=0), 64, "cpu")
    model = build_model("vgg13", num_classes=10, widths=NARROW).to(memory_format=layout).train()
    evaluate(model, test_loader, "cpu", exact=True)
    assert not model.training
