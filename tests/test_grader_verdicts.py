"""The grader's verdicts on code it has never seen: one test per class of wrong verdict it must not give.

Each submission here is the reference with one function replaced (its new
definition appended), graded in this process on the tests concerned
(``tests.independent.grade_in_process``: the grader's own checks and probes,
without the sandbox).  The independently written solutions in
``tests/independent/`` are graded the way students are in ``tests/test_independent.py``.
"""
from __future__ import annotations

import functools
from pathlib import Path

import pytest

from grader.solution import reference_source
from tests.independent import grade_in_process
from tests.mutants import REPO_ROOT

RETRAIN = "test_masked_retrain_keeps_pruned_weights_zero_and_trains_the_rest"
FILTER_COUNT = "test_filter_prune_removes_whole_filters_in_right_number"
FILTER_RANK = "test_filter_prune_ranks_filters_by_l2_norm"
UNCHANGED = "test_mask_functions_leave_input_unchanged"
UNSTRUCTURED_COUNT = "test_unstructured_prune_mask_shape_and_count"
UNSTRUCTURED_RANK = "test_unstructured_prune_removes_smallest_magnitudes"
APPLY = "test_apply_pruning_masks_each_layer_to_its_own_ratio"
COMPACT = "test_prune_channels_gives_smaller_model_with_same_outputs"
MASK = "test_plot_mask_image_is_one_row_per_filter"
YAML = "test_read_prune_ratios_from_yaml_returns_mapping_and_rejects_bad_files"
OMP = "test_oneshot_prunes_once_to_target_and_retrains"
IMP = "test_iterative_prunes_in_at_least_three_rounds_landing_on_target"


@functools.lru_cache(maxsize=None)
def _reference() -> str:
    return reference_source((REPO_ROOT / "solution" / "hw2" / "pruning.py").read_text())


def grade(replacement: str, tests: list[str], tmp_path: Path) -> dict:
    """The reference with ``replacement``'s definitions in place of its own, graded on ``tests``."""
    return grade_in_process(_reference() + "\n\n" + replacement, tmp_path, only=tests)


def full(result: tuple) -> bool:
    score, points, _ = result
    return score == points


# ---------------------------------------------------------------------------------------------
# False negatives: correct code must not lose points
# ---------------------------------------------------------------------------------------------
PLAIN_RETRAIN = '''
def masked_retrain(model, prune_masks, optimizer, loss_fn, train_loader, test_loader, num_epochs, device,
                   scheduler=None, progress=True):
    params = dict(model.named_parameters())  # plain weights: a model with prune hooks has no 'features.0.weight'
    history = []
    for _ in range(num_epochs):
        model.train()
        for x, y in train_loader:
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            with torch.no_grad():
                for name, mask in prune_masks.items():
                    params[name].mul_(mask)
        history.append({"loss": 0.0, "accuracy": 0.0, "test_accuracy": evaluate(model, test_loader, device)})
    return history
'''


def test_retrain_with_plain_weights_earns_the_plain_model_share_and_a_crash_costs_only_its_state(tmp_path):
    score, points, output = grade(PLAIN_RETRAIN, [RETRAIN], tmp_path)[RETRAIN]
    assert score == points / 2, output  # the hooked model's KeyError costs that state's half, not all 6 points
    assert "KeyError" in output and "masks attached by the grader" in output
    assert "set to zero by the grader" not in output


PLAIN_APPLY = '''
def apply_pruning(model, sparsity_type, prune_ratio_dict):
    params = dict(model.named_parameters())
    prune = unstructured_prune if sparsity_type == "unstructured" else filter_prune
    masks = {}
    for name, ratio in prune_ratio_dict.items():
        weight = params[name]
        mask = prune(weight.detach(), ratio).to(weight.dtype)
        with torch.no_grad():
            weight.mul_(mask)  # plain weights: no hooks attached
            if sparsity_type == "filter" and name.startswith("features."):
                batchnorm = model.features[int(name.split(".")[1]) + 1]
                alive = mask.reshape(mask.shape[0], -1).any(dim=1).to(weight.dtype)
                batchnorm.weight.mul_(alive)
                batchnorm.bias.mul_(alive)
        masks[name] = mask
    return masks
'''


def test_retrain_with_plain_weights_is_not_marked_down_on_hooks_its_own_apply_pruning_never_attaches(tmp_path):
    results = grade(PLAIN_APPLY + PLAIN_RETRAIN, [RETRAIN, APPLY], tmp_path)
    assert full(results[APPLY]), results[APPLY]
    score, points, output = results[RETRAIN]
    assert score == points, output
    assert "KeyError" in output and "not marked down" in output  # the hooked state's error is still shown


MASK_WITHOUT_RANGE = '''
def plot_mask(weight, out_path, title=""):
    image = (weight.detach() != 0).reshape(weight.shape[0], -1).to(torch.uint8).numpy()
    fig, ax = plt.subplots()
    ax.imshow(image, cmap="gray")  # no vmin/vmax: an all-ones image is drawn in the colour of 0
    fig.savefig(out_path)
    plt.close(fig)
    return image
'''


def test_a_mask_colour_map_scaled_to_each_image_is_noted_not_marked_down(tmp_path):
    score, points, output = grade(MASK_WITHOUT_RANGE, [MASK], tmp_path)[MASK]
    assert score == points, output
    assert "every weight kept" in output and "vmin=0, vmax=1" in output and "not marked down" in output


RAISES_ON_2D = '''
_filter_prune_4d = filter_prune


def filter_prune(tensor, sparsity):
    if tensor.dim() != 4:
        raise ValueError("filter_prune expects a conv weight (C_out, C_in, kH, kW)")
    return _filter_prune_4d(tensor, sparsity)
'''


def test_a_raise_in_one_case_costs_that_case_only(tmp_path):
    results = grade(RAISES_ON_2D, [FILTER_COUNT, FILTER_RANK, UNCHANGED], tmp_path)
    assert not full(results[FILTER_COUNT]) and "ValueError" in results[FILTER_COUNT][2]
    assert full(results[FILTER_RANK]), results[FILTER_RANK]
    assert full(results[UNCHANGED]), results[UNCHANGED]  # nothing was modified: the raise is not counted twice


BROADCAST_MASK = '''
_filter_prune_full = filter_prune


def filter_prune(tensor, sparsity):
    return _filter_prune_full(tensor, sparsity).reshape(tensor.shape[0], -1)[:, :1].reshape(
        tensor.shape[0], *([1] * (tensor.dim() - 1)))  # (C_out, 1, 1, 1): broadcastable, not the weight's shape
'''


def test_a_broadcastable_mask_costs_the_shape_check_only(tmp_path):
    results = grade(BROADCAST_MASK, [FILTER_COUNT, FILTER_RANK], tmp_path)
    assert not full(results[FILTER_COUNT]) and "the mask must be a tensor of the input's shape" in results[FILTER_COUNT][2]
    assert full(results[FILTER_RANK]), results[FILTER_RANK]


# ---------------------------------------------------------------------------------------------
# False positives: wrong code must not earn points
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("body", ["return model", "import copy\n    return copy.deepcopy(model)",
                                  "return copy_without_pruning(model)"], ids=["same", "deepcopy", "copy"])
def test_compaction_that_removes_nothing_scores_zero(body, tmp_path):
    score, _, output = grade(f"def prune_channels_after_filter_prune(model):\n    {body}\n", [COMPACT], tmp_path)[COMPACT]
    assert score == 0, output
    assert "must lose exactly its all-zero filters" in output


HOOK_RELIANT_RETRAIN = '''
def masked_retrain(model, prune_masks, optimizer, loss_fn, train_loader, test_loader, num_epochs, device,
                   scheduler=None, progress=True):
    history = []  # trusts hooks to keep the zeros: nothing re-applies prune_masks
    for epoch in range(num_epochs):
        stats = train_epoch(model, train_loader, optimizer, loss_fn, device, scheduler, progress=False)
        stats["test_accuracy"] = evaluate(model, test_loader, device)
        history.append(stats)
    return history
'''


def test_retrain_that_lets_pruned_weights_move_loses_points(tmp_path):
    score, points, output = grade(HOOK_RELIANT_RETRAIN, [RETRAIN], tmp_path)[RETRAIN]
    assert score < points
    assert "set to zero by the grader" in output and "no longer zero" in output
    assert "masks attached by the grader" not in output  # with the grader's hooks it does keep the zeros


LENIENT_YAML = '''
def _ratio(value):  # '50%' read as 0.5
    return float(str(value).rstrip("%")) / 100 if str(value).endswith("%") else float(value)


def read_prune_ratios_from_yaml(file_name, model):
    config = yaml.safe_load(Path(file_name).read_text())  # malformed YAML: yaml's own error
    ratios = config["prune_ratios"]
    names = dict(model.named_parameters())
    for name, ratio in ratios.items():
        if name not in names or not {check}:
            raise ValueError(f"bad entry {{name}}: {{ratio}}")
    return {{name: _ratio(ratio) for name, ratio in ratios.items()}}
'''


@pytest.mark.parametrize("check, accepted", [
    ("0 <= _ratio(ratio) <= 1", "a ratio of 1"),
    ("abs(_ratio(ratio)) < 1", "a negative ratio"),
    ("0 <= _ratio(ratio) < 1", "not a number"),
    ("0 <= ratio < 1", "a BatchNorm weight"),
])
def test_yaml_reader_that_accepts_a_promised_rejection_loses_points(check, accepted, tmp_path):
    score, points, output = grade(LENIENT_YAML.format(check=check), [YAML], tmp_path)[YAML]
    assert score < points and accepted in output, output
    assert "a layer named twice must raise ValueError" in output and "malformed YAML must raise" in output


# ---------------------------------------------------------------------------------------------
# Probes that trust student code: a submission that edits the dict it was given
# ---------------------------------------------------------------------------------------------
KEEP_FRACTIONS_IN_PLACE = '''
_imp = iterative_magnitude_prune
_omp = oneshot_magnitude_prune


def iterative_magnitude_prune(model, sparsity_type, prune_ratio_dict, **kwargs):
    log = _imp(model, sparsity_type, dict(prune_ratio_dict), **kwargs)
    for name in prune_ratio_dict:  # left as keep fractions: correct work, a changed dict
        prune_ratio_dict[name] = 1.0 - prune_ratio_dict[name]
    return log


def oneshot_magnitude_prune(model, sparsity_type, prune_ratio_dict, **kwargs):
    log = _omp(model, sparsity_type, dict(prune_ratio_dict), **kwargs)
    prune_ratio_dict.clear()
    return log
'''

LAST_ROUND_SHORT_IN_PLACE = '''
def iterative_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, iterations=3, train_loader, test_loader,
                              epochs, device, lr=0.01, weight_decay=5e-4, progress=True):
    if iterations < MIN_IMP_ITERATIONS:
        raise ValueError("too few iterations")
    targets = dict(prune_ratio_dict)
    log = []
    for step in range(1, iterations + 1):
        for name, target in targets.items():  # the round's ratios written into the caller's dict
            prune_ratio_dict[name] = target * step / (iterations + 1)  # never reaches the target
        log.append(_prune_and_retrain(model, sparsity_type, dict(prune_ratio_dict), step, train_loader, test_loader,
                                      epochs, device, lr, weight_decay, progress))
    return log
'''


def test_probe_targets_survive_a_submission_that_edits_its_ratio_dict(tmp_path):
    honest = grade(KEEP_FRACTIONS_IN_PLACE, [OMP, IMP], tmp_path / "honest")
    assert full(honest[OMP]) and full(honest[IMP]), honest
    short = grade(LAST_ROUND_SHORT_IN_PLACE, [IMP], tmp_path / "short")[IMP]
    assert not full(short) and "the last round's ratios must equal the targets (to 1e-9)" in short[2], short


# ---------------------------------------------------------------------------------------------
# Messages: name the layers at fault, state only what was observed, say when the model is the grader's
# ---------------------------------------------------------------------------------------------
SKIPS_CLASSIFIER = '''
_apply_pruning_all = apply_pruning


def apply_pruning(model, sparsity_type, prune_ratio_dict):
    return _apply_pruning_all(model, sparsity_type, {n: r for n, r in prune_ratio_dict.items() if n != "classifier.weight"})
'''


def test_one_skipped_layer_is_named_and_no_false_statement_is_made(tmp_path):
    score, points, output = grade(SKIPS_CLASSIFIER, [APPLY], tmp_path)[APPLY]
    assert 0 < score < points
    failed = [line for line in output.splitlines() if line.startswith("- ")]
    assert failed and all("classifier.weight" in line for line in failed), output
    assert all(line.startswith("- unstructured, on the grader's tiny VGG13") for line in failed)
    assert "zero exactly where" not in output and "second call" not in output  # both hold for this code


ZEROES_INPUT_THEN_RAISES = '''
_unstructured_prune_pure = unstructured_prune


def unstructured_prune(tensor, sparsity):
    mask = _unstructured_prune_pure(tensor, sparsity)
    tensor.data.mul_(mask)  # "apply" it
    if tensor.dim() == 1:
        raise ValueError("expected a weight matrix")
    return mask
'''


def test_a_function_that_modifies_its_input_and_raises_gets_both_reported(tmp_path):
    results = grade(ZEROES_INPUT_THEN_RAISES, [UNSTRUCTURED_COUNT, UNCHANGED], tmp_path)
    assert "ValueError" in results[UNSTRUCTURED_COUNT][2]
    assert "unstructured_prune modified its input tensor (cases [1, 2, 3, 5, 6, 7, 8, 9]" in results[UNCHANGED][2]


def test_messages_say_when_the_grader_attached_hooks_or_built_the_model(tmp_path):
    results = grade(HOOK_RELIANT_RETRAIN + "\n\ndef prune_channels_after_filter_prune(model):\n    return model\n",
                    [RETRAIN, COMPACT], tmp_path)
    assert "the grader's tiny VGG13 with its pruned weights set to zero by the grader" in results[RETRAIN][2]
    assert "filter-pruned by the grader, masks attached with torch.nn.utils.prune" in results[COMPACT][2]
    assert "filter-pruned by the grader, masks made permanent" in results[COMPACT][2]


TRAINS_THEN_PRUNES = '''
def oneshot_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, train_loader, test_loader, epochs, device,
                            lr=0.01, weight_decay=5e-4, progress=True):
    before, _ = _retrain_pruned(model, {}, train_loader, test_loader, epochs, device, lr, weight_decay, False)
    apply_pruning(model, sparsity_type, dict(prune_ratio_dict))  # pruned after the training
    return [{"iteration": 1, "ratios": dict(prune_ratio_dict), "sparsity": test_sparsity(model, sparsity_type)["overall"],
             "accuracy_before_retrain": before, "accuracy": evaluate(model, test_loader, device)}]
'''

PRUNES_LARGEST_FILTERS = '''
def filter_prune(tensor, sparsity):
    k = int(round(sparsity * tensor.shape[0]))
    keep = torch.ones(tensor.shape[0], dtype=tensor.dtype)
    keep[torch.argsort(tensor.detach().flatten(1).norm(dim=1), descending=True)[:k]] = 0
    return keep.view(-1, *([1] * (tensor.dim() - 1))).expand_as(tensor).clone()
'''


def test_omp_that_prunes_after_retraining_loses_points_but_a_ranking_bug_costs_omp_nothing(tmp_path):
    score, points, output = grade(TRAINS_THEN_PRUNES, [OMP], tmp_path / "late")[OMP]
    assert score < points and "prune them first, then retrain" in output, output
    ranking = grade(PRUNES_LARGEST_FILTERS, [OMP, FILTER_RANK], tmp_path / "ranking")
    assert not full(ranking[FILTER_RANK]) and full(ranking[OMP]), ranking  # judged against its own filter_prune
