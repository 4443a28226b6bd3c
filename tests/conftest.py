"""Shared fixtures: the exported reference solution and small seeded models."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from grader.solution import REPO_ROOT, export


def load_module(path: Path, name: str):
    """Import ``path`` as module ``name`` (used to load the reference pruning module next to the stubs)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def reference_dir(tmp_path_factory) -> Path:
    """A complete copy of the project with the reference solution in place."""
    return export(tmp_path_factory.mktemp("reference") / "hw2-reference", REPO_ROOT)


@pytest.fixture(scope="session")
def ref(reference_dir):
    """The reference ``hw2.pruning`` module (the exported file, imported beside the stubs' package)."""
    return load_module(reference_dir / "hw2" / "pruning.py", "hw2_reference_pruning")


@pytest.fixture
def seeded():
    torch.manual_seed(0)
