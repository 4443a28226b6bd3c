"""Realistic wrong solutions ("mutants") and the submissions the grader's own tests grade.

A code mutant is a small text edit of the reference ``hw2/pruning.py`` (as
exported by ``grader.solution``); an artifact mutant edits the reference run's
outputs the way a wrong ``main.py`` or a careless student would.  Each names the
graded test that must take points from it.

The helpers build, once per test session, the exported reference and its run
outputs (``main.py --method all`` on synthetic data), which several test
modules share.
"""
from __future__ import annotations

import atexit
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
GRADE_ARGS = ["--dataset", "synthetic"]  # the reference run below is on synthetic data


@dataclass(frozen=True)
class Mutant:
    name: str
    test: str  # the graded test that must lose points
    why: str
    edits: tuple = ()  # (old, new) text replacements in hw2/pruning.py; each old must occur exactly once ...
    scope: str = ""  # ... in this top-level function of it (default: the graded function the name starts with)
    artifacts: object = None  # or a function(results_dir) that edits the run outputs


def _rename_models(results: Path, rename) -> None:
    for path in sorted(results.glob("*_acc_*.pt")):
        match = re.match(r"^(?P<label>\w+?_(?:unstructured|filter))_(?P<s>[\d.]+)_acc_(?P<a>[\d.]+)\.pt$", path.name)
        new = rename(match["label"], float(match["s"]), float(match["a"]))
        path.rename(path.with_name(new))


def _replace_link(path: Path) -> None:
    """Turn a hard link into a private copy before editing, so the shared reference outputs stay intact."""
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data)


def _model_file(results: Path, label: str) -> Path:
    return next(results.glob(f"{label}_*_acc_*.pt"))


def percent_sparsity_in_name(results: Path) -> None:
    _rename_models(results, lambda label, s, a: f"{label}_{s * 100:.0f}_acc_{a:.2f}.pt")


def dense_accuracy_in_name(results: Path) -> None:
    dense = json.loads((results / "run_log.json").read_text())["dense_accuracy"]
    _rename_models(results, lambda label, s, a: f"{label}_{s:.2f}_acc_{dense + 1.37:.2f}.pt")


def imp_logged_two_iterations(results: Path) -> None:
    log_path = results / "run_log.json"
    log = json.loads(log_path.read_text())
    for label in ("Imp_unstructured", "Imp_filter"):
        log["models"][label]["steps"] = log["models"][label]["steps"][:2]
        log["models"][label]["iterations"] = 2
    _replace_link(log_path)
    log_path.write_text(json.dumps(log, indent=2))


def omp_model_handed_in_as_imp(results: Path) -> None:
    """The Omp_unstructured model copied over the Imp_unstructured file (same name pattern, the log's entry pointed
    at it): the file's own metadata still says Omp_unstructured."""
    omp, imp = _model_file(results, "Omp_unstructured"), _model_file(results, "Imp_unstructured")
    forged = imp.with_name(omp.name.replace("Omp_", "Imp_"))
    imp.unlink()
    forged.write_bytes(omp.read_bytes())
    log_path = results / "run_log.json"
    log = json.loads(log_path.read_text())
    log["models"]["Imp_unstructured"]["file"] = forged.name
    _replace_link(log_path)
    log_path.write_text(json.dumps(log, indent=2))


def log_accuracies_edited(results: Path) -> None:
    log_path = results / "run_log.json"
    log = json.loads(log_path.read_text())
    for entry in log["models"].values():
        entry["accuracy"] = 95.0
    _replace_link(log_path)
    log_path.write_text(json.dumps(log, indent=2))


def sparsity_target_missed(results: Path) -> None:
    """Omp_unstructured at about 0.75 overall (ratios not tuned), honestly named."""
    from hw2.checkpoint import load_checkpoint, save_checkpoint

    path = _model_file(results, "Omp_unstructured")
    state_dict, metadata = load_checkpoint(path)
    weight = state_dict["features.31.weight"]
    zeros = (weight == 0).flatten().nonzero().flatten()
    total = sum(v.numel() for k, v in state_dict.items() if k.endswith("weight") and v.dim() in (2, 4))
    revive = zeros[: int(0.05 * total)]
    flat = weight.flatten().clone()
    flat[revive] = 1e-3
    state_dict["features.31.weight"] = flat.view_as(weight)
    zero_count = sum(int((v == 0).sum()) for k, v in state_dict.items() if k.endswith("weight") and v.dim() in (2, 4))
    path.unlink()
    accuracy = path.name.rsplit("_acc_", 1)[1]
    save_checkpoint(results / f"Omp_unstructured_{zero_count / total:.2f}_acc_{accuracy}", state_dict, metadata)


def mask_figure_missing(results: Path) -> None:
    (results / "mask_Imp_filter.png").unlink()


class _RunsCode:
    """Pickled as a call of os.mkdir: loading it with weights_only=False would create the folder."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def checkpoint_needs_code(results: Path) -> None:
    """A model file that unpickles code (like torch.save(model)); the grader must refuse it without running it."""
    path = _model_file(results, "Omp_filter")
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    marker = results / "CODE_WAS_EXECUTED"
    path.unlink()
    torch.save({"state_dict": state_dict["state_dict"], "metadata": {}, "hook": _RunsCode(str(marker))}, path)


def filter_model_with_scattered_zeros(results: Path) -> None:
    """Omp_filter pruned weight by weight (same sparsity): zeros are not whole filters."""
    from hw2.checkpoint import load_checkpoint, save_checkpoint

    path = _model_file(results, "Omp_filter")
    state_dict, metadata = load_checkpoint(path)
    gen = torch.Generator().manual_seed(0)
    for key, weight in state_dict.items():
        if weight.dim() == 4:
            zeros = int((weight == 0).sum())
            filled = torch.where(weight == 0, torch.randn(weight.shape, generator=gen) * 0.01, weight)
            flat = filled.flatten().clone()
            flat[torch.argsort(flat.abs(), stable=True)[:zeros]] = 0
            state_dict[key] = flat.view_as(weight)
    path.unlink()
    save_checkpoint(path, state_dict, metadata)


MUTANTS = [
    # read_prune_ratios_from_yaml
    Mutant("yaml_unknown_layer_accepted", "test_read_prune_ratios_from_yaml_returns_mapping_and_rejects_bad_files",
           "names are not checked against the model",
           (("        if name not in valid:\n", "        if not name:\n"),)),
    Mutant("yaml_ratio_range_unchecked", "test_read_prune_ratios_from_yaml_returns_mapping_and_rejects_bad_files",
           "only negative ratios are rejected",
           (("not 0.0 <= ratio < 1.0:", "not 0.0 <= ratio:"),)),
    Mutant("yaml_error_leaks", "test_read_prune_ratios_from_yaml_returns_mapping_and_rejects_bad_files",
           "malformed YAML raises yaml's own error, not ValueError",
           (('raise ValueError(f"{path}: malformed YAML{where}: {problem}") from None', "raise"),)),
    # unstructured_prune
    Mutant("unstructured_prunes_largest", "test_unstructured_prune_removes_smallest_magnitudes",
           "sorts by descending magnitude",
           (("torch.argsort(tensor.detach().abs().flatten(), stable=True)",
             "torch.argsort(tensor.detach().abs().flatten(), descending=True, stable=True)"),)),
    Mutant("unstructured_off_by_one", "test_unstructured_prune_mask_shape_and_count", "prunes one entry too many",
           (("flat_mask[order[:k]] = 0", "flat_mask[order[:k + 1]] = 0"),)),
    Mutant("unstructured_threshold_ties", "test_unstructured_prune_mask_shape_and_count",
           "prunes everything <= the k-th magnitude: too many when magnitudes tie",
           (("        order = torch.argsort(tensor.detach().abs().flatten(), stable=True)  # ascending |w|\n"
             "        flat_mask[order[:k]] = 0",
             "        magnitudes = tensor.detach().abs().flatten()\n"
             "        flat_mask[magnitudes <= magnitudes.kthvalue(k).values] = 0"),)),
    Mutant("unstructured_keep_ratio_confusion", "test_unstructured_prune_mask_shape_and_count",
           "treats sparsity as the fraction to keep",
           (("k = _count_to_prune(tensor.numel(), sparsity)",
             "k = tensor.numel() - _count_to_prune(tensor.numel(), sparsity)"),)),
    Mutant("unstructured_modifies_input", "test_mask_functions_leave_input_unchanged", "zeroes the input in place",
           (("    return flat_mask.view_as(tensor)",
             "    tensor.data.mul_(flat_mask.view_as(tensor))\n    return flat_mask.view_as(tensor)"),)),
    # filter_prune
    Mutant("filter_wrong_dimension", "test_filter_prune_removes_whole_filters_in_right_number",
           "prunes input channels (dim 1) instead of output filters",
           (("    filters = tensor.shape[0]\n", "    filters = tensor.shape[1]\n"),
            ("norms = tensor.detach().reshape(filters, -1)", "norms = tensor.detach().transpose(0, 1).reshape(filters, -1)"),
            ("return keep.view(-1, *([1] * (tensor.dim() - 1))).expand_as(tensor).clone()",
             "return keep.view(1, -1, *([1] * (tensor.dim() - 2))).expand_as(tensor).clone()"))),
    Mutant("filter_l1_norm", "test_filter_prune_ranks_filters_by_l2_norm", "ranks filters by L1 norm",
           (("norms = tensor.detach().reshape(filters, -1).norm(p=2, dim=1)",
             "norms = tensor.detach().reshape(filters, -1).norm(p=1, dim=1)"),)),
    Mutant("filter_prunes_largest", "test_filter_prune_ranks_filters_by_l2_norm", "prunes the largest filters",
           (("keep[torch.argsort(norms, stable=True)[:k]] = 0", "keep[torch.argsort(norms, descending=True, stable=True)[:k]] = 0"),)),
    Mutant("filter_off_by_one", "test_filter_prune_removes_whole_filters_in_right_number", "prunes one filter too many",
           (("keep[torch.argsort(norms, stable=True)[:k]] = 0", "keep[torch.argsort(norms, stable=True)[:k + 1]] = 0"),)),
    Mutant("filter_prunes_single_weights", "test_filter_prune_removes_whole_filters_in_right_number",
           "filter pruning done weight by weight",
           (("    filters = tensor.shape[0]\n", "    return unstructured_prune(tensor, sparsity)\n    filters = tensor.shape[0]\n"),)),
    # apply_pruning
    Mutant("apply_global_threshold", "test_apply_pruning_masks_each_layer_to_its_own_ratio",
           "one magnitude threshold for the whole model",
           (("            masks[name] = _attach_mask(module, tensor_name, unstructured_prune(weight, ratio))",
             "            pool = torch.cat([getattr(*_module_of(model, n)).detach().abs().flatten() for n in prune_ratio_dict])\n"
             "            mean_ratio = sum(prune_ratio_dict.values()) / len(prune_ratio_dict)\n"
             "            threshold = pool.kthvalue(max(1, int(round(mean_ratio * pool.numel())))).values\n"
             "            masks[name] = _attach_mask(module, tensor_name, (weight.abs() > threshold).to(weight.dtype))"),)),
    Mutant("apply_masks_not_applied", "test_apply_pruning_masks_each_layer_to_its_own_ratio",
           "returns the masks but never zeroes the weights",
           (("            masks[name] = _attach_mask(module, tensor_name, unstructured_prune(weight, ratio))",
             "            masks[name] = unstructured_prune(weight, ratio)"),)),
    Mutant("apply_batchnorm_unmasked", "test_apply_pruning_filter_also_masks_batchnorm", "BatchNorm left unmasked",
           (('        masks[f"{bn_name}.{bn_tensor}"] = _attach_mask(bn, bn_tensor, channel_mask)',
             "        pass  # BatchNorm left as it is"),), scope="_mask_batchnorm_after"),
    Mutant("apply_batchnorm_shift_unmasked", "test_apply_pruning_filter_also_masks_batchnorm",
           "masks the BatchNorm scale but not its shift",
           (('    for bn_tensor in ("weight", "bias"):', '    for bn_tensor in ("weight",):'),), scope="_mask_batchnorm_after"),
    # test_sparsity
    Mutant("sparsity_counts_batchnorm", "test_sparsity_report_counts_conv_and_linear_weights_only",
           "counts every parameter named *weight, BatchNorm included",
           (("    for name, weight in prunable_weights(model).items():",
             "    for name, weight in ((n, p) for n, p in model.named_parameters() if n.endswith('weight')):"),)),
    Mutant("sparsity_mean_of_layers", "test_sparsity_report_counts_conv_and_linear_weights_only",
           "overall sparsity as the unweighted mean of the layer sparsities",
           (("    overall = zeros_total / max(weights_total, 1)", "    overall = sum(layers.values()) / max(len(layers), 1)"),)),
    Mutant("sparsity_zero_filters_any", "test_sparsity_report_counts_conv_and_linear_weights_only",
           "counts filters with any zero instead of all zeros",
           (("zero_filters[name] = int((weight.reshape(weight.shape[0], -1) == 0).all(dim=1).sum())",
             "zero_filters[name] = int((weight.reshape(weight.shape[0], -1) == 0).any(dim=1).sum())"),)),
    # masked_retrain
    Mutant("retrain_drops_masks", "test_masked_retrain_keeps_pruned_weights_zero_and_trains_the_rest",
           "masks removed before retraining, so pruned weights regrow",
           (("    history = []\n    for epoch in range(num_epochs):",
             "    from hw2.models import make_pruning_permanent\n    make_pruning_permanent(model)\n"
             "    history = []\n    for epoch in range(num_epochs):"),)),
    Mutant("retrain_one_epoch_short", "test_masked_retrain_keeps_pruned_weights_zero_and_trains_the_rest",
           "trains num_epochs - 1 epochs",
           (("    history = []\n    for epoch in range(num_epochs):", "    history = []\n    for epoch in range(num_epochs - 1):"),)),
    # OMP / IMP
    Mutant("omp_no_retraining", "test_oneshot_prunes_once_to_target_and_retrains", "prunes but never retrains",
           (("                               epochs, device, lr, weight_decay, progress)]",
             "                               0, device, lr, weight_decay, progress)]"),)),
    Mutant("imp_two_iterations", "test_iterative_prunes_in_at_least_three_rounds_landing_on_target",
           "an off-by-one loop: one round fewer, never reaching the target",
           (("    for step in range(1, iterations + 1):\n        ratios = {name: (target if step == iterations",
             "    for step in range(1, iterations):\n        ratios = {name: (target if step == iterations"),)),
    Mutant("imp_accepts_two_iterations", "test_iterative_prunes_in_at_least_three_rounds_landing_on_target",
           "no error for fewer than 3 iterations",
           (("    if iterations < MIN_IMP_ITERATIONS:\n        raise ValueError(f\"iterative pruning",
             "    if iterations < 1:\n        raise ValueError(f\"iterative pruning"),)),
    Mutant("imp_overshoots", "test_iterative_prunes_in_at_least_three_rounds_landing_on_target",
           "a linear schedule that goes one step past the target",
           (("ratios = {name: (target if step == iterations else 1.0 - (1.0 - target) ** (step / iterations))",
             "ratios = {name: min(0.95, target * (step + 1) / iterations)"),)),
    Mutant("imp_undershoots", "test_iterative_prunes_in_at_least_three_rounds_landing_on_target",
           "a geometric schedule that stops short of the target",
           (("ratios = {name: (target if step == iterations else 1.0 - (1.0 - target) ** (step / iterations))",
             "ratios = {name: (1.0 - (1.0 - target) ** (step / (iterations + 1)))"),)),
    # prune_channels_after_filter_prune
    Mutant("compact_running_stats_not_sliced", "test_prune_channels_gives_smaller_model_with_same_outputs",
           "BatchNorm running statistics taken from the first channels",
           (("getattr(new_bn, buffer).copy_(getattr(layer, buffer)[keep_in])",
             "getattr(new_bn, buffer).copy_(getattr(layer, buffer)[:len(keep_in)])"),)),
    Mutant("compact_classifier_not_sliced", "test_prune_channels_gives_smaller_model_with_same_outputs",
           "the Linear keeps its first inputs instead of the surviving channels",
           (("new_fc.weight.data.copy_(old.weight.data[:, keep_in])", "new_fc.weight.data.copy_(old.weight.data[:, :len(keep_in)])"),)),
    Mutant("compact_next_conv_wrong_inputs", "test_prune_channels_gives_smaller_model_with_same_outputs",
           "the next conv keeps its first input channels instead of the surviving ones",
           (("                weight = weight[:, keep_in]", "                weight = weight[:, :len(keep_in)]"),)),
    # plots
    Mutant("plot_mask_transposed", "test_plot_mask_image_is_one_row_per_filter", "one column per filter",
           (("image = (weight.detach().cpu() != 0).reshape(weight.shape[0], -1).to(torch.uint8).numpy()",
             "image = (weight.detach().cpu() != 0).reshape(weight.shape[0], -1).T.to(torch.uint8).numpy()"),)),
    Mutant("plot_sparsity_in_percent", "test_plot_sparsity_vs_accuracy_draws_one_point_per_model",
           "points at sparsity x 100",
           (('points = [(str(r["label"]), float(r["sparsity"]), float(r["accuracy"])) for r in records]',
             'points = [(str(r["label"]), float(r["sparsity"]) * 100, float(r["accuracy"])) for r in records]'),)),
    # run outputs
    Mutant("name_sparsity_in_percent", "test_model_files_follow_naming_pattern", "Omp_unstructured_80_acc_...pt",
           artifacts=percent_sparsity_in_name),
    Mutant("name_holds_another_model", "test_model_files_follow_naming_pattern",
           "the OMP model copied under the IMP name", artifacts=omp_model_handed_in_as_imp),
    Mutant("name_log_accuracies_edited", "test_model_files_follow_naming_pattern",
           "run_log.json's accuracies edited by hand", artifacts=log_accuracies_edited),
    Mutant("name_accuracy_not_measured", "test_accuracy_in_file_name_is_measured",
           "file named with an accuracy that was not measured on the saved model", artifacts=dense_accuracy_in_name),
    Mutant("imp_log_two_iterations", "test_imp_log_has_at_least_three_iterations", "IMP run with 2 iterations",
           artifacts=imp_logged_two_iterations),
    Mutant("sparsity_target_missed", "test_models_reach_sparsity_target_matching_file_name",
           "untuned ratios: 0.75 overall instead of 0.80", artifacts=sparsity_target_missed),
    Mutant("mask_figure_missing", "test_figures_are_valid_pngs", "one mask figure not saved",
           artifacts=mask_figure_missing),
    Mutant("checkpoint_needs_code", "test_model_files_load_with_weights_only", "a model file that unpickles code",
           artifacts=checkpoint_needs_code),
    Mutant("filter_model_scattered_zeros", "test_filter_models_prune_whole_filters",
           "the filter model pruned weight by weight", artifacts=filter_model_with_scattered_zeros),
]


_SCOPES = {"yaml_": "read_prune_ratios_from_yaml", "unstructured_": "unstructured_prune", "filter_": "filter_prune",
           "apply_": "apply_pruning", "sparsity_": "test_sparsity", "retrain_": "masked_retrain",
           "omp_": "oneshot_magnitude_prune", "imp_": "iterative_magnitude_prune",
           "compact_": "prune_channels_after_filter_prune", "plot_mask": "plot_mask",
           "plot_sparsity": "plot_sparsity_vs_accuracy"}  # code mutants edit the function their name starts with
MUTANTS = [Mutant(m.name, m.test, m.why, m.edits, m.scope or next(s for p, s in _SCOPES.items() if m.name.startswith(p)))
           if m.edits else m for m in MUTANTS]


class MutantError(ValueError):
    """A mutant's edit no longer applies to the reference: update tests/mutants.py."""


def _function_span(text: str, name: str) -> tuple[int, int]:
    """Start and end offsets of top-level ``def name(`` up to the next top-level statement."""
    match = re.search(rf"^def {re.escape(name)}\(", text, flags=re.MULTILINE)
    if match is None:
        raise MutantError(f"function {name} is not in the reference")
    following = re.compile(r"^\S", flags=re.MULTILINE)
    body = following.search(text, text.index("\n", match.start()) + 1)
    while body is not None and text[body.start():].startswith(("#", ")")):
        body = following.search(text, text.index("\n", body.start()) + 1)
    return match.start(), body.start() if body else len(text)


def mutate(text: str, mutant: Mutant) -> str:
    for old, new in mutant.edits:
        start, end = _function_span(text, mutant.scope) if mutant.scope else (0, len(text))
        count = text[start:end].count(old)
        if count != 1:
            raise MutantError(f"mutant {mutant.name}: the text to replace occurs {count} times in "
                              f"{mutant.scope or 'the reference'} (expected once): {old.strip()[:80]!r}")
        text = text[:start] + text[start:end].replace(old, new) + text[end:]
    return text


# ---------------------------------------------------------------------------------------------
# Submissions shared by the test modules (built once per session)
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def session_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="hw2-grader-tests-"))
    atexit.register(shutil.rmtree, path, True)
    return path


@functools.lru_cache(maxsize=None)
def reference_submission() -> Path:
    """The exported reference with its run outputs in results/ (main.py --method all, synthetic, fast settings)."""
    from grader.solution import export

    dest = export(session_dir() / "reference")
    run = subprocess.run([sys.executable, "hw2/main.py", "--method", "all", "--dataset", "synthetic", "--out",
                          str(dest / "results"), "--epochs", "0", "--dense-epochs", "1", "--no-progress", "--seed", "0"],
                         cwd=dest, capture_output=True, text=True, timeout=900)
    if run.returncode != 0:
        raise RuntimeError(f"the reference run failed:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    return dest


@functools.lru_cache(maxsize=None)
def stub_submission() -> Path:
    """The untouched student release: this checkout's files (stubs, template YAMLs), no run outputs."""
    from grader.solution import project_files

    dest = session_dir() / "stubs"
    for rel in project_files(REPO_ROOT):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / rel, dest / rel)
    return dest


def mutant_submission(*mutants: Mutant, name: str = "") -> Path:
    """A copy of the reference (hard links for unchanged outputs) with the mutants' edits applied."""
    reference = reference_submission()
    dest = session_dir() / "mutants" / (name or mutants[0].name)
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "hw2").mkdir(parents=True)
    for source in (reference / "hw2").iterdir():
        if source.is_file():
            shutil.copy2(source, dest / "hw2" / source.name)
    shutil.copytree(reference / "configs", dest / "configs")  # the YAML files a student hands in with the results
    pruning = dest / "hw2" / "pruning.py"
    for mutant in mutants:
        pruning.write_text(mutate(pruning.read_text(), mutant))
    if any(m.artifacts is not None for m in mutants):
        shutil.copytree(reference / "results", dest / "results", copy_function=os.link)
        for mutant in mutants:
            if mutant.artifacts is not None:
                mutant.artifacts(dest / "results")
    return dest
