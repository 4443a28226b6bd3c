"""The architectures beyond VGG13: shapes, parameter counts, output layer last, report round trip."""
from __future__ import annotations

import pytest
import torch

from hw2 import report
from hw2.checkpoint import save_checkpoint
from hw2.models import ARCHITECTURES, VGG13, build_model, build_model_for_images, prunable_weights

# (arch, image shape, parameters for 10 classes, name of the output layer's weight)
EXPECTED = [
    ("vgg13", (3, 32, 32), 9_413_066, "classifier.weight"),
    ("lenet5", (1, 28, 28), 61_706, "fc3.weight"),
    ("lenet300_100", (1, 28, 28), 266_610, "fc3.weight"),
    ("resnet18", (3, 32, 32), 11_173_962, "fc.weight"),
    ("resnet50", (3, 32, 32), 23_520_842, "fc.weight"),
]


def test_every_architecture_is_registered():
    assert {arch for arch, *_ in EXPECTED} == set(ARCHITECTURES)


@pytest.mark.parametrize("arch, shape, parameters, output", EXPECTED)
def test_architecture_maps_images_to_class_scores_with_the_output_layer_last(arch, shape, parameters, output):
    torch.manual_seed(0)
    model = build_model_for_images(arch, 10, shape).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, *shape))
    assert logits.shape == (2, 10)
    assert sum(p.numel() for p in model.parameters()) == parameters
    assert list(prunable_weights(model))[-1] == output


def test_vgg13_is_still_the_default_and_unchanged():
    model = build_model()
    assert isinstance(model, VGG13) and model.widths == [64, 64, 128, 128, 256, 256, 512, 512, 512, 512]


@pytest.mark.parametrize("arch", ["lenet5", "lenet300_100"])
def test_lenets_follow_the_image_size_and_channels(arch):
    model = build_model_for_images(arch, 7, (3, 32, 32)).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 7)


def test_lenet5_rejects_images_too_small_with_the_size_in_the_message():
    with pytest.raises(ValueError, match="image_size=8"):
        build_model("lenet5", 10, image_size=8)


def test_unknown_arch_names_the_choices():
    with pytest.raises(ValueError, match="lenet5"):
        build_model("alexnet")


@pytest.mark.parametrize("arch", ["lenet5", "lenet300_100", "resnet18"])
def test_report_loads_a_saved_model_of_each_architecture_by_its_metadata(tmp_path, arch):
    shape = (1, 28, 28) if arch.startswith("lenet") else (3, 32, 32)
    torch.manual_seed(0)
    model = build_model_for_images(arch, 10, shape).eval()
    save_checkpoint(tmp_path / "m.pt", model.state_dict(), {"arch": arch, "accuracy": 50.0})
    loaded, metadata, loaded_arch = report.load_model(tmp_path / "m.pt")
    assert loaded_arch == arch and metadata["accuracy"] == 50.0
    x = torch.randn(2, *shape)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert report.count_macs(loaded, shape) > 0
