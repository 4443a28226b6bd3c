"""Model files in the compact format grade exactly like the same models saved plain, as older runs saved them.

The reference run (``main.py --method all`` on synthetic data) writes its four pruned models
through ``hw2.checkpoint.save_checkpoint``; the grader's artifact checks (naming, loading,
sparsity, whole filters, re-measured accuracy) run once on those files and once on plain copies.
"""
from __future__ import annotations

import shutil

import pytest
import torch

from grader.batch import grade_submission
from hw2.checkpoint import COMPACT_FORMAT, load_checkpoint, save_checkpoint
from tests.mutants import GRADE_ARGS, reference_submission
from tests.test_grader import graded_tests


@pytest.mark.slow
def test_artifact_checks_score_compact_and_plain_model_files_alike(tmp_path):
    submission = reference_submission()
    compact = submission / "results"
    models = sorted(compact.glob("*.pt"))
    assert len(models) == 4 and all(torch.load(p, weights_only=True).get("format") == COMPACT_FORMAT for p in models)
    plain = tmp_path / "plain_results"
    shutil.copytree(compact, plain)
    for path in plain.glob("*.pt"):
        state_dict, metadata = load_checkpoint(path)
        save_checkpoint(path, state_dict, metadata, compact=False)
    assert sum(p.stat().st_size for p in compact.glob("*.pt")) < 0.6 * sum(p.stat().st_size for p in plain.glob("*.pt"))

    verdicts = {}
    for label, artifacts in (("compact", compact), ("plain", plain)):
        run = grade_submission(submission, tmp_path / f"{label}.json", timeout=900, isolate=False,
                               pytest_args=[*GRADE_ARGS, "--artifacts", str(artifacts), "-k", "test_artifacts"])
        assert run.status == "graded", run.log_tail
        verdicts[label] = {t["name"]: (t["score"], t["max_score"], t["status"]) for t in run.results["tests"]}
    assert set(verdicts["compact"]) == set(graded_tests("test_artifacts"))
    assert verdicts["compact"] == verdicts["plain"]
    assert all(score == max_score and status == "passed" for score, max_score, status in verdicts["compact"].values())
