"""Checkpoint I/O: atomic writes, weights_only reads, the compact format of pruned models, and files the
grader must refuse without running or reading."""
from __future__ import annotations

import functools
import json
import os

import pytest
import torch
import yaml

from hw2 import REPO_ROOT
from hw2.checkpoint import (COMPACT_FORMAT, CheckpointError, atomic_write_bytes, load_checkpoint, save_checkpoint,
                            write_json)
from hw2.models import VGG13, prunable_weights

REFERENCE_CONFIGS = REPO_ROOT / "solution" / "configs"  # the reference ratios: overall 0.80 / 0.40


class _RunsCode:
    """Unpickling this calls ``touch`` on a marker file: it needs more than weights_only allows."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_round_trip_keeps_tensors_and_metadata(tmp_path):
    state = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(2)}
    save_checkpoint(tmp_path / "m.pt", state, {"method": "omp", "steps": [{"accuracy": 91.5}]})
    loaded, metadata = load_checkpoint(tmp_path / "m.pt")
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
    assert metadata == {"method": "omp", "steps": [{"accuracy": 91.5}]}


def test_written_files_have_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        save_checkpoint(tmp_path / "m.pt", {"w": torch.ones(1)})
        write_json(tmp_path / "log.json", {})
    finally:
        os.umask(old)
    assert {oct((tmp_path / n).stat().st_mode & 0o777) for n in ("m.pt", "log.json")} == {oct(0o644)}


def test_bare_state_dict_loads_with_empty_metadata(tmp_path):
    torch.save({"w": torch.ones(3)}, tmp_path / "bare.pt")
    loaded, metadata = load_checkpoint(tmp_path / "bare.pt")
    assert torch.equal(loaded["w"], torch.ones(3)) and metadata == {}


def test_file_that_needs_code_is_rejected_and_never_executed(tmp_path):
    marker = tmp_path / "CODE_WAS_EXECUTED"
    torch.save({"state_dict": {"w": torch.ones(1)}, "hook": _RunsCode(str(marker))}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


def test_file_over_max_bytes_is_rejected_before_it_is_read(tmp_path):
    path = tmp_path / "huge.pt"
    save_checkpoint(path, {"w": torch.ones(4)})
    with open(path, "r+b") as f:  # a sparse tail: 3 GB on paper, nothing on disk
        f.truncate(3 * 2**30)
    with pytest.raises(CheckpointError, match=r"3072 MB, more than the 160 MB .*not read"):
        load_checkpoint(path, max_bytes=160 * 2**20)


@pytest.mark.parametrize("content, reason", [(None, "not found"), (b"not a torch file", "cannot be loaded"),
                                             ("list", "not a model checkpoint")])
def test_missing_or_foreign_files_get_one_line_reasons(tmp_path, content, reason):
    path = tmp_path / "x.pt"
    if content == "list":
        torch.save([torch.ones(1)], path)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=reason) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    write_json(tmp_path / "log.json", {"a": 1})

    def half_then_fail(f):
        f.write(b'{"truncated": ')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(tmp_path / "log.json", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(tmp_path / "new.pt", half_then_fail)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.json"]
    assert json.loads((tmp_path / "log.json").read_text()) == {"a": 1}


# ---------------------------------------------------------------------------------------------
# The compact format: pruned models round-trip exactly and are small
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def pruned_vgg13(kind: str) -> VGG13:
    """A full-size VGG13 with seeded random weights, pruned per layer with the reference ratios (no data needed).

    Pruned weights are ``weight * mask``, so a pruned negative weight is ``-0.0`` as after
    ``make_pruning_permanent``; filter pruning zeroes the smallest-L2 filters and their
    BatchNorm scale and shift.  ``kind="dense"`` is the unpruned model.
    """
    torch.manual_seed(0)
    model = VGG13().eval()
    with torch.no_grad():
        for module in model.features:  # trained-looking BatchNorms: no zeros, not the identity
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
        if kind == "dense":
            return model
        ratios = yaml.safe_load((REFERENCE_CONFIGS / f"{kind}_{0.80 if kind == 'unstructured' else 0.40:.2f}.yaml")
                                .read_text())["prune_ratios"]
        for name, ratio in ratios.items():
            weight = model.get_parameter(name)
            if kind == "unstructured":
                mask = torch.ones(weight.numel())
                mask[weight.abs().flatten().argsort()[: round(ratio * weight.numel())]] = 0
                weight.mul_(mask.view_as(weight))
            else:
                filters = torch.ones(weight.shape[0])  # (C_out,)
                filters[weight.flatten(1).norm(dim=1).argsort()[: round(ratio * weight.shape[0])]] = 0
                weight.mul_(filters.view(-1, 1, 1, 1))
                batchnorm = model.features[int(name.split(".")[1]) + 1]
                batchnorm.weight.mul_(filters)
                batchnorm.bias.mul_(filters)
    return model


def same_int_view(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's bits, as integers of the same width (to compare floats bit for bit)."""
    return tensor.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[tensor.element_size()])


def assert_restored_exactly(loaded: dict, original: dict) -> None:
    """Same keys in the same order, same dtypes and shapes, equal values, every nonzero float bit for bit.

    (A zero may come back as +0.0 where it was saved as -0.0; the two compare equal.)
    """
    assert list(loaded) == list(original)
    for key, tensor in original.items():
        restored = loaded[key]
        assert restored.dtype == tensor.dtype and restored.shape == tensor.shape, key
        assert torch.equal(restored, tensor), key
        if tensor.is_floating_point():
            nonzero = tensor != 0
            assert torch.equal(same_int_view(restored)[nonzero], same_int_view(tensor)[nonzero]), key


@pytest.mark.parametrize("kind, encoding", [("unstructured", "bitmask"), ("filter", "rows"), ("dense", None)])
def test_pruned_and_dense_models_round_trip_exactly(tmp_path, kind, encoding):
    model = pruned_vgg13(kind)
    state = model.state_dict()
    assert kind == "dense" or any(torch.signbit(w[w == 0]).any() for w in prunable_weights(model).values())
    save_checkpoint(tmp_path / "m.pt", state, {"method": "omp"})
    raw = torch.load(tmp_path / "m.pt", weights_only=True)
    if encoding is None:  # nothing to gain: the plain layout, as before
        assert "format" not in raw and all(isinstance(v, torch.Tensor) for v in raw["state_dict"].values())
    else:
        assert raw["format"] == COMPACT_FORMAT
        pruned = [name for name, weight in prunable_weights(model).items() if (weight == 0).any()]
        assert pruned and all(raw["state_dict"][name]["encoding"] == encoding for name in pruned)
    loaded, metadata = load_checkpoint(tmp_path / "m.pt")
    assert metadata == {"method": "omp"}
    assert_restored_exactly(loaded, state)
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(VGG13.from_state_dict(loaded).eval()(images), model(images))


def test_compact_file_of_an_unstructured_080_vgg13_is_under_10_mb(tmp_path):
    model = pruned_vgg13("unstructured")
    weights = prunable_weights(model).values()
    assert sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights) == pytest.approx(0.80, abs=0.005)
    size = save_checkpoint(tmp_path / "m.pt", model.state_dict()).stat().st_size
    plain = save_checkpoint(tmp_path / "plain.pt", model.state_dict(), compact=False).stat().st_size
    assert plain > 37e6 and size < 10e6
    # 1 bit per entry + 4 bytes per nonzero, plus headers: no hidden dense copy
    floats = [v for v in model.state_dict().values() if v.is_floating_point()]
    assert size <= sum(v.numel() for v in floats) / 8 + 4 * sum(int((v != 0).sum()) for v in floats) + 64 * 1024


def test_compact_file_of_a_filter_040_vgg13_holds_only_the_kept_filters(tmp_path):
    model = pruned_vgg13("filter")
    size = save_checkpoint(tmp_path / "m.pt", model.state_dict()).stat().st_size
    plain = save_checkpoint(tmp_path / "plain.pt", model.state_dict(), compact=False).stat().st_size
    kept = 0
    for value in model.state_dict().values():
        if value.dim() == 4:  # conv weight (C_out, C_in, kH, kW): its nonzero filters
            kept += int(value.flatten(1).ne(0).any(dim=1).sum()) * value[0].numel() * 4
        else:
            kept += value.numel() * value.element_size()
    assert size <= kept + 64 * 1024
    assert size < 0.62 * plain  # 40% of the conv weights are gone: about 60% of the plain file


def test_plain_files_from_older_runs_still_load(tmp_path):
    state = pruned_vgg13("unstructured").state_dict()
    torch.save({"state_dict": state, "metadata": {"file": "old.pt"}}, tmp_path / "old.pt")
    save_checkpoint(tmp_path / "plain.pt", state, compact=False)
    for name in ("old.pt", "plain.pt"):
        assert "format" not in torch.load(tmp_path / name, weights_only=True)
        loaded, _ = load_checkpoint(tmp_path / name)
        assert list(loaded) == list(state) and all(torch.equal(loaded[k], state[k]) for k in state)


# ---------------------------------------------------------------------------------------------
# Tampered compact files: a one-line CheckpointError, never a crash or a huge allocation
# ---------------------------------------------------------------------------------------------
def small_compact_file(path) -> dict:
    """A compact file with one bitmask entry "u" (4,095 entries: the last byte is padded) and one rows entry "f"."""
    gen = torch.Generator().manual_seed(0)
    unstructured = torch.randn(63, 65, generator=gen)
    unstructured[unstructured.abs() < 1.3] = 0  # about 80% zeros
    filters = torch.randn(32, 16, 3, 3, generator=gen)
    filters[::2] = 0  # every other filter pruned
    state = {"u": unstructured, "f": filters, "b": torch.randn(32, generator=gen)}
    save_checkpoint(path, state)
    raw = torch.load(path, weights_only=True)
    assert raw["state_dict"]["u"]["encoding"] == "bitmask" and raw["state_dict"]["f"]["encoding"] == "rows"
    return raw


def _set_bit(bitmask: torch.Tensor, index: int) -> torch.Tensor:
    bitmask = bitmask.clone()
    bitmask[index // 8] |= 1 << (7 - index % 8)  # np.packbits order: the first entry is the high bit
    return bitmask


def _first_unset(raw) -> int:
    import numpy as np

    return int(np.flatnonzero(np.unpackbits(raw["state_dict"]["u"]["bitmask"].numpy()) == 0)[0])


TAMPERINGS = {
    "values one short": (lambda r: r["state_dict"]["u"].update(values=r["state_dict"]["u"]["values"][:-1]),
                         "marks .* stored values"),
    "a bit flipped on": (lambda r: r["state_dict"]["u"].update(bitmask=_set_bit(r["state_dict"]["u"]["bitmask"],
                                                                                 _first_unset(r))),
                         "marks .* stored values"),
    "bitmask a byte short": (lambda r: r["state_dict"]["u"].update(bitmask=r["state_dict"]["u"]["bitmask"][:-1]),
                             "bitmask must be uint8 of 512 bytes"),
    "padding bit set": (lambda r: r["state_dict"]["u"].update(bitmask=_set_bit(r["state_dict"]["u"]["bitmask"], 4095)),
                        "past the end"),
    "absurd shape": (lambda r: r["state_dict"]["f"].update(shape=[2**20, 2**20, 3, 3]), "declares shape .* MB"),
    "negative dim": (lambda r: r["state_dict"]["u"].update(shape=[-63, -65]), "non-negative ints"),
    "float dims": (lambda r: r["state_dict"]["u"].update(shape=[63.0, 65]), "non-negative ints"),
    "too many dims": (lambda r: r["state_dict"]["u"].update(shape=[1] * 9 + [4095]), "non-negative ints"),
    "keep too short": (lambda r: r["state_dict"]["f"].update(keep=r["state_dict"]["f"]["keep"][:-1]),
                       "keep must be bool of length 32"),
    "keep not bool": (lambda r: r["state_dict"]["f"].update(keep=r["state_dict"]["f"]["keep"].to(torch.uint8)),
                      "keep must be bool"),
    "a kept row missing": (lambda r: r["state_dict"]["f"].update(rows=r["state_dict"]["f"]["rows"][:-1]),
                           "keep marks 16 of 32 rows"),
    "unknown encoding": (lambda r: r["state_dict"]["u"].update(encoding="zip"), "encoding 'zip'"),
    "encoding not a string": (lambda r: r["state_dict"]["u"].update(encoding=["bitmask"]), "encoding \\['bitmask'\\]"),
    "shape a tensor": (lambda r: r["state_dict"]["u"].update(shape=torch.tensor([63, 65])), "non-negative ints"),
    "extra field": (lambda r: r["state_dict"]["u"].update(offset=3), "fields"),
    "integer values": (lambda r: r["state_dict"]["u"].update(values=r["state_dict"]["u"]["values"].int()),
                       "not a dense float tensor"),
    "entry not a tensor": (lambda r: r["state_dict"].update(u="weights"), "is a str, not a tensor"),
    "unknown format": (lambda r: r.update(format="hw2-compact-99"), "this loader reads"),
    "one value viewed 2**31 times": (lambda r: r["state_dict"].update(b=torch.zeros(1).expand(2**31)),
                                     "tensor 'b' .* MB"),
}


@pytest.mark.parametrize("tampering", TAMPERINGS)
def test_tampered_compact_file_is_rejected_with_one_line(tmp_path, tampering):
    edit, reason = TAMPERINGS[tampering]
    raw = small_compact_file(tmp_path / "m.pt")
    edit(raw)
    torch.save(raw, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match=reason) as info:
        load_checkpoint(tmp_path / "m.pt")
    assert "\n" not in str(info.value) and str(tmp_path / "m.pt") in str(info.value)


def test_compact_file_decoding_to_more_than_max_bytes_is_rejected(tmp_path):
    small_compact_file(tmp_path / "m.pt")  # about 15 KB on disk, 35 KB of tensors
    load_checkpoint(tmp_path / "m.pt", max_bytes=64 * 1024)
    with pytest.raises(CheckpointError, match="more than the .* left of what a model may"):
        load_checkpoint(tmp_path / "m.pt", max_bytes=(tmp_path / "m.pt").stat().st_size + 1024)


class _KeepMask(torch.nn.Module):
    """A parametrization a student might write: the weight is ``original * mask``."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, original):
        return original * self.mask


@pytest.mark.parametrize("style", ["prune_hooks", "parametrize", "own_mask_buffer"])
def test_any_masking_style_saves_a_plain_state_dict_with_its_zeros(tmp_path, style):
    """main.py saves plain_state_dict(model, dense keys): whatever kept the masks, the file loads into VGG13."""
    from torch.nn.utils import parametrize, prune

    from hw2.models import plain_state_dict

    torch.manual_seed(0)
    dense = VGG13(num_classes=10, widths=[4, 6, 8, 8, 12, 12, 16, 16, 16, 16])
    model = VGG13(num_classes=10, widths=[4, 6, 8, 8, 12, 12, 16, 16, 16, 16])
    model.load_state_dict(dense.state_dict())
    conv = model.features[3]
    mask = (torch.rand(conv.weight.shape) > 0.5).float()
    if style == "prune_hooks":
        prune.custom_from_mask(conv, "weight", mask)
    elif style == "parametrize":
        parametrize.register_parametrization(conv, "weight", _KeepMask(mask))
    else:
        conv.register_buffer("weight_mask", mask)
        with torch.no_grad():
            conv.weight.mul_(mask)
    expected = conv.weight.detach().clone()
    save_checkpoint(tmp_path / "m.pt", plain_state_dict(model, dense.state_dict().keys()))
    state, _ = load_checkpoint(tmp_path / "m.pt")
    assert list(state) == list(dense.state_dict())
    assert torch.equal(state["features.3.weight"], expected) and bool((state["features.3.weight"] == 0).any())
    VGG13.from_state_dict(state)  # loads into the plain model


def test_a_model_that_lost_a_layer_names_the_missing_key():
    from hw2.models import plain_state_dict

    dense = VGG13(num_classes=10, widths=[4, 6, 8, 8, 12, 12, 16, 16, 16, 16])
    model = VGG13(num_classes=10, widths=[4, 6, 8, 8, 12, 12, 16, 16, 16, 16])
    model.classifier = torch.nn.Identity()
    with pytest.raises(ValueError, match="no classifier.weight, classifier.bias"):
        plain_state_dict(model, dense.state_dict().keys())


def test_folding_a_deep_copy_of_a_parametrized_model_leaves_the_original_working():
    """copy_without_pruning (as evaluate(exact=True) uses it) folds a copy; the original keeps its parametrization."""
    from torch.nn.utils import parametrize

    from hw2.models import copy_without_pruning

    model = VGG13(num_classes=10, widths=[4, 6, 8, 8, 12, 12, 16, 16, 16, 16])
    mask = (torch.rand(model.features[0].weight.shape) > 0.5).float()
    parametrize.register_parametrization(model.features[0], "weight", _KeepMask(mask))
    clone = copy_without_pruning(model)
    assert "features.0.weight" in clone.state_dict() and torch.equal(clone.features[0].weight, model.features[0].weight)
    assert parametrize.is_parametrized(model.features[0], "weight")
    assert torch.equal(model.features[0].weight == 0, mask == 0)  # still computed from original x mask
    x = torch.randn(2, 3, 32, 32)
    model.eval(), clone.eval()
    assert torch.allclose(model(x), clone(x))
