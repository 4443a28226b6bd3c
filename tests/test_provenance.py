"""The provenance check: handed-in models whose zeros are not what the submission's own functions choose, or
whose ratios are not the handed-in YAML's, are flagged (0 points, a note for the staff), by label and layer;
models that are agree, ties either way."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from grader.batch import grade_submission
from grader.checks import boundary_ties, mask_disagreement
from tests.mutants import GRADE_ARGS, REPO_ROOT, Mutant, _model_file, mutant_submission, session_dir

PROVENANCE_TEST = "test_model_zeros_are_what_your_pruning_functions_choose"


def magnitude_mask(weight: torch.Tensor, ratio: float) -> torch.Tensor:
    """Keep-mask pruning the ``ratio`` smallest magnitudes (stable order: ties go to the lower index)."""
    order = torch.argsort(weight.abs().flatten(), stable=True)
    keep = torch.ones(weight.numel(), dtype=torch.bool)
    keep[order[:int(ratio * weight.numel())]] = False
    return keep.view_as(weight)


def test_agreeing_zeros_pass_and_a_moved_zero_counts_both_ways():
    dense = torch.randn(8, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    keep = magnitude_mask(dense, 0.5)
    assert mask_disagreement("unstructured", dense, dense * keep, keep, exact=True) == (0, 0)
    moved = (dense * keep).flatten().clone()
    pruned_index, kept_index = int(torch.nonzero(~keep.flatten())[0]), int(torch.nonzero(keep.flatten())[-1])
    moved[pruned_index], moved[kept_index] = 1.0, 0.0
    assert mask_disagreement("unstructured", dense, moved.view_as(dense), keep, exact=True) == (1, 1)
    assert mask_disagreement("unstructured", dense, moved.view_as(dense), keep, exact=False) == (1, 0)


def test_a_tie_at_the_threshold_may_go_either_way_and_only_a_tie():
    dense = torch.tensor([[0.1, -0.2, 0.2, 0.9]])  # 0.2 twice: pruning 2 of 4 may keep either
    keep = torch.tensor([[False, False, True, True]])
    other_choice = torch.tensor([[0.0, -0.2, 0.0, 0.9]])
    assert mask_disagreement("unstructured", dense, other_choice, keep, exact=True) == (0, 0)
    assert boundary_ties(dense.abs(), ~keep).tolist() == [[False, True, True, False]]
    no_tie = torch.tensor([[0.1, 0.2, 0.3, 0.9]])  # the smallest kept is no tie: swapping it with a pruned one counts
    assert not boundary_ties(no_tie, ~keep).any()
    assert mask_disagreement("unstructured", no_tie, torch.tensor([[0.0, 0.2, 0.0, 0.9]]), keep, exact=True) == (1, 1)


def test_filters_compare_by_whole_rows_and_imp_may_have_more_zeros():
    dense = torch.randn(6, 3, 3, 3, generator=torch.Generator().manual_seed(1))
    keep = torch.ones(6, dtype=torch.bool)
    keep[torch.argsort(dense.flatten(1).norm(dim=1))[:2]] = False
    handed_in = dense * keep.view(-1, 1, 1, 1)
    assert mask_disagreement("filter", dense, handed_in, keep, exact=True) == (0, 0)
    more = handed_in.clone()
    more[int(torch.nonzero(keep)[0])] = 0  # a later IMP round pruned one more filter
    assert mask_disagreement("filter", dense, more, keep, exact=False) == (0, 0)
    assert mask_disagreement("filter", dense, more, keep, exact=True) == (0, 1)
    revived = handed_in.clone()
    revived[int(torch.nonzero(~keep)[0]), 0, 0, 0] = 1.0  # one weight of a pruned filter is enough
    assert mask_disagreement("filter", dense, revived, keep, exact=False) == (1, 0)


# ---------------------------------------------------------------------------------------------
# A full grading: the reference's code with two of its models altered after the run
# ---------------------------------------------------------------------------------------------
ALTERED: dict[str, str] = {}


def move_zeros_and_revive_a_filter(results) -> None:
    """Omp_unstructured: one zero of its first pruned layer moved to a kept weight; Imp_filter: the filter of
    smallest pretrained norm (pruned in the first round) swapped with a kept one.  Sparsity stays the same.
    ``ALTERED`` records the Omp_unstructured layer altered."""
    from hw2.checkpoint import load_checkpoint, save_checkpoint

    path = _model_file(results, "Omp_unstructured")
    state_dict, metadata = load_checkpoint(path)
    layer = next(name for name, ratio in metadata["ratios"].items() if ratio > 0)  # YAML order: the first pruned layer
    flat = state_dict[layer].flatten()
    zero, live = int(torch.nonzero(flat == 0)[0]), int(torch.nonzero(flat != 0)[0])
    flat[zero], flat[live] = flat[live].item(), 0.0
    path.unlink()
    save_checkpoint(path, state_dict, metadata)

    path = _model_file(results, "Imp_filter")
    state_dict, metadata = load_checkpoint(path)
    name = max(metadata["steps"][0]["ratios"], key=metadata["steps"][0]["ratios"].get)
    dense, _ = load_checkpoint(REPO_ROOT / "pretrained" / "vgg13_cifar10.pt")
    weight = state_dict[name]
    first = int(dense[name].flatten(1).norm(dim=1).argmin())
    live = int(torch.nonzero((weight.flatten(1) != 0).any(dim=1))[0])
    assert (weight[first] == 0).all(), "the filter of smallest norm should have been pruned in the first round"
    weight[first], weight[live] = weight[live].clone(), 0.0
    path.unlink()
    save_checkpoint(path, state_dict, metadata)
    ALTERED["Omp_unstructured"] = layer
    # and the filter YAML edited after the run: the filter models no longer match the file handed in
    config = results.parent / "configs" / "filter_0.40.yaml"
    ratios = yaml.safe_load(config.read_text())["prune_ratios"]
    edited = next(iter(ratios))
    ratios[edited] = round(ratios[edited] + 0.05, 4)
    config.unlink()  # it may be a link to the reference's copy
    config.write_text(yaml.safe_dump({"prune_ratios": ratios}, sort_keys=False))
    ALTERED["filter_yaml"] = edited


@pytest.mark.slow
def test_models_altered_after_the_run_are_flagged_by_label_and_layer():
    altered = Mutant("altered_models", PROVENANCE_TEST, "models changed after main.py wrote them",
                     artifacts=move_zeros_and_revive_a_filter)
    submission = mutant_submission(altered, name="provenance")
    results_path = session_dir() / "provenance_results.json"
    run = grade_submission(submission, results_path, timeout=900, pytest_args=GRADE_ARGS, isolate=True)
    assert run.status == "graded", run.log_tail
    tests = {t["name"]: t for t in json.loads(results_path.read_text())["tests"]}
    check = tests[PROVENANCE_TEST]
    assert check["status"] == "failed" and check["max_score"] == 0 and check["score"] == 0
    output = check["output"]
    assert f"Omp_unstructured, {ALTERED['Omp_unstructured']}" in output and "Imp_filter, " in output
    for label in ("Omp_filter", "Imp_filter"):
        assert f"{label}: the ratios it was pruned with differ from configs/filter_0.40.yaml handed in: " \
               f"{ALTERED['filter_yaml']}" in output
    assert "Imp_unstructured" not in output and "Omp_filter, " not in output
    assert "worth no points" in output


def test_an_imp_first_round_that_prunes_nothing_cannot_pass_for_checked():
    from grader.test_provenance import round_one_ratios

    targets = {"features.0.weight": 0.0, "features.3.weight": 0.5, "features.7.weight": 0.8}
    honest = {"ratios": targets, "steps": [{"ratios": {"features.0.weight": 0.0, "features.3.weight": 0.2,
                                                       "features.7.weight": 0.4}}]}
    assert round_one_ratios("Imp_unstructured", honest) == honest["steps"][0]["ratios"]
    idle = {"ratios": targets, "steps": [{"ratios": {name: 0.0 for name in targets}}]}
    assert "leave features.3.weight, features.7.weight unpruned" in round_one_ratios("Imp_unstructured", idle)
    past = {"ratios": targets, "steps": [{"ratios": {**honest["steps"][0]["ratios"], "features.3.weight": 0.6}}]}
    assert "pass the targets of features.3.weight" in round_one_ratios("Imp_unstructured", past)
    assert isinstance(round_one_ratios("Omp_unstructured", {"ratios": targets, "steps": [{"ratios": targets}]}), dict)
