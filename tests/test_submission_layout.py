"""Submissions as students zip them: the repository at the top, or inside one folder; anything else is
graded 0 with one visible test in results.json that says what was expected and what was found."""
from __future__ import annotations

import csv
import shutil
import subprocess
import sys

import pytest

from grader.batch import grade_submission
from grader.conftest import locate_submission
from tests.mutants import GRADE_ARGS, REPO_ROOT, reference_submission

SMALL = [*GRADE_ARGS, "-k", "read_prune_ratios or plot_sparsity"]  # two quick tests, 8 points for the reference


def test_repository_at_the_top_or_nested_once_is_found(tmp_path):
    (tmp_path / "top" / "hw2").mkdir(parents=True)
    assert locate_submission(tmp_path / "top") == (tmp_path / "top").resolve()
    (tmp_path / "zip" / "hw2-student" / "hw2").mkdir(parents=True)
    (tmp_path / "zip" / "__MACOSX" / "hw2").mkdir(parents=True)  # what macOS adds to a zip
    assert locate_submission(tmp_path / "zip") == (tmp_path / "zip" / "hw2-student").resolve()


@pytest.mark.parametrize("folders, needle", [(["code/src"], "found: code/"),
                                             (["a/hw2", "b/hw2"], "found 2: a/hw2/, b/hw2/"),
                                             (["x/y/hw2"], "found: x/")])
def test_other_layouts_say_what_was_expected_and_found(tmp_path, folders, needle):
    for folder in folders:
        (tmp_path / "submission" / folder).mkdir(parents=True)
    with pytest.raises(ValueError, match="expected") as error:
        locate_submission(tmp_path / "submission")
    assert needle in str(error.value)


def test_nested_submission_grades_like_a_flat_one_in_batch(tmp_path):
    submissions = tmp_path / "submissions"
    shutil.copytree(reference_submission() / "hw2", submissions / "flat" / "hw2")
    shutil.copytree(reference_submission() / "hw2", submissions / "nested" / "hw2-main" / "hw2")
    (submissions / "lost" / "my_code").mkdir(parents=True)
    run = subprocess.run([sys.executable, "-m", "grader.batch", str(submissions), "--jobs", "1", "--csv",
                          str(tmp_path / "grades.csv"), "--", *SMALL], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr
    with open(tmp_path / "grades.csv") as f:
        rows = {row["submission"]: row for row in csv.DictReader(f)}
    assert float(rows["flat"]["score"]) == float(rows["nested"]["score"]) == 8
    assert float(rows["lost"]["score"]) == 0 and rows["lost"]["status"] == "graded"


def test_unfound_repository_gets_one_visible_failed_test_in_results_json(tmp_path):
    (tmp_path / "submission" / "my_code").mkdir(parents=True)
    run = grade_submission(tmp_path / "submission", tmp_path / "results.json", isolate=False, pytest_args=SMALL)
    [test] = run.results["tests"]
    assert test["visibility"] == "visible" and test["status"] == "failed" and test["score"] == 0
    assert test["max_score"] == 8 and "found: my_code/" in test["output"] and "hw2/" in test["output"]
    assert run.results["score"] == 0 and "Not graded" in run.results["output"]
