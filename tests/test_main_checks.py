"""main.py catches mistakes before the long run: YAML checks and the sparsity its ratios give, paths, flags;
a run moves its outputs into --out only when it completed; figures are drawn last and --plot-only redraws them."""
from __future__ import annotations

import json
import os
import random
import shutil
import time

import pytest
import torch

from grader.solution import REPO_ROOT
from hw2 import main as cli
from hw2.models import VGG13, build_model, make_pruning_permanent, prunable_weights
from tests.test_main_cli import OFFLINE, assert_one_line_error, run_main

PNG = b"\x89PNG\r\n\x1a\n"
QUICK = ["--dataset", "synthetic", "--epochs", "0", "--no-progress"]  # the included pretrained VGG13, no retraining
NARROW = [8, 8, 16, 16, 32, 32, 32, 32, 32, 32]  # VGG13's layer names, 8x fewer channels


def write_config(folder, text, name="ratios.yaml"):
    path = folder / name
    path.write_text(text)
    return path


def assert_no_partial_folder(folder):
    assert not [p.name for p in folder.iterdir() if ".partial-" in p.name or ".figures-" in p.name]


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# --- the YAML, checked by main.py before any data is loaded ------------------------------------------------------

BAD_CONFIGS = {  # (type, YAML, words the one line must hold)
    "filter names the classifier": ("filter", "prune_ratios:\n  features.0.weight: 0.3\n  classifier.weight: 0.5\n",
                                    ["'classifier.weight' is a Linear weight", "conv filters only", "features.31.weight"]),
    "BatchNorm weight": ("unstructured", "prune_ratios:\n  features.1.weight: 0.5\n", ["'features.1.weight'", "BatchNorm"]),
    "bias": ("unstructured", "prune_ratios:\n  classifier.bias: 0.5\n", ["'classifier.bias'", "classifier.weight"]),
    "duplicate key": ("unstructured", "prune_ratios:\n  features.0.weight: 0.5\n  features.3.weight: 0.5\n"
                                      "  features.0.weight: 0.9\n", ["line 4: 'features.0.weight' is given twice (first at line 2)"]),
    "ratio 1.0": ("unstructured", "prune_ratios:\n  features.0.weight: 1.0\n", ["1.0", "[0, 1)", "'features.0.weight'"]),
    "negative ratio": ("filter", "prune_ratios:\n  features.0.weight: -0.1\n", ["-0.1", "[0, 1)"]),
    "ratio in exponent notation": ("unstructured", "prune_ratios:\n  features.0.weight: 1e-1\n",
                                   ["'1e-1'", "write it as 0.1", "[0, 1)"]),
    "quoted ratio": ("unstructured", "prune_ratios:\n  features.0.weight: \"0.5\"\n", ["'0.5'", "write it as 0.5"]),
    "ratio as a percentage": ("unstructured", "prune_ratios:\n  features.0.weight: 50%\n", ["'50%'", "[0, 1)"]),
    "no prune_ratios": ("unstructured", "ratios:\n  features.0.weight: 0.5\n", ["prune_ratios"]),
    "unknown top-level key": ("unstructured", "prune_ratios:\n  features.0.weight: 0.5\ntarget: 0.8\n", ["'target'"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_a_bad_config_stops_with_one_line_before_loading_data(reference_dir, tmp_path, case):
    sparsity_type, text, words = BAD_CONFIGS[case]
    config = write_config(tmp_path, text)
    out = tmp_path / "out"
    # cifar10 from a folder that does not exist, offline: reaching the data would be a different error
    result = run_main(reference_dir, "--method", "omp", "--type", sparsity_type, "--config", str(config), "--out", str(out),
                      "--dataset", "cifar10", "--data-dir", str(tmp_path / "no-data"), env=OFFLINE)
    assert result.returncode == 2
    for word in words:
        assert_one_line_error(result, word, out)
    assert not (tmp_path / "no-data").exists()
    assert_no_partial_folder(tmp_path)


def test_the_untouched_template_stops_with_the_sparsity_it_would_reach(reference_dir, tmp_path):
    template = write_config(tmp_path, (REPO_ROOT / "configs" / "filter_0.40.yaml").read_text(), "filter_0.40.yaml")
    out = tmp_path / "out"
    result = run_main(reference_dir, "--method", "imp", "--type", "filter", "--config", str(template), "--out", str(out),
                      "--dataset", "cifar10", "--data-dir", str(tmp_path / "no-data"), env=OFFLINE)
    assert result.returncode == 2
    for words in ("overall sparsity 0.0000", "filter target is 0.40", "filter_0.40.yaml", "edit the ratios", "--allow-off-target"):
        assert_one_line_error(result, words, out)


def test_both_templates_are_named_in_the_one_line(tmp_path):
    project = tmp_path / "project"  # the staff repository's configs/ holds the untouched templates
    shutil.copytree(REPO_ROOT / "configs", project / "configs")
    shutil.copytree(REPO_ROOT / "solution" / "hw2", project / "hw2")
    for source in (REPO_ROOT / "hw2").glob("*.py"):
        if source.name != "pruning.py":
            shutil.copy(source, project / "hw2" / source.name)
    (project / "pretrained").symlink_to(REPO_ROOT / "pretrained")
    result = run_main(project, "--method", "all", "--out", str(tmp_path / "out"), *QUICK)
    assert_one_line_error(result, "unstructured_0.80.yaml give overall sparsity 0.0000", tmp_path / "out")
    assert_one_line_error(result, "filter_0.40.yaml give overall sparsity 0.0000", tmp_path / "out")


def vgg13_with_sizes():
    torch.manual_seed(0)
    return VGG13(widths=NARROW)


@pytest.mark.parametrize("sparsity_type", ["unstructured", "filter"])
def test_implied_sparsity_is_what_the_reference_pruning_reaches(ref, sparsity_type):
    rng = random.Random(0)
    for _ in range(5):
        model = vgg13_with_sizes()
        names = [n for n, w in prunable_weights(model).items() if sparsity_type == "unstructured" or w.dim() == 4]
        ratios = {name: rng.choice([0.0, 0.125, 0.5, rng.random() * 0.99]) for name in rng.sample(names, rng.randint(1, len(names)))}
        implied = cli.implied_sparsity(model, sparsity_type, ratios)
        ref.apply_pruning(model, sparsity_type, ratios)
        make_pruning_permanent(model)
        weights = prunable_weights(model).values()
        reached = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
        assert implied == pytest.approx(reached, abs=1e-12), ratios


def test_the_reference_configs_reach_their_targets_by_the_layer_sizes():
    model = build_model("vgg13")
    for sparsity_type, target in cli.TARGETS.items():
        path = REPO_ROOT / "solution" / "configs" / f"{sparsity_type}_{target:.2f}.yaml"
        ratios = cli.read_config(path, model, sparsity_type, "vgg13")
        assert abs(cli.implied_sparsity(model, sparsity_type, ratios) - target) <= cli.TARGET_TOLERANCE
        template = cli.read_config(REPO_ROOT / "configs" / path.name, model, sparsity_type, "vgg13")
        assert cli.implied_sparsity(model, sparsity_type, template) == 0.0


@pytest.mark.parametrize("dataset", sorted(set(cli.IMAGE_SHAPES) - {"cifar10"}))  # CIFAR-10: (3, 32, 32) by its format
def test_image_shapes_known_before_loading_are_those_the_data_has(tmp_path, dataset):
    from hw2.data import load_dataset
    from tests.test_fashion_mnist import fake_idx_folder

    if dataset != "synthetic":
        fake_idx_folder(tmp_path / dataset)
    data = load_dataset(dataset, tmp_path, download=False)
    assert tuple(data.train_images.shape[1:]) == cli.IMAGE_SHAPES[dataset]


def test_duplicates_are_found_at_any_depth():
    import yaml

    with pytest.raises(yaml.constructor.ConstructorError, match="'prune_ratios' is given twice"):
        yaml.load("prune_ratios: {}\nprune_ratios: {}\n", Loader=cli.UniqueKeyLoader)
    assert yaml.load("a: {x: 1}\nb: {x: 2}\n", Loader=cli.UniqueKeyLoader) == {"a": {"x": 1}, "b": {"x": 2}}


@pytest.mark.parametrize("returned, needle", [
    ({}, "returned no entry for 'features.0.weight' where the file has 0.5"),
    ({"features.0.weight": 0.5, "features.3.weight": 0.0}, "returned 0.0 for 'features.3.weight' where the file has no entry"),
    ({"features.0.weight": 0.9}, "returned 0.9 for 'features.0.weight' where the file has 0.5"),
    ([0.5], "returned a list"),
])
def test_your_reader_must_return_what_the_file_says(tmp_path, monkeypatch, returned, needle):
    config = write_config(tmp_path, "prune_ratios:\n  features.0.weight: 0.5\n")
    monkeypatch.setattr(cli.pruning, "read_prune_ratios_from_yaml", lambda path, model: returned)
    with pytest.raises(cli.RunError, match="read_prune_ratios_from_yaml") as caught:
        cli.check_student_reading(config, build_model("vgg13"), {"features.0.weight": 0.5})
    assert needle in str(caught.value) and "fix it in hw2/pruning.py" in str(caught.value)


# --- paths and flags --------------------------------------------------------------------------------------------

def test_a_config_path_typed_from_hw2_suggests_the_one_that_exists(reference_dir, tmp_path):
    out = tmp_path / "out"
    result = run_main(reference_dir, "--method", "omp", "--type", "filter", "--config", "configs/filter_0.40.yaml",
                      "--out", str(out), *QUICK, cwd=reference_dir / "hw2")
    assert_one_line_error(result, "--config configs/filter_0.40.yaml: no such file; did you mean ../configs/filter_0.40.yaml?", out)
    result = run_main(reference_dir, "--method", "omp", "--type", "filter", "--pretrained", "pretrained/vgg13_cifar10.pt",
                      "--out", str(out), *QUICK, cwd=reference_dir / "hw2")
    assert_one_line_error(result, "did you mean ../pretrained/vgg13_cifar10.pt?", out)


def test_a_data_dir_typed_from_hw2_is_not_downloaded_into(reference_dir, tmp_path):
    (reference_dir / "cifar-copy").mkdir()
    try:
        out = tmp_path / "out"
        result = run_main(reference_dir, "--method", "omp", "--type", "filter", "--data-dir", "cifar-copy", "--out", str(out),
                          "--no-progress", cwd=reference_dir / "hw2", env=OFFLINE)
        assert_one_line_error(result, "use --data-dir ../cifar-copy", out)
        assert not (reference_dir / "hw2" / "cifar-copy").exists()
    finally:
        (reference_dir / "cifar-copy").rmdir()


@pytest.mark.parametrize("args, needle", [
    (["--method", "omp", "--type", "filter", "--epochs", "0", "--dataset", "cifar10"], "--epochs 0 skips the masked retraining"),
    (["--type", "filter"], "--method is required"),
    (["--method", "all", "--plot-only"], "--plot-only draws the figures of the run already in --out"),
    (["--plot-only"], "run_log.json not found"),
])
def test_flag_mistakes_are_one_line(reference_dir, tmp_path, args, needle):
    out = tmp_path / "out"
    result = run_main(reference_dir, *args, "--out", str(out), "--no-progress", env=OFFLINE)
    assert result.returncode == 2
    assert_one_line_error(result, needle, out)


def test_out_pointing_at_a_file_is_one_line_and_leaves_the_file(reference_dir, tmp_path):
    out = tmp_path / "results"
    out.write_text("not a folder")
    for args in (["--method", "omp", "--type", "filter", *QUICK], ["--plot-only"]):
        result = run_main(reference_dir, *args, "--out", str(out))
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and "is a file; give a folder" in lines[0], result.stderr
        assert out.read_text() == "not a folder"


def test_a_run_refuses_to_mix_its_models_with_another_data_sets(reference_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "Imp_unstructured_0.80_acc_88.00.pt").write_bytes(b"cifar")
    (out / "run_log.json").write_text(json.dumps({"dataset": "cifar10", "arch": "vgg13", "models": {
        "Imp_unstructured": {"file": "Imp_unstructured_0.80_acc_88.00.pt"}}}))
    before = snapshot(out)
    result = run_main(reference_dir, "--method", "omp", "--type", "filter", "--out", str(out), *QUICK)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "holds Imp_unstructured from a vgg13 run on cifar10" in lines[0] and "another --out" in lines[0]
    assert "dense" not in result.stdout and snapshot(out) == before


# --- a run replaces its own outputs only when it completed -------------------------------------------------------

def project_with(tmp_path, reference_dir, appended: str = ""):
    """A copy of the exported reference (pretrained checkpoint linked) with ``appended`` added to hw2/pruning.py."""
    project = tmp_path / "project"
    shutil.copytree(reference_dir / "hw2", project / "hw2", ignore=shutil.ignore_patterns("__pycache__", "*.ipynb"))
    shutil.copytree(reference_dir / "configs", project / "configs")
    (project / "pretrained").symlink_to(reference_dir / "pretrained")
    with open(project / "hw2" / "pruning.py", "a") as f:
        f.write(appended)
    return project


def earlier_results(out):
    """results/ from an earlier run: all four models (stand-in bytes), their figures and log."""
    out.mkdir()
    models = {}
    for label in ("Omp_unstructured", "Imp_unstructured", "Omp_filter", "Imp_filter"):
        name = f"{label}_0.80_acc_11.11.pt"
        (out / name).write_bytes(f"old {label}".encode())
        (out / f"mask_{label}.png").write_bytes(PNG + b"old")
        models[label] = {"file": name, "label": label, "sparsity": 0.8, "accuracy": 11.11, "accuracy_before_retrain": 10.0,
                         "seconds": 1.0, "steps": [], "scope": "layer"}
    (out / "sparsity_vs_accuracy.png").write_bytes(PNG + b"old")
    (out / "walkthrough").mkdir()
    (out / "walkthrough" / "notes.txt").write_text("not main.py's")
    (out / "run_log.json").write_text(json.dumps({"dataset": "synthetic", "arch": "vgg13", "models": models}))
    return snapshot(out)


@pytest.mark.slow
@pytest.mark.parametrize("failure, code, line", [
    ("raise RuntimeError('simulated crash')", 1, "the run failed (traceback below)"),
    ("raise KeyboardInterrupt", 130, "interrupted"),
])
def test_a_crash_or_ctrl_c_in_the_second_model_leaves_the_earlier_results(reference_dir, tmp_path, failure, code, line):
    project = project_with(tmp_path, reference_dir, "\n\ndef iterative_magnitude_prune(*args, **kwargs):\n    " + failure + "\n")
    out = tmp_path / "results"
    before = earlier_results(out)
    result = run_main(project, "--method", "all", "--type", "filter", "--out", str(out), *QUICK)
    assert result.returncode == code, result.stderr[-2000:]
    assert f"{line}: ../results is left as it was (this run's models were discarded)" in result.stderr
    assert "Omp_filter" in result.stdout  # the first model was made, then discarded
    assert snapshot(out) == before and (out / "walkthrough" / "notes.txt").exists()
    assert_no_partial_folder(tmp_path)


@pytest.mark.slow
def test_a_partial_run_replaces_its_own_model_and_keeps_the_other_three(reference_dir, tmp_path):
    out = tmp_path / "results"
    before = earlier_results(out)
    old_log = json.loads(before["run_log.json"])
    hw2 = reference_dir / "hw2"  # typed from hw2/, with relative paths
    result = run_main(reference_dir, "--method", "omp", "--type", "filter", "--config", "../configs/filter_0.40.yaml",
                      "--out", os.path.relpath(out, hw2), *QUICK, cwd=hw2)
    assert result.returncode == 0, result.stderr[-3000:]
    after = snapshot(out)
    new_models = [name for name in after if name.startswith("Omp_filter_")]
    assert len(new_models) == 1 and new_models[0] not in before and new_models[0].startswith("Omp_filter_0.40_acc_")
    for label in ("Omp_unstructured", "Imp_unstructured", "Imp_filter"):  # kept, byte for byte
        for name in (old_log["models"][label]["file"], f"mask_{label}.png"):
            assert after[name] == before[name], name
    for name in ("mask_Omp_filter.png", "sparsity_vs_accuracy.png"):  # redrawn
        assert after[name].startswith(PNG) and after[name] != before[name], name
    log = json.loads(after["run_log.json"])
    assert log["models"]["Omp_filter"]["file"] == new_models[0]
    assert {k: v for k, v in log["models"].items() if k != "Omp_filter"} == {
        k: v for k, v in old_log["models"].items() if k != "Omp_filter"}
    assert (out / "walkthrough" / "notes.txt").exists()
    assert_no_partial_folder(tmp_path)


@pytest.mark.slow
def test_a_plotting_stub_costs_its_figure_only_and_plot_only_draws_it_later(reference_dir, tmp_path):
    stub = (REPO_ROOT / "hw2" / "pruning.py").read_text()
    start = stub.index("def plot_mask(")
    project = project_with(tmp_path, reference_dir, "\n\n" + stub[start:stub.index("\ndef ", start + 1)])
    out = tmp_path / "out"
    result = run_main(project, "--method", "omp", "--type", "filter", "--out", str(out), *QUICK)
    assert result.returncode == 1, result.stderr[-3000:]
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert lines[-2] == "skipped mask_Omp_filter.png: plot_mask: write it in hw2/pruning.py (see its docstring)"
    assert lines[-1].startswith("error: 1 figure(s) not drawn (mask_Omp_filter.png)")
    assert lines[-1].endswith("write plot_mask in hw2/pruning.py, then run python hw2/main.py --plot-only --out ../out")
    log = json.loads((out / "run_log.json").read_text())
    assert (out / log["models"]["Omp_filter"]["file"]).is_file()  # the model and its log entry are saved
    assert not (out / "mask_Omp_filter.png").exists() and (out / "sparsity_vs_accuracy.png").read_bytes().startswith(PNG)

    shutil.copy(reference_dir / "hw2" / "pruning.py", project / "hw2" / "pruning.py")  # the student writes plot_mask
    models = {p.name: p.read_bytes() for p in out.glob("*.pt")}
    start_time = time.perf_counter()
    redraw = run_main(project, "--plot-only", "--out", str(out), "--dataset", "cifar10", "--data-dir", str(tmp_path / "none"))
    assert redraw.returncode == 0, redraw.stderr[-2000:]
    assert time.perf_counter() - start_time < 60 and "dense" not in redraw.stdout  # no data, no training
    assert "drew mask_Omp_filter.png, sparsity_vs_accuracy.png" in redraw.stdout
    for name in ("mask_Omp_filter.png", "sparsity_vs_accuracy.png"):
        assert (out / name).read_bytes().startswith(PNG), name
    assert {p.name: p.read_bytes() for p in out.glob("*.pt")} == models
    assert_no_partial_folder(tmp_path)
