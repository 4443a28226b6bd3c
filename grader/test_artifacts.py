"""Graded checks of what the submission's run produced (``main.py --method all``): model files, run log, figures.

No student code runs here: checkpoints are read with ``weights_only=True``
(``hw2.checkpoint.load_checkpoint`` of the grader's copy) and the models are
rebuilt and evaluated with the grader's VGG13 and evaluation loop.
"""
from __future__ import annotations

import json
import re

import pytest
import torch

from grader.checks import is_png
from hw2.checkpoint import CheckpointError, load_checkpoint

LABELS = ("Omp_unstructured", "Imp_unstructured", "Omp_filter", "Imp_filter")
TARGETS = {"unstructured": 0.80, "filter": 0.40}  # overall sparsity each type must reach
SPARSITY_TOLERANCE = 0.005
ACCURACY_TOLERANCE = 0.1  # percentage points between the name and the re-measurement
MIN_IMP_ITERATIONS = 3
MAX_MODEL_BYTES = 160 * 2**20  # plain VGG13 38 MB, compact pruned 9-23 MB; bigger, or decoding to more: not read
NAME_PATTERN = r"^{label}_(?P<sparsity>\d\.\d\d)_acc_(?P<accuracy>\d{{1,3}}\.\d\d)\.pt$"


def kind_of(label: str) -> str:
    return label.partition("_")[2]


@pytest.fixture(scope="session")
def run_log(artifacts):
    path = artifacts / "run_log.json"
    try:
        log = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return {"error": f"{path.name} is missing or not valid JSON ({type(exc).__name__}); run main.py --method all"}
    return log if isinstance(log, dict) else {"error": f"{path.name} does not hold a JSON object"}


@pytest.fixture(scope="session")
def model_files(artifacts) -> dict:
    """label -> the file for it: the one in the required pattern, else the only .pt file starting with the label."""
    files = sorted(p for p in artifacts.glob("*.pt") if p.is_file()) if artifacts.is_dir() else []
    found = {}
    for label in LABELS:
        exact = [p for p in files if re.match(NAME_PATTERN.format(label=label), p.name)]
        loose = [p for p in files if p.name.lower().startswith(label.lower())]
        found[label] = {"exact": exact, "path": (exact or loose or [None])[0] if len(exact or loose) == 1 else None,
                        "candidates": exact or loose}
    return found


@pytest.fixture(scope="session")
def loaded_models(model_files) -> dict:
    """label -> {"model", "metadata"} or {"error"}; every file read with weights_only=True."""
    from hw2.models import VGG13

    loaded = {}
    for label, entry in model_files.items():
        if entry["path"] is None:
            loaded[label] = {"error": f"{label}: no single model file found ({len(entry['candidates'])} candidates)"}
            continue
        try:
            state_dict, metadata = load_checkpoint(entry["path"], max_bytes=MAX_MODEL_BYTES)
        except CheckpointError as exc:
            loaded[label] = {"error": str(exc).replace(str(entry["path"].parent) + "/", "")}
            continue
        try:
            model = VGG13.from_state_dict(state_dict)
        except Exception as exc:  # noqa: BLE001 - wrong keys or shapes
            loaded[label] = {"error": f"{entry['path'].name} is not a VGG13 state_dict with plain keys (python "
                                      "hw2/main.py saves them so: hand in the files it wrote): "
                                      f"{' '.join(str(exc).split())[:300]}"}  # torch's reason is on its second line
            continue
        loaded[label] = {"model": model.eval(), "metadata": metadata, "path": entry["path"]}
    return loaded


def overall_sparsity(model) -> float:
    from hw2.models import prunable_weights

    weights = list(prunable_weights(model).values())
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


RECORDED = ("file", "label", "method", "type", "sparsity", "accuracy", "iterations")  # what the file and log both say


@pytest.mark.points(4)
def test_model_files_follow_naming_pattern(model_files, loaded_models, run_log, artifacts, credit):
    """One file per label in the pattern; where main.py's metadata is in the file (older plain files have none), the
    file holds the model main.py saved under that name, and run_log.json's entry for it says what the file says."""
    logged = run_log.get("models") if isinstance(run_log.get("models"), dict) else {}
    for label in LABELS:
        exact = model_files[label]["exact"]
        credit.check(len(exact) == 1, f"{label}: expected exactly one file named {label}_<sparsity, 2 decimals>_acc_"
                                      f"<accuracy in percent, 2 decimals>.pt in {artifacts.name}/, found {len(exact)}")
        loaded = loaded_models[label]
        metadata = loaded.get("metadata") or {}
        if "error" in loaded or not metadata.get("label"):
            continue
        name = loaded["path"].name
        credit.check(metadata["label"] == label and metadata.get("file", name) == name,
                     f"{name} holds the model main.py saved as {metadata.get('file')!r} ({metadata['label']}): hand in "
                     "each model under the name main.py gave it (run the method that makes it)")
        if "error" in run_log:  # a missing run log costs points where the log is graded, not here
            continue
        entry = logged.get(label)
        differ = [key for key in RECORDED if key in metadata and isinstance(entry, dict) and entry.get(key) != metadata[key]]
        credit.check(isinstance(entry, dict) and not differ,
                     f"{label}: run_log.json's entry " + (f"differs from what {name} recorded when it was saved, in "
                     f"{', '.join(differ)} ({', '.join(f'{entry.get(k)!r} vs {metadata[k]!r}' for k in differ[:2])})"
                     if isinstance(entry, dict) else "is missing") + ": hand in the run log and the models of one run")
    credit.verify()


@pytest.mark.points(2)
def test_model_files_load_with_weights_only(loaded_models, credit):
    for label, entry in loaded_models.items():
        credit.check("error" not in entry, entry.get("error", ""))
    credit.verify()


@pytest.mark.points(8)
def test_models_reach_sparsity_target_matching_file_name(loaded_models, credit):
    for label, entry in loaded_models.items():
        if "error" in entry:
            credit.check(False, f"{label}: cannot be checked: {entry['error']}", weight=2)
            continue
        target = TARGETS[kind_of(label)]
        sparsity = overall_sparsity(entry["model"])
        credit.check(abs(sparsity - target) <= SPARSITY_TOLERANCE,
                     f"{label}: overall sparsity of the Conv2d and Linear weights is {sparsity:.4f}; it must be within "
                     f"{SPARSITY_TOLERANCE} of {target:.2f}")
        match = re.match(NAME_PATTERN.format(label=label), entry["path"].name)
        if match:
            named = float(match["sparsity"])
            credit.check(match["sparsity"] == f"{sparsity:.2f}" or abs(named - sparsity) <= SPARSITY_TOLERANCE,
                         f"{label}: the file name says sparsity {match['sparsity']} but the model has {sparsity:.4f}")
    credit.verify()


@pytest.mark.points(2, visibility="hidden")
def test_filter_models_prune_whole_filters(loaded_models, credit):
    from hw2.models import prunable_weights

    for label in ("Omp_filter", "Imp_filter"):
        entry = loaded_models[label]
        if "error" in entry:
            credit.check(False, f"{label}: cannot be checked: {entry['error']}")
            continue
        stray = total = 0
        for weight in prunable_weights(entry["model"]).values():
            if weight.dim() != 4:
                continue
            rows = weight.detach().flatten(1)
            dead = (rows == 0).all(dim=1)
            stray += int((rows[~dead] == 0).sum())
            total += weight.numel()
        credit.check(stray <= 1e-4 * total, f"{label}: its conv zeros are not whole output filters (filter pruning "
                                            "removes whole filters)")
    credit.verify()


@pytest.mark.points(6)
def test_accuracy_in_file_name_is_measured(loaded_models, run_log, data_dir, pytestconfig, credit):
    from hw2.data import DataError, load_dataset, make_loaders
    from hw2.train import evaluate

    if "error" in run_log:
        credit.fail(run_log["error"])
    expected = pytestconfig.getoption("--dataset")
    dataset = run_log.get("dataset")
    if dataset != expected:
        credit.fail(f"run_log.json says the models were evaluated on {dataset!r}; they must be evaluated on "
                    f"{expected!r} (run main.py with --dataset {expected})")
    if dataset == "cifar10" and data_dir is None:
        pytest.skip("the CIFAR-10 test set is not available to the grader (give --data-dir), so the accuracies in the "
                    "file names could not be re-measured")
    try:
        data = load_dataset(dataset, data_dir, seed=int(run_log.get("seed", 0)), download=False)
    except DataError as exc:
        pytest.skip(f"the {dataset} test set could not be read: {exc}")
    _, test_loader = make_loaders(data, int(run_log.get("batch_size") or 256), torch.device("cpu"),
                                  seed=int(run_log.get("seed", 0)))
    for label, entry in loaded_models.items():
        if "error" in entry:
            credit.check(False, f"{label}: cannot be checked: {entry['error']}")
            continue
        match = re.match(NAME_PATTERN.format(label=label), entry["path"].name)
        if match is None:
            credit.check(False, f"{label}: the accuracy cannot be read from the file name {entry['path'].name}")
            continue
        measured = evaluate(entry["model"], test_loader, torch.device("cpu"), exact=True)
        credit.check(abs(float(match["accuracy"]) - measured) <= ACCURACY_TOLERANCE,
                     f"{label}: the file name says {match['accuracy']}% but the model scores {measured:.2f}% on the "
                     f"{dataset} test set; name the file after the test accuracy of the saved model")
    credit.verify()


@pytest.mark.points(3)
def test_imp_log_has_at_least_three_iterations(run_log, loaded_models, credit):
    if "error" in run_log:
        credit.fail(run_log["error"])
    models = run_log.get("models") if isinstance(run_log.get("models"), dict) else {}
    for label in ("Imp_unstructured", "Imp_filter"):
        entry = models.get(label)
        if not isinstance(entry, dict):
            credit.check(False, f"{label}: missing from run_log.json's models")
            continue
        iterations, steps = entry.get("iterations"), entry.get("steps")
        credit.check(isinstance(iterations, int) and iterations >= MIN_IMP_ITERATIONS
                     and isinstance(steps, list) and len(steps) == iterations,
                     f"{label}: run_log.json logs {iterations} iterations and "
                     f"{len(steps) if isinstance(steps, list) else 'no'} steps; IMP needs at least {MIN_IMP_ITERATIONS}")
    credit.verify()


@pytest.mark.points(4)
def test_figures_are_valid_pngs(artifacts, credit):
    names = ["sparsity_vs_accuracy.png"] + [f"mask_{label}.png" for label in LABELS]
    for name in names:
        credit.check(is_png(artifacts / name), f"{name} is missing from {artifacts.name}/ or is not a valid PNG")
    credit.verify()
