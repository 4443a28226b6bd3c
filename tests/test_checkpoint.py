"""Checkpoint I/O: atomic writes, weights_only reads, and files the grader must refuse without running or reading."""
from __future__ import annotations

import json
import os

import pytest
import torch

from hw2.checkpoint import CheckpointError, atomic_write_bytes, load_checkpoint, save_checkpoint, write_json


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
