"""The benchmark scripts run and report their figures (figures, not timing assertions)."""
import importlib.util
import json
import subprocess
import sys

import pytest
import torch

from grader.batch import GradeRun
from grader.solution import REPO_ROOT


def test_train_speed_benchmark_prints_both_paths_and_their_ratio(tmp_path):
    out = tmp_path / "speed.json"
    result = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "train_speed.py"), "--dataset", "synthetic",
                             "--max-images", "64", "--batch-size", "32", "--epochs", "1", "--workers", "0",
                             "--device", "cpu", "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(out.read_text())
    for path in ("fast", "dataloader"):
        assert figures[path]["seconds_per_epoch"] > 0 and figures[path]["images_per_second"] > 0
        assert f"{path}" in result.stdout
    assert figures["images_per_epoch"] == 64 and figures["speedup"] > 0


def test_precision_comparison_prints_fp32_bf16_and_their_ratio(tmp_path):
    out = tmp_path / "precision.json"
    result = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "train_speed.py"), "--compare", "precision",
                             "--dataset", "synthetic", "--max-images", "64", "--batch-size", "32", "--epochs", "1",
                             "--steps", "1", "--device", "cpu", "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert figures["fp32"]["precision"] == "fp32" and figures["bf16"]["precision"] == "bf16"
    assert figures["timed_steps_per_epoch"] == 1 and figures["images_per_epoch"] == 64
    assert figures["speedup"] == figures["fp32"]["seconds_per_epoch"] / figures["bf16"]["seconds_per_epoch"]
    assert "bf16 is" in result.stdout and "x float32" in result.stdout


@pytest.mark.slow
def test_grade_time_batch_reports_throughput_and_peak_memory(tmp_path):
    out = tmp_path / "batch.json"
    result = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "grade_time.py"), "--batch", "2", "--jobs", "2",
                             "--json", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert figures["submissions"] == 2 and figures["jobs"] == 2 and "synthetic" in figures["data"]
    assert figures["seconds"] > 0 and figures["submissions_per_hour"] == pytest.approx(3600 * 2 / figures["seconds"], rel=0.01)
    assert figures["peak_memory_mb"] > 100  # at least the grader processes with torch imported


def load_grade_time():
    spec = importlib.util.spec_from_file_location("grade_time", REPO_ROOT / "benchmarks" / "grade_time.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("seconds, status", [((40.0, 10.0, 30.0), 0), ((200.0, 190.0, 10.0), 1)])
def test_grade_time_prints_each_grading_and_the_median_against_the_budget(tmp_path, monkeypatch, capsys, seconds, status):
    """The export, the smoke run and the grading itself run for real in the --batch test; here, what is timed and printed."""
    grade_time = load_grade_time()
    made, graded = [], []
    monkeypatch.setattr(grade_time, "export", lambda destination: made.append(destination) or destination)
    monkeypatch.setattr(grade_time.subprocess, "run", lambda command, **kwargs: made.append(command))
    times = iter(seconds)

    def grade(submission, results_path, pytest_args=()):
        graded.append((submission, results_path, list(pytest_args)))
        return GradeRun(submission.name, "graded", {"score": 100.0}, next(times))

    monkeypatch.setattr(grade_time, "grade_submission", grade)
    assert grade_time.main(["--repeat", "3"]) == status
    out = capsys.readouterr().out
    assert len(graded) == 3 and len({path for _, path, _ in graded}) == 3  # each grading writes its own results.json
    assert all(args == ["--dataset", "synthetic"] and submission == made[0] for submission, _, args in graded)
    assert "--dataset" in made[1] and "synthetic" in made[1]  # the run outputs come from the smoke run
    for i, s in enumerate(seconds, start=1):
        assert f"grading {i}: {s:.1f} s, score 100" in out
    median = sorted(seconds)[1]
    assert f"median {median:.1f} s over 3 run(s) (budget {grade_time.BUDGET_SECONDS} s)" in out


def test_paired_drop_is_the_accuracy_difference_with_its_paired_error(tmp_path):
    from hw2.models import build_model

    torch.manual_seed(0)
    dense = build_model("vgg13", num_classes=10, widths=[8, 8, 16, 16, 32, 32, 32, 32, 32, 32])
    pruned = build_model("vgg13", num_classes=10, widths=[8, 8, 16, 16, 32, 32, 32, 32, 32, 32])
    for name, model in (("dense", dense), ("pruned", pruned)):
        torch.save(model.state_dict(), tmp_path / f"{name}.pt")
    out = tmp_path / "paired.json"
    result = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "paired_drop.py"), str(tmp_path / "dense.pt"),
                             str(tmp_path / "dense.pt"), str(tmp_path / "pruned.pt"), "--dataset", "synthetic",
                             "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(out.read_text())
    same, other = figures["models"][str(tmp_path / "dense.pt")], figures["models"][str(tmp_path / "pruned.pt")]
    assert same["drop"] == 0 and same["paired_standard_error_of_drop"] == 0 and same["accuracy"] == figures["dense_accuracy"]
    b, c = other["dense_right_pruned_wrong"], other["dense_wrong_pruned_right"]
    assert b + c > 0, "two differently seeded models should disagree on some image: the check below would be empty"
    assert abs(other["drop"] - (figures["dense_accuracy"] - other["accuracy"])) < 1e-9
    assert abs(other["drop"] - 100 * (b - c) / figures["images"]) < 1e-9 and other["paired_standard_error_of_drop"] > 0
    assert "paired standard error" in result.stdout
