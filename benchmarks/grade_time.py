"""Time to grade one submission, as the CI machine (2 CPUs, no GPU) or Gradescope would.

    python benchmarks/grade_time.py              # the exported reference on synthetic data, graded 3 times
    python benchmarks/grade_time.py --repeat 1
    python benchmarks/grade_time.py --batch 10 --jobs 2 --json results_logs/grade_batch.json
                                                 # 10 copies through grader.batch: throughput and peak memory
    python benchmarks/grade_time.py --data-dir data --repeat 1
                                                 # with CIFAR-10: the four accuracies re-measured, as in real grading

Exports the reference (``grader.solution``), makes its run outputs with the
fast smoke settings (not timed), then times complete ``pytest grader/`` runs in
a child process (``grader.batch.grade_submission``) and prints the seconds per
grading.  The budget is under 3 minutes per submission.
"""
from __future__ import annotations

import argparse
import csv
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
from hw2.train import device_description  # noqa: E402

BUDGET_SECONDS = 180


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="gradings to time (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=0, metavar="N",
                        help="instead: grade N copies with python -m grader.batch and report throughput and peak memory")
    parser.add_argument("--jobs", type=int, default=2, help="with --batch: submissions graded at once (default: %(default)s)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="folder holding cifar-10-batches-py/: grade as for real, the four accuracies re-measured on "
                             "CIFAR-10 (the smoke run's models are renamed after their CIFAR-10 accuracy first, not timed)")
    args = parser.parse_args(argv)
    if args.data_dir is not None and not (args.data_dir / "cifar-10-batches-py" / "test_batch").is_file():
        parser.error(f"--data-dir {args.data_dir} has no cifar-10-batches-py/test_batch")
    if args.batch < 0 or args.repeat < 1 or args.jobs < 1:
        parser.error("--batch must be >= 0, --repeat and --jobs >= 1")
    print(f"machine: {device_description('cpu')}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="hw2-grade-time-") as tmp:
        submission = export(Path(tmp) / "reference")
        start = time.perf_counter()
        subprocess.run([sys.executable, "hw2/main.py", "--method", "all", "--dataset", "synthetic", "--out",
                        str(submission / "results"), "--epochs", "0", "--dense-epochs", "1", "--no-progress"],
                       cwd=submission, check=True, capture_output=True)
        print(f"reference run outputs made in {time.perf_counter() - start:.1f} s (not part of grading)")
        grading_args = ["--dataset", "synthetic"]
        if args.data_dir is not None:
            start = time.perf_counter()
            as_cifar10_run(submission / "results", args.data_dir)
            grading_args = ["--data-dir", str(args.data_dir.resolve())]
            print(f"models renamed after their CIFAR-10 accuracy in {time.perf_counter() - start:.1f} s (not part of grading)")
        if args.batch:
            return batch(submission, Path(tmp), args.batch, args.jobs, args.json, grading_args)
        seconds = []
        for i in range(args.repeat):
            run = grade_submission(submission, Path(tmp) / f"results_{i}.json", pytest_args=grading_args)
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


def as_cifar10_run(results: Path, data_dir: Path) -> None:
    """Make the smoke run's outputs look like a CIFAR-10 run: each model named after its float32 CIFAR-10 test
    accuracy, the run log saying cifar10 (the models are the pretrained VGG13 pruned: real size, real cost)."""
    import torch

    from hw2.checkpoint import load_checkpoint, save_checkpoint, write_json
    from hw2.data import load_dataset, make_loaders
    from hw2.main import model_file_name
    from hw2.models import VGG13
    from hw2.train import default_batch_size, evaluate

    data = load_dataset("cifar10", data_dir, seed=0, download=False)
    batch_size = default_batch_size("cifar10")
    _, test_loader = make_loaders(data, batch_size, torch.device("cpu"), seed=0)
    log = json.loads((results / "run_log.json").read_text())
    for entry in log["models"].values():
        path = results / entry["file"]
        state_dict, metadata = load_checkpoint(path)
        entry["accuracy"] = evaluate(VGG13.from_state_dict(state_dict), test_loader, torch.device("cpu"), exact=True)
        entry["dataset"] = "cifar10"
        entry["file"] = model_file_name(entry["method"], entry["type"], entry["sparsity"], entry["accuracy"])
        # the file's own metadata says what the log says, as main.py writes them (the grader compares the two)
        save_checkpoint(results / entry["file"], state_dict,
                        {**metadata, **{k: entry[k] for k in ("accuracy", "dataset", "file") if k in metadata}})
        path.unlink()
    log.update(dataset="cifar10", batch_size=batch_size)
    write_json(results / "run_log.json", log)


def scores(gradebook: Path) -> list[float]:
    """The distinct scores in a gradebook (one, for copies of one submission)."""
    with open(gradebook, newline="") as f:
        return sorted({float(row["score"]) for row in csv.DictReader(f)})


def batch(submission: Path, tmp: Path, count: int, jobs: int, json_path: Path | None,
          grading_args: list[str]) -> int:
    """Grade ``count`` copies of ``submission`` with grader.batch; print seconds, throughput and peak memory."""
    import torch

    folder = tmp / "class"
    for i in range(count):
        shutil.copytree(submission, folder / f"student_{i:02d}", copy_function=os.link,
                        ignore=shutil.ignore_patterns(".git", "solution", "data"))
    command = [sys.executable, "-m", "grader.batch", str(folder), "--jobs", str(jobs), "--csv", str(tmp / "grades.csv"),
               "--", *grading_args]
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
    real = "--data-dir" in grading_args
    figures = {"command": f"python benchmarks/grade_time.py --batch {count} --jobs {jobs}" + (" --data-dir DIR" if real else ""),
               "data": ("CIFAR-10 (the four accuracies re-measured in float32 per submission)" if real
                        else "synthetic (smoke-test gradings: no CIFAR-10 accuracy re-measurement)"),
               "scores": scores(tmp / "grades.csv"),
               "machine": device_description("cpu"), "torch": torch.__version__,
               "submissions": count, "jobs": jobs, "cpus": os.cpu_count(), "seconds": round(seconds, 1),
               "submissions_per_hour": round(3600 * count / seconds, 1),
               "peak_memory_mb": round(peak / 2**20), "peak_memory_sampled_every_s": 0.5}
    print(json.dumps(figures, indent=2))
    if json_path is not None:
        json_path.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
