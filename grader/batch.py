"""Grade a folder of submissions in parallel into a gradebook.

    python -m grader.batch SUBMISSIONS_DIR --jobs 4 --csv grades.csv

Each sub-folder of SUBMISSIONS_DIR is one submission (a copy of the student's
repository: ``hw2/`` and ``results/``).  Each is graded by its own
``pytest grader/`` process, with its own fresh copy of the grader (so a
submission that writes over grader files spoils nothing but its own run) and
its own time limit.  A submission that crashes or hangs the grader gets a row
saying so; the batch goes on.  Per-submission results.json files go to --out;
pairs of submissions that share code, ratios or masks go to ``similarity.csv``
beside the gradebook, for the staff (see ``grader/similarity.py``).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from grader.similarity import find_similar, write_similarity

GRADER_ROOT = Path(__file__).resolve().parent.parent
BUNDLE_FILES = ("pytest.ini", "requirements.txt")  # beside grader/ and hw2/ in a grader bundle
PRETRAINED = Path("pretrained") / "vgg13_cifar10.pt"  # the dense model, in the bundle too
LOG_TAIL_CHARS = 2000
FINISHED = (0, 1, 4)  # pytest exit statuses after which results.json is the grader's (see grade_submission)
ANSWERS_TEST = "test_answers_present_for_manual_grading"  # 0 points: the answers are graded by hand
ANSWERS_COLUMN = "answers"  # the gradebook shows "answered (N words)" or "empty" instead


@dataclass
class GradeRun:
    submission: str
    status: str  # "graded", "timeout", "error"
    results: dict | None
    seconds: float
    log_tail: str = ""
    answers: str = "empty"  # answers_summary of the submission

    @property
    def score(self) -> float:
        return float(self.results.get("score", 0.0)) if self.results else 0.0


def write_bundle(dest: Path, root: Path = GRADER_ROOT) -> Path:
    """Copy what grading needs (grader/, the provided hw2/ files, pytest.ini, requirements.txt, the pretrained model)
    into ``dest``."""
    dest = Path(dest)
    for folder in ("grader", "hw2"):
        (dest / folder).mkdir(parents=True, exist_ok=True)
        for source in sorted((root / folder).iterdir()):
            if source.is_file() and source.suffix in (".py", ".md"):
                shutil.copy2(source, dest / folder / source.name)
    for name in BUNDLE_FILES:
        if (root / name).is_file():
            shutil.copy2(root / name, dest / name)
    pretrained = root / PRETRAINED
    if pretrained.is_file():  # the masks of the handed-in models are recomputed from it (a link: it is 38 MB)
        (dest / PRETRAINED).parent.mkdir(parents=True, exist_ok=True)
        (dest / PRETRAINED).unlink(missing_ok=True)
        (dest / PRETRAINED).symlink_to(pretrained.resolve())
    return dest


def grade_submission(submission: Path, results_path: Path, *, timeout: float = 1200, pytest_args: list[str] = (),
                     isolate: bool = True, root: Path = GRADER_ROOT) -> GradeRun:
    """Grade one submission in a child pytest process; never raises for anything the submission does."""
    submission, results_path = Path(submission).resolve(), Path(results_path).resolve()
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.unlink(missing_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hw2-batch-") as tmp:
        grader_root = write_bundle(Path(tmp) / "bundle", root) if isolate else root
        log_path = Path(tmp) / "pytest.log"
        data = [] if any(a == "--data-dir" or a.startswith("--data-dir=") for a in pytest_args) or \
            not (root / "data" / "cifar-10-batches-py").is_dir() else ["--data-dir", str(root / "data")]  # the bundle has none
        command = [sys.executable, "-m", "pytest", str(grader_root / "grader"), "-p", "no:cacheprovider", "-q",
                   "--submission", str(submission), "--results", str(results_path),
                   "--basetemp", str(Path(tmp) / "basetemp"), *data, *pytest_args]
        with open(log_path, "wb") as log:
            process = subprocess.Popen(command, cwd=grader_root, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                code = process.wait(timeout=timeout)
                # 0 / 1: every test ran (some failed); 4: the submission's layout was refused before any of its code
                # ran. Anything else (killed by a signal, interrupted) means pytest never finished its own
                # results.json, so whatever file is there is not the grader's: discard it.
                status = "graded" if code in FINISHED else "error"
            except subprocess.TimeoutExpired:
                code, status = None, "timeout"
            finally:
                try:
                    os.killpg(process.pid, signal.SIGKILL)  # the pytest process and anything it left behind
                except ProcessLookupError:
                    pass
                process.wait()
        tail = log_path.read_bytes()[-LOG_TAIL_CHARS:].decode("utf-8", "replace")
    results = None
    if status == "graded":
        try:
            results = json.loads(results_path.read_text())
        except (OSError, ValueError):
            status = "error"
    if results is None:
        reason = (f"grading took longer than {timeout:.0f} s and was stopped" if status == "timeout"
                  else f"the grader stopped before finishing its results (pytest exit status {code}; see the log "
                       "tail)" if code not in FINISHED else "the grader stopped before writing results (see the log tail)")
        results = {"score": 0.0, "output": f"Not graded: {reason}.\n{tail}", "tests": []}
        results_path.write_text(json.dumps(results, indent=2))
    return GradeRun(submission.name, status, results, time.perf_counter() - start, tail, answers_summary(submission))


def answers_summary(submission: Path) -> str:
    """``answered (N words)`` (N: the words of the answers in ``hw2/answers.md``, with the questions left
    unanswered named), or ``empty``.  The answers are graded by hand, so their test's 0 points say nothing."""
    from grader.conftest import locate_submission  # here: it imports the grading harness
    from grader.test_answers import QUESTIONS, answer_sections

    try:
        text = (locate_submission(submission) / "hw2" / "answers.md").read_text(errors="replace")
    except (OSError, ValueError):
        return "empty"
    sections = answer_sections(text)
    answers = {q: sections.get(q, "") for q in QUESTIONS}
    answered = {q: a for q, a in answers.items() if a and a.upper() != "TODO"}
    if not answered:
        return "empty"
    words = sum(len(a.split()) for a in answered.values())
    missing = [q for q in QUESTIONS if q not in answered]
    return f"answered ({words} words" + (f"; {', '.join(missing)} empty)" if missing else ")")


def write_gradebook(runs: list[GradeRun], path: Path) -> None:
    """One row per submission: total, status, one column per test (its score) and the answers column
    (``answers_summary``, in place of the answers test's 0 points)."""
    tests: list[str] = []
    for run in runs:
        for test in run.results.get("tests", []):
            if test["name"] not in tests and test["name"] != ANSWERS_TEST:
                tests.append(test["name"])
    maximum = max((sum(t.get("max_score", 0) for t in run.results.get("tests", [])) for run in runs), default=0)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["submission", "score", "max_score", "status", "seconds", *tests, ANSWERS_COLUMN])
        for run in runs:
            scores = {t["name"]: t.get("score", 0) for t in run.results.get("tests", [])}
            writer.writerow([run.submission, run.score, maximum, run.status, round(run.seconds, 1),
                             *[scores.get(name, "") for name in tests], run.answers])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader.batch", description=__doc__.split("\n\n")[0],
                                     epilog="arguments after -- go to pytest, e.g. -- --dataset synthetic")
    parser.add_argument("submissions", type=Path, help="folder with one sub-folder per submission")
    parser.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                        help="submissions graded at once (default: %(default)s)")
    parser.add_argument("--csv", type=Path, default=Path("grades.csv"), help="gradebook to write (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for each submission's results.json (default: beside the CSV, grades_results/)")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per submission (default: %(default)s)")
    argv = list(sys.argv[1:] if argv is None else argv)
    pytest_args = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    if not args.submissions.is_dir():
        parser.error(f"{args.submissions} is not a folder")
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    submissions = sorted(p for p in args.submissions.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not submissions:
        parser.error(f"{args.submissions} has no sub-folders (one per submission)")
    out = args.out or args.csv.parent / f"{args.csv.stem}_results"

    def grade(path: Path) -> GradeRun:
        run = grade_submission(path, out / f"{path.name}.json", timeout=args.timeout, pytest_args=pytest_args)
        print(f"{run.submission:<32} {run.score:>7g}  {run.status:<8} {run.seconds:6.1f} s", flush=True)
        return run

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        runs = list(pool.map(grade, submissions))
    write_gradebook(runs, args.csv)
    similarity = args.csv.with_name("similarity.csv")
    pairs = find_similar(submissions)
    write_similarity(pairs, similarity)
    print(f"graded {len(runs)} submissions ({sum(r.status != 'graded' for r in runs)} not graded); "
          f"gradebook {args.csv}, results in {out}/; {len(pairs)} similar pairs for the staff in {similarity}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
