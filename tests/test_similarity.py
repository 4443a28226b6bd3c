"""similarity.csv: pairs that share code (also renamed and re-commented), ratios or masks are listed;
independent solutions, untouched stubs and untouched templates are not."""
from __future__ import annotations

import csv
import io
import re
import shutil
import tokenize
from pathlib import Path

import torch

from grader.similarity import find_similar, main, normalised_tokens, student_tokens
from hw2.checkpoint import save_checkpoint
from tests.mutants import REPO_ROOT

REFERENCE = REPO_ROOT / "solution" / "hw2" / "pruning.py"
INDEPENDENT = REPO_ROOT / "tests" / "independent" / "plain_kthvalue.py"
STUB = REPO_ROOT / "hw2" / "pruning.py"
RATIOS = "prune_ratios:\n  features.0.weight: 0.55\n  features.3.weight: 0.85\n  classifier.weight: 0.9\n"


def disguised(source: str) -> str:
    """The same code with comments dropped, docstrings rewritten, local names changed and the layout redone:
    what a copier does."""
    source = re.sub(r'"""[\s\S]*?"""', '"""Mine."""', source)
    renamed = {"mask": "keep_map", "threshold": "cut", "ratios": "table", "weight": "w"}
    tokens, previous = [], ""
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            continue
        text = renamed.get(token.string, token.string) if token.type == tokenize.NAME and previous != "." else token.string
        tokens.append((token.type, text))
        previous = token.string
    return tokenize.untokenize(tokens)


def submission(root: Path, name: str, pruning: str, ratios: str | None = None, zeros: int | None = None) -> Path:
    folder = root / name
    (folder / "hw2").mkdir(parents=True)
    (folder / "hw2" / "pruning.py").write_text(pruning)
    shutil.copytree(REPO_ROOT / "configs", folder / "configs")
    if ratios is not None:
        (folder / "configs" / "unstructured_0.80.yaml").write_text(ratios)
    if zeros is not None:
        weight = torch.arange(1.0, 17.0).view(4, 4)
        weight.view(-1)[:zeros] = 0
        save_checkpoint(folder / "results" / "Omp_unstructured_0.80_acc_90.00.pt", {"features.0.weight": weight}, {})
    return folder


def test_normalising_ignores_comments_docstrings_and_local_names():
    reference = REFERENCE.read_text()
    keep = frozenset({"unstructured_prune", "torch"})
    assert normalised_tokens(reference, keep) == normalised_tokens(disguised(reference), keep)
    assert normalised_tokens("x = 1  # note\n", keep) == normalised_tokens("y = 1\n", keep)
    assert normalised_tokens("x = 1\n", keep) != normalised_tokens("x = 2\n", keep)


def test_an_untouched_stub_has_nothing_written():
    assert student_tokens(STUB.read_text(), STUB.read_text()) == []
    assert len(student_tokens(REFERENCE.read_text(), STUB.read_text())) > 200


def test_copies_are_listed_and_independent_work_is_not(tmp_path):
    root = tmp_path / "class"
    reference = REFERENCE.read_text()
    submission(root, "alice", reference, RATIOS, zeros=8)
    submission(root, "bob", disguised(reference), RATIOS)
    submission(root, "carol", INDEPENDENT.read_text(), zeros=8)
    submission(root, "dave", STUB.read_text())
    submission(root, "erin", STUB.read_text())
    rows = find_similar(sorted(root.iterdir()))
    pairs = {(r["submission_a"], r["submission_b"], r["what"]) for r in rows}
    assert ("alice", "bob", "hw2/pruning.py") in pairs
    assert ("alice", "bob", "configs/unstructured_0.80.yaml") in pairs
    assert ("alice", "carol", "Omp_unstructured mask") in pairs
    assert not [p for p in pairs if p[2] == "hw2/pruning.py" and {"carol", "dave", "erin"} & set(p[:2])], pairs
    assert not [p for p in pairs if p[2].startswith("configs/filter")], "untouched templates are not a match"
    assert all(0.9 <= r["similarity"] <= 1.0 for r in rows)


def test_command_writes_a_csv_with_a_header_even_when_nothing_matches(tmp_path):
    root = tmp_path / "class"
    submission(root, "alice", REFERENCE.read_text())
    submission(root, "carol", INDEPENDENT.read_text())
    out = tmp_path / "similarity.csv"
    assert main([str(root), "--csv", str(out)]) == 0
    with open(out, newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["submission_a", "submission_b", "what", "similarity", "detail"]
        assert list(reader) == []
