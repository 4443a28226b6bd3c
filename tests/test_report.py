"""hw2.report: counting, file sizes, latency, the score and the CLI, on small seeded models."""
from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from torch import nn
from torch.nn.utils import prune

from hw2 import report
from hw2.checkpoint import save_checkpoint
from hw2.models import VGG13, make_pruning_permanent, prunable_weights

SMALL_WIDTHS = [8, 8, 16, 16, 16, 16, 32, 32, 32, 32]


def small_vgg(seed: int = 0) -> VGG13:
    torch.manual_seed(seed)
    return VGG13(widths=SMALL_WIDTHS).eval()


def zero_smallest(model: nn.Module, fraction: float) -> None:
    """Unstructured: zero the smallest |w| of every conv/linear weight, in place."""
    with torch.no_grad():
        for weight in prunable_weights(model).values():
            k = int(round(fraction * weight.numel()))
            order = weight.abs().flatten().argsort()
            weight.view(-1)[order[:k]] = 0


def zero_filters(model: nn.Module, fraction: float) -> None:
    """Structured: zero the first round(fraction * C_out) filters of every conv, in place."""
    with torch.no_grad():
        for name, weight in prunable_weights(model).items():
            if weight.dim() == 4:
                weight[: int(round(fraction * weight.shape[0]))] = 0


def test_count_macs_matches_the_formula_for_conv_and_linear():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    assert report.count_macs(model, (3, 8, 8)) == 4 * 8 * 8 * 3 * 3 * 3 + 256 * 10


def test_count_macs_of_vgg13_sums_every_conv_at_its_resolution():
    model = VGG13()
    expected, size, channels = 0, 32, 3
    for entry in (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"):
        if entry == "M":
            size //= 2
            continue
        expected += entry * size * size * channels * 9
        channels = entry
    expected += 512 * 10
    assert report.count_macs(model) == expected


def test_nonzero_macs_scale_with_the_kept_weights():
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False))
    with torch.no_grad():
        model[0].weight[:2] = 0  # half the filters
    assert report.count_macs(model, (2, 6, 6), nonzero_only=True) * 2 == report.count_macs(model, (2, 6, 6))


def test_parameter_and_nonzero_counts_agree_before_and_after_making_masks_permanent():
    model = small_vgg()
    assert report.count_parameters(model) == sum(p.numel() for p in model.parameters())
    conv = model.features[0]
    mask = (torch.rand_like(conv.weight) > 0.5).float()
    prune.custom_from_mask(conv, "weight", mask)
    masked_nonzeros = report.count_nonzeros(model)
    masked_params = report.count_parameters(model)
    make_pruning_permanent(model)
    assert report.count_nonzeros(model) == masked_nonzeros
    assert report.count_parameters(model) == masked_params
    assert report.count_nonzeros(model, prunable_only=True) < report.count_parameters(model, prunable_only=True)


def test_pruning_ratios_split_structured_from_unstructured():
    unstructured = small_vgg()
    zero_smallest(unstructured, 0.5)
    p_s, p_u = report.pruning_ratios(unstructured)
    assert p_s == 0.0 and p_u == pytest.approx(0.5, abs=0.01)

    structured = small_vgg()
    zero_filters(structured, 0.25)
    p_s, p_u = report.pruning_ratios(structured)
    conv = sum(w.numel() for w in prunable_weights(structured).values() if w.dim() == 4)
    total = sum(w.numel() for w in prunable_weights(structured).values())
    assert p_s == pytest.approx(0.25 * conv / total) and p_u == 0.0


def test_efficiency_score_is_the_lab_formula():
    assert report.efficiency_score(0.0, 0.0, 5.6e6, 2.8e8) == pytest.approx(2.0)
    assert report.efficiency_score(0.2, 0.3, 5.6e6, 2.8e8) == pytest.approx(0.5 + 0.8)
    assert report.efficiency_score(0.0, 0.0, 5.6e6, 2.8e8, weight_bits=8, act_bits=16) == pytest.approx(0.25 + 0.5)
    with pytest.raises(ValueError, match="p_s"):
        report.efficiency_score(0.7, 0.7, 1, 1)
    with pytest.raises(ValueError, match="weight_bits"):
        report.efficiency_score(0.0, 0.0, 1, 1, weight_bits=0)


def test_masked_file_is_larger_and_sparse_encodings_smaller_at_high_sparsity():
    model = small_vgg()
    zero_smallest(model, 0.9)
    sizes = report.file_sizes(model)
    assert sizes.masked > 1.5 * sizes.permanent  # weight_orig + a float mask per weight
    assert sizes.permanent == pytest.approx(sizes.dense, rel=0.01)  # zeros cost as much as any float
    assert sizes.saved < 0.5 * sizes.permanent  # what save_checkpoint writes: a bitmask and the nonzeros
    assert sizes.sparse_csr < sizes.permanent
    assert sizes.compacted is None and "n/a" in sizes.notes["compacted"]


def test_compaction_that_is_not_implemented_gives_na_with_the_reason():
    def stub(model):
        raise NotImplementedError("student stub")

    sizes = report.file_sizes(small_vgg(), compact=stub)
    assert sizes.compacted is None and "not implemented" in sizes.notes["compacted"]


def test_compacted_size_is_measured_when_compaction_works():
    smaller = VGG13(widths=[w // 2 for w in SMALL_WIDTHS])
    sizes = report.file_sizes(small_vgg(), compact=lambda m: smaller)
    assert sizes.compacted is not None and sizes.compacted < sizes.permanent


def test_saved_size_is_what_save_checkpoint_writes(tmp_path):
    model = small_vgg()
    zero_filters(model, 0.5)
    saved = save_checkpoint(tmp_path / "m.pt", model.state_dict())
    assert report.file_sizes(model).saved == saved.stat().st_size


def test_measure_latency_reports_a_positive_median_within_min_and_max():
    timing = report.measure_latency(small_vgg(), (3, 32, 32), batch_size=4, warmup=1, repeats=5)
    assert 0 < timing["min_ms"] <= timing["median_ms"] <= timing["max_ms"]
    assert timing["images_per_s"] == pytest.approx(4 / (timing["median_ms"] / 1000))


def test_load_model_folds_masks_of_a_file_saved_mid_pruning(tmp_path):
    model = small_vgg()
    prune.custom_from_mask(model.features[0], "weight", (torch.rand_like(model.features[0].weight) > 0.5).float())
    x = torch.randn(2, 3, 32, 32)
    expected = model(x)
    save_checkpoint(tmp_path / "masked.pt", model.state_dict())
    loaded, _, arch = report.load_model(tmp_path / "masked.pt")
    assert arch == "vgg13"
    torch.testing.assert_close(loaded(x), expected)


def test_cli_reports_models_writes_json_and_the_score_plot(tmp_path, capsys):
    dense, pruned = small_vgg(0), small_vgg(1)
    zero_smallest(pruned, 0.8)
    save_checkpoint(tmp_path / "dense_acc_93.10.pt", dense.state_dict())
    save_checkpoint(tmp_path / "pruned.pt", pruned.state_dict(), {"accuracy": 88.5})
    code = report.main([str(tmp_path / "dense_acc_93.10.pt"), str(tmp_path / "pruned.pt"), "--repeats", "2",
                        "--warmup", "0", "--batch-sizes", "1", "--json", str(tmp_path / "r.json"),
                        "--plot", str(tmp_path / "score.png"), "--weight-bits", "8"])
    assert code == 0
    out = capsys.readouterr().out
    assert "masked (orig+mask)" in out and "efficiency score" in out and "this file on disk" in out
    data = json.loads((tmp_path / "r.json").read_text())["models"]
    by_name = {k.rsplit("/", 1)[-1]: v for k, v in data.items()}
    assert by_name["dense_acc_93.10.pt"]["accuracy"] == 93.10
    assert by_name["pruned.pt"]["accuracy"] == 88.5
    assert by_name["pruned.pt"]["score"] < by_name["dense_acc_93.10.pt"]["score"]
    assert by_name["pruned.pt"]["weight_bits"] == 8
    for name in ("dense_acc_93.10.pt", "pruned.pt"):  # the real size of each file given
        assert by_name[name]["file_bytes"]["on_disk"] == (tmp_path / name).stat().st_size
    assert by_name["pruned.pt"]["file_bytes"]["on_disk"] < 0.5 * by_name["dense_acc_93.10.pt"]["file_bytes"]["on_disk"]
    with Image.open(tmp_path / "score.png") as image:
        assert image.format == "PNG"


def test_cli_missing_file_is_a_one_line_error(tmp_path, capsys):
    assert report.main([str(tmp_path / "nope.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "nope.pt" in err and "\n" not in err


def test_report_model_works_on_a_model_with_masks_still_attached():
    model = small_vgg()
    for name, weight in prunable_weights(model).items():
        module = model.get_submodule(name.rpartition(".")[0])
        prune.custom_from_mask(module, "weight", (weight.detach().abs() > weight.detach().abs().median()).float())
    r = report.report_model(model, "vgg13", batch_sizes=(1,), repeats=1, warmup=0)
    assert r["p_unstructured"] == pytest.approx(0.5, abs=0.02)
    assert r["file_bytes"]["masked"] > r["file_bytes"]["permanent"]
    assert hasattr(model.features[0], "weight_mask")  # the model given is left as it was


def test_compare_latency_times_every_model_given_and_keeps_their_names():
    timings = report.compare_latency({"a": small_vgg(), "b": small_vgg()}, (3, 32, 32), batch_size=2, warmup=1, repeats=3)
    assert set(timings) == {"a", "b"}
    for timing in timings.values():
        assert 0 < timing["min_ms"] <= timing["median_ms"] <= timing["max_ms"]


def test_report_gives_the_compacted_speedup_as_the_ratio_of_the_two_interleaved_medians(monkeypatch):
    smaller = VGG13(widths=[w // 2 for w in SMALL_WIDTHS]).eval()
    monkeypatch.setattr(report, "compaction_for", lambda arch: (lambda model: smaller))
    model = small_vgg()
    zero_filters(model, 0.5)
    r = report.report_model(model, batch_sizes=(2,), repeats=3, warmup=1)
    compacted = r["compacted"]["latency"]["batch_2"]
    assert compacted["speedup"] == pytest.approx(r["latency"]["batch_2"]["median_ms"] / compacted["median_ms"])
