"""Compare layer-wise prune ratio files in seconds, before spending an hour retraining them.

    python benchmarks/ratio_probe.py --type filter configs/filter_0.40.yaml my_filter_try.yaml
    python benchmarks/ratio_probe.py --type unstructured a.yaml b.yaml --json probe.json

For each YAML: prune the pretrained VGG13 once (``apply_pruning`` from the
pruning module: the reference's when this checkout has one, else ``hw2/pruning.py``),
measure accuracy, re-estimate the BatchNorm statistics on a few training
batches (forward passes only, no weight changes), measure again. The second
figure predicts which configuration retrains best far better than the first:
after pruning, most of the one-shot loss is BatchNorm statistics that no longer
match. Accuracy is measured on the last ``--images`` training images, never the
test set (the model saw them in training, so the figures sit above test
accuracy; compare configurations with each other, not with the test set).

For filter pruning it also removes the pruned channels
(``prune_channels_after_filter_prune``) and times the compacted model in turns
with the dense one at ``--latency-batch`` images (float32, channels_last on the
CPU, as ``hw2.report`` does): accuracy and speed-up side by side. Kept channel
counts that are multiples of 16 run markedly faster than odd ones of about the
same MACs.
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from hw2.data import DataError, DeviceLoader, load_dataset  # noqa: E402
from hw2.models import VGG13, copy_without_pruning, prunable_weights  # noqa: E402
from hw2.report import compare_latency, count_macs  # noqa: E402
from hw2.train import evaluate, uses_bf16  # noqa: E402

REFERENCE = ROOT / "solution" / "hw2" / "pruning.py"


def load_pruning_module(path: Path):
    spec = importlib.util.spec_from_file_location("probe_pruning", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def overall_sparsity(model: torch.nn.Module) -> float:
    weights = prunable_weights(model).values()
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def recalibrate_batchnorm(model: torch.nn.Module, images: torch.Tensor, fast: bool, batch: int = 256) -> None:
    """Running mean/var of every BatchNorm re-estimated from ``images`` (cumulative average); weights untouched."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=fast):
        for i in range(0, len(images), batch):
            model(images[i:i + batch])
    model.eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("configs", type=Path, nargs="+", help="YAML files with prune_ratios")
    parser.add_argument("--type", dest="sparsity_type", choices=("unstructured", "filter"), required=True)
    parser.add_argument("--pretrained", type=Path, default=ROOT / "pretrained" / "vgg13_cifar10.pt")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data", help="folder holding cifar-10-batches-py/")
    parser.add_argument("--pruning", type=Path, default=REFERENCE if REFERENCE.is_file() else ROOT / "hw2" / "pruning.py",
                        help="module with read_prune_ratios_from_yaml and apply_pruning (default: %(default)s)")
    parser.add_argument("--images", type=int, default=3000, help="training images scored (the last N) (default: %(default)s)")
    parser.add_argument("--calibration", type=int, default=2560,
                        help="training images (the first N) for the BatchNorm statistics (default: %(default)s)")
    parser.add_argument("--latency-batch", type=int, default=64,
                        help="filter: time the compacted model against dense at this batch size; 0 skips (default: %(default)s)")
    parser.add_argument("--latency-repeats", type=int, default=10, help="timed passes per model (default: %(default)s)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    missing = [str(p) for p in [args.pretrained, args.pruning, *args.configs] if not p.is_file()]
    if missing:
        print(f"error: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        data = load_dataset("cifar10", args.data_dir, download=False)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    pruning = load_pruning_module(args.pruning)
    scored = DeviceLoader(data.train_images[-args.images:], data.train_labels[-args.images:], 500, data.mean, data.std, train=False)
    calibration = torch.cat([x for x, _ in DeviceLoader(data.train_images[:args.calibration], data.train_labels[:args.calibration],
                                                        500, data.mean, data.std, train=False)])
    fast = uses_bf16(torch.device("cpu"))  # ranking configurations; bf16 is close enough and 2-3x faster
    labels = data.train_labels[-args.images:]
    dense = VGG13.from_state_dict(torch.load(args.pretrained, map_location="cpu", weights_only=True))
    timed = args.sparsity_type == "filter" and args.latency_batch > 0
    rows = [{"config": "dense (no pruning)", "sparsity": 0.0, "one_shot": evaluate(dense, scored, "cpu", exact=False)}]
    rows[0]["bn_recalibrated"] = rows[0]["one_shot"]
    for path in args.configs:
        start = time.perf_counter()
        model = copy.deepcopy(dense)
        ratios = pruning.read_prune_ratios_from_yaml(path, model)
        recorded = {name: float(r) for name, r in ratios.items()}  # before apply_pruning can touch the dict
        pruning.apply_pruning(model, args.sparsity_type, ratios)
        row = {"config": str(path), "ratios": recorded,
               "sparsity": round(overall_sparsity(model), 4),
               "one_shot": evaluate(model, scored, "cpu", exact=False)}
        recalibrate_batchnorm(model, calibration, fast)
        row["bn_recalibrated"] = evaluate(model, scored, "cpu", exact=False)
        try:
            compacted = pruning.prune_channels_after_filter_prune(copy_without_pruning(model)).eval() if timed else None
        except NotImplementedError:  # the student's stub: accuracy only
            compacted = None
            print(f"note: prune_channels_after_filter_prune is not written yet in {args.pruning}: no speed-up for {path}", file=sys.stderr)
        if compacted is not None:
            timing = compare_latency({"dense": dense, "compacted": compacted}, batch_size=args.latency_batch,
                                     warmup=2, repeats=args.latency_repeats)
            row["compacted_macs"] = count_macs(compacted, (3, 32, 32))
            row["speedup"] = round(timing["dense"]["median_ms"] / timing["compacted"]["median_ms"], 3)
        row["seconds"] = round(time.perf_counter() - start, 1)
        rows.append(row)
    width = max(len(r["config"]) for r in rows)
    speed = f"  MACs compacted  speed-up at batch {args.latency_batch}" if timed else ""
    print(f"{'config':{width}s}  sparsity  one-shot  BN re-estimated{speed}   ({args.sparsity_type}; accuracy % on the last "
          f"{len(labels)} training images, {'bf16' if fast else 'float32'})")
    for r in rows:
        line = f"{r['config']:{width}s}  {r['sparsity']:8.4f}  {r['one_shot']:8.2f}  {r['bn_recalibrated']:15.2f}"
        if timed and "speedup" in r:
            line += f"  {r['compacted_macs'] / 1e6:12.1f} M  {r['speedup']:17.2f}x"
        print(line)
    if args.json is not None:
        from hw2.checkpoint import write_json

        write_json(args.json, {"command": "python benchmarks/ratio_probe.py " + " ".join(sys.argv[1:] if argv is None else argv),
                               "pretrained": str(args.pretrained.name), "torch": torch.__version__,
                               "threads": torch.get_num_threads(), "type": args.sparsity_type,
                               "latency_batch": args.latency_batch if timed else None, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
