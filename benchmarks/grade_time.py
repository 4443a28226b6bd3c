"""Time to grade one submission, as the CI machine (2 CPUs, no GPU) or Gradescope would.

    python benchmarks/grade_time.py              # the exported reference on synthetic data, graded 3 times
    python benchmarks/grade_time.py --repeat 1

Exports the reference (``grader.solution``), makes its run outputs with the
fast smoke settings (not timed), then times complete ``pytest grader/`` runs in
a child process (``grader.batch.grade_submission``) and prints the seconds per
grading.  The budget is under 3 minutes per submission.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from grader.batch import grade_submission  # noqa: E402
from grader.solution import export  # noqa: E402

BUDGET_SECONDS = 180


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="gradings to time (default: %(default)s)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hw2-grade-time-") as tmp:
        submission = export(Path(tmp) / "reference")
        start = time.perf_counter()
        subprocess.run([sys.executable, "hw2/main.py", "--method", "all", "--dataset", "synthetic", "--out",
                        str(submission / "results"), "--epochs", "0", "--dense-epochs", "1", "--no-progress"],
                       cwd=submission, check=True, capture_output=True)
        print(f"reference run outputs made in {time.perf_counter() - start:.1f} s (not part of grading)")
        seconds = []
        for i in range(args.repeat):
            run = grade_submission(submission, Path(tmp) / f"results_{i}.json", pytest_args=["--dataset", "synthetic"])
            seconds.append(run.seconds)
            print(f"grading {i + 1}: {run.seconds:.1f} s, score {run.score:g}, status {run.status}")
    print(f"grade one submission: median {statistics.median(seconds):.1f} s over {len(seconds)} run(s) "
          f"(budget {BUDGET_SECONDS} s)")
    return 0 if statistics.median(seconds) < BUDGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
