"""Efficiency report for saved models: "the pruned model got bigger and no faster", in numbers.

    python -m hw2.report results/Imp_unstructured_0.80_acc_91.20.pt results/Imp_filter_0.40_acc_90.75.pt
    python -m hw2.report MODEL.pt --batch-sizes 1 64 --weight-bits 8 --plot score.png --json report.json

For each model it prints parameters, nonzero weights, MACs per image (dense and
counting nonzero weights only), the size of the file given and of the same
weights stored six ways (among them the compact file ``main.py`` writes),
measured latency, and the lab's efficiency score.  With ``--plot`` it
draws accuracy against score for all the models given, with the 90% accuracy line.

Every number comes from a function here, importable on its own:
``count_parameters``, ``count_nonzeros``, ``count_macs``, ``pruning_ratios``,
``efficiency_score``, ``file_sizes``, ``measure_latency``, ``compare_latency``, ``load_model``,
``plot_accuracy_vs_score``.

Conventions (as in ``hw2/__init__.py``): the prunable weights are the
``.weight`` of every Conv2d and Linear layer; MACs count the multiply-adds of
those layers only (BatchNorm, ReLU, pooling and additions are left out), per
image, for the input shape given.
"""
from __future__ import annotations

import argparse
import io
import json
import re
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the hw2 package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.utils import prune  # noqa: E402

from hw2.checkpoint import CheckpointError, checkpoint_payload, load_checkpoint, write_json  # noqa: E402
from hw2.models import copy_without_pruning, prunable_weights  # noqa: E402
from hw2.train import at_least  # noqa: E402

# The lab's efficiency score normalises by a reference model's size and work.
SCORE_PARAM_REFERENCE = 5.6e6  # weights
SCORE_MAC_REFERENCE = 2.8e8  # multiply-accumulates per image
ACCURACY_LINE = 90.0  # percent: the accuracy a submission must keep in the lab
DEFAULT_INPUT_SHAPES = {"lenet5": (1, 28, 28), "lenet300_100": (1, 28, 28)}  # everything else: (3, 32, 32)


# ---------------------------------------------------------------------------------------------
# Counting
# ---------------------------------------------------------------------------------------------
def count_parameters(model: nn.Module, prunable_only: bool = False) -> int:
    """Number of parameters of ``model`` (every entry of every parameter tensor).

    With ``torch.nn.utils.prune`` masks attached, ``weight_orig`` is counted
    (once) and the mask buffers are not, so the count is the same as after
    ``make_pruning_permanent``.  ``prunable_only=True`` counts only the
    Conv2d/Linear weights (the population sparsity is measured over).
    """
    if prunable_only:
        return sum(w.numel() for w in prunable_weights(model).values())
    return sum(p.numel() for p in model.parameters())


def count_nonzeros(model: nn.Module, prunable_only: bool = False) -> int:
    """Number of nonzero parameter entries, counting masked weights as they act (``weight_orig * mask``)."""
    if prunable_only:
        return sum(int(torch.count_nonzero(w.detach())) for w in prunable_weights(model).values())
    total = 0
    for name, p in model.named_parameters():
        if name.endswith("_orig"):
            plain = name[: -len("_orig")]
            module_name, _, tensor_name = plain.rpartition(".")
            module = model.get_submodule(module_name) if module_name else model
            p = getattr(module, tensor_name)  # the masked tensor the forward pass uses
        total += int(torch.count_nonzero(p.detach()))
    return total


def count_macs(model: nn.Module, input_shape: tuple[int, ...] = (3, 32, 32), nonzero_only: bool = False) -> int:
    """Multiply-accumulates of the Conv2d and Linear layers for one image of ``input_shape`` (C, H, W).

    Measured with forward hooks on a zero input of batch size 1, so any
    architecture works (skip connections, pooling, flattening).  A conv
    producing ``(C_out, H_out, W_out)`` costs ``C_out * H_out * W_out *
    C_in / groups * kH * kW``; a Linear ``in_features * out_features`` per row.
    ``nonzero_only=True`` counts only the MACs of nonzero weights (what a
    perfect sparse kernel would do): each nonzero weight is used once per
    output position.
    """
    counts: list[int] = []

    def conv_hook(module: nn.Conv2d, inputs, output):
        positions = output.shape[2] * output.shape[3]  # (N, C_out, H_out, W_out): per image
        if nonzero_only:
            counts.append(positions * int(torch.count_nonzero(module.weight.detach())))
        else:
            counts.append(positions * module.weight.numel())  # weight: (C_out, C_in/groups, kH, kW)

    def linear_hook(module: nn.Linear, inputs, output):
        rows = output.numel() // output.shape[0] // module.out_features  # extra leading dims, per image
        weights = int(torch.count_nonzero(module.weight.detach())) if nonzero_only else module.weight.numel()
        counts.append(rows * weights)

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    was_training = model.training
    device = next(model.parameters()).device
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return sum(counts)


def pruning_ratios(model: nn.Module) -> tuple[float, float]:
    """``(p_s, p_u)``: structured and unstructured pruning ratios over the Conv2d/Linear weights.

    ``p_s`` is the fraction of those weights that sit in all-zero output
    filters (rows, ``dim=0``); ``p_u`` the fraction of the other zero weights.
    ``p_s + p_u`` is the overall sparsity.
    """
    structured = unstructured = total = 0
    for weight in prunable_weights(model).values():
        rows = weight.detach().reshape(weight.shape[0], -1)  # (C_out, rest)
        zero = rows == 0
        dead_rows = zero.all(dim=1)
        structured += int(dead_rows.sum()) * rows.shape[1]
        unstructured += int(zero[~dead_rows].sum())
        total += rows.numel()
    total = max(total, 1)
    return structured / total, unstructured / total


def efficiency_score(p_s: float, p_u: float, weights: int, macs: int, weight_bits: int = 32, act_bits: int = 32) -> float:
    """The lab's efficiency score (lower is better)::

        [1 - (p_s + p_u)] * (q_w / 32) * w / 5.6e6  +  (1 - p_s) * (max(q_w, q_a) / 32) * f / 2.8e8

    Args:
        p_s, p_u: structured and unstructured pruning ratios (fractions, see ``pruning_ratios``).
        weights: ``w``, the Conv2d/Linear weights of the model as stored (dense count).
        macs: ``f``, the dense MACs per image (``count_macs``).
        weight_bits, act_bits: ``q_w`` and ``q_a``, the bits per weight and per activation.
    """
    if not (0.0 <= p_s <= 1.0 and 0.0 <= p_u <= 1.0 and p_s + p_u <= 1.0 + 1e-9):
        raise ValueError(f"pruning ratios must be fractions with p_s + p_u <= 1; got p_s={p_s}, p_u={p_u}")
    for name, bits in (("weight_bits", weight_bits), ("act_bits", act_bits)):
        if not 1 <= bits <= 32:
            raise ValueError(f"{name} must be between 1 and 32, got {bits}")
    param_term = (1.0 - (p_s + p_u)) * (weight_bits / 32) * weights / SCORE_PARAM_REFERENCE
    ops_term = (1.0 - p_s) * (max(weight_bits, act_bits) / 32) * macs / SCORE_MAC_REFERENCE
    return param_term + ops_term


# ---------------------------------------------------------------------------------------------
# File sizes
# ---------------------------------------------------------------------------------------------
def serialized_size(obj) -> int:
    """Bytes that ``torch.save(obj)`` writes."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.tell()


def _plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict with any pruning masks folded in (zeros in place), on the CPU."""
    plain = copy_without_pruning(model)
    return {k: v.detach().cpu().contiguous() for k, v in plain.state_dict().items()}


def _masked_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict as while pruning is in progress: ``weight_orig`` plus a float ``weight_mask`` per prunable weight."""
    masked = copy_without_pruning(model)
    for name, weight in prunable_weights(masked).items():
        module_name = name.rpartition(".")[0]
        module = masked.get_submodule(module_name) if module_name else masked
        if not hasattr(module, "weight_mask"):
            prune.custom_from_mask(module, "weight", (weight.detach() != 0).to(weight.dtype))
    return {k: v.detach().cpu().contiguous() for k, v in masked.state_dict().items()}


def encode_csr(state_dict: dict[str, torch.Tensor], names) -> dict[str, torch.Tensor]:
    """Sparse encoding: each tensor in ``names`` viewed as ``(C_out, rest)`` in CSR with the smallest index dtypes."""
    encoded: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        if key not in names:
            encoded[key] = tensor
            continue
        rows = tensor.reshape(tensor.shape[0], -1)  # (C_out, C_in * kH * kW)
        nonzero = rows != 0
        index_dtype = torch.int16 if rows.shape[1] <= torch.iinfo(torch.int16).max else torch.int32
        pointer_dtype = torch.int32 if rows.numel() <= torch.iinfo(torch.int32).max else torch.int64
        encoded[f"{key}.crow"] = torch.cat([torch.zeros(1, dtype=torch.int64), nonzero.sum(1).cumsum(0)]).to(pointer_dtype)
        encoded[f"{key}.col"] = nonzero.nonzero()[:, 1].to(index_dtype)
        encoded[f"{key}.values"] = rows[nonzero].clone()
        encoded[f"{key}.shape"] = torch.tensor(tensor.shape, dtype=torch.int32)
    return encoded


@dataclass
class FileSizes:
    """Bytes of ``torch.save`` of the same model stored different ways; ``None`` where not applicable (see ``notes``)."""
    dense: int  # the architecture as stored, every weight in float32 (zeros included)
    masked: int  # weight_orig + weight_mask per prunable weight: what saving mid-pruning gives
    permanent: int  # masks folded in, zeros kept in place
    compacted: int | None  # all-zero filters physically removed (VGG13 only)
    saved: int  # what hw2.checkpoint.save_checkpoint writes (main.py's files): bitmask + values, or kept filters
    sparse_csr: int  # for comparison: CSR rows per output filter (int16/int32 indices) + values
    notes: dict


def file_sizes(model: nn.Module, compact=None) -> FileSizes:
    """Serialise ``model`` six ways (in memory) and return the byte counts.

    Args:
        model: any model (masks attached or made permanent).
        compact: optional function ``model -> smaller model`` that removes
            all-zero filters (e.g. ``hw2.pruning.prune_channels_after_filter_prune``);
            ``None``, or one that raises ``NotImplementedError``, gives
            ``compacted=None`` with the reason in ``notes["compacted"]``.
    """
    plain = _plain_state_dict(model)
    names = [k for k in prunable_weights(model)]
    dense_model = copy_without_pruning(model)
    with torch.no_grad():
        for weight in prunable_weights(dense_model).values():
            weight.copy_(torch.where(weight == 0, torch.ones_like(weight), weight))  # no zeros: a dense file
    notes: dict[str, str] = {}
    compacted = None
    if compact is None:
        notes["compacted"] = "n/a: no compaction function for this architecture"
    else:
        try:
            compacted_model = compact(model)
            compacted = serialized_size(_plain_state_dict(compacted_model))
        except NotImplementedError:
            notes["compacted"] = "n/a: prune_channels_after_filter_prune is not implemented yet in hw2/pruning.py"
        except Exception as exc:  # a broken student function must not stop the report
            notes["compacted"] = f"n/a: compaction failed ({type(exc).__name__}: {exc})"
    return FileSizes(
        dense=serialized_size(_plain_state_dict(dense_model)),
        masked=serialized_size(_masked_state_dict(model)),
        permanent=serialized_size(plain),
        compacted=compacted,
        saved=serialized_size(checkpoint_payload(plain)),
        sparse_csr=serialized_size(encode_csr(plain, set(names))),
        notes=notes)


# ---------------------------------------------------------------------------------------------
# Latency
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def compare_latency(models: dict[str, nn.Module], input_shape: tuple[int, ...] = (3, 32, 32), batch_size: int = 1,
                    device="cpu", warmup: int = 5, repeats: int = 30,
                    channels_last: bool | None = None) -> dict[str, dict[str, float]]:
    """Time the forward pass of several models, interleaved, on one random batch ``(batch_size, *input_shape)``.

    Each model runs ``warmup`` untimed passes, then the models take turns, one
    timed pass each, ``repeats`` times: a slow moment of the machine hits all of
    them alike, so the ratio of two medians (a speed-up) is steadier than two
    separate runs give.  On CUDA each timing is bracketed by ``torch.cuda.synchronize``.
    Float32, no autocast, eval mode.  ``channels_last`` (default: on for 4-D
    inputs on the CPU, where oneDNN's convolutions run fastest in that layout)
    stores inputs and weights as NHWC for every model alike.

    Returns:
        ``{name: {"median_ms", "min_ms", "max_ms", "images_per_s"}}``, per batch.
    """
    if repeats < 1 or warmup < 0 or batch_size < 1:
        raise ValueError(f"need repeats >= 1, warmup >= 0, batch_size >= 1; got {repeats}, {warmup}, {batch_size}")
    device = torch.device(device)
    if channels_last is None:
        channels_last = device.type == "cpu" and len(input_shape) == 3
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(batch_size, *input_shape, device=device).contiguous(memory_format=layout)
    ready = {name: copy_without_pruning(m).to(device).to(memory_format=layout).eval() for name, m in models.items()}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for model in ready.values():
        for _ in range(warmup):
            model(x)
    sync()
    times: dict[str, list[float]] = {name: [] for name in ready}
    for _ in range(repeats):
        for name, model in ready.items():
            start = time.perf_counter()
            model(x)
            sync()
            times[name].append((time.perf_counter() - start) * 1000)
    result = {}
    for name, t in times.items():
        median = statistics.median(t)
        result[name] = {"median_ms": median, "min_ms": min(t), "max_ms": max(t),
                        "images_per_s": batch_size / (median / 1000)}
    return result


def measure_latency(model: nn.Module, input_shape: tuple[int, ...] = (3, 32, 32), batch_size: int = 1,
                    device="cpu", warmup: int = 5, repeats: int = 30,
                    channels_last: bool | None = None) -> dict[str, float]:
    """Time one model's forward pass: ``compare_latency`` with a single model.

    Returns:
        dict with ``"median_ms"``, ``"min_ms"``, ``"max_ms"`` (per batch) and
        ``"images_per_s"`` (batch_size / median).
    """
    return compare_latency({"model": model}, input_shape, batch_size, device, warmup, repeats, channels_last)["model"]


# ---------------------------------------------------------------------------------------------
# Loading saved models
# ---------------------------------------------------------------------------------------------
def _fold_masks(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Turn ``X_orig`` + ``X_mask`` pairs (a file saved mid-pruning) into plain ``X = X_orig * X_mask``."""
    folded = {}
    for key, value in state_dict.items():
        if key.endswith("_mask") and key[: -len("_mask")] + "_orig" in state_dict:
            continue
        if key.endswith("_orig") and key[: -len("_orig")] + "_mask" in state_dict:
            base = key[: -len("_orig")]
            folded[base] = value * state_dict[base + "_mask"]
        else:
            folded[key] = value
    return folded


def infer_arch(state_dict: dict[str, torch.Tensor], metadata: dict) -> str:
    """The architecture name of a checkpoint: ``metadata["arch"]`` when present, else guessed from its keys."""
    if metadata.get("arch"):
        return str(metadata["arch"])
    keys = set(state_dict)
    if "classifier.weight" in keys and any(k.startswith("features.") for k in keys):
        return "vgg13"
    if "fc.weight" in keys and "layer4.0.conv1.weight" in keys:
        return "resnet50" if "layer1.0.conv3.weight" in keys else "resnet18"
    if {"fc1.weight", "fc2.weight", "fc3.weight"} <= keys:
        return "lenet5" if "conv1.weight" in keys else "lenet300_100"
    raise CheckpointError("cannot tell the architecture of this checkpoint (no 'arch' in its metadata and its keys match "
                          "none of vgg13, resnet18, resnet50, lenet5, lenet300_100); pass --arch")


def load_model(path: Path, arch: str | None = None, input_shape: tuple[int, ...] | None = None) -> tuple[nn.Module, dict, str]:
    """Load a saved model (plain, masked or compacted) as an eval-mode CPU model; returns ``(model, metadata, arch)``.

    ``arch`` defaults to the file's metadata or a guess from its keys;
    ``input_shape`` (C, H, W) to 1x28x28 for LeNets and 3x32x32 otherwise.
    """
    from hw2 import models

    state_dict, metadata = load_checkpoint(path)
    state_dict = _fold_masks(state_dict)
    arch = arch or infer_arch(state_dict, metadata)
    if arch == "vgg13":
        model = models.VGG13.from_state_dict(state_dict)
    else:
        weights = [v for k, v in state_dict.items() if k.endswith("weight") and v.dim() in (2, 4)]
        num_classes = weights[-1].shape[0] if weights else 10
        shape = tuple(input_shape or DEFAULT_INPUT_SHAPES.get(arch, (3, 32, 32)))
        model = models.build_model_for_images(arch, num_classes, shape)
        try:
            model.load_state_dict(state_dict)
        except RuntimeError as exc:
            raise CheckpointError(f"{path} does not fit {arch} for inputs {shape}: {str(exc).strip().splitlines()[0]}; "
                                  "check --arch and --input-shape") from None
    return model.eval(), metadata, arch


def accuracy_of(path: Path, metadata: dict) -> float | None:
    """Test accuracy in percent: ``metadata["accuracy"]``, else the ``_acc_XX.XX`` in the file name, else None."""
    if isinstance(metadata.get("accuracy"), (int, float)):
        return float(metadata["accuracy"])
    match = re.search(r"_acc_(\d+(?:\.\d+)?)", Path(path).stem)
    return float(match.group(1)) if match else None


# ---------------------------------------------------------------------------------------------
# One model's report, the table and the plot
# ---------------------------------------------------------------------------------------------
def compaction_for(arch: str):
    """The function that removes all-zero filters for ``arch`` (the student's reference function for VGG13), or None."""
    if arch != "vgg13":
        return None
    from hw2 import pruning

    return pruning.prune_channels_after_filter_prune


def report_model(model: nn.Module, arch: str = "vgg13", input_shape: tuple[int, ...] | None = None,
                 batch_sizes=(1, 128), device="cpu", weight_bits: int = 32, act_bits: int = 32,
                 repeats: int = 30, warmup: int = 5, with_compacted_latency: bool = True) -> dict:
    """Every figure of the report for one model, as a JSON-ready dict."""
    input_shape = tuple(input_shape or DEFAULT_INPUT_SHAPES.get(arch, (3, 32, 32)))
    model = copy_without_pruning(model).eval()
    weights = count_parameters(model, prunable_only=True)
    macs = count_macs(model, input_shape)
    p_s, p_u = pruning_ratios(model)
    compact = compaction_for(arch)
    sizes = file_sizes(model, compact)
    compacted = None
    if with_compacted_latency and compact is not None and sizes.compacted is not None and p_s > 0:  # else nothing was removed
        compacted = compact(model).eval()
    latency, compacted_latency = {}, {}
    for b in batch_sizes:  # the compacted model is timed in turns with this one, so their ratio is a fair speed-up
        pair = compare_latency({"model": model} if compacted is None else {"model": model, "compacted": compacted},
                               input_shape, b, device, warmup, repeats)
        latency[f"batch_{b}"] = pair["model"]
        if compacted is not None:
            compacted_latency[f"batch_{b}"] = dict(pair["compacted"],
                                                   speedup=pair["model"]["median_ms"] / pair["compacted"]["median_ms"])
    result = {
        "arch": arch, "input_shape": list(input_shape),
        "parameters": count_parameters(model), "nonzero_parameters": count_nonzeros(model),
        "prunable_weights": weights, "nonzero_weights": count_nonzeros(model, prunable_only=True),
        "macs": macs, "nonzero_macs": count_macs(model, input_shape, nonzero_only=True),
        "p_structured": p_s, "p_unstructured": p_u, "weight_bits": weight_bits, "act_bits": act_bits,
        "score": efficiency_score(p_s, p_u, weights, macs, weight_bits, act_bits),
        "file_bytes": asdict(sizes), "latency": latency, "device": str(device),
    }
    if compacted is not None:
        result["compacted"] = {"parameters": count_parameters(compacted), "macs": count_macs(compacted, input_shape),
                               "latency": compacted_latency}
    return result


def _mb(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 1e6:.2f} MB"


def format_report(name: str, r: dict) -> str:
    """Human-readable block for one model's report."""
    sizes = r["file_bytes"]
    lines = [f"== {name} ({r['arch']}, input {tuple(r['input_shape'])})",
             f"  accuracy              {r['accuracy']:.2f}%" if r.get("accuracy") is not None else "  accuracy              unknown",
             f"  parameters            {r['parameters']:,} ({r['nonzero_parameters']:,} nonzero)",
             f"  conv+linear weights   {r['prunable_weights']:,} ({r['nonzero_weights']:,} nonzero; "
             f"p_s {r['p_structured']:.4f}, p_u {r['p_unstructured']:.4f})",
             f"  MACs per image        {r['macs']:,} dense, {r['nonzero_macs']:,} on nonzero weights",
             "  file size (torch.save)"]
    if sizes.get("on_disk") is not None:
        lines.append(f"    this file on disk   {_mb(sizes['on_disk'])}")
    lines += [f"    saved (compact)     {_mb(sizes['saved'])}  (save_checkpoint: bitmask + nonzeros, or kept filters)",
              f"    dense               {_mb(sizes['dense'])}",
              f"    masked (orig+mask)  {_mb(sizes['masked'])}",
              f"    permanent (zeros)   {_mb(sizes['permanent'])}",
              f"    compacted           {_mb(sizes['compacted'])}" + (f"  ({sizes['notes']['compacted']})" if 'compacted' in sizes['notes'] else ""),
              f"    sparse CSR          {_mb(sizes['sparse_csr'])}",
              f"  latency on {r['device']} (median of repeats; a compacted model is timed in turns with this one)"]
    for key, t in r["latency"].items():
        line = f"    {key.replace('_', ' '):<18}{t['median_ms']:>9.3f} ms  ({t['images_per_s']:,.0f} images/s)"
        if "compacted" in r:
            c = r["compacted"]["latency"][key]
            speedup = c.get("speedup", t["median_ms"] / c["median_ms"])
            line += f"   compacted {c['median_ms']:.3f} ms ({c['images_per_s']:,.0f} images/s, {speedup:.2f}x)"
        lines.append(line)
    if "compacted" in r:
        lines.append(f"  compacted model       {r['compacted']['parameters']:,} parameters, {r['compacted']['macs']:,} MACs")
    lines.append(f"  efficiency score      {r['score']:.4f}  (q_w={r['weight_bits']}, q_a={r['act_bits']}; lower is better)")
    return "\n".join(lines)


def plot_accuracy_vs_score(points: list[tuple[str, float, float]], out_path: Path,
                           accuracy_line: float = ACCURACY_LINE, title: str = "accuracy vs efficiency score") -> list:
    """Scatter ``(label, score, accuracy %)`` points with a dashed line at ``accuracy_line``; save a PNG.  Returns the points drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for label, score, accuracy in points:
        ax.scatter([score], [accuracy], s=50, zorder=3)
        ax.annotate(label, (score, accuracy), fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.axhline(accuracy_line, color="#D55E00", linestyle="--", linewidth=1, label=f"{accuracy_line:g}% accuracy")
    ax.set_xlabel("efficiency score (lower is better)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=150)
    plt.close(fig)
    return points


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hw2.report", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", type=Path, help="saved model files (.pt), plain, masked or compacted")
    parser.add_argument("--arch", default=None, help="architecture, when a file's metadata does not say (default: from the file)")
    parser.add_argument("--input-shape", type=int, nargs=3, metavar=("C", "H", "W"), default=None,
                        help="one input image's shape (default: 1 28 28 for LeNets, else 3 32 32)")
    parser.add_argument("--batch-sizes", type=at_least(1), nargs="+", default=[1, 128], help="latency batch sizes, images (default: 1 128)")
    parser.add_argument("--repeats", type=at_least(1), default=30, help="timed forward passes per batch size; the median is reported (default: %(default)s)")
    parser.add_argument("--warmup", type=at_least(0), default=5, help="untimed passes first (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="where latency is measured: cpu, cuda, ... (default: %(default)s)")
    parser.add_argument("--weight-bits", type=int, default=32, help="q_w of the score: bits per weight (default: %(default)s)")
    parser.add_argument("--act-bits", type=int, default=32, help="q_a of the score: bits per activation (default: %(default)s)")
    parser.add_argument("--plot", type=Path, default=None, help="write the accuracy-vs-score figure (PNG) here")
    parser.add_argument("--json", type=Path, default=None, help="write every figure as JSON here")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("weight_bits", "act_bits"):
        if not 1 <= getattr(args, name) <= 32:
            parser.error(f"--{name.replace('_', '-')} must be between 1 and 32, got {getattr(args, name)}")
    if any(b < 1 for b in args.batch_sizes) or args.repeats < 1 or args.warmup < 0:
        parser.error("--batch-sizes and --repeats must be >= 1 and --warmup >= 0")
    try:
        from hw2.train import resolve_device

        device = resolve_device(args.device)
        loaded = [(path, *load_model(path, args.arch, args.input_shape)) for path in args.models]
    except (CheckpointError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    reports = {}
    for path, model, metadata, arch in loaded:
        r = report_model(model, arch, args.input_shape, args.batch_sizes, device, args.weight_bits, args.act_bits,
                         args.repeats, args.warmup)
        r["accuracy"] = accuracy_of(path, metadata)
        r["file_bytes"]["on_disk"] = path.stat().st_size
        reports[str(path)] = r
        print(format_report(path.name, r))
    if args.json:
        write_json(args.json, {"torch": torch.__version__, "models": reports})
        print(f"wrote {args.json}")
    if args.plot:
        points = [(Path(p).stem, r["score"], r["accuracy"]) for p, r in reports.items() if r["accuracy"] is not None]
        if not points:
            print("no model has a known accuracy (metadata 'accuracy' or '_acc_XX.XX' in the name); no plot drawn",
                  file=sys.stderr)
        else:
            plot_accuracy_vs_score(points, args.plot)
            print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
