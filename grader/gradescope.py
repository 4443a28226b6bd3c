"""Build the Gradescope autograder package.

    python -m grader.gradescope hw2_autograder.zip

The zip holds ``setup.sh`` (installs the requirements into a venv and fetches
the CIFAR-10 test set, so accuracies are re-measured rather than skipped),
``run_autograder`` (grades ``/autograder/submission`` and writes
``/autograder/results/results.json``) and the grader bundle: ``grader/``, the
provided ``hw2/`` files, ``pytest.ini``, ``requirements.txt`` and
``pretrained/vgg13_cifar10.pt`` (the masks of the handed-in models are recomputed from it).  Gradescope
runs every submission in its own container; that is how grading scales to a class.
Students submit their repository including ``results/`` (the output of
``python hw2/main.py --method all``).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import zipfile
from pathlib import Path

from grader.batch import GRADER_ROOT, write_bundle

SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once when the autograder image is built.
set -euo pipefail
apt-get update -qq
apt-get install -y -qq python3 python3-pip python3-venv > /dev/null
python3 -m venv /autograder/venv
/autograder/venv/bin/pip install --quiet --upgrade pip
# The CPU build of torch is enough for grading (tiny models; one evaluation pass per submitted model).
/autograder/venv/bin/pip install --quiet --extra-index-url https://download.pytorch.org/whl/cpu \\
    -r /autograder/source/requirements.txt
# CIFAR-10 (md5-checked download) for re-measuring the accuracies in the model file names.
cd /autograder/source
/autograder/venv/bin/python -c "from pathlib import Path; from hw2.data import load_cifar10; load_cifar10(Path('data'))"
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this once per submission, in a fresh container.
# AUTOGRADER_ROOT (default /autograder) lets the project's tests run this script on a copy of that layout.
AG="${{AUTOGRADER_ROOT:-/autograder}}"
cd "$AG/source"
mkdir -p "$AG/results"
"$AG/venv/bin/python" -m pytest grader/ -p no:cacheprovider -q \\
    --submission "$AG/submission" --results "$AG/results/results.json" \\
    --data-dir "$AG/source/data" {extra}
status=$?
# pytest writes results.json itself, after every test. Exit status 0 or 1: every test ran; 4: the submission's
# layout was refused (one visible test says why). Anything else (it could not start, or was killed before it
# finished): whatever file is there is not the grader's.
if [ ! -s "$AG/results/results.json" ] || {{ [ "$status" -ne 0 ] && [ "$status" -ne 1 ] && [ "$status" -ne 4 ]; }}; then
    printf '{{"score": 0, "output": "The autograder did not finish (pytest exit status %s); please tell the course staff.", "tests": []}}\\n' "$status" \\
        > "$AG/results/results.json"
fi
"""


def build(zip_path: Path, root: Path = GRADER_ROOT, extra_args: str = "") -> Path:
    """Write the autograder zip; returns its path."""
    zip_path = Path(zip_path)
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = write_bundle(Path(tmp), root)
        with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
            for script, text in (("setup.sh", SETUP_SH), ("run_autograder", RUN_AUTOGRADER.format(extra=extra_args))):
                info = zipfile.ZipInfo(script)
                info.external_attr = 0o755 << 16  # executable
                archive.writestr(info, text)
            for path in sorted(bundle.rglob("*")):
                if path.is_file():
                    archive.write(path, path.relative_to(bundle).as_posix())
    return zip_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader.gradescope", description=__doc__.split("\n\n")[0])
    parser.add_argument("zip", type=Path, help="where to write the autograder zip, e.g. hw2_autograder.zip")
    parser.add_argument("--grader-args", default="", help="extra pytest arguments for run_autograder, e.g. '--time-limit 300'")
    args = parser.parse_args(argv)
    if args.zip.suffix != ".zip":
        parser.error(f"{args.zip} must end in .zip")
    print(f"wrote {build(args.zip, extra_args=args.grader_args)}: upload it as the Gradescope autograder")
    return 0


if __name__ == "__main__":
    sys.exit(main())
