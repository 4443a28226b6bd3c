"""The written answers (hw2/answers.md): checked for presence here, graded by hand."""
from __future__ import annotations

import re

import pytest

QUESTIONS = ("Q1", "Q2", "Q3", "Q4")


def answer_sections(text: str) -> dict[str, str]:
    """``Q1`` ... -> the text under its ``## Qn`` heading (up to the next heading)."""
    parts = re.split(r"^##\s+(Q\d+)\b.*$", text, flags=re.MULTILINE)
    return {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}


@pytest.mark.points(0)
def test_answers_present_for_manual_grading(submission, credit):
    path = submission / "hw2" / "answers.md"
    try:
        text = path.read_text(errors="replace")
    except OSError:
        credit.fail("hw2/answers.md is missing; answer the four questions there (graded by hand)")
    sections = answer_sections(text)
    credit.note("Answers for manual grading:\n" + "\n\n".join(f"{q}: {sections.get(q, '(missing)')}" for q in QUESTIONS))
    for question in QUESTIONS:
        answer = sections.get(question, "")
        credit.check(answer and answer.upper() != "TODO" and len(answer.split()) >= 5,
                     f"{question}: no answer yet under '## {question}' in hw2/answers.md")
    credit.verify()
