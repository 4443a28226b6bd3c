"""The grader catches wrong solutions: every mutant in tests/mutants.py loses points on the test that names its bug.

Each mutant is graded on its target test only (the full grading of the
reference and the stubs is in tests/test_grader.py).  Artifact mutants (edited
run outputs) go through the sandboxed grading a student gets, two at a time;
code mutants through the grader's own checks and probes in this process
(``grade_in_process``, as tests/test_independent.py does), and a sample of them
also through the sandbox, where they must get the same score.
"""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from grader.batch import grade_submission
from tests.independent import grade_in_process
from tests.mutants import GRADE_ARGS, MUTANTS, REPO_ROOT, mutant_submission, mutate, reference_submission, session_dir

JOBS = 2  # CI has 2 CPUs
MIN_MUTANTS = 20
SANDBOXED_CODE_MUTANTS = ("unstructured_modifies_input", "retrain_drops_masks", "compact_classifier_not_sliced")


def _target(results: dict, test: str) -> dict | None:
    return next((t for t in results.get("tests", []) if t["name"] == test), None)


def _sandboxed(mutant) -> tuple[str, tuple]:
    submission = mutant_submission(mutant)
    run = grade_submission(submission, session_dir() / "mutant_results" / f"{mutant.name}.json", timeout=600,
                           pytest_args=[*GRADE_ARGS, "-k", mutant.test], isolate=False)
    return mutant.name, (_target(run.results, mutant.test), f"{run.status}:\n{run.log_tail}")


@pytest.fixture(scope="module")
def mutant_grades() -> dict:
    """mutant name -> (its target test's entry in results.json, or None; what to show when it did not run)."""
    artifact = [m for m in MUTANTS if m.artifacts is not None]
    with ThreadPoolExecutor(max_workers=JOBS) as pool:
        grades = dict(pool.map(_sandboxed, artifact))
    reference = (reference_submission() / "hw2" / "pruning.py").read_text()
    for mutant in MUTANTS:
        if mutant.artifacts is None:
            tests = grade_in_process(mutate(reference, mutant), session_dir() / "mutants_in_process" / mutant.name,
                                     only=[mutant.test])
            score, points, output = tests.get(mutant.test, (None, None, ""))
            entry = None if score is None else {"name": mutant.test, "score": score, "max_score": points, "output": output}
            grades[mutant.name] = (entry, "not among the code tests")
    return grades


def test_mutant_suite_is_large_and_names_real_graded_tests():
    graded = {name for path in (REPO_ROOT / "grader").glob("test_*.py")  # read, not imported: no grader marks here
              for name in re.findall(r"^def (test_\w+)\(", path.read_text(), flags=re.MULTILINE)}
    assert len(MUTANTS) >= MIN_MUTANTS
    assert len({m.name for m in MUTANTS}) == len(MUTANTS)
    assert {m.test for m in MUTANTS} <= graded


@pytest.mark.slow
@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_mutant_loses_points_on_the_test_naming_its_bug(mutant, mutant_grades):
    target, why = mutant_grades[mutant.name]
    assert target is not None, f"{mutant.name}: {mutant.test} did not run ({why})"
    assert target["score"] < target["max_score"], f"{mutant.name} ({mutant.why}) kept full marks on {mutant.test}"
    assert target["output"].strip(), "a lost point must come with a reason"


@pytest.mark.slow
def test_mutation_score_is_100_percent(mutant_grades, capsys):
    killed = [name for name, (target, _) in mutant_grades.items()
              if target is not None and target["score"] < target["max_score"]]
    with capsys.disabled():
        print(f"\nmutation score: {len(killed)}/{len(mutant_grades)} mutants caught "
              f"({100 * len(killed) / len(mutant_grades):.0f}%)")
        for mutant in MUTANTS:
            target, _ = mutant_grades[mutant.name]
            lost = f"{target['max_score'] - target['score']:g}/{target['max_score']:g}" if target else "not run"
            print(f"  {mutant.name:<36} {'caught' if mutant.name in killed else 'MISSED':<7} lost {lost:<9} {mutant.test}")
    assert len(killed) == len(mutant_grades)


@pytest.mark.slow
def test_checkpoint_that_needs_code_is_rejected_without_running_it(mutant_grades):
    target, _ = mutant_grades["checkpoint_needs_code"]
    assert not (session_dir() / "mutants" / "checkpoint_needs_code" / "results" / "CODE_WAS_EXECUTED").exists()
    assert "weights_only=True" in target["output"] and "Omp_filter" in target["output"]


@pytest.mark.slow
def test_code_mutants_get_the_same_score_in_the_sandbox(mutant_grades):
    """The in-process grading above is the sandboxed one's: a sample of code mutants scores the same in both."""
    sample = [m for m in MUTANTS if m.name in SANDBOXED_CODE_MUTANTS]
    assert len(sample) == len(SANDBOXED_CODE_MUTANTS) and all(m.artifacts is None for m in sample)
    with ThreadPoolExecutor(max_workers=JOBS) as pool:
        sandboxed = dict(pool.map(_sandboxed, sample))
    for mutant in sample:
        target, why = sandboxed[mutant.name]
        assert target is not None, f"{mutant.name}: {mutant.test} did not run ({why})"
        assert target["score"] == pytest.approx(mutant_grades[mutant.name][0]["score"]), mutant.name
