#!/usr/bin/env bash
# Run the reference solution end to end on a fresh machine:
#   set up .venv, export the reference (python -m grader.solution), prune all four models.
# Real CIFAR-10 when the data and the pretrained checkpoint are present (29 minutes on a 2-core CPU),
# else synthetic data (it says which).  --smoke forces the synthetic run (under a minute on a 2-core CPU).
# Other arguments go to main.py, e.g.  bash run_reference.sh --epochs 1
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
. .venv/bin/activate
python -m pip install --quiet -r requirements.txt

REF=$(mktemp -d)/hw2-reference
python -m grader.solution "$REF"
SMOKE=0
if [ "${1:-}" = "--smoke" ]; then SMOKE=1; shift; fi
if [ "$SMOKE" = 1 ]; then
  DATA_ARGS=(--dataset synthetic)
  echo "data: synthetic (--smoke)"
elif [ -d data/cifar-10-batches-py ] && [ -f pretrained/vgg13_cifar10.pt ]; then
  DATA_ARGS=(--dataset cifar10 --data-dir "$ROOT/data" --pretrained "$ROOT/pretrained/vgg13_cifar10.pt")
  echo "data: CIFAR-10 from data/ with pretrained/vgg13_cifar10.pt"
else
  DATA_ARGS=(--dataset synthetic)
  echo "data: synthetic (real CIFAR-10 needs data/cifar-10-batches-py and pretrained/vgg13_cifar10.pt; see pretrained/README.md)"
fi
python "$REF/hw2/main.py" --method all "${DATA_ARGS[@]}" --out "$ROOT/results/reference" "$@"
echo "reference outputs: $ROOT/results/reference (exported code: $REF)"
