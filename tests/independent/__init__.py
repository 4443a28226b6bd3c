"""Solutions of HW2 written independently of the reference, and an in-process grader for quick checks.

The reference and its mutants share one author's assumptions (prune hooks, argsort
masks, one schedule); a grader tested only on them can be wrong about code it has
never seen.  The solutions here are written in other styles: plain weights with
the masks re-applied after each optimizer step (or from an optimizer step hook),
``torch.kthvalue`` / ``torch.topk`` / numpy / float64 thresholds, gradient masking,
``torch.nn.utils.parametrize``, mask buffers with an own training loop, masks
applied through ``state_dict`` copies, a ``Pruner`` class, the
``torch.nn.utils.prune`` API, dicts edited in place, models rebuilt from their
widths.  ``CORRECT`` must score full marks on every code test; each of ``WRONG``
is one of them with one plausible student bug, and must lose points on the test
that names the bug and nowhere else.

Each correct solution is a complete ``hw2/pruning.py`` (``<name>.py`` here); a
wrong one is its base's source followed by ``bug_<name>.py``, whose definitions
replace the base's; a correct variation (another way to draw a figure, say) is
its base followed by ``variant_<name>.py``.
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
    base: str = ""  # wrong ones and variants: the correct solution the change is added to
    test: str = ""  # wrong ones: the graded test(s) that must lose points (and no other), space-separated
    variant: bool = False  # a correct variation of ``base`` (variant_<name>.py), e.g. another way to draw a figure

    @property
    def tests(self) -> tuple[str, ...]:
        """The graded tests a wrong one must lose points on: one per bug (a file may hold bugs of several tests)."""
        return tuple(self.test.split())

    @property
    def correct(self) -> bool:
        return not self.base or self.variant

    @property
    def file(self) -> Path:
        return HERE / (f"{self.name}.py" if not self.base else f"variant_{self.name}.py" if self.variant
                       else f"bug_{self.name}.py")

    def source(self) -> str:
        if not self.base:
            return self.file.read_text()
        change = "the variation" if self.variant else "the bug"
        return (HERE / f"{self.base}.py").read_text() + f"\n\n# --- {change} ---\n" + self.file.read_text()


T = {  # the graded tests the wrong solutions name
    "yaml": "test_read_prune_ratios_from_yaml_returns_mapping_and_rejects_bad_files",
    "unchanged": "test_mask_functions_leave_input_unchanged",
    "unstructured_count": "test_unstructured_prune_mask_shape_and_count",
    "unstructured_rank": "test_unstructured_prune_removes_smallest_magnitudes",
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
    Independent("quantile_moduledict", "torch.quantile thresholds with ties cut in index order, weights multiplied "
                                       "in place through .data, masks kept in a dict keyed by module, torch.where "
                                       "after every step of its own loop, geometric IMP, compaction by editing a copy"),
    Independent("sort_statedict_figure_api", "a YAML constructor that keeps (key, value) pairs to find duplicates, "
                                             "masked_fill_, cubic IMP schedule, compaction through a sliced state_dict, "
                                             "figures drawn on matplotlib.figure.Figure without pyplot, pcolormesh"),
    Independent("plain_kthvalue", "plain weights (no prune hooks), torch.kthvalue thresholds, masks re-applied after "
                                  "every optimizer step, linear IMP schedule, model rebuilt from its widths"),
    Independent("hooks_topk_inplace", "torch.nn.utils.prune hooks, numpy argsort in percent and torch.topk masks, IMP "
                                      "turns the caller's ratio dict into keep fractions in place, state_dict surgery"),
    Independent("grad_masking", "weights zeroed once and their gradients masked by tensor hooks, descending sort, "
                                "np.linspace IMP schedule, model.features rebuilt layer by layer"),
    Independent("prehook_cubic", "its own forward pre-hook zeroes the pruned weights before each forward pass, "
                                 "torch.topk on the kept entries, cubic IMP schedule, a new compact nn.Module class"),
    Independent("parametrize_numpy", "masks attached with torch.nn.utils.parametrize (weights become "
                                     "parametrizations.weight.original), numpy stable argsort thresholds, "
                                     "geometric IMP schedule, compaction by slicing a deep copy"),
    Independent("step_hook_dict", "plain weights, masks re-applied from an optimizer step post-hook, floor counts, a "
                                  "YAML loader that refuses duplicate keys, matshow and fig/ax plots"),
    Independent("buffers_own_loop", "masks stored as module buffers, its own training loop that masks gradients and "
                                    "re-zeroes weights, torch.sort with explicit k, linear IMP schedule, a new VGG13 "
                                    "built from the kept widths"),
    Independent("vectorised_topk", "torch.topk on the kept entries with an index tie-break, vector_norm filter "
                                   "ranking, test_sparsity read from state_dict, geometric IMP, index_select compaction"),
    Independent("defensive_checks", "validates every argument, keeps the input's dtype and device, handles sparsity 0 "
                                    "and 2-D weights in filter_prune, deterministic ties"),
    Independent("minimal_prune_api", "the shortest code that meets the contract: torch.nn.utils.prune computes the "
                                     "masks, hw2.train runs the training loop"),
    Independent("oop_pruner", "a Pruner class with bool masks keyed by module objects, torch.where, its own forward "
                              "pre-hooks plus re-masking after each step, an explicit percent schedule, pyplot "
                              "state-machine plots"),
    Independent("functional_reduce", "no_grad-decorated helpers and functools.reduce, a YAML check that collects "
                                     "every error, train_epoch with after_step, SGD with a LambdaLR cosine, OO plots "
                                     "with scatter and hlines"),
    Independent("state_dict_masks", "masks applied through state_dict copies and load_state_dict, kept in a model "
                                    "attribute, an enumerate loop with the learning rate set by hand, a descending "
                                    "sort"),
    Independent("careful_numerics", "float64 ranking with an index tie-break, floor(s*n + 0.5) counts, einsum filter "
                                    "norms, gradient hooks plus re-zeroing, a cubic IMP schedule, a percent x-axis "
                                    "with annotated points"),
    # written by authors who had only the student release (stubs, docstrings, README, public checks)
    Independent("numpy_argpartition_cubic", "NumPy float64 argpartition ranking, plain weights, gradient hooks plus "
                                            "re-masking after each step, cubic IMP schedule, compaction into new "
                                            "modules"),
    Independent("bool_masks_prune_api", "bool masks, custom_from_mask, kthvalue thresholds with ties pruned in "
                                        "position order, linear IMP schedule, compaction by setattr on a deep copy"),
    Independent("maskset_step_hooks", "a MaskSet class, optimizer step post-hooks, topk ranking, cubic IMP "
                                      "schedule, compaction that rewrites each layer's tensors in place"),
    Independent("plot_dense_by_axline", "the dense line drawn with ax.axline((0, dense), slope=0)",
                "functional_reduce", variant=True),
    Independent("plot_written_by_canvas", "the figure written with FigureCanvasAgg(fig).print_png, not savefig",
                "functional_reduce", variant=True),
    Independent("plot_errorbar_hlines_percent", "points drawn with errorbar, the dense line with ax.hlines, percent "
                                                "ticks", "careful_numerics", variant=True),
    Independent("retrain_walks_iter_next", "masked_retrain walks the loader with iter() and next()",
                "oop_pruner", variant=True),
    Independent("retrain_by_hand_sgd", "OMP and IMP retrain with a hand-written SGD, not a torch.optim optimizer",
                "plain_kthvalue", variant=True),
    Independent("mask_by_imsave", "the mask figure written by plt.imsave (the image itself, scaled up, no axes)",
                "grad_masking", variant=True),
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
    Independent("imp_retrains_only_at_end", "IMP prunes every round but retrains only after the last one",
                "step_hook_dict", T["imp"]),
    Independent("imp_overshoots_high_targets", "ratio_t = t x (1 - (1 - target)^(1/T)): past targets near 0.9 before "
                                               "the last round",
                "vectorised_topk", T["imp"]),
    Independent("imp_ranks_given_weights", "every round ranks a copy of the weights IMP was given, not the retrained "
                                           "weights", "plain_kthvalue", T["imp"]),
    Independent("imp_middle_rounds_stand_still", "the middle rounds repeat the first round's ratio, so they prune "
                                                 "nothing more",
                "vectorised_topk", T["imp"]),
    Independent("plot_axes_swapped", "draws accuracy on x and sparsity on y (the returned list is right)",
                "step_hook_dict", T["plot_sparsity"]),
    Independent("plot_ignores_dense", "dense_accuracy is not drawn", "defensive_checks", T["plot_sparsity"]),
    Independent("retrain_masks_only_gradients", "masks the gradients but keeps the optimizer's momentum from before "
                                                "the pruning, which moves pruned weights", "grad_masking", T["retrain"]),
    Independent("apply_skips_zero_ratio", "no mask returned for a layer at ratio 0", "step_hook_dict", T["apply"]),
    Independent("imp_epochs_split_over_rounds", "epochs // iterations epochs per round, not epochs",
                "buffers_own_loop", T["imp"]),
    Independent("compact_keeps_unpruned_conv_whole", "a conv that lost no filter is kept whole: its input channels "
                                                     "are not cut", "grad_masking", T["compact"]),
    Independent("apply_new_parameter_objects", "pruned weights stored as new nn.Parameter objects an earlier optimizer "
                                               "does not hold", "step_hook_dict", T["apply"]),
    Independent("sparsity_counts_mask_buffers", "a hooked layer's zeros counted in its mask, not its weight",
                "plain_kthvalue", T["sparsity"]),
    Independent("imp_one_schedule_for_all_rounds", "one optimizer and one cosine schedule over all rounds: later "
                                                   "rounds start at a decayed lr", "plain_kthvalue", T["imp"]),
    Independent("yaml_empty_ratios_accepted", "prune_ratios with nothing under it returns {} instead of raising",
                "plain_kthvalue", T["yaml"]),
    Independent("plot_mask_pools_wide_layers", "pairs of columns pooled in layers wider than 1024 columns",
                "plain_kthvalue", T["plot_mask"]),
    Independent("plot_four_markers", "records zipped with four markers: a fifth is neither drawn nor returned",
                "defensive_checks", T["plot_sparsity"]),
    Independent("plot_mask_thresholds_small_weights", "|w| > 1e-3 counts as kept, not w != 0",
                "step_hook_dict", T["plot_mask"]),
    Independent("sparsity_isclose_counts_tiny", "torch.isclose(w, 0) counts tiny weights as zeros",
                "step_hook_dict", T["sparsity"]),
    Independent("sparsity_overall_in_percent", "'overall' in percent", "buffers_own_loop", T["sparsity"]),
    Independent("sparsity_layers_as_tensors", "'layers' values are 0-d tensors, not floats",
                "defensive_checks", T["sparsity"]),
    Independent("unstructured_slice_keeps_all_near_one", "keep[order[-(n-k):]] = 1 keeps everything when k == n",
                "parametrize_numpy", T["unstructured_count"]),
    Independent("unstructured_view_fails_channels_last", "L1Unstructured.compute_mask views the tensor: raises on "
                                                         "channels_last weights",
                "minimal_prune_api", T["unstructured_count"]),
    Independent("unstructured_k_from_nonzeros", "k = sparsity x (number of nonzeros), not of all entries",
                "buffers_own_loop", T["unstructured_count"]),
    Independent("filter_keep_prune_confused", "ln_structured's amount given as the kept fraction",
                "minimal_prune_api", T["filter_count"]),
    Independent("filter_linear_by_columns", "2-D weights pruned by columns (inputs), not rows",
                "step_hook_dict", T["filter_count"]),
    Independent("apply_ranks_unmasked_orig", "a second call ranks weight_orig, the unmasked values, not the weights "
                                             "as they are",
                "vectorised_topk", T["apply"]),
    Independent("apply_prunes_fraction_of_remaining", "each call prunes ratio of the weights still left, so a second "
                                                      "call overshoots",
                "parametrize_numpy", T["apply"]),
    Independent("retrain_own_optimizer", "masked_retrain builds its own SGD, ignoring the caller's optimizer and "
                                         "scheduler",
                "defensive_checks", T["retrain"]),
    Independent("retrain_in_eval_mode", "never calls model.train(): BatchNorm statistics frozen",
                "buffers_own_loop", T["retrain"]),
    Independent("retrain_zero_grad_after_backward", "zero_grad() between backward() and step(): nothing trains (OMP "
                                                    "and IMP call it too)",
                "buffers_own_loop", T["retrain"]),
    Independent("omp_prunes_a_copy", "OMP prunes and retrains a deep copy; the given model is unchanged",
                "parametrize_numpy", T["omp"]),
    Independent("omp_logs_sparsity_before_pruning", "the log's sparsity is measured before pruning",
                "buffers_own_loop", T["omp"]),
    Independent("yaml_sorted_not_file_order", "the returned dict is sorted by name, not in file order",
                "vectorised_topk", T["yaml"]),
    Independent("yaml_quoted_number_accepted", "a quoted \"0.5\" is converted to 0.5 instead of rejected",
                "buffers_own_loop", T["yaml"]),
    Independent("compact_squeeze_one_filter", "nonzero().squeeze() breaks when a conv keeps one filter",
                "defensive_checks", T["compact"]),
    Independent("compact_resets_running_var", "the compact BatchNorms get running_var 1",
                "vectorised_topk", T["compact"]),
    Independent("imp_all_epochs_at_end", "prunes every round back to back, then trains iterations x epochs at the "
                                         "end", "functional_reduce", T["imp"]),
    Independent("imp_logs_schedule_prunes_target", "logs a rising schedule but prunes to the full target in the "
                                                   "first round", "oop_pruner", T["imp"]),
    Independent("imp_log_final_sparsity_everywhere", "every round's log entry holds the final sparsity",
                "oop_pruner", T["imp"]),
    Independent("omp_ignores_epochs", "OMP retrains one epoch whatever epochs says", "oop_pruner", T["omp"]),
    Independent("omp_ignores_lr", "OMP retrains with lr=0.01 written in, whatever lr says", "vectorised_topk", T["omp"]),
    Independent("omp_before_measured_after", "OMP measures accuracy_before_retrain after retraining",
                "careful_numerics", T["omp"]),
    Independent("imp_accuracy_as_fraction", "IMP logs its accuracies as fractions, not percent", "oop_pruner",
                T["imp"]),
    Independent("imp_accuracy_before_pruning", "IMP measures each round's accuracy_before_retrain before that "
                                               "round's pruning", "grad_masking", T["imp"]),
    Independent("retrain_accuracy_as_fraction", "masked_retrain's history holds the test accuracy as a fraction",
                "vectorised_topk", T["retrain"]),
    Independent("retrain_logs_train_accuracy", "masked_retrain logs the training accuracy as test_accuracy",
                "careful_numerics", T["retrain"]),
    Independent("plot_dense_as_fraction", "accuracies drawn in percent, the dense line at 0.93",
                "functional_reduce", T["plot_sparsity"]),
    Independent("retrain_ignores_num_epochs", "masked_retrain always trains one epoch",
                "functional_reduce", T["retrain"]),
    Independent("retrain_masks_once_per_epoch", "the masks are re-applied once per epoch, not after every step",
                "functional_reduce", T["retrain"]),
    Independent("retrain_new_parameter", "re-applies masks by assigning new nn.Parameter objects the optimizer does "
                                         "not hold", "functional_reduce", T["retrain"]),
    Independent("retrain_train_mode_once", "model.train() only before the epoch loop: after an evaluation it trains "
                                           "in eval mode", "oop_pruner", T["retrain"]),
    Independent("filter_view_channels_last", "filter_prune views the weight: raises on channels_last weights",
                "functional_reduce", T["filter_count"]),
    Independent("retrain_ignores_scheduler", "the scheduler argument is never stepped",
                "state_dict_masks", T["retrain"]),
    Independent("yaml_finds_nested_key", "finds prune_ratios nested under another key", "state_dict_masks", T["yaml"]),
    Independent("yaml_flattens_groups", "flattens layers grouped under a name", "careful_numerics", T["yaml"]),
    Independent("yaml_nan_accepted", "v < 0 or v >= 1 lets .nan through", "careful_numerics", T["yaml"]),
    Independent("yaml_bool_accepted", "false is taken as the number 0", "state_dict_masks", T["yaml"]),
    Independent("apply_omits_batchnorm_masks", "the BatchNorm masks of pruned filters are left out of the returned "
                "dict", "plain_kthvalue", T["batchnorm"]),
    Independent("yaml_flattens_split_names", "features: {0.weight: 0.5} is joined into features.0.weight, not refused",
                "state_dict_masks", T["yaml"]),
    Independent("sparsity_rounded", "sparsities rounded to 3 decimals", "state_dict_masks", T["sparsity"]),
    Independent("retrain_conv_only", "masks re-applied to conv weights only: the classifier's pruned weights regrow",
                "state_dict_masks", T["retrain"]),
    Independent("compact_drops_classifier_bias", "the compact classifier has no bias",
                "state_dict_masks", T["compact"]),
    Independent("apply_bn_before_conv", "masks the BatchNorm before the conv instead of after it",
                "state_dict_masks", T["batchnorm"]),
    Independent("unstructured_ranks_in_bf16", "magnitudes ranked in bfloat16: near-ties misranked",
                "state_dict_masks", T["unstructured_rank"]),
    # found by solutions written blind from the student release; a file may hold bugs of different tests (one each)
    Independent("saves_before_drawing", "both figures saved before anything is drawn on them: empty PNGs",
                "grad_masking", f"{T['plot_mask']} {T['plot_sparsity']}"),
    Independent("zero_by_tolerance", "'zero' means below a tolerance: the mask figure, test_sparsity's zero filters "
                                     "and the compaction take tiny weights for pruned ones", "grad_masking",
                f"{T['plot_mask']} {T['sparsity']} {T['compact']}"),
    Independent("yaml_parser_error_and_filter_keep_count", "only YAML scanner errors become ValueError (parser errors "
                "escape); filter_prune keeps int(C * (1 - sparsity)) filters, one too few at 0.8 of 10",
                "grad_masking", f"{T['yaml']} {T['filter_count']}"),
    Independent("yaml_top_level_and_retrain_bn_frozen", "an empty file or a top-level list raises AttributeError; "
                "masked_retrain keeps BatchNorm in eval mode inside a model in train mode", "grad_masking",
                f"{T['yaml']} {T['retrain']}"),
    Independent("yaml_dup_line_scan_and_imp_ratios_rounded", "a layer repeated in flow style passes a line-by-line "
                "duplicate scan; IMP's ratios rounded to 2 decimals (0.915 ends at 0.92)", "grad_masking",
                f"{T['yaml']} {T['imp']}"),
    Independent("ratio_and_count_types", "a null ratio raises TypeError; zero-filter counts are 0-d tensors",
                "grad_masking", f"{T['yaml']} {T['sparsity']}"),
    Independent("filter_ties_and_plot_mask_writes_weight", "filters tied with the k-th smallest norm all pruned; "
                "plot_mask writes 1 into the weight it is given", "grad_masking",
                f"{T['filter_count']} {T['plot_mask']}"),
    Independent("compact_mask_buffers_and_imp_idle_first_round", "the compaction trusts weight_mask buffers over the "
                "weights; IMP's first round prunes nothing", "grad_masking", f"{T['compact']} {T['imp']}"),
    Independent("retrain_no_zero_grad_and_imp_first_masks", "masked_retrain never clears gradients; IMP retrains "
                "every round under the first round's masks", "grad_masking", f"{T['retrain']} {T['imp']}"),
    Independent("rounds_drop_masks_and_retrain_own_loss", "OMP and IMP retrain with no masks (those apply_pruning "
                "returns are dropped); masked_retrain ignores loss_fn", "grad_masking",
                f"{T['omp']} {T['imp']} {T['retrain']}"),
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
            results[name] = (points, points, "\n".join(credit.notes))  # the notes, as grader/conftest.py shows them
        except GradeFailure as failure:  # partial credit, as grader/conftest.py gives it
            results[name] = (round(points * credit.fraction, 2), points, str(failure))
    return results
