"""main.py end to end on the exported reference: outputs, naming, and one-line errors that leave no file behind
(the checks before training, replacing --out and --plot-only: tests/test_main_checks.py)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from hw2.checkpoint import load_checkpoint
from hw2.models import VGG13, prunable_weights

NAME = re.compile(r"^(Omp|Imp)_(unstructured|filter)_(\d\.\d\d)_acc_(\d{1,3}\.\d\d)\.pt$")
FAST = ["--dataset", "synthetic", "--epochs", "1", "--dense-epochs", "4", "--no-progress"]
OFFLINE = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}


def run_main(project, *args, cwd=None, env=None):
    return subprocess.run([sys.executable, str(project / "hw2" / "main.py"), *args], cwd=cwd or project,
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=900)


@pytest.fixture(scope="module")
def full_run(reference_dir):
    out = reference_dir / "results-all"
    result = run_main(reference_dir, "--method", "all", "--out", str(out), *FAST)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


@pytest.mark.slow
def test_method_all_writes_four_named_models_figures_and_a_log(full_run):
    out, result = full_run
    models = sorted(p.name for p in out.glob("*.pt"))
    assert [NAME.match(name).group(1, 2) for name in models] == [
        ("Imp", "filter"), ("Imp", "unstructured"), ("Omp", "filter"), ("Omp", "unstructured")]
    for png in ["sparsity_vs_accuracy.png"] + [f"mask_{m}_{t}.png" for m in ("Omp", "Imp") for t in ("unstructured", "filter")]:
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    log = json.loads((out / "run_log.json").read_text())
    assert log["dataset"] == "synthetic" and set(log["models"]) == {"Omp_unstructured", "Imp_unstructured", "Omp_filter", "Imp_filter"}
    assert {entry["config"] for entry in log["models"].values()} == {"configs/unstructured_0.80.yaml", "configs/filter_0.40.yaml"}, \
        "the log names each YAML relative to the project, the same on every machine"
    assert "dense accuracy" in result.stdout


@pytest.mark.slow
def test_saved_models_are_permanent_hit_the_targets_and_match_their_names(full_run):
    out, _ = full_run
    for path in out.glob("*.pt"):
        method, kind, sparsity, accuracy = NAME.match(path.name).groups()
        state_dict, meta = load_checkpoint(path)  # weights_only=True
        assert torch.load(path, weights_only=True)["metadata"]["file"] == path.name
        assert not any(k.endswith(("_orig", "_mask")) for k in state_dict), "masks were not made permanent"
        model = VGG13.from_state_dict(state_dict)
        weights = prunable_weights(model).values()
        overall = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
        target = {"unstructured": 0.80, "filter": 0.40}[kind]
        assert abs(overall - target) <= 0.005 and sparsity == f"{overall:.2f}"
        assert meta["method"] == method.lower() and meta["type"] == kind and f"{meta['accuracy']:.2f}" == accuracy
        assert meta["iterations"] == (1 if method == "Omp" else 3) and len(meta["steps"]) == meta["iterations"]
        assert meta["steps"][-1]["ratios"] == meta["ratios"]


@pytest.mark.slow
def test_accuracy_in_the_name_is_remeasured_on_the_test_set(full_run):
    from hw2.data import make_loaders, make_synthetic
    from hw2.train import evaluate

    out, _ = full_run
    log = json.loads((out / "run_log.json").read_text())
    data = make_synthetic(seed=log["seed"])
    _, test_loader = make_loaders(data, log["batch_size"], "cpu")
    for path in out.glob("*.pt"):
        model = VGG13.from_state_dict(load_checkpoint(path)[0])
        assert abs(evaluate(model, test_loader, "cpu", exact=True) - float(NAME.match(path.name).group(4))) <= 0.1


@pytest.mark.slow
def test_runs_from_inside_hw2_too_and_replaces_its_older_model_file(reference_dir):
    out = reference_dir / "results-omp"
    stale = out / "Omp_filter_0.40_acc_11.11.pt"
    out.mkdir()
    stale.write_bytes(b"old")
    result = run_main(reference_dir, "--method", "omp", "--type", "filter", "--out", str(out), *FAST,
                      cwd=reference_dir / "hw2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert not stale.exists() and len(list(out.glob("Omp_filter_*.pt"))) == 1


def test_help_lists_every_flag(reference_dir):
    result = run_main(reference_dir, "--help")
    for flag in ("--method", "--type", "--epochs", "--iterations", "--config", "--data-dir", "--dataset",
                 "--pretrained", "--device", "--seed", "--out", "--lr", "--batch-size"):
        assert flag in result.stdout, flag


BAD_YAML = {
    "unknown layer": ("prune_ratios:\n  features.99.weight: 0.5\n", "features.99.weight"),
    "ratio 1.2": ("prune_ratios:\n  features.0.weight: 1.2\n", "1.2"),
    "malformed": ("prune_ratios:\n  features.0.weight: [0.5\n", "line"),
}


@pytest.mark.parametrize("case", sorted(BAD_YAML))
def test_bad_yaml_is_one_line_and_leaves_no_file(reference_dir, tmp_path, case):
    text, needle = BAD_YAML[case]
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    out = tmp_path / "out"
    result = run_main(reference_dir, "--method", "omp", "--type", "unstructured", "--config", str(config),
                      "--out", str(out), *FAST)
    assert_one_line_error(result, needle, out)


@pytest.mark.parametrize("args, needle", [
    (["--method", "imp", "--type", "filter", "--iterations", "2"], "at least 3"),
    (["--method", "omp", "--type", "channel"], "--type"),
    (["--method", "omp"], "--type is required"),
    (["--method", "omp", "--type", "filter", "--config", "{tmp}/nope.yaml"], "nope.yaml: no such file"),
    (["--method", "omp", "--type", "filter", "--lr", "-1"], "--lr: must be > 0"),
    (["--method", "omp", "--type", "filter", "--batch-size", "0"], "--batch-size: must be >= 1"),
    (["--method", "omp", "--type", "filter", "--dense-epochs", "-1"], "--dense-epochs: must be >= 1"),
    (["--method", "omp", "--type", "filter", "--epochs", "two"], "--epochs: expected a whole number"),
    (["--method", "omp", "--type", "filter", "--pretrained", "missing.pt"], "missing.pt"),
    (["--method", "omp", "--type", "filter", "--dataset", "cifar10", "--data-dir", "{tmp}/empty"], "--dataset synthetic"),
])
def test_bad_flags_are_one_line_and_leave_no_file(reference_dir, tmp_path, args, needle):
    out = tmp_path / "out"
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = run_main(reference_dir, *args, "--out", str(out), "--no-progress",
                      *([] if "--dataset" in args else ["--dataset", "synthetic"]), env=OFFLINE)
    assert_one_line_error(result, needle, out)
    assert not (tmp_path / "empty").exists() or not any((tmp_path / "empty").iterdir())


def test_missing_pretrained_checkpoint_for_cifar10_says_how_to_get_it(reference_dir, tmp_path):
    from grader.solution import REPO_ROOT

    if (REPO_ROOT / "pretrained" / "vgg13_cifar10.pt").exists():
        pytest.skip("pretrained/vgg13_cifar10.pt exists; the missing-file message cannot be shown")
    (tmp_path / "data").mkdir()
    subprocess.run([sys.executable, "-c", "import pickle,numpy as np,sys,os;d=sys.argv[1];os.makedirs(d);"
                    "[pickle.dump({'data':np.zeros((2,3072),np.uint8),'labels':[0,1]},open(os.path.join(d,n),'wb')) "
                    "for n in ['data_batch_1','data_batch_2','data_batch_3','data_batch_4','data_batch_5','test_batch']]",
                    str(tmp_path / "data" / "cifar-10-batches-py")], check=True)
    out = tmp_path / "out"
    result = run_main(reference_dir, "--method", "omp", "--type", "filter", "--data-dir", str(tmp_path / "data"),
                      "--out", str(out))
    assert_one_line_error(result, "python -m hw2.train", out)


def assert_one_line_error(result, needle, out):
    assert result.returncode != 0
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], result.stderr[-2000:]
    assert not out.exists() or not any(out.iterdir()), f"files left behind: {list(out.iterdir())}"


def test_on_the_stubs_main_names_the_function_to_write(tmp_path):
    from grader.solution import REPO_ROOT

    out = tmp_path / "out"
    result = run_main(REPO_ROOT, "--method", "omp", "--type", "filter", "--out", str(out), *FAST)
    assert_one_line_error(result, "read_prune_ratios_from_yaml: write it in hw2/pruning.py", out)


@pytest.mark.slow
def test_allow_off_target_runs_a_config_off_target_with_warnings_and_other_data_starts_a_new_log(reference_dir, tmp_path):
    out = tmp_path / "out"
    log_path = out / "run_log.json"
    out.mkdir()
    log_path.write_text(json.dumps({"dataset": "CIFAR-10", "arch": "vgg13", "models": {"Omp_unstructured": {"file": "x.pt"}}}))
    config = tmp_path / "half.yaml"
    config.write_text("prune_ratios:\n  features.0.weight: 0.5\n")
    result = run_main(reference_dir, "--method", "omp", "--type", "filter", "--config", str(config), "--out", str(out),
                      "--dataset", "synthetic", "--epochs", "0", "--dense-epochs", "1", "--no-progress", "--allow-off-target")
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"warning: the ratios in .*half\.yaml give overall sparsity 0\.0001, the filter target is 0\.40 "
                     r"\(\+-0\.005\): edit the ratios .*; running anyway", result.stderr), result.stderr
    assert re.search(r"warning: Omp_filter reached overall sparsity 0\.0\d+, not within 0\.005 of the target 0\.40: "
                     r"tune the ratios in .*half\.yaml", result.stderr), result.stderr
    assert "was from a vgg13 run on CIFAR-10; starting a new run log" in result.stderr
    log = json.loads(log_path.read_text())
    assert list(log["models"]) == ["Omp_filter"] and log["models"]["Omp_filter"]["dataset"] == log["dataset"] != "CIFAR-10"


@pytest.mark.slow
@pytest.mark.parametrize("solution, sparsity_type", [("parametrize_numpy", "filter"), ("buffers_own_loop", "unstructured")])
def test_masks_kept_by_parametrize_or_own_buffers_save_plain_models_and_draw_their_figures(tmp_path, solution,
                                                                                           sparsity_type):
    """apply_pruning may keep its masks any way that lasts through training; main.py still saves a plain VGG13."""
    from grader.solution import REPO_ROOT, export

    project = export(tmp_path / "student", REPO_ROOT)
    (project / "hw2" / "pruning.py").write_text((REPO_ROOT / "tests" / "independent" / f"{solution}.py").read_text())
    out = tmp_path / "results"
    result = run_main(project, "--method", "omp", "--type", sparsity_type, "--out", str(out), "--dataset", "synthetic",
                      "--epochs", "1", "--dense-epochs", "1", "--no-progress")
    assert result.returncode == 0, result.stderr[-3000:]
    (path,) = out.glob("Omp_*.pt")
    state_dict, _ = load_checkpoint(path)
    assert list(state_dict) == list(VGG13(num_classes=10).state_dict())
    VGG13.from_state_dict(state_dict)
    assert (out / f"mask_Omp_{sparsity_type}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
