"""Checkpoint I/O (provided).  Files are written atomically and read with ``weights_only=True``.

A model file holds ``{"state_dict": {...}, "metadata": {...}}``; the metadata is
plain Python (str, int, float, bool, list, dict), so it loads without unpickling
any code.  ``load_checkpoint`` reads three layouts:

* **compact** (what ``save_checkpoint`` writes for a pruned model): the same two
  keys plus ``"format": COMPACT_FORMAT``; a float tensor that is mostly zeros is
  stored as a dict instead of a dense tensor, whichever is smaller:

  - ``{"encoding": "bitmask", "shape": [..], "bitmask": uint8 (ceil(numel / 8),),
    "values": (nnz,)}``: 1 bit per entry (``np.packbits`` order over the
    flattened tensor, 1 = stored) and the nonzero entries in that order;
  - ``{"encoding": "rows", "shape": [C_out, ..], "keep": bool (C_out,),
    "rows": (kept, ..)}``: a pruned conv's surviving filters (``dim=0``) as
    they are; the filters not kept are all zero.

  A 0.80-unstructured VGG13 takes about 9 MB instead of 38 MB, a 0.40-filter
  one about 23 MB (its kept filters are 60% of the weights, stored exactly);
* **plain** ``{"state_dict", "metadata"}`` with dense tensors (a dense model,
  and every file from older runs);
* a **bare** state_dict (the pretrained file may be one).

Loading gives back the dense state_dict: same keys in the same order, same
shapes and dtypes, every nonzero entry bit for bit.  The zeros of an encoded
tensor come back as ``+0.0``: a pruned weight saved as ``-0.0`` (``weight * mask``
of a negative weight) compares equal to it and gives the same outputs.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

COMPACT_FORMAT = "hw2-compact-1"
DEFAULT_MAX_DECODED_BYTES = 2**30  # tensors a file may expand to when the caller sets no max_bytes (1 GiB)
MAX_TENSOR_DIMS = 8
ENCODING_OVERHEAD_BYTES = 1024  # what an encoded entry's extra storages and dict cost, about: small tensors stay dense


class CheckpointError(RuntimeError):
    """A checkpoint is missing or cannot be read safely."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, write) -> None:
    """Call ``write(file_object)`` on a temp file beside ``path``, then rename it into place.

    A crash or error leaves no half-written ``path`` behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; a plain open() would honour the umask
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    data = (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode()
    atomic_write_bytes(path, lambda f: f.write(data))


# ---------------------------------------------------------------------------------------------
# Compact encoding of mostly-zero tensors
# ---------------------------------------------------------------------------------------------
ENCODED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def encode_tensor(tensor: torch.Tensor) -> torch.Tensor | dict:
    """The smallest exact form of one tensor: itself, a ``bitmask`` entry or a ``rows`` entry (module docstring).

    Only float tensors are encoded, and only when that saves more than
    ``ENCODING_OVERHEAD_BYTES``: a dense tensor, or a small one, stays a tensor.
    """
    tensor = tensor.detach().cpu().contiguous()
    if tensor.dtype not in ENCODED_DTYPES or tensor.layout != torch.strided or tensor.dim() == 0 or tensor.numel() == 0:
        return tensor
    item = tensor.element_size()
    nonzero = tensor != 0  # -0.0 counts as zero; NaN is stored
    sizes = {"dense": tensor.numel() * item,
             "bitmask": (tensor.numel() + 7) // 8 + int(nonzero.sum()) * item + ENCODING_OVERHEAD_BYTES}
    if tensor.dim() >= 2:
        keep = nonzero.flatten(1).any(dim=1)  # (C_out,): the filters (rows along dim 0) with a nonzero entry
        row = tensor.numel() // tensor.shape[0]
        sizes["rows"] = keep.numel() + int(keep.sum()) * row * item + ENCODING_OVERHEAD_BYTES
    best = min(sizes, key=sizes.get)  # on a tie the first: dense, then bitmask
    if best == "bitmask":
        mask = nonzero.flatten()
        return {"encoding": "bitmask", "shape": list(tensor.shape),
                "bitmask": torch.from_numpy(np.packbits(mask.numpy())),  # ((numel + 7) // 8,) uint8
                "values": tensor.flatten()[mask].clone()}  # (nnz,)
    if best == "rows":
        return {"encoding": "rows", "shape": list(tensor.shape), "keep": keep,
                "rows": tensor[keep].clone()}  # (kept, *shape[1:])
    return tensor


def checkpoint_payload(state_dict: dict, metadata: dict | None = None, compact: bool = True) -> dict:
    """The object ``save_checkpoint`` writes with ``torch.save`` (so ``hw2.report`` can measure its size in memory)."""
    tensors = {key: value.detach().cpu().contiguous() for key, value in state_dict.items()}
    if compact:
        encoded = {key: encode_tensor(value) for key, value in tensors.items()}
        if any(isinstance(value, dict) for value in encoded.values()):
            return {"format": COMPACT_FORMAT, "state_dict": encoded, "metadata": metadata or {}}
    return {"state_dict": tensors, "metadata": metadata or {}}


def save_checkpoint(path: Path, state_dict: dict, metadata: dict | None = None, compact: bool = True) -> Path:
    """Save tensors (moved to the CPU) plus JSON-like metadata, atomically.

    With ``compact`` (the default) every float tensor that is mostly zeros is
    stored in the smaller exact form ``encode_tensor`` picks (the compact
    format); a model without one, such as a dense model, is written plain, as
    is everything with ``compact=False``.  ``load_checkpoint`` reads both.
    """
    payload = checkpoint_payload(state_dict, metadata, compact)
    atomic_write_bytes(path, lambda f: torch.save(payload, f))
    return Path(path)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _mb(n: int) -> str:
    return f"{n / 2**20:.0f} MB"


def _decode_entry(key: str, entry: dict, budget: int) -> torch.Tensor:
    """One encoded entry as a dense tensor; every field is checked, and the declared size against ``budget``, first."""
    def malformed(reason: str) -> ValueError:
        return ValueError(f"compact entry {key!r} is malformed: {reason}")

    fields = {"bitmask": {"encoding", "shape", "bitmask", "values"}, "rows": {"encoding", "shape", "keep", "rows"}}
    encoding = entry.get("encoding")
    if not isinstance(encoding, str) or encoding not in fields:
        raise malformed(f"encoding {_short(encoding)}, expected 'bitmask' or 'rows'")
    if set(entry) != fields[encoding]:
        raise malformed(f"fields {_short(sorted(map(str, entry)))}, expected {sorted(fields[encoding])}")
    shape = entry["shape"]
    if not (isinstance(shape, (list, tuple)) and 1 <= len(shape) <= MAX_TENSOR_DIMS
            and all(type(d) is int and d >= 0 for d in shape)):
        raise malformed(f"shape {_short(shape)} is not a list of 1 to {MAX_TENSOR_DIMS} non-negative ints")
    shape = list(shape)
    numel = math.prod(shape)
    data = entry["values" if encoding == "bitmask" else "rows"]
    if not (isinstance(data, torch.Tensor) and data.layout == torch.strided and data.dtype in ENCODED_DTYPES):
        raise malformed(f"its {'values' if encoding == 'bitmask' else 'rows'} are not a dense float tensor")
    if numel * data.element_size() > budget:
        raise ValueError(f"compact entry {key!r} declares shape {_short(shape)} ({_mb(numel * data.element_size())}), "
                         f"more than the {_mb(budget)} left of what a model may decode to")
    if encoding == "bitmask":
        bitmask = entry["bitmask"]
        if not (isinstance(bitmask, torch.Tensor) and bitmask.layout == torch.strided and bitmask.dtype == torch.uint8
                and bitmask.dim() == 1 and bitmask.numel() == (numel + 7) // 8):
            raise malformed(f"bitmask must be uint8 of {(numel + 7) // 8} bytes for shape {shape}")
        bits = np.unpackbits(bitmask.contiguous().numpy())  # (8 * bytes,) of 0/1
        if bits[numel:].any():
            raise malformed("bitmask has bits set past the end of the tensor")
        stored = int(np.count_nonzero(bits))
        if data.dim() != 1 or data.numel() != stored:
            raise malformed(f"bitmask marks {stored} stored values but values has shape {_short(list(data.shape))}")
        flat = torch.zeros(numel, dtype=data.dtype)
        flat[torch.from_numpy(bits[:numel].view(np.bool_))] = data
        return flat.view(shape)
    keep = entry["keep"]
    if len(shape) < 2:
        raise malformed(f"rows need a shape of 2 or more dims, got {shape}")
    if not (isinstance(keep, torch.Tensor) and keep.layout == torch.strided and keep.dtype == torch.bool
            and keep.dim() == 1 and keep.numel() == shape[0]):
        raise malformed(f"keep must be bool of length {shape[0]} (dim 0 of shape {shape})")
    kept = int(keep.sum())
    if list(data.shape) != [kept, *shape[1:]]:
        raise malformed(f"rows has shape {_short(list(data.shape))}; keep marks {kept} of {shape[0]} rows of {shape[1:]}")
    dense = torch.zeros(shape, dtype=data.dtype)
    dense[keep] = data
    return dense


def decode_state_dict(entries: dict, max_bytes: int = DEFAULT_MAX_DECODED_BYTES) -> dict[str, torch.Tensor]:
    """Invert ``encode_tensor`` over a state_dict (tensors pass through), for an untrusted file.

    Raises ``ValueError`` with a one-line reason naming the key when an entry is
    malformed, or when the tensors would take more than ``max_bytes`` in all:
    each entry's declared size is checked before anything is allocated.
    """
    decoded: dict[str, torch.Tensor] = {}
    budget = max_bytes
    for key, value in entries.items():
        if not isinstance(key, str):
            raise ValueError(f"state_dict key {_short(key)} is not a string")
        if isinstance(value, torch.Tensor):
            tensor = value
            need = tensor.numel() * tensor.element_size()  # a stride-0 view can claim far more than the file holds
            if need > budget:
                raise ValueError(f"tensor {key!r} of shape {_short(list(tensor.shape))} ({_mb(need)}) is more than the "
                                 f"{_mb(budget)} left of what a model may take")
        elif isinstance(value, dict):
            tensor = _decode_entry(key, value, budget)
        else:
            raise ValueError(f"state_dict entry {key!r} is a {type(value).__name__}, not a tensor")
        budget -= tensor.numel() * tensor.element_size()
        decoded[key] = tensor
    return decoded


def load_checkpoint(path: Path, max_bytes: int | None = None) -> tuple[dict, dict]:
    """Return ``(state_dict, metadata)`` with dense tensors; never executes code from the file.

    Reads the compact, the plain and the bare layout (module docstring).
    Raises ``CheckpointError`` with a one-line reason when the file is missing,
    larger than ``max_bytes`` (then it is not read at all), is not a checkpoint,
    needs more than ``weights_only=True`` allows, or has a malformed compact
    entry; and when its tensors would take more than ``max_bytes`` (default
    ``DEFAULT_MAX_DECODED_BYTES``) in memory, checked before they are built.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise CheckpointError(f"{path} is {size / 2**20:.0f} MB, more than the {max_bytes / 2**20:.0f} MB a model file "
                              "may have (rejected, not read); save the state_dict alone, in float32")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle that needs code, truncated file, not a torch file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} cannot be loaded with weights_only=True (rejected, not executed): {first}") from None
    not_a_checkpoint = f"{path} is not a model checkpoint (expected a state_dict or {{'state_dict', 'metadata'}})"
    if isinstance(obj, dict) and isinstance(obj.get("format"), str):
        if obj["format"] != COMPACT_FORMAT:
            raise CheckpointError(f"{path} is in format {_short(obj['format'])}; this loader reads {COMPACT_FORMAT!r}, "
                                  "plain {'state_dict', 'metadata'} files and bare state_dicts")
        entries, metadata = obj.get("state_dict"), obj.get("metadata")
        if not isinstance(entries, dict):
            raise CheckpointError(not_a_checkpoint)
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        entries, metadata = obj["state_dict"], obj.get("metadata")
        if not all(isinstance(v, torch.Tensor) for v in entries.values()):
            raise CheckpointError(f"{not_a_checkpoint}: its state_dict holds something other than tensors")
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        entries, metadata = obj, {}
    else:
        raise CheckpointError(not_a_checkpoint)
    if not isinstance(metadata, (dict, type(None))):
        raise CheckpointError(f"{path} has metadata of type {type(metadata).__name__}; expected a dict")
    try:
        state_dict = decode_state_dict(entries, max_bytes if max_bytes is not None else DEFAULT_MAX_DECODED_BYTES)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    return state_dict, dict(metadata or {})
