"""The gradebook (grader.batch): one row per submission, and the answers shown as words, since they are graded by hand."""
from __future__ import annotations

import csv
import re

import pytest

from grader.batch import ANSWERS_COLUMN, ANSWERS_TEST, GradeRun, answers_summary, write_gradebook
from grader.solution import REPO_ROOT

TEMPLATE = (REPO_ROOT / "hw2" / "answers.md").read_text()


def submission_with_answers(folder, text: str | None):
    (folder / "hw2").mkdir(parents=True)
    if text is not None:
        (folder / "hw2" / "answers.md").write_text(text)
    return folder


def test_answers_test_name_is_the_graders():
    assert f"def {ANSWERS_TEST}(" in (REPO_ROOT / "grader" / "test_answers.py").read_text()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnknownMarkWarning")  # grader.test_answers's points mark
def test_answers_summary_counts_words_and_names_the_empty_questions(tmp_path):
    answered = re.sub(r"^TODO$", "Five words in this answer.", TEMPLATE, flags=re.MULTILINE)
    partly = re.sub(r"^TODO$", "Two words.", TEMPLATE, count=2, flags=re.MULTILINE)
    assert answers_summary(submission_with_answers(tmp_path / "all", answered)) == "answered (20 words)"
    assert answers_summary(submission_with_answers(tmp_path / "half", partly)) == "answered (4 words; Q3, Q4 empty)"
    assert answers_summary(submission_with_answers(tmp_path / "template", TEMPLATE)) == "empty"
    assert answers_summary(submission_with_answers(tmp_path / "missing", None)) == "empty"
    assert answers_summary(tmp_path / "no-repository") == "empty"
    nested = tmp_path / "zipped"  # a repository inside one folder, as "Download ZIP" makes it
    submission_with_answers(nested / "hw2-main", answered)
    assert answers_summary(nested) == "answered (20 words)"


def test_gradebook_shows_answers_as_words_not_as_a_zero_score(tmp_path):
    tests = [{"name": "test_figures_are_valid_pngs", "score": 4, "max_score": 4},
             {"name": ANSWERS_TEST, "score": 0.0, "max_score": 0}]
    runs = [GradeRun("alice", "graded", {"score": 4, "tests": tests}, 12.3, answers="answered (310 words)"),
            GradeRun("bob", "graded", {"score": 4, "tests": tests}, 11.0, answers="empty"),
            GradeRun("carol", "timeout", {"score": 0, "tests": []}, 1200.0)]
    write_gradebook(runs, tmp_path / "grades.csv")
    with open(tmp_path / "grades.csv") as f:
        rows = list(csv.DictReader(f))
    assert ANSWERS_TEST not in rows[0] and list(rows[0])[-1] == ANSWERS_COLUMN
    assert [row[ANSWERS_COLUMN] for row in rows] == ["answered (310 words)", "empty", "empty"]
    assert [row["test_figures_are_valid_pngs"] for row in rows] == ["4", "4", ""]
