"""Time to grade one submission, as the CI machine (2 CPUs, no GPU) or Gradescope would.

    python benchmarks/grade_time.py              # the exported reference on synthetic data, graded 3 times
    python benchmarks/grade_time.py --repeat 1
    python benchmarks/grade_time.py --batch 10 --jobs 2 --json results_logs/grade_batch.json
                                                 # 10 copies through grader.batch: throughput and peak memory

Exports the reference (``grader.solution``), makes its run outputs with the
fast smoke settings (not timed), then times complete ``pytest grader/`` runs in
a child process (``grader.batch.grade_submission``) and prints the seconds per
grading.  The budget is under 3 minutes per submission.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
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
    parser.add_argument("--batch", type=int, default=0, metavar="N",
                        help="instead: grade N copies with python -m grader.batch and report throughput and peak memory")
    parser.add_argument("--jobs", type=int, default=2, help="with --batch: submissions graded at once (default: %(default)s)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.batch < 0 or args.repeat < 1 or args.jobs < 1:
        parser.error("--batch must be >= 0, --repeat and --jobs >= 1")
    with tempfile.TemporaryDirectory(prefix="hw2-grade-time-") as tmp:
        submission = export(Path(tmp) / "reference")
        start = time.perf_counter()
        subprocess.run([sys.executable, "hw2/main.py", "--method", "all", "--dataset", "synthetic", "--out",
                        str(submission / "results"), "--epochs", "0", "--dense-epochs", "1", "--no-progress"],
                       cwd=submission, check=True, capture_output=True)
        print(f"reference run outputs made in {time.perf_counter() - start:.1f} s (not part of grading)")
        if args.batch:
            return batch(submission, Path(tmp), args.batch, args.jobs, args.json)
        seconds = []
        for i in range(args.repeat):
            run = grade_submission(submission, Path(tmp) / f"results_{i}.json", pytest_args=["--dataset", "synthetic"])
            seconds.append(run.seconds)
            print(f"grading {i + 1}: {run.seconds:.1f} s, score {run.score:g}, status {run.status}")
    print(f"grade one submission: median {statistics.median(seconds):.1f} s over {len(seconds)} run(s) "
          f"(budget {BUDGET_SECONDS} s)")
    return 0 if statistics.median(seconds) < BUDGET_SECONDS else 1


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants (Linux ``/proc``; 0 elsewhere)."""
    from grader.sandbox import child_pids

    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
        todo.extend(child_pids(current))
    return total


def batch(submission: Path, tmp: Path, count: int, jobs: int, json_path: Path | None) -> int:
    """Grade ``count`` copies of ``submission`` with grader.batch; print seconds, throughput and peak memory."""
    folder = tmp / "class"
    for i in range(count):
        shutil.copytree(submission, folder / f"student_{i:02d}", copy_function=os.link,
                        ignore=shutil.ignore_patterns(".git", "solution", "data"))
    command = [sys.executable, "-m", "grader.batch", str(folder), "--jobs", str(jobs), "--csv", str(tmp / "grades.csv"),
               "--", "--dataset", "synthetic"]
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0

    def sample():
        nonlocal peak
        while process.poll() is None:
            peak = max(peak, tree_rss_bytes(process.pid))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = process.communicate()[0]
    sampler.join()
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        print(output[-3000:])
        return 1
    figures = {"command": "python benchmarks/grade_time.py --batch " + f"{count} --jobs {jobs}",
               "data": "synthetic (smoke-test gradings: no CIFAR-10 accuracy re-measurement)",
               "submissions": count, "jobs": jobs, "cpus": os.cpu_count(), "seconds": round(seconds, 1),
               "submissions_per_hour": round(3600 * count / seconds, 1),
               "peak_memory_mb": round(peak / 2**20), "peak_memory_sampled_every_s": 0.5}
    print(json.dumps(figures, indent=2))
    if json_path is not None:
        json_path.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
