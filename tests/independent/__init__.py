"""Solutions of HW2 written independently of the reference, and an in-process grader for quick checks.

The reference and its mutants share one author's assumptions (prune hooks, argsort
masks, one schedule); a grader tested only on them can be wrong about code it has
never seen.  The solutions here are written in other styles: plain weights with
the masks re-applied after each optimizer step, ``torch.kthvalue`` / ``torch.topk``
thresholds, gradient masking, dicts edited in place, models rebuilt from their
widths.  ``CORRECT`` must score full marks on every code test; each of ``WRONG``
is one of them with one plausible student bug, and must lose points on the test
that names the bug and nowhere else.

Each correct solution is a complete ``hw2/pruning.py`` (``<name>.py`` here); a
wrong one is its base's source followed by ``bug_<name>.py``, whose definitions
replace the base's.
"""
from __future__ import annotations

import contextlib
import inspect
import io
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Independent:
    name: str
    why: str  # for a correct one: its style; for a wrong one: the bug
    base: str = ""  # wrong ones: the correct solution the bug is added to
    test: str = ""  # wrong ones: the graded test that must lose points (and no other)

    @property
    def correct(self) -> bool:
        return not self.base

    def source(self) -> str:
        if self.correct:
            return (HERE / f"{self.name}.py").read_text()
        return (HERE / f"{self.base}.py").read_text() + "\n\n# --- the bug ---\n" + (HERE / f"bug_{self.name}.py").read_text()


T = {  # the graded tests the wrong solutions name
    "yaml": "test_read_prune_ratios_from_yaml_returns_mapping_and_rejects_bad_files",
    "unchanged": "test_mask_functions_leave_input_unchanged",
    "filter_count": "test_filter_prune_removes_whole_filters_in_right_number",
    "filter_rank": "test_filter_prune_ranks_filters_by_l2_norm",
    "apply": "test_apply_pruning_masks_each_layer_to_its_own_ratio",
    "batchnorm": "test_apply_pruning_filter_also_masks_batchnorm",
    "sparsity": "test_sparsity_report_counts_conv_and_linear_weights_only",
    "retrain": "test_masked_retrain_keeps_pruned_weights_zero_and_trains_the_rest",
    "omp": "test_oneshot_prunes_once_to_target_and_retrains",
    "imp": "test_iterative_prunes_in_at_least_three_rounds_landing_on_target",
    "compact": "test_prune_channels_gives_smaller_model_with_same_outputs",
    "plot_mask": "test_plot_mask_image_is_one_row_per_filter",
    "plot_sparsity": "test_plot_sparsity_vs_accuracy_draws_one_point_per_model",
}

CORRECT = [
    Independent("plain_kthvalue", "plain weights (no prune hooks), torch.kthvalue thresholds, masks re-applied after "
                                  "every optimizer step, linear IMP schedule, model rebuilt from its widths"),
    Independent("hooks_topk_inplace", "torch.nn.utils.prune hooks, numpy argsort in percent and torch.topk masks, IMP "
                                      "turns the caller's ratio dict into keep fractions in place, state_dict surgery"),
    Independent("grad_masking", "weights zeroed once and their gradients masked by tensor hooks, descending sort, "
                                "np.linspace IMP schedule, model.features rebuilt layer by layer"),
    Independent("prehook_cubic", "its own forward pre-hook zeroes the pruned weights before each forward pass, "
                                 "torch.topk on the kept entries, cubic IMP schedule, a new compact nn.Module class"),
]

WRONG = [
    Independent("yaml_duplicate_last_wins", "yaml.safe_load keeps the last of a layer given twice", "hooks_topk_inplace",
                T["yaml"]),
    Independent("yaml_accepts_any_parameter", "names checked against named_parameters(): BatchNorm weights and "
                                              "biases accepted", "plain_kthvalue", T["yaml"]),
    Independent("unstructured_abs_in_place", "abs_() on tensor.detach(), which shares the caller's storage",
                "grad_masking", T["unchanged"]),
    Independent("filter_broadcast_mask", "filter_prune returns a (C_out, 1, 1, 1) mask (apply_pruning expands it)",
                "prehook_cubic", T["filter_count"]),
    Independent("filter_ranks_by_largest_entry", "filters ranked by their largest |w| instead of the L2 norm",
                "plain_kthvalue", T["filter_rank"]),
    Independent("apply_returns_pruned_positions", "returned masks have 1 = pruned (the convention upside down)",
                "hooks_topk_inplace", T["apply"]),
    Independent("apply_zeroes_bn_statistics", "filter pruning zeroes the BatchNorm running mean instead of its "
                                              "scale and shift", "plain_kthvalue", T["batchnorm"]),
    Independent("sparsity_reads_named_parameters", "counts named_parameters() of dim >= 2: with prune hooks it reads "
                                                   "the unmasked weight_orig", "plain_kthvalue", T["sparsity"]),
    Independent("retrain_masks_before_step", "re-applies the masks before each optimizer step, so the last update "
                                             "stays", "hooks_topk_inplace", T["retrain"]),
    Independent("omp_trains_then_prunes", "OMP retrains first and prunes afterwards", "grad_masking", T["omp"]),
    Independent("imp_log_aliases_one_dict", "every IMP log entry holds the same dict, so all show the last round",
                "plain_kthvalue", T["imp"]),
    Independent("imp_schedule_in_callers_dict", "IMP writes each round into the caller's dict, with a schedule that "
                                                "stops short of the target", "plain_kthvalue", T["imp"]),
    Independent("compact_edits_given_model", "the given model gets the compact layers too", "grad_masking",
                T["compact"]),
    Independent("compact_forgets_bn_shift", "the compact BatchNorms lose their shift (bias)", "prehook_cubic",
                T["compact"]),
    Independent("plot_mask_one_row_per_kernel", "the mask image has one row per kernel row, not per filter",
                "prehook_cubic", T["plot_mask"]),
    Independent("plot_sparsity_sorted", "points sorted by sparsity, not in records order", "grad_masking",
                T["plot_sparsity"]),
]
SOLUTIONS = CORRECT + WRONG


# ---------------------------------------------------------------------------------------------
# In-process grading: the graded tests of grader/test_functions.py, with probes run in this process
# ---------------------------------------------------------------------------------------------
def graded_function_tests() -> dict:
    """name -> (test function, points) for every graded test in grader/test_functions.py."""
    import warnings

    import pytest

    with warnings.catch_warnings():  # its points marks are registered by the grader's plugin, not loaded here
        warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
        from grader import test_functions

    tests = {}
    for name, function in vars(test_functions).items():
        marks = [m for m in getattr(function, "pytestmark", []) if m.name == "points"]
        if name.startswith("test_") and marks:
            tests[name] = (function, float(marks[0].args[0]))
    return tests


def grade_in_process(source: str, workdir: Path, only: list[str] | None = None) -> dict:
    """Grade ``source`` (a hw2/pruning.py) on the code tests without the sandbox: name -> (score, points, output).

    For fast tests of the grader's checks on trusted code; the sandboxed grading
    (``grader.batch.grade_submission``) is what students get.
    """
    import importlib.util

    import hw2
    from grader import probes
    from grader.sandbox import ProbeResult

    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "pruning.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("hw2.pruning", path)
    module = importlib.util.module_from_spec(spec)
    saved = sys.modules.get("hw2.pruning"), getattr(hw2, "pruning", None)
    sys.modules["hw2.pruning"] = module
    hw2.pruning = module
    cache: dict = {}

    def probe(name: str, timeout: float = 60.0, **kwargs) -> ProbeResult:
        key = (name, tuple(sorted(kwargs.items())))
        if key not in cache:
            torch.manual_seed(0)  # as each sandbox child does
            try:
                cache[key] = ProbeResult("ok", value=probes.PROBES[name](**kwargs))
            except Exception as exc:  # noqa: BLE001 - the student's error, as the sandbox reports it
                cache[key] = ProbeResult("raised", error=f"{type(exc).__name__}: {exc}")
        return cache[key]

    quiet = io.StringIO()  # the solutions print tables and progress bars
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only contend; the caller's count comes back after
    try:
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            spec.loader.exec_module(module)
            results = _run_tests(probe, workdir, only)
    finally:
        torch.set_num_threads(threads)
        if saved[0] is None:
            sys.modules.pop("hw2.pruning", None)
        else:
            sys.modules["hw2.pruning"] = saved[0]
        if saved[1] is None:
            if hasattr(hw2, "pruning"):
                del hw2.pruning
        else:
            hw2.pruning = saved[1]
    return results


def _run_tests(probe, workdir: Path, only) -> dict:
    from grader.checks import Credit, GradeFailure

    results = {}
    for name, (function, points) in graded_function_tests().items():
        if only is not None and name not in only:
            continue
        credit = Credit()
        (workdir / name).mkdir(exist_ok=True)
        available = {"probe": probe, "credit": credit, "probe_dir": str(workdir / name)}
        try:
            function(**{p: available[p] for p in inspect.signature(function).parameters})
            results[name] = (points, points, "")
        except GradeFailure as failure:  # partial credit, as grader/conftest.py gives it
            results[name] = (round(points * credit.fraction, 2), points, str(failure))
    return results
