"""Properties of the reference pruning functions on small seeded tensors and models (CPU)."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from hw2.data import make_loaders, make_synthetic
from hw2.models import VGG13, make_pruning_permanent, prunable_weights
from grader.solution import REPO_ROOT
from hw2.train import make_optimizer

SMALL_WIDTHS = [8, 8, 16, 16, 16, 16, 32, 32, 32, 32]


def small_vgg(seed: int = 0) -> VGG13:
    torch.manual_seed(seed)
    model = VGG13(widths=SMALL_WIDTHS)
    for module in model.modules():  # non-trivial BatchNorm so a leaked shift would show
        if isinstance(module, nn.BatchNorm2d):
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return model


def write_yaml(tmp_path, text: str):
    path = tmp_path / "ratios.yaml"
    path.write_text(text)
    return path


# ------------------------------------------------------------------ masks
@pytest.mark.parametrize("shape", [(16, 8, 3, 3), (10, 7), (5,)])
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.8, 0.99])
def test_unstructured_prune_removes_exactly_the_smallest_magnitudes(ref, shape, sparsity):
    torch.manual_seed(1)
    weight = torch.randn(shape)
    before = weight.clone()
    mask = ref.unstructured_prune(weight, sparsity)
    assert mask.shape == weight.shape and torch.equal(weight, before)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    pruned = (mask == 0).sum().item()
    assert pruned == round(sparsity * weight.numel())
    if 0 < pruned < weight.numel():
        assert weight.abs()[mask == 0].max() <= weight.abs()[mask == 1].min()


def test_unstructured_prune_breaks_ties_by_flat_index(ref):
    weight = torch.tensor([1.0, -1.0, 1.0, 2.0])
    assert ref.unstructured_prune(weight, 0.5).tolist() == [0.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize("sparsity", [0.0, 0.25, 0.4, 0.9])
def test_filter_prune_removes_whole_filters_with_smallest_l2_norm(ref, sparsity):
    torch.manual_seed(2)
    weight = torch.randn(20, 6, 3, 3) * torch.linspace(0.1, 2.0, 20).view(-1, 1, 1, 1)
    before = weight.clone()
    mask = ref.filter_prune(weight, sparsity)
    assert mask.shape == weight.shape and torch.equal(weight, before)
    per_filter = mask.flatten(1)
    assert torch.all((per_filter == 0).all(1) | (per_filter == 1).all(1)), "a filter is partly pruned"
    pruned = (per_filter[:, 0] == 0)
    assert pruned.sum().item() == round(sparsity * 20)
    norms = weight.flatten(1).norm(dim=1)
    if 0 < pruned.sum() < 20:
        assert norms[pruned].max() <= norms[~pruned].min()


def test_prune_ratio_must_be_below_one(ref):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        ref.unstructured_prune(torch.randn(4), 1.0)


# ------------------------------------------------------------------ YAML
def test_yaml_ratios_are_read_in_file_order(ref, tmp_path):
    path = write_yaml(tmp_path, "prune_ratios:\n  features.3.weight: 0.5\n  features.0.weight: 0.25\n  classifier.weight: 0\n")
    ratios = ref.read_prune_ratios_from_yaml(path, VGG13())
    assert ratios == {"features.3.weight": 0.5, "features.0.weight": 0.25, "classifier.weight": 0.0}
    assert list(ratios) == ["features.3.weight", "features.0.weight", "classifier.weight"]


@pytest.mark.parametrize("text, pattern", [
    ("prune_ratios:\n  features.99.weight: 0.5\n", r"features\.99\.weight.*valid names: features\.0\.weight, features\.3\.weight"),
    ("prune_ratios:\n  features.1.weight: 0.5\n", r"features\.1\.weight.*valid names"),  # BatchNorm: not prunable
    ("prune_ratios:\n  features.0.weight: 1.2\n", r"features\.0\.weight.*1\.2.*\[0, 1\)"),
    ("prune_ratios:\n  features.0.weight: -0.1\n", r"features\.0\.weight.*\[0, 1\)"),
    ("prune_ratios:\n  features.0.weight: half\n", r"features\.0\.weight.*'half'"),
    ("prune_ratios:\n  features.0.weight: 0.5\n   features.3.weight: [0.5\n", r"malformed YAML at line \d"),
    ("ratios:\n  features.0.weight: 0.5\n", r"prune_ratios"),
])
def test_yaml_bad_input_raises_a_one_line_error_naming_the_problem(ref, tmp_path, text, pattern):
    with pytest.raises(ValueError, match=pattern) as info:
        ref.read_prune_ratios_from_yaml(write_yaml(tmp_path, text), VGG13())
    assert "\n" not in str(info.value)


def test_shipped_configs_are_valid_and_reference_configs_hit_the_targets(ref, reference_dir):
    model = VGG13()
    for name in ("vgg13_example.yaml", "unstructured_0.80.yaml", "filter_0.40.yaml"):
        ref.read_prune_ratios_from_yaml(REPO_ROOT / "configs" / name, model)  # student templates parse
    for kind, target in (("unstructured", 0.80), ("filter", 0.40)):
        ratios = ref.read_prune_ratios_from_yaml(reference_dir / "configs" / f"{kind}_{target:.2f}.yaml", model)
        pruned = copy.deepcopy(model)
        ref.apply_pruning(pruned, kind, ratios)
        assert abs(ref.test_sparsity(pruned, kind)["overall"] - target) <= 0.005


# ------------------------------------------------------------------ applying masks and measuring sparsity
def test_apply_pruning_is_layer_wise_and_zero_exactly_where_masked(ref):
    model = small_vgg()
    ratios = {"features.0.weight": 0.5, "features.14.weight": 0.75, "classifier.weight": 0.3}
    masks = ref.apply_pruning(model, "unstructured", ratios)
    weights = prunable_weights(model)
    for name, ratio in ratios.items():
        assert torch.equal(weights[name] == 0, masks[name] == 0)
        assert (masks[name] == 0).sum().item() == round(ratio * weights[name].numel())
    assert (weights["features.3.weight"] != 0).all(), "a layer not in the dict was pruned"


def test_filter_pruning_masks_the_batchnorm_of_each_pruned_filter(ref):
    model = small_vgg()
    masks = ref.apply_pruning(model, "filter", {"features.7.weight": 0.5})
    dead = (masks["features.7.weight"].flatten(1) == 0).all(1)
    assert dead.sum().item() == 8
    bn = model.features[8]
    assert torch.all(bn.weight[dead] == 0) and torch.all(bn.bias[dead] == 0)
    assert torch.all(bn.weight[~dead] != 0)
    assert {"features.8.weight", "features.8.bias"} <= set(masks)


def test_filter_pruning_rejects_linear_layers(ref):
    with pytest.raises(ValueError, match="classifier.weight"):
        ref.apply_pruning(small_vgg(), "filter", {"classifier.weight": 0.5})


def test_unknown_sparsity_type_is_an_error(ref):
    with pytest.raises(ValueError, match="unstructured, filter"):
        ref.apply_pruning(small_vgg(), "channel", {"features.0.weight": 0.5})


def test_test_sparsity_counts_conv_and_linear_weights_only(ref, capsys):
    model = small_vgg()
    ref.apply_pruning(model, "filter", {"features.3.weight": 0.5, "features.10.weight": 0.25})
    report = ref.test_sparsity(model, "filter")
    weights = prunable_weights(model)
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    total = sum(w.numel() for w in weights.values())
    assert math.isclose(report["overall"], zeros / total)
    assert report["layers"]["features.3.weight"] == 0.5 and report["layers"]["features.0.weight"] == 0.0
    assert report["zero_filters"]["features.3.weight"] == 4 and report["zero_filters"]["features.10.weight"] == 4
    printed = capsys.readouterr().out
    assert "overall" in printed and "features.3.weight" in printed


def test_repeated_pruning_grows_the_mask(ref):
    model = small_vgg()
    first = ref.apply_pruning(model, "unstructured", {"features.14.weight": 0.3})["features.14.weight"]
    second = ref.apply_pruning(model, "unstructured", {"features.14.weight": 0.6})["features.14.weight"]
    assert torch.all(second <= first), "a weight pruned in round 1 came back in round 2"
    assert (second == 0).sum().item() == round(0.6 * second.numel())


# ------------------------------------------------------------------ retraining
@pytest.fixture(scope="module")
def tiny_loaders():
    data = make_synthetic(num_train=64, num_test=32, seed=0)
    return make_loaders(data, batch_size=16, device="cpu", seed=0)


@pytest.mark.parametrize("kind", ["unstructured", "filter"])
def test_masked_retrain_keeps_pruned_weights_zero_and_moves_the_others(ref, tiny_loaders, kind):
    model = small_vgg()
    masks = ref.apply_pruning(model, kind, {"features.0.weight": 0.5, "features.21.weight": 0.5})
    before = {k: v.detach().clone() for k, v in prunable_weights(model).items()}
    history = ref.masked_retrain(model, masks, make_optimizer(model, 0.05), nn.CrossEntropyLoss(), *tiny_loaders,
                                 num_epochs=1, device="cpu", progress=False)
    assert len(history) == 1 and {"loss", "accuracy", "test_accuracy"} <= set(history[0])
    after = prunable_weights(model)
    for name in ("features.0.weight", "features.21.weight"):
        assert torch.all(after[name][masks[name] == 0] == 0)
        assert not torch.allclose(after[name][masks[name] == 1], before[name][masks[name] == 1])


def test_masked_retrain_attaches_masks_given_for_a_model_pruned_by_hand(ref, tiny_loaders):
    model = small_vgg()
    mask = ref.unstructured_prune(model.features[0].weight, 0.5)
    model.features[0].weight.data *= mask
    ref.masked_retrain(model, {"features.0.weight": mask}, make_optimizer(model, 0.05), nn.CrossEntropyLoss(),
                       *tiny_loaders, num_epochs=1, device="cpu", progress=False)
    assert torch.all(model.features[0].weight[mask == 0] == 0)


def test_oneshot_prunes_once_to_the_target(ref, tiny_loaders):
    model = small_vgg()
    ratios = {"features.7.weight": 0.6, "features.24.weight": 0.8}
    log = ref.oneshot_magnitude_prune(model, "unstructured", ratios, train_loader=tiny_loaders[0],
                                      test_loader=tiny_loaders[1], epochs=1, device="cpu", progress=False)
    assert len(log) == 1 and log[0]["ratios"] == ratios
    for name, ratio in ratios.items():
        weight = prunable_weights(model)[name]
        assert (weight == 0).sum().item() == round(ratio * weight.numel())


@pytest.mark.parametrize("iterations", [3, 5])
def test_iterative_pruning_grows_each_round_and_lands_on_the_target(ref, tiny_loaders, iterations):
    model = small_vgg()
    ratios = {"features.7.weight": 0.6, "features.24.weight": 0.8}
    log = ref.iterative_magnitude_prune(model, "filter", ratios, iterations=iterations, train_loader=tiny_loaders[0],
                                        test_loader=tiny_loaders[1], epochs=0, device="cpu", progress=False)
    assert [entry["iteration"] for entry in log] == list(range(1, iterations + 1))
    for name, target in ratios.items():
        steps = [entry["ratios"][name] for entry in log]
        assert all(a < b for a, b in zip(steps, steps[1:])) and steps[-1] == target
    sparsities = [entry["sparsity"] for entry in log]
    assert sparsities == sorted(sparsities)
    filters = prunable_weights(model)["features.24.weight"].flatten(1)
    assert (filters == 0).all(1).sum().item() == round(0.8 * filters.shape[0])


def test_iterative_pruning_refuses_fewer_than_three_iterations(ref, tiny_loaders):
    with pytest.raises(ValueError, match="at least 3 iterations, got 2"):
        ref.iterative_magnitude_prune(small_vgg(), "unstructured", {"features.0.weight": 0.5}, iterations=2,
                                      train_loader=tiny_loaders[0], test_loader=tiny_loaders[1], epochs=0, device="cpu")


# ------------------------------------------------------------------ removing pruned channels
RATIOS = {"features.0.weight": 0.25, "features.3.weight": 0.5, "features.10.weight": 0.5,
          "features.21.weight": 0.4, "features.31.weight": 0.5}


def expected_parameter_count(model: VGG13, masks: dict) -> int:
    """Parameters of the compacted VGG13: kept filters x kept input channels x 9, BN 2 per channel, classifier."""
    kept = []
    for i, layer in enumerate(model.features):
        if isinstance(layer, nn.Conv2d):
            mask = masks.get(f"features.{i}.weight")
            kept.append(layer.out_channels if mask is None else int((mask.flatten(1)[:, 0] != 0).sum()))
    count, channels = 0, 3
    for width in kept:
        count += width * channels * 9 + 2 * width
        channels = width
    return count + channels * 10 + 10


@pytest.mark.parametrize("permanent", [False, True])
def test_compacted_model_matches_the_masked_model(ref, permanent):
    model = small_vgg()
    masks = ref.apply_pruning(model, "filter", RATIOS)
    if permanent:
        make_pruning_permanent(model)
    model.eval()
    compact = ref.prune_channels_after_filter_prune(model)
    compact.eval()
    assert compact is not model and any(n.endswith("weight_orig") for n, _ in model.named_parameters()) != permanent
    assert sum(p.numel() for p in compact.parameters()) == expected_parameter_count(model, masks)
    assert compact.features[3].out_channels == 4 and compact.features[4].num_features == 4
    assert compact.features[7].in_channels == 4 and compact.classifier.in_features == 16
    for weight in prunable_weights(compact).values():
        assert (weight.flatten(1) != 0).any(1).all(), "an all-zero filter survived"
    torch.manual_seed(3)
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        assert (compact(x) - model(x)).abs().max().item() <= 1e-4
    rebuilt = VGG13.from_state_dict(compact.state_dict())  # a compacted checkpoint reloads
    assert rebuilt.widths == compact.widths


def test_leaving_batchnorm_unmasked_would_change_the_outputs(ref):
    """Why the reference masks BatchNorm: without it, removing a dead channel drops its BN shift."""
    model = small_vgg()
    masks = ref.apply_pruning(model, "filter", RATIOS)
    make_pruning_permanent(model)
    torch.manual_seed(4)
    for i in (1, 4, 11, 22, 32):  # restore the BN shifts of pruned channels
        model.features[i].bias.data[model.features[i].bias.data == 0] = 0.5
    model.eval()
    compact = ref.prune_channels_after_filter_prune(model).eval()
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        assert (compact(x) - model(x)).abs().max().item() > 1e-3
    assert masks  # the masks were applied


# ------------------------------------------------------------------ plots
def png_ok(path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_mask_draws_one_row_per_filter(ref, tmp_path):
    model = small_vgg()
    ref.apply_pruning(model, "unstructured", {"features.7.weight": 0.7})
    weight = model.features[7].weight
    image = ref.plot_mask(weight, tmp_path / "mask.png", title="test")
    assert image.shape == (16, 8 * 9)
    assert set(image.flatten().tolist()) == {0, 1}
    assert (image == (weight.detach() != 0).reshape(16, -1).numpy()).all()
    assert png_ok(tmp_path / "mask.png")


def test_plot_sparsity_vs_accuracy_draws_one_point_per_model(ref, tmp_path):
    records = [{"label": "Omp_unstructured", "sparsity": 0.8, "accuracy": 91.5},
               {"label": "Imp_filter", "sparsity": 0.4, "accuracy": 92.0}]
    points = ref.plot_sparsity_vs_accuracy(records, tmp_path / "cmp.png", dense_accuracy=93.0)
    assert points == [("Omp_unstructured", 0.8, 91.5), ("Imp_filter", 0.4, 92.0)]
    assert png_ok(tmp_path / "cmp.png")
