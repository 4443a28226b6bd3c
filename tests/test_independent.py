"""The grader is right about code it has never seen: independently written solutions.

``tests/independent/`` holds complete solutions written in styles unlike the
reference (see its docstring).  Each correct one must score full marks on every
code test; each wrong one (a correct one plus one plausible bug that no mutant in
tests/mutants.py has) must lose points on the test that names its bug and keep
full marks on every other.  They are graded by the grader's own checks and probes
in this process (``grade_in_process``: seconds each); the sandbox that carries
probe results to those checks is tested with the reference in tests/test_grader.py.
"""
from __future__ import annotations

import ast
import multiprocessing
import re
from concurrent.futures import ProcessPoolExecutor

import pytest

from tests.independent import CORRECT, SOLUTIONS, WRONG, grade_in_process
from tests.mutants import MUTANTS, REPO_ROOT

CODE_TESTS = re.findall(r"^def (test_\w+)\(", (REPO_ROOT / "grader" / "test_functions.py").read_text(), flags=re.MULTILINE)


def test_suite_has_enough_solutions_each_naming_a_real_graded_test():
    assert len(CORRECT) >= 4 and len(WRONG) >= 10
    assert len({s.name for s in SOLUTIONS}) == len(SOLUTIONS)
    assert not {s.name for s in SOLUTIONS} & {m.name for m in MUTANTS}
    originals = {c.name for c in CORRECT if not c.base}
    assert all(s.base in originals and s.tests and set(s.tests) <= set(CODE_TESTS) for s in WRONG)
    assert all(s.base in originals for s in CORRECT if s.base)
    assert all(s.file.is_file() for s in SOLUTIONS)


def code_lines(source: str) -> list[str]:
    """The code's lines as ``ast.unparse`` writes them: no docstrings (the stubs hand those out), no comments."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return [line.strip() for line in ast.unparse(tree).splitlines() if len(line.strip()) > 40]


def test_independent_solutions_are_not_copies_of_the_reference():
    """Beyond calls of the provided API (``for name, ratio in prune_ratio_dict.items():``), no code line is the
    reference's (what the stubs hand out to everyone, docstrings, imports and signatures, does not count)."""
    handed_out = set(code_lines((REPO_ROOT / "hw2" / "pruning.py").read_text()))
    reference_lines = set(code_lines((REPO_ROOT / "solution" / "hw2" / "pruning.py").read_text())) - handed_out
    for solution in CORRECT:
        lines = code_lines(solution.source())
        shared = [line for line in lines if line in reference_lines]
        assert len(shared) <= 0.1 * len(lines), f"{solution.name} shares {len(shared)} lines with the reference: {shared}"


@pytest.fixture(scope="module")
def independent_grades(tmp_path_factory) -> dict:
    """solution name -> {code test name: (score, max_score, output)}, the grader's checks run in-process, in two
    worker processes (one thread each: the tiny models gain nothing from more; spawned, not forked from a process
    whose OpenMP pool may be running)."""
    root = tmp_path_factory.mktemp("independent")
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        grades = pool.map(grade_in_process, [s.source() for s in SOLUTIONS], [root / s.name for s in SOLUTIONS])
        return dict(zip([s.name for s in SOLUTIONS], grades))


@pytest.mark.slow
@pytest.mark.parametrize("solution", CORRECT, ids=[s.name for s in CORRECT])
def test_correct_solution_scores_full_marks_on_every_code_test(solution, independent_grades):
    tests = independent_grades[solution.name]
    assert set(tests) == set(CODE_TESTS)
    lost = {name: output for name, (score, points, output) in tests.items() if score != points}
    assert not lost, f"{solution.name} ({solution.why}) lost points: {lost}"


@pytest.mark.slow
@pytest.mark.parametrize("solution", WRONG, ids=[s.name for s in WRONG])
def test_wrong_solution_loses_points_on_the_test_naming_its_bug_only(solution, independent_grades):
    tests = independent_grades[solution.name]
    assert set(tests) == set(CODE_TESTS)
    for name in solution.tests:  # each of its bugs costs points on its own test
        score, points, output = tests[name]
        assert score < points, f"{solution.name} ({solution.why}) kept full marks on {name}"
        assert output.strip(), "a lost point must come with a reason"
    elsewhere = {name: out for name, (s, p, out) in tests.items() if name not in solution.tests and s != p}
    assert not elsewhere, f"{solution.name} ({solution.why}) also lost points on {elsewhere}"


@pytest.mark.slow
def test_confusion_table_of_the_independent_solutions(independent_grades, capsys):
    """correct / wrong x full / partial / zero total on the code tests: only the diagonal cells may hold solutions."""
    table = {(kind, band): [] for kind in ("correct", "wrong") for band in ("full", "partial", "zero")}
    for solution in SOLUTIONS:
        tests = independent_grades[solution.name]
        score, points = sum(s for s, _, _ in tests.values()), sum(p for _, p, _ in tests.values())
        band = "full" if tests and score == points else "zero" if score == 0 else "partial"
        table["correct" if solution.correct else "wrong", band].append(f"{solution.name} ({score:g}/{points:g})")
    with capsys.disabled():
        print(f"\nindependent solutions graded on the code tests:\n{'':>8} {'full':>6} {'partial':>8} {'zero':>6}")
        for kind in ("correct", "wrong"):
            print(f"{kind:>8} " + " ".join(f"{len(table[kind, band]):>{w}}" for band, w in
                                           (("full", 6), ("partial", 8), ("zero", 6))))
        for (kind, band), names in table.items():
            for name in names:
                print(f"  {kind:<7} {band:<7} {name}")
    assert len(table["correct", "full"]) == len(CORRECT)
    assert len(table["wrong", "partial"]) == len(WRONG)  # one bug costs some points, never all of them


# Two styles whose saved state differs most from the reference's (plain weights; parametrize's renamed keys), one
# per worker; the other styles' code tests run in-process above.
FULL_RUN = ("plain_kthvalue", "parametrize_numpy")


def _graded_through_own_run(name: str, root) -> tuple[float, float, str]:
    """``name``'s pruning.py in a copy of the exported reference: main.py --method all on synthetic data (its own
    functions make the models and figures), then the whole sandboxed grading; (score, max score, failures)."""
    import json
    import shutil
    import subprocess
    import sys

    from grader.batch import grade_submission
    from tests.mutants import GRADE_ARGS, reference_submission

    solution = next(s for s in CORRECT if s.name == name)
    dest = root / name
    shutil.copytree(reference_submission(), dest, ignore=shutil.ignore_patterns("results", "__pycache__"))
    (dest / "hw2" / "pruning.py").write_text(solution.source())
    run = subprocess.run([sys.executable, "hw2/main.py", "--method", "all", "--dataset", "synthetic", "--epochs", "0",
                          "--dense-epochs", "1", "--no-progress", "--seed", "0"],
                         cwd=dest, capture_output=True, text=True, timeout=600)
    if run.returncode != 0:
        return 0.0, 100.0, f"main.py failed: {run.stdout[-1500:]}{run.stderr[-1500:]}"
    grade_submission(dest, root / f"{name}.json", timeout=600, pytest_args=GRADE_ARGS)
    results = json.loads((root / f"{name}.json").read_text())
    lost = {t["name"]: t["output"][:300] for t in results["tests"] if t["score"] < t["max_score"]}
    return results["score"], sum(t["max_score"] for t in results["tests"]), json.dumps(lost, indent=1)


@pytest.mark.slow
def test_correct_solutions_score_100_through_their_own_run_and_the_sandbox(tmp_path):
    """The code tests above run in-process; here two of the styles go the students' way: their own main.py run
    makes the models, figures and log, and the full grading (sandbox, run outputs, hidden tests) scores 100."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.mutants import reference_submission

    reference_submission()  # built once, before the two workers copy it
    with ThreadPoolExecutor(max_workers=2) as pool:
        graded = dict(zip(FULL_RUN, pool.map(lambda name: _graded_through_own_run(name, tmp_path), FULL_RUN)))
    for name, (score, points, lost) in graded.items():
        assert points == 100 and score == points, f"{name}: {score}/{points}: {lost}"
