"""The shipped dense VGG13: loadable without code, small enough, and as accurate as its model card says.

The accuracy check re-measures the checkpoint on the CIFAR-10 test set in float32 (as the
grader measures) and skips with a reason when the data is not available offline.
"""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys

import pytest

from grader.solution import REPO_ROOT
from hw2.checkpoint import load_checkpoint

PRETRAINED = REPO_ROOT / "pretrained" / "vgg13_cifar10.pt"
CARD = REPO_ROOT / "pretrained" / "README.md"
OFFLINE_COPY = REPO_ROOT.parent / "shared" / "data" / "make_cifar10.py"  # an offline CIFAR-10 mirror, when present

pytestmark = pytest.mark.skipif(not PRETRAINED.is_file(), reason="pretrained/vgg13_cifar10.pt is not in this checkout")


def card_value(label: str) -> str:
    """The value of the model card's table row ``| label | value |`` (bold and units stripped by the caller)."""
    match = re.search(rf"^\|\s*{re.escape(label)}\s*\|\s*(.+?)\s*\|\s*$", CARD.read_text(), re.MULTILINE)
    assert match, f"pretrained/README.md has no '| {label} | ... |' row"
    return match.group(1).strip("*` ")


def test_checkpoint_is_a_plain_state_dict_within_size_and_matches_card_and_log():
    assert PRETRAINED.stat().st_size <= 40 * 2**20
    state_dict, metadata = load_checkpoint(PRETRAINED)  # weights_only=True
    assert metadata == {} and "features.0.weight" in state_dict
    digest = hashlib.sha256(PRETRAINED.read_bytes()).hexdigest()
    log = json.loads(PRETRAINED.with_suffix(".json").read_text())
    assert card_value("sha256") == digest == log["sha256"]
    assert float(card_value("test accuracy (float32)").rstrip(" %")) == pytest.approx(log["test_accuracy"], abs=0.005)
    assert log["precision"] in card_value("training precision") and log["command"] in CARD.read_text()


@pytest.fixture(scope="module")
def cifar10_dir(tmp_path_factory):
    if (REPO_ROOT / "data" / "cifar-10-batches-py" / "test_batch").is_file():
        return REPO_ROOT / "data"
    if not OFFLINE_COPY.is_file():
        pytest.skip("CIFAR-10 is not available offline (no data/cifar-10-batches-py and no offline copy to build it from)")
    folder = tmp_path_factory.mktemp("cifar10")
    subprocess.run([sys.executable, str(OFFLINE_COPY), str(folder)], check=True, capture_output=True)
    return folder


def test_card_accuracy_is_remeasured_on_the_test_set_in_float32(cifar10_dir):
    from hw2.data import load_cifar10, make_loaders
    from hw2.models import VGG13
    from hw2.train import evaluate

    data = load_cifar10(cifar10_dir, download=False)
    _, test_loader = make_loaders(data, 256, "cpu")
    model = VGG13.from_state_dict(load_checkpoint(PRETRAINED)[0])
    measured = evaluate(model, test_loader, "cpu", exact=True)
    assert measured == pytest.approx(float(card_value("test accuracy (float32)").rstrip(" %")), abs=0.05)


def test_train_defaults_on_cifar10_are_the_shipped_models_recipe():
    """``python -m hw2.train`` with no flags retrains the shipped model's recipe, as its error message promises."""
    from hw2.train import DENSE_RECIPE

    log = json.loads(PRETRAINED.with_suffix(".json").read_text())
    assert log["dataset"] == "cifar10"
    assert {key: log[key] for key in DENSE_RECIPE} == DENSE_RECIPE
