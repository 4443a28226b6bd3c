"""Checkpoint I/O (provided).  Files are written atomically and read with ``weights_only=True``.

A pruned-model file holds ``{"state_dict": {...}, "metadata": {...}}`` where the
metadata is plain Python (str, int, float, bool, list, dict), so it loads
without unpickling any code.  The pretrained file may also be a bare state_dict.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch


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


def save_checkpoint(path: Path, state_dict: dict, metadata: dict | None = None) -> Path:
    """Save tensors (moved to the CPU) plus JSON-like metadata, atomically."""
    payload = {"state_dict": {k: v.detach().cpu().contiguous() for k, v in state_dict.items()},
               "metadata": metadata or {}}
    atomic_write_bytes(path, lambda f: torch.save(payload, f))
    return Path(path)


def load_checkpoint(path: Path, max_bytes: int | None = None) -> tuple[dict, dict]:
    """Return ``(state_dict, metadata)``; never executes code from the file.

    Raises ``CheckpointError`` with a one-line reason when the file is missing,
    larger than ``max_bytes`` (then it is not read at all), is not a checkpoint,
    or needs more than ``weights_only=True`` allows.
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
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        return obj["state_dict"], dict(obj.get("metadata") or {})
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, {}
    raise CheckpointError(f"{path} is not a model checkpoint (expected a state_dict or {{'state_dict', 'metadata'}})")
