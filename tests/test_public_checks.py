"""The release's grader (grader.public_checks): the visible tests, what they use, and masks that rank nothing."""
from __future__ import annotations

import ast

import pytest
import torch

from grader import probes, public_checks
from grader.solution import REPO_ROOT


@pytest.fixture(scope="module")
def released():
    return public_checks.release_grader(REPO_ROOT)


def test_release_masks_have_the_staff_masks_shapes_and_counts():
    model = probes.tiny_vgg(seed=8)
    for staff, release, ratios in ((probes.grader_unstructured_masks, public_checks.grader_unstructured_masks, probes.TINY_RATIOS),
                                   (probes.grader_filter_masks, public_checks.grader_filter_masks, probes.TINY_FILTER_RATIOS)):
        expected, got = staff(model, ratios), release(model, ratios)
        assert got.keys() == expected.keys()
        for name in expected:
            assert got[name].shape == expected[name].shape and int((got[name] == 0).sum()) == int((expected[name] == 0).sum())
            assert set(got[name].unique().tolist()) <= {0.0, 1.0}
        assert release(model, ratios).keys() == got.keys() and all(torch.equal(release(model, ratios)[n], got[n]) for n in got)
    filters = public_checks.grader_filter_masks(model, probes.TINY_FILTER_RATIOS)
    for name in probes.TINY_FILTER_RATIOS:
        rows = filters[name].flatten(1)
        assert bool(((rows == 0).all(1) | (rows == 1).all(1)).all()), "whole filters"
        bn = f"features.{int(name.split('.')[1]) + 1}.weight"
        assert torch.equal(filters[bn], rows[:, 0]), "the BatchNorm channels of the masked filters"


def test_release_grader_keeps_the_visible_tests_and_the_probes_they_name(released):
    staff = public_checks.graded_tests(REPO_ROOT)
    tests = {node.name for path, text in released.items() if path.startswith("grader/test_")
             for node in ast.parse(text).body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}
    assert tests == {name for name, (visibility, _) in staff.items() if visibility == "visible"}
    for text in released.values():
        compile(text, "release", "exec")
    table = next(node for node in ast.parse(released["grader/probes.py"]).body
                 if isinstance(node, ast.Assign) and node.targets[0].id == public_checks.PROBE_TABLE)
    kept = {ast.literal_eval(key) for key in table.value.keys}
    named = {node.value for path, text in released.items() if path != "grader/probes.py"
             for node in ast.walk(ast.parse(text)) if isinstance(node, ast.Constant) and node.value in probes.PROBES}
    assert kept == named and "import_pruning" in kept and kept <= set(probes.PROBES)
    assert "def pruned_not_larger_than_kept" not in released["grader/checks.py"]  # only a hidden test used it
    assert public_checks.ranking_calls(released) == []


def test_release_grader_is_refused_while_a_kept_helper_ranks_weights(monkeypatch):
    monkeypatch.setattr(public_checks, "RELEASE_MASKS", {})  # the staff helpers, which rank, stay in
    with pytest.raises(ValueError, match=r"grader/probes.py: grader_\w+_masks calls argsort"):
        public_checks.release_grader(REPO_ROOT)


def test_release_grader_holds_none_of_the_graders_own_helpers(released):
    """OMP and IMP are re-run with the grader's own helpers only in grading: those are reference answers."""
    from grader import probes

    defined = {node.name for node in ast.parse(released["grader/probes.py"]).body if isinstance(node, ast.FunctionDef)}
    staff = {function.__name__ for function in probes.grader_helpers().values()}
    assert staff and not staff & defined
    namespace: dict = {}
    exec(compile(ast.Module([n for n in ast.parse(released["grader/probes.py"]).body
                             if isinstance(n, ast.FunctionDef) and n.name == "grader_helpers"], []), "release", "exec"),
         namespace)
    assert namespace["grader_helpers"]() == {}
