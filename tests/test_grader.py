"""The grader itself: the reference scores full marks, the stubs score zero, grading is repeatable,
misbehaving submissions still get a complete results.json, and the instructor tools work.

Submissions are graded the way instructors do it: ``pytest grader/`` in a child
process (``grader.batch.grade_submission``).
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor

import pytest

from grader.batch import grade_submission
from grader.checks import Credit, count_in_range, expected_parameters, is_png
from grader.sandbox import SANDBOX_USER, python_paths, sandbox_identity, unreadable_for
from tests.mutants import (GRADE_ARGS, MUTANTS, REPO_ROOT, Mutant, mutant_submission, mutate, reference_submission,
                           session_dir, stub_submission)
from tests.test_sandbox import alive

RESULT_KEYS = {"score", "execution_time", "output", "tests"}
TEST_KEYS = {"name", "score", "max_score", "status", "output", "visibility"}
GRADESCOPE_VISIBILITIES = {"visible", "hidden", "after_due_date", "after_published"}


def graded_tests(module: str) -> list[str]:
    """Test names in grader/<module>.py, read from the source (importing it would need the grader's plugin)."""
    return re.findall(r"^def (test_\w+)\(", (REPO_ROOT / "grader" / f"{module}.py").read_text(), flags=re.MULTILINE)


def _drops_privileges() -> bool:
    """Whether gradings here run student code as the sandbox user (root, and Python readable by that user)."""
    identity = sandbox_identity(SANDBOX_USER)
    return identity is not None and not unreadable_for(identity, python_paths())


DROPS_PRIVILEGES = _drops_privileges()
ALL_TESTS = (graded_tests("test_functions") + graded_tests("test_artifacts") + graded_tests("test_answers")
             + graded_tests("test_provenance"))


def by_name(results: dict) -> dict:
    return {t["name"]: t for t in results["tests"]}


# ---------------------------------------------------------------------------------------------
# Small pieces, no grading run
# ---------------------------------------------------------------------------------------------
def test_partial_credit_is_the_weighted_fraction_of_passed_checks():
    credit = Credit()
    credit.check(True, "a", weight=3)
    credit.check(False, "b")
    assert credit.fraction == pytest.approx(0.75)
    with pytest.raises(AssertionError, match="- b"):
        credit.verify()


@pytest.mark.parametrize("count, units, sparsity, ok", [(33, 100, 0.333, True), (34, 100, 0.333, True),
                                                        (35, 100, 0.333, False), (3, 10, 0.3, True),
                                                        (4, 10, 0.3, False), (0, 30, 0.0, True)])
def test_counts_accept_floor_or_ceil_only(count, units, sparsity, ok):
    assert count_in_range(count, units, sparsity) is ok


def test_expected_parameter_count_matches_vgg13():
    from hw2.models import VGG13

    widths = [3, 5, 8, 8, 9, 9, 16, 12, 16, 7]
    assert expected_parameters(widths, 10) == sum(p.numel() for p in VGG13(widths=widths).parameters())


def test_png_check_rejects_other_files(tmp_path):
    from PIL import Image

    Image.new("RGB", (4, 3)).save(tmp_path / "ok.png")
    (tmp_path / "fake.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 20)
    Image.new("RGB", (4, 3)).save(tmp_path / "jpeg.png", format="JPEG")
    assert is_png(tmp_path / "ok.png")
    assert not is_png(tmp_path / "fake.png") and not is_png(tmp_path / "jpeg.png") and not is_png(tmp_path / "none.png")


def test_every_graded_test_has_points_and_a_gradescope_visibility():
    for module in ("test_functions", "test_artifacts", "test_answers"):
        source = (REPO_ROOT / "grader" / f"{module}.py").read_text()
        marks = re.findall(r"@pytest\.mark\.points\((\d+)(?:, visibility=\"(\w+)\")?\)\n(?:@.*\n)*def (test_\w+)", source)
        assert {name for *_, name in marks} == set(graded_tests(module))
        assert all(visibility in ("", *GRADESCOPE_VISIBILITIES) for _, visibility, _ in marks)
    total = sum(int(p) for module in ("test_functions", "test_artifacts", "test_answers")
                for p, *_ in re.findall(r"@pytest\.mark\.points\((\d+)", (REPO_ROOT / "grader" / f"{module}.py").read_text()))
    assert total == 100


def test_mutant_edit_that_no_longer_applies_is_an_error():
    with pytest.raises(ValueError, match="occurs 0 times"):
        mutate("def f():\n    return 1\n", Mutant("m", "t", "why", (("return 2", "return 3"),)))


def test_gradescope_package_holds_scripts_and_grader_bundle(tmp_path):
    run = subprocess.run([sys.executable, "-m", "grader.gradescope", str(tmp_path / "autograder.zip")], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    with zipfile.ZipFile(tmp_path / "autograder.zip") as archive:
        names = set(archive.namelist())
        assert {"setup.sh", "run_autograder", "grader/conftest.py", "grader/sandbox.py", "grader/probes.py",
                "hw2/models.py", "hw2/checkpoint.py", "pytest.ini", "requirements.txt"} <= names
        assert not any(name.startswith("solution/") for name in names)
        for script in ("setup.sh", "run_autograder"):
            assert archive.getinfo(script).external_attr >> 16 & 0o111, f"{script} must be executable"
        runner = archive.read("run_autograder").decode()
        assert 'AG="${AUTOGRADER_ROOT:-/autograder}"' in runner
        assert '--submission "$AG/submission"' in runner and '--results "$AG/results/results.json"' in runner
        assert "requirements.txt" in archive.read("setup.sh").decode()


@pytest.mark.slow
def test_run_autograder_grades_a_submission_in_the_gradescope_layout(tmp_path):
    """Gradescope's layout, rebuilt under tmp_path: source/ (the unzipped package), submission/, venv/, results/."""
    root = tmp_path / "autograder"
    zip_path = tmp_path / "autograder.zip"
    run = subprocess.run([sys.executable, "-m", "grader.gradescope", str(zip_path), "--grader-args", "--dataset synthetic"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(root / "source")
    (root / "source" / "run_autograder").chmod(0o755)
    (root / "venv" / "bin").mkdir(parents=True)  # setup.sh's venv: this Python, which has the requirements
    (root / "venv" / "bin" / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (root / "venv" / "bin" / "python").chmod(0o755)
    shutil.copytree(reference_submission(), root / "submission", ignore=shutil.ignore_patterns("solution", ".git"))
    # The reference, plus an escape: every call of unstructured_prune writes a fake results.json straight into the
    # results folder and leaves a grandchild in its own session that rewrites it for 20 s after grading.
    pruning = root / "submission" / "hw2" / "pruning.py"
    pruning.write_text(pruning.read_text() + ESCAPING_FUNCTIONS)
    pid_dir = Path(tempfile.mkdtemp(prefix="hw2-escape-"))
    pid_dir.chmod(0o777)  # the escaper may run as the unprivileged sandbox user
    try:
        graded = subprocess.run(["bash", str(root / "source" / "run_autograder")], cwd=tmp_path, capture_output=True,
                                text=True, timeout=900, env=dict(os.environ, AUTOGRADER_ROOT=str(root),
                                                                 HW2_ESCAPE_PIDS=str(pid_dir)))
        assert graded.returncode == 0, graded.stdout[-3000:]
        escapers = [int(p.name) for p in pid_dir.iterdir()]
        time.sleep(2)  # an escaper that survived would rewrite results.json meanwhile
        results = json.loads((root / "results" / "results.json").read_text())
        assert_gradescope_schema(results)
        assert set(by_name(results)) == set(ALL_TESTS)
        assert results["score"] == pytest.approx(sum(t["max_score"] for t in results["tests"]))
        assert escapers, "the escape never ran: the test proves nothing"
        assert not [pid for pid in escapers if alive(pid)], "processes a student call started outlived the grading"
    finally:
        for pid in [int(p.name) for p in pid_dir.iterdir()]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(pid_dir, ignore_errors=True)


# Student-side code shared by the attacking submissions below: where the grader writes results.json.
RESULTS_PATHS = '''

def _results_owners():
    """(pid, --results path) of each of this process's ancestors that has one on its command line."""
    owners, pid = [], _os.getpid()
    for _ in range(8):
        try:
            pid = int(_Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            args = _Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\\0")
        except (OSError, ValueError, IndexError):
            break
        if b"--results" in args:
            owners.append((pid, args[args.index(b"--results") + 1].decode()))
    return owners


def _results_paths():
    """The --results paths on this process's ancestors' command lines."""
    return [path for _, path in _results_owners()]
'''


ESCAPING_FUNCTIONS = '''

# --- the reference, plus an escape from the sandbox on every call of unstructured_prune ---
import json as _json
import os as _os
import time as _time
from pathlib import Path as _Path

_reference_unstructured_prune = unstructured_prune
_FAKE = _json.dumps({"score": 12345, "output": "escaped", "tests": []})
''' + RESULTS_PATHS + '''

def _write_fake(paths):
    for path in paths:
        try:
            _Path(path).write_text(_FAKE)
        except OSError:
            pass


def unstructured_prune(tensor, sparsity):
    paths = _results_paths()
    _write_fake(paths)
    if _os.fork() == 0:
        _os.setsid()
        if _os.fork() == 0:
            try:
                _Path(_os.environ["HW2_ESCAPE_PIDS"], str(_os.getpid())).write_text("")
            except (OSError, KeyError):
                pass
            for _ in range(400):
                _write_fake(paths)
                _time.sleep(0.05)
        _os._exit(0)
    _os.wait()
    return _reference_unstructured_prune(tensor, sparsity)
'''


# ---------------------------------------------------------------------------------------------
# Full gradings
# ---------------------------------------------------------------------------------------------
def assert_gradescope_schema(results: dict) -> None:
    assert RESULT_KEYS <= set(results)
    assert isinstance(results["score"], (int, float)) and isinstance(results["execution_time"], (int, float))
    for test in results["tests"]:
        assert TEST_KEYS <= set(test), test
        assert test["status"] in ("passed", "failed") and test["visibility"] in GRADESCOPE_VISIBILITIES
        assert 0 <= test["score"] <= test["max_score"]
    assert results["score"] == pytest.approx(sum(t["score"] for t in results["tests"]))


@pytest.fixture(scope="module")
def hidden_failures_submission():
    """The reference with three hidden-test bugs and scattered zeros in a filter model (fails all hidden tests)."""
    chosen = [m for m in MUTANTS if m.name in ("unstructured_prunes_largest", "filter_l1_norm", "apply_batchnorm_unmasked",
                                               "filter_model_scattered_zeros")]
    return mutant_submission(*chosen, name="hidden_failures")


@pytest.fixture(scope="module")
def gradings(hidden_failures_submission) -> dict:
    """Full gradings, two at a time: the reference, the stubs, and a partly wrong submission twice."""
    jobs = {"reference": (reference_submission(), GRADE_ARGS),
            "stubs": (stub_submission(), [*GRADE_ARGS, "--artifacts", str(session_dir() / "no_outputs")]),
            "partial_1": (hidden_failures_submission, GRADE_ARGS),
            "partial_2": (hidden_failures_submission, GRADE_ARGS)}

    def grade(item):
        label, (submission, args) = item
        return label, grade_submission(submission, session_dir() / "gradings" / f"{label}.json", timeout=900,
                                       pytest_args=args, isolate=False)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(grade, jobs.items()))


@pytest.mark.slow
def test_reference_scores_full_marks(gradings):
    run = gradings["reference"]
    assert run.status == "graded", run.log_tail
    assert_gradescope_schema(run.results)
    tests = by_name(run.results)
    assert set(tests) == set(ALL_TESTS)
    not_full = {name: t["output"] for name, t in tests.items() if t["score"] != t["max_score"] or t["status"] != "passed"}
    assert not not_full
    assert run.results["score"] == 100


@pytest.mark.slow
def test_untouched_stubs_score_zero_on_every_code_test(gradings):
    run = gradings["stubs"]
    assert run.status == "graded", run.log_tail
    assert_gradescope_schema(run.results)
    tests = by_name(run.results)
    for name in graded_tests("test_functions"):
        assert tests[name]["score"] == 0 and tests[name]["status"] == "failed", name
        assert "NotImplementedError" in tests[name]["output"], name
    assert run.results["score"] == 0


@pytest.mark.slow
def test_grading_the_same_submission_twice_gives_the_same_scores(gradings):
    first, second = gradings["partial_1"].results, gradings["partial_2"].results
    assert 0 < first["score"] < 100
    assert [(t["name"], t["score"], t["status"]) for t in first["tests"]] == \
        [(t["name"], t["score"], t["status"]) for t in second["tests"]]


@pytest.mark.slow
def test_hidden_test_messages_leak_no_expected_values(gradings):
    tests = by_name(gradings["partial_1"].results)
    hidden = [t for t in tests.values() if t["visibility"] == "hidden"]
    assert hidden and all(t["status"] == "failed" and t["output"].strip() for t in hidden)
    for test in hidden:
        assert not re.search(r"\d\.\d", test["output"]), test  # no magnitudes, norms, counts-as-fractions
        assert "tensor(" not in test["output"] and "expected" not in test["output"].lower(), test


EVIL_FUNCTIONS = '''

# --- a submission that misbehaves in every way the grader must survive ---
import os as _os
import sys as _sys
import time as _time
from pathlib import Path as _Path
''' + RESULTS_PATHS + '''

def unstructured_prune(tensor, sparsity):
    while True:  # never returns
        _time.sleep(0.01)


def filter_prune(tensor, sparsity):
    _sys.exit(3)


def apply_pruning(model, sparsity_type, prune_ratio_dict):
    _os._exit(0)


def test_sparsity(model, sparsity_type="unstructured"):
    for _ in range(200):  # 200 MB of output
        print("x" * 1_000_000)
    return {}


def read_prune_ratios_from_yaml(file_name, model):
    import grader

    try:  # write over the grader (as root, student code runs unprivileged: refused, the folder is not even listable)
        for target in _Path(grader.__file__).parent.glob("*.py"):
            target.write_text("raise SystemExit('tampered')\\n")
    except OSError:
        pass
    for target in _results_paths():  # write over the results path, found on an ancestor's command line
        try:
            _Path(target).write_text("not json")
        except OSError:
            pass
    return {}


def masked_retrain(*args, **kwargs):
    import signal

    _os.kill(_os.getppid(), signal.SIGKILL)  # kill the process that started it (PermissionError when dropped to nobody)


def plot_mask(weight, out_path, title=""):
    raise RuntimeError("boom")


def prune_channels_after_filter_prune(model):
    hoard = []
    while True:  # 128 MB at a time, every byte touched, until the machine runs out
        hoard.append(b"x" * 2**27)
'''


def _grader_fingerprint() -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((REPO_ROOT / "grader").glob("*.py"))}


@pytest.mark.slow
def test_misbehaving_submission_gets_complete_results_with_reasons():
    submission = session_dir() / "evil"
    shutil.copytree(reference_submission() / "hw2", submission / "hw2")
    pruning = submission / "hw2" / "pruning.py"
    pruning.write_text(pruning.read_text() + EVIL_FUNCTIONS)
    before = _grader_fingerprint()
    results_path = session_dir() / "evil_results" / "results.json"
    run = grade_submission(submission, results_path, timeout=600, isolate=True,
                           pytest_args=[*GRADE_ARGS, "--time-limit", "10", "--memory-limit", "1", "--artifacts", str(session_dir() / "no_outputs")])
    assert run.status == "graded", run.log_tail
    assert _grader_fingerprint() == before, "the grader's own files must be untouched"
    results = json.loads(results_path.read_text())
    assert_gradescope_schema(results)
    tests = by_name(results)
    assert set(tests) == set(ALL_TESTS)
    expected_reasons = {
        "test_unstructured_prune_mask_shape_and_count": "time limit",
        "test_filter_prune_removes_whole_filters_in_right_number": "sys.exit",
        "test_apply_pruning_masks_each_layer_to_its_own_ratio": "exit code 0",
        "test_sparsity_report_counts_conv_and_linear_weights_only": "wrote more than",
        "test_masked_retrain_keeps_pruned_weights_zero_and_trains_the_rest": "killed" if not DROPS_PRIVILEGES else "PermissionError",
        "test_plot_mask_image_is_one_row_per_filter": "RuntimeError: boom",
        "test_prune_channels_gives_smaller_model_with_same_outputs": "MemoryError: (the grader lets each call allocate 1.0 GB",
        "test_read_prune_ratios_from_yaml_returns_mapping_and_rejects_bad_files": "returned normally",
    }
    for name, reason in expected_reasons.items():
        assert tests[name]["score"] == 0 and reason in tests[name]["output"], (name, tests[name]["output"])
        assert len(tests[name]["output"]) <= 3000
    assert all(t["output"].strip() for t in tests.values() if t["status"] == "failed")
    # functions the submission left as in the reference still earn their points
    assert tests["test_plot_sparsity_vs_accuracy_draws_one_point_per_model"]["score"] == 2


FORGING_FUNCTIONS = '''

# --- the reference, plus a forged results.json and the grading pytest killed before it can write its own ---
import os as _os
import signal as _signal
from pathlib import Path as _Path


def read_prune_ratios_from_yaml(file_name, model):
    for pid, path in _results_owners():
        try:
            _Path(path).write_text('{"score": 12345, "output": "forged", "tests": []}')
            _os.kill(pid, _signal.SIGKILL)
        except OSError:
            pass  # as root, student code runs unprivileged: neither is allowed
    return {}
''' + RESULTS_PATHS


@pytest.mark.slow
def test_a_submission_that_kills_the_grader_after_forging_results_gets_no_score(tmp_path):
    submission = tmp_path / "forger"
    shutil.copytree(reference_submission() / "hw2", submission / "hw2")
    pruning = submission / "hw2" / "pruning.py"
    pruning.write_text(pruning.read_text() + FORGING_FUNCTIONS)
    results_path = tmp_path / "results" / "results.json"
    run = grade_submission(submission, results_path, timeout=300, isolate=True,
                           pytest_args=[*GRADE_ARGS, "-k", "read_prune_ratios"])
    results = json.loads(results_path.read_text())
    assert results["score"] != 12345 and "forged" not in results["output"], results
    if not DROPS_PRIVILEGES:  # the kill went through: the run is reported as not graded, saying why
        assert run.status == "error" and "exit status -9" in results["output"], results["output"][:500]


@pytest.mark.slow
def test_batch_grades_every_submission_into_a_gradebook(tmp_path):
    submissions = tmp_path / "submissions"
    shutil.copytree(reference_submission() / "hw2", submissions / "alice" / "hw2")
    shutil.copytree(stub_submission() / "hw2", submissions / "bob" / "hw2")
    shutil.copytree(reference_submission() / "hw2", submissions / "carol" / "hw2")
    (submissions / "carol" / "hw2" / "pruning.py").write_text("def read_prune_ratios_from_yaml(:\n")  # a syntax error
    shutil.copytree(reference_submission() / "hw2", submissions / "david" / "hw2")
    run = subprocess.run([sys.executable, "-m", "grader.batch", str(submissions), "--jobs", "2", "--csv",
                          str(tmp_path / "grades.csv"), "--", *GRADE_ARGS, "-k", "read_prune_ratios or plot_sparsity"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    with open(tmp_path / "grades.csv") as f:
        rows = {row["submission"]: row for row in csv.DictReader(f)}
    assert set(rows) == {"alice", "bob", "carol", "david"}
    assert all(row["status"] == "graded" for row in rows.values())
    assert float(rows["alice"]["score"]) == 8 and float(rows["bob"]["score"]) == 0 and float(rows["carol"]["score"]) == 0
    carol = json.loads((tmp_path / "grades_results" / "carol.json").read_text())
    assert all("SyntaxError" in t["output"] for t in carol["tests"])
    with open(tmp_path / "similarity.csv") as f:  # alice and david hand in the same code; bob the stub
        pairs = {(row["submission_a"], row["submission_b"], row["what"]) for row in csv.DictReader(f)}
    assert ("alice", "david", "hw2/pruning.py") in pairs
    assert not [p for p in pairs if "bob" in p[:2]]


@pytest.mark.slow
def test_accuracy_check_is_skipped_not_passed_without_cifar10(tmp_path):
    submission = tmp_path / "submission"
    shutil.copytree(reference_submission() / "hw2", submission / "hw2")
    shutil.copytree(reference_submission() / "results", submission / "results", copy_function=os.link)
    log_path = submission / "results" / "run_log.json"
    log = json.loads(log_path.read_text())
    log["dataset"] = "cifar10"  # as a real submission's run log says
    log_path.unlink()
    log_path.write_text(json.dumps(log))
    (tmp_path / "empty").mkdir()
    run = grade_submission(submission, tmp_path / "results.json", isolate=False,
                           pytest_args=["--data-dir", str(tmp_path / "empty"), "-k", "accuracy_in_file_name"])
    test = by_name(run.results)["test_accuracy_in_file_name_is_measured"]
    assert test["score"] == 0 and test["status"] == "failed"
    assert test["output"].startswith("SKIPPED") and "CIFAR-10 test set is not available" in test["output"]
    assert "Not graded here" in run.results["output"]


@pytest.mark.slow
def test_submission_hanging_at_import_fails_every_code_test_once(tmp_path):
    submission = tmp_path / "submission"
    shutil.copytree(reference_submission() / "hw2", submission / "hw2")
    with open(submission / "hw2" / "pruning.py", "a") as f:
        f.write("\nimport time\nwhile True:  # left over from debugging\n    time.sleep(0.1)\n")
    run = grade_submission(submission, tmp_path / "results.json", isolate=False, timeout=300,
                           pytest_args=[*GRADE_ARGS, "--time-limit", "5", "-k", "read_prune_ratios or plot_sparsity"])
    assert run.status == "graded" and run.seconds < 120, run.log_tail
    assert len(run.results["tests"]) == 2
    for test in run.results["tests"]:
        assert test["score"] == 0 and "importing hw2/pruning.py did not finish within the time limit" in test["output"]
