"""Checks shared by the graded tests: pure functions on plain tensors and files (no student code here)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class GradeFailure(AssertionError):
    """A failed check, with a message meant for the student (no traceback)."""


@dataclass
class Credit:
    """Weighted checks of one test; the test earns points x (passed weight / total weight)."""

    checks: list = field(default_factory=list)  # (weight, passed, message)
    notes: list = field(default_factory=list)  # shown in the output whether the test passes or not

    def note(self, text: str) -> None:
        self.notes.append(text)

    def check(self, passed: bool, message: str, weight: float = 1.0) -> bool:
        self.checks.append((weight, bool(passed), message))
        return bool(passed)

    @property
    def fraction(self) -> float:
        total = sum(w for w, _, _ in self.checks)
        return sum(w for w, ok, _ in self.checks if ok) / total if total else 0.0

    def fail(self, message: str):
        """Stop the test now; checks recorded so far still count."""
        failed = [m for _, ok, m in self.checks if not ok] + [message]
        raise GradeFailure("\n".join(f"- {m}" for m in dict.fromkeys(failed)))  # each message once

    def verify(self) -> None:
        """End of the test: fail with every failed check's message, if any."""
        failed = [message for _, ok, message in self.checks if not ok]
        if failed:
            raise GradeFailure("\n".join(f"- {m}" for m in dict.fromkeys(failed)))  # each message once

    def require(self, result, function: str):
        """The probe's value, or stop the test with zero points: the student code did not run to the end."""
        if not result.ok:
            self.checks.clear()
            raise GradeFailure(result.explain(function))
        return result.value


def count_in_range(count: int, units: int, sparsity: float) -> bool:
    """``count`` is floor or ceil of ``sparsity * units`` (float noise tolerated)."""
    exact = float(sparsity) * units
    return math.floor(exact + 1e-9) <= count <= math.ceil(exact - 1e-9)


def pruned_not_larger_than_kept(scores: torch.Tensor, pruned: torch.Tensor) -> bool:
    """Every pruned score <= every kept score (``scores``, ``pruned``: 1-D, same length)."""
    if bool(pruned.all()) or not bool(pruned.any()):
        return True
    return float(scores[pruned].max()) <= float(scores[~pruned].min())


def whole_filters(mask: torch.Tensor) -> bool:
    """Each output filter (dim 0) of ``mask`` is all 1 or all 0."""
    rows = mask.reshape(mask.shape[0], -1)
    return bool(((rows == 0).all(dim=1) | (rows == 1).all(dim=1)).all())


def kept_rows_by_norm(tensor: torch.Tensor, mask: torch.Tensor) -> bool:
    """Whole filters pruned, and a pruned filter's L2 norm never exceeds a kept one's."""
    if not whole_filters(mask):
        return False
    pruned = (mask.reshape(mask.shape[0], -1) == 0).all(dim=1)
    return pruned_not_larger_than_kept(tensor.reshape(tensor.shape[0], -1).norm(dim=1), pruned)


def layer_zero_counts(weights: dict, sparsity_type: str) -> dict:
    """Per layer: zero entries (unstructured) or all-zero output filters (filter)."""
    if sparsity_type == "unstructured":
        return {n: int((w == 0).sum()) for n, w in weights.items()}
    return {n: int((w.reshape(w.shape[0], -1) == 0).all(dim=1).sum()) for n, w in weights.items()}


def expected_parameters(widths: list[int], classes: int, in_channels: int = 3, kernel: int = 9) -> int:
    """Parameters of a VGG13 with these conv widths: convs (no bias), BatchNorm scale and shift, the Linear."""
    total, previous = 0, in_channels
    for width in widths:
        total += width * previous * kernel + 2 * width
        previous = width
    return total + previous * classes + classes


def is_png(path) -> bool:
    """A file that starts with the PNG signature and decodes."""
    path = Path(path)
    try:
        if path.read_bytes()[:8] != PNG_SIGNATURE:
            return False
        from PIL import Image

        with Image.open(path) as image:
            image.load()
            return image.size[0] > 0 and image.size[1] > 0
    except Exception:  # noqa: BLE001 - missing, unreadable or corrupt: not a valid PNG
        return False


def boundary_ties(score: torch.Tensor, pruned: torch.Tensor) -> torch.Tensor:
    """Elements tied at the pruning threshold (the largest pruned or smallest kept score, shared by more than one
    element): pruning either of them is equally right, so a model that chose the other one still agrees."""
    ties = torch.zeros_like(pruned)
    candidates = ([score[pruned].max()] if pruned.any() else []) + ([score[~pruned].min()] if (~pruned).any() else [])
    for value in candidates:
        same = score == value
        if int(same.sum()) > 1:
            ties |= same
    return ties


def mask_disagreement(kind: str, dense: torch.Tensor, model_weight: torch.Tensor, keep: torch.Tensor,
                      exact: bool) -> tuple[int, int]:
    """(pruned but not zero, kept but zero) between a model's weight and the keep-mask recomputed from ``dense``.

    ``kind`` "unstructured" compares weights (``keep`` has the weight's shape, scores are magnitudes);
    "filter" compares whole filters (``keep`` has one entry per output filter, scores are L2 norms).
    ``exact=False`` (IMP's first round) allows more zeros than the mask has.  Ties at the threshold are not counted.
    """
    if kind == "filter":
        score, zero = dense.flatten(1).norm(dim=1), (model_weight.flatten(1) == 0).all(dim=1)
    else:
        score, zero = dense.abs(), model_weight == 0
    pruned = ~keep
    ties = boundary_ties(score, pruned)
    pruned_but_live = int((~zero & pruned & ~ties).sum())
    kept_but_zero = int((zero & keep & ~ties).sum()) if exact else 0
    return pruned_but_live, kept_but_zero
