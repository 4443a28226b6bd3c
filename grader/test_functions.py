"""Graded checks of the student's functions in hw2/pruning.py, on small seeded tensors and a tiny VGG13.

Student code runs only in the sandbox (``probe``); every check here runs in the
grader process on the plain data the probe brought back.  Messages say what
was wrong, never what the right numbers are.
"""
from __future__ import annotations

import math

import pytest
import torch

from grader.checks import (count_in_range, expected_parameters, is_png, kept_rows_by_norm, layer_zero_counts,
                           pruned_not_larger_than_kept, whole_filters)
from grader.probes import APPLY_RATIOS, PLOT_RECORDS, RETRAIN_STATES, TINY_FILTER_RATIOS, TINY_RATIOS, YAML_REJECTIONS

SHORT, TRAINING = 60, 180  # seconds a student call may take: tensor functions / functions that train the tiny model
TINY = "the grader's tiny VGG13"  # named in messages: the model is the grader's, not the student's


def _raised(case: dict) -> str:
    return f"raised {case['raised']}: {case['message']}"


def _full_mask(mask, shape: tuple, per_filter: bool = False):
    """``mask`` broadcast to ``shape`` (a per-filter mask of C_out entries too, for filters), or None if it cannot be.

    The shape tests judge the shape; the ranking and agreement checks judge what the mask says, whatever its layout.
    """
    if not isinstance(mask, torch.Tensor):
        return None
    if per_filter and mask.numel() == shape[0] and mask.dim() <= 1:
        mask = mask.reshape(-1, *([1] * (len(shape) - 1)))
    try:
        return torch.broadcast_to(mask, shape)
    except RuntimeError:
        return None


@pytest.mark.points(6)
def test_read_prune_ratios_from_yaml_returns_mapping_and_rejects_bad_files(probe, probe_dir, credit):
    cases = credit.require(probe("read_yaml", SHORT, workdir=probe_dir), "read_prune_ratios_from_yaml")
    valid = cases["valid"]
    expected = {"features.0.weight": 0.5, "features.14.weight": 0.75, "features.31.weight": 0.0, "classifier.weight": 0.25}
    credit.check("value" in valid and isinstance(valid["value"], dict) and list(valid["value"].items()) == list(expected.items()),
                 "a valid file: the returned dict is not the file's prune_ratios mapping (name -> float ratio, in file "
                 "order)"
                 + (f"; it raised {valid['raised']}: {valid['message']}" if "raised" in valid else ""), weight=3)
    for case, (what, _) in YAML_REJECTIONS.items():  # every rejection the docstring promises, together worth the valid file
        result = cases[case]
        credit.check(result.get("raised") == "ValueError",
                     f"{what} must raise ValueError; it " + (f"raised {result['raised']}" if "raised" in result
                                                               else "returned normally"), weight=3 / len(YAML_REJECTIONS))
    credit.verify()


def _mask_cases(probe, credit, kind):
    function = f"{kind}_prune"
    return credit.require(probe("mask_function", SHORT, kind=kind), function)


@pytest.mark.points(5)
def test_unstructured_prune_mask_shape_and_count(probe, credit):
    cases = _mask_cases(probe, credit, "unstructured")
    for i, case in enumerate(cases, 1):
        where = f"case {i} of {len(cases)} (shape {tuple(case['input'].shape)}, sparsity {case['sparsity']})"
        if "raised" in case:
            credit.check(False, f"{where}: unstructured_prune raised {case['raised']}: {case['message']}")
            continue
        mask = case["value"]
        if not credit.check(isinstance(mask, torch.Tensor) and mask.shape == case["input"].shape,
                            f"{where}: the mask must be a tensor of the input's shape"):
            continue
        values_ok = bool(((mask == 0) | (mask == 1)).all())
        zeros = int((mask == 0).sum())
        credit.check(values_ok and count_in_range(zeros, case["input"].numel(), case["sparsity"]),
                     f"{where}: the mask must hold only 0/1 with floor or ceil of sparsity x numel zeros"
                     + ("" if values_ok else " (it has other values)"))
    credit.verify()


@pytest.mark.points(5, visibility="hidden")
def test_unstructured_prune_removes_smallest_magnitudes(probe, credit):
    cases = _mask_cases(probe, credit, "unstructured")
    judged = _ranked_cases(credit, cases, "unstructured_prune", per_filter=False)
    for i, case, mask in judged:
        credit.check(pruned_not_larger_than_kept(case["input"].abs().flatten(), mask.flatten() == 0),
                     f"case {i}: a pruned entry has a larger |w| than a kept one")
    credit.verify()


def _ranked_cases(credit, cases: list, function: str, per_filter: bool) -> list:
    """The cases whose mask can be read (raises and shapes cost points in the shape-and-count test, not here)."""
    judged = [(i, case, _full_mask(case.get("value"), tuple(case["input"].shape), per_filter))
              for i, case in enumerate(cases, 1) if "raised" not in case]
    judged = [(i, case, mask) for i, case, mask in judged if mask is not None]
    if per_filter:  # masks that are not whole filters cost points in the count test; the ranking is judged elsewhere
        whole = [(i, case, mask) for i, case, mask in judged if whole_filters(mask)]
        judged = whole or judged
    if not judged:
        first = next((case for case in cases if "raised" in case), None)
        credit.fail(f"{function} {_raised(first)}" if first else f"{function} returned no mask that fits its input")
    return judged


@pytest.mark.points(2)
def test_mask_functions_leave_input_unchanged(probe, credit):
    for kind in ("unstructured", "filter"):
        cases = _mask_cases(probe, credit, kind)
        changed = [i for i, case in enumerate(cases, 1) if not torch.equal(case["input"], case["after"])]
        returned = [i for i, case in enumerate(cases, 1) if "raised" not in case]
        modified = f"{kind}_prune modified its input tensor (cases {changed}); compute the mask on a copy"
        if not returned:  # nothing to judge: every call raised (that is graded where it happens, and here only then)
            first = cases[0]
            credit.check(False, f"{kind}_prune {_raised(first)} in every case, so it cannot be shown to leave its input "
                                "unchanged" + (f"; it also {modified}" if changed else ""))
        else:  # a case that raised still counts if it modified its input first
            credit.check(not changed, modified)
    credit.verify()


@pytest.mark.points(5)
def test_filter_prune_removes_whole_filters_in_right_number(probe, credit):
    cases = _mask_cases(probe, credit, "filter")
    for i, case in enumerate(cases, 1):
        shape = tuple(case["input"].shape)
        where = f"case {i} of {len(cases)} (shape {shape}, sparsity {case['sparsity']})"
        if "raised" in case:
            credit.check(False, f"{where}: filter_prune raised {case['raised']}: {case['message']}")
            continue
        mask = case["value"]
        if not credit.check(isinstance(mask, torch.Tensor) and tuple(mask.shape) == shape,
                            f"{where}: the mask must be a tensor of the input's shape"):
            continue
        whole = whole_filters(mask)
        pruned = int((mask.reshape(shape[0], -1) == 0).all(dim=1).sum())
        credit.check(whole, f"{where}: each output filter (dim 0) must be either all kept or all pruned")
        credit.check(whole and count_in_range(pruned, shape[0], case["sparsity"]),
                     f"{where}: the number of pruned filters must be floor or ceil of sparsity x C_out")
    credit.verify()


@pytest.mark.points(4, visibility="hidden")
def test_filter_prune_ranks_filters_by_l2_norm(probe, credit):
    cases = _mask_cases(probe, credit, "filter")
    for i, case, mask in _ranked_cases(credit, cases, "filter_prune", per_filter=True):
        credit.check(kept_rows_by_norm(case["input"], mask),
                     f"case {i}: a pruned filter has a larger L2 norm than a kept one"
                     + ("" if whole_filters(mask) else " (or its filters are not whole)"))
    credit.verify()


@pytest.mark.points(6)
def test_apply_pruning_masks_each_layer_to_its_own_ratio(probe, credit):
    for sparsity_type in ("unstructured", "filter"):
        ratios = APPLY_RATIOS[sparsity_type]
        result = probe("apply_pruning", SHORT, sparsity_type=sparsity_type)
        where = f"{sparsity_type}, on {TINY}"
        if not result.ok or "raised" in result.value:
            why = result.explain("apply_pruning") if not result.ok else f"it {_raised(result.value)}"
            credit.check(False, f"{where}: {why}", weight=4)
            continue
        value = result.value
        before, after = value["before"], value["after"]
        masks = value["value"] if isinstance(value["value"], dict) else {}
        unit = "zero weights" if sparsity_type == "unstructured" else "all-zero filters"
        # 1. a mask of the weight's shape for every layer named
        misshapen = [n for n in ratios if not (isinstance(masks.get(n), torch.Tensor) and masks[n].shape == before[n].shape)]
        credit.check(not misshapen, f"{where}: the returned dict has no mask of the weight's shape for "
                                    f"{', '.join(misshapen)}" + ("" if not any(ratios[n] == 0 for n in misshapen) else
                                    " (a layer at ratio 0 gets a mask too: all ones)"))
        # 2. weights zero exactly where each returned mask is 0 (layers with a readable mask only)
        readable = {n: m for n in ratios
                    if (m := _full_mask(masks.get(n), tuple(before[n].shape), sparsity_type == "filter")) is not None}
        disagree = [n for n, m in readable.items() if not torch.equal(after[n] == 0, m == 0)]
        if readable:
            credit.check(not disagree, f"{where}: the weights are not zero exactly where the returned mask is 0 in "
                                       f"{', '.join(disagree)}")
        # 3. each layer at its own ratio, the others untouched
        # (the count the student's own unstructured_prune / filter_prune gives is accepted: its count bugs cost points
        # in its own test)
        counts = layer_zero_counts(after, sparsity_type)
        own = value.get("own_counts", {})
        wrong = [n for n in ratios if not count_in_range(counts[n], *_units(before[n], sparsity_type), ratios[n])
                 and counts[n] != own.get(n)]
        changed = [n for n in before if n not in ratios and not torch.equal(after[n], before[n])]
        credit.check(not wrong, f"{where}: not pruned to the layer's own ratio (floor or ceil of ratio x "
                                f"{'weights' if sparsity_type == 'unstructured' else 'filters'}): "
                                + ", ".join(f"{n} ({counts[n]} {unit} of {_units(before[n], sparsity_type)[0]})"
                                            for n in wrong))
        credit.check(not changed, f"{where}: layers not in the ratios were changed: {', '.join(changed)}")
        replaced = value.get("replaced", [])
        credit.check(not replaced, f"{where}: {', '.join(replaced[:3])}{' and others' if len(replaced) > 3 else ''} "
                                   "became new nn.Parameter objects, which an optimizer built before no longer trains: "
                                   "change the values in place (under torch.no_grad(), or torch.nn.utils.prune)")
        # 4. a second call with larger ratios prunes further (judged on the layers the first call got right)
        right = [n for n in ratios if n not in wrong]
        if value["again_raised"] is not None:
            credit.check(False, f"{where}: a second call with larger ratios (what IMP does) raised {value['again_raised']}")
        elif right:
            counts = layer_zero_counts(value["after_again"], sparsity_type)
            own = value.get("own_counts_again", {})
            short = [n for n in right if not count_in_range(counts[n], *_units(before[n], sparsity_type),
                                                            value["larger_ratios"][n]) and counts[n] != own.get(n)]
            credit.check(not short, f"{where}: after some kept weights shrank (as retraining moves them) and a second "
                                    "call with larger ratios (what IMP does), not at the new ratio of the weights as "
                                    "they were then: " + ", ".join(f"{n} ({counts[n]} {unit})" for n in short))
    credit.verify()


def _units(weight: torch.Tensor, sparsity_type: str) -> tuple[int]:
    return (weight.numel(),) if sparsity_type == "unstructured" else (weight.shape[0],)


@pytest.mark.points(3, visibility="hidden")
def test_apply_pruning_filter_also_masks_batchnorm(probe, credit):
    result = probe("apply_pruning", SHORT, sparsity_type="filter")
    value = credit.require(result, "apply_pruning")
    if "raised" in value:
        credit.fail(f"apply_pruning raised {value['raised']} on filter pruning: {value['message']}")
    judged, unmasked = 0, []
    masks = value["value"] if isinstance(value["value"], dict) else {}
    for name in TINY_FILTER_RATIOS:
        dead = (value["after"][name].flatten(1) == 0).all(dim=1)
        if not bool(dead.any()):
            continue  # no pruned filter: the ratio test says so; nothing to judge here
        judged += 1
        bn = value["bn"][name]
        credit.check(bool((bn["weight"][dead] == 0).all() and (bn["bias"][dead] == 0).all()),
                     f"{name}: the BatchNorm after it must have weight and bias 0 on each pruned filter's channel "
                     "(otherwise its shift keeps the channel alive)")
        # the BatchNorm masks mark the channels the way the returned conv mask marks its filters (a mask with the
        # convention upside down costs points in the apply_pruning test, not twice)
        conv_mask = masks.get(name)
        marked = ((conv_mask.reshape(conv_mask.shape[0], -1) == 0).all(dim=1)
                  if isinstance(conv_mask, torch.Tensor) and conv_mask.dim() >= 1
                  and conv_mask.shape[0] == dead.numel() else dead)
        index = int(name.split(".")[1]) + 1
        for bn_name in (f"features.{index}.weight", f"features.{index}.bias"):
            mask = masks.get(bn_name)
            if not (isinstance(mask, torch.Tensor) and mask.numel() == dead.numel()
                    and torch.equal(mask.reshape(-1) == 0, marked)):
                unmasked.append(bn_name)
    if judged:
        credit.check(not unmasked, f"the returned dict has no mask (0 on the pruned filters' channels) for "
                                   f"{', '.join(unmasked[:4])}{' ...' if len(unmasked) > 4 else ''}: masked_retrain "
                                   "needs them to keep those channels at 0 (an optimizer with momentum moves them "
                                   "back otherwise)")
    if not judged:
        credit.fail(f"filter pruning of {TINY} left no all-zero filter, so no BatchNorm channel could be checked")
    credit.verify()


@pytest.mark.points(5)
def test_sparsity_report_counts_conv_and_linear_weights_only(probe, credit):
    value = credit.require(probe("sparsity_report", SHORT), "test_sparsity")
    for label, weights_key, sparsity_type in (("unstructured", "weights", "unstructured"), ("filter", "weights", "filter"),
                                              ("masks attached by the grader with torch.nn.utils.prune", "hooked_weights", "unstructured")):
        key = label if label in ("unstructured", "filter") else "hooked"
        report = value[key]
        if "raised" in report:
            credit.check(False, f"{label}: test_sparsity raised {report['raised']}: {report['message']}", weight=2)
            continue
        report = report["value"]
        weights = value[weights_key]
        zeros = sum(int((w == 0).sum()) for w in weights.values())
        total = sum(w.numel() for w in weights.values())
        overall = report.get("overall") if isinstance(report, dict) else None
        credit.check(_is_number(overall) and math.isclose(overall, zeros / total, abs_tol=1e-6),
                     f"{label}: 'overall' must be zero weights / all weights of the Conv2d and Linear layers "
                     "(BatchNorm and biases not counted)" + _observed(overall, zeros / total))
        layers = report.get("layers") if isinstance(report, dict) else None
        if not isinstance(layers, dict):
            credit.check(False, f"{label}: 'layers' must be a dict mapping every Conv2d/Linear weight name to its "
                                f"fraction of zeros; it is {type(layers).__name__}")
        else:
            fractions = {n: float((w == 0).float().mean()) for n, w in weights.items()}
            missing, extra = sorted(set(weights) - set(layers)), sorted(set(layers) - set(weights))
            typed = [n for n in weights if n in layers and not _is_number(layers[n])]
            off = [n for n in weights if n in layers and _is_number(layers[n])
                   and not math.isclose(layers[n], fractions[n], abs_tol=1e-6)]
            credit.check(not (missing or extra or typed or off),
                         f"{label}: 'layers' must map every Conv2d/Linear weight name to its fraction of zeros (a float)"
                         + (f"; missing: {', '.join(missing)}" if missing else "")
                         + (f"; not Conv2d/Linear weights: {', '.join(extra)}" if extra else "")
                         + (f"; not a number: {', '.join(typed)} ({type(layers[typed[0]]).__name__})" if typed else "")
                         + (f"; wrong value for {', '.join(off)}" + _observed(layers[off[0]], fractions[off[0]]) if off else ""))
        if sparsity_type == "filter":
            counts = report.get("zero_filters") if isinstance(report, dict) else None
            expected = {n: int((w.flatten(1) == 0).all(dim=1).sum()) for n, w in weights.items()}
            wrong = [n for n, c in expected.items() if not isinstance(counts, dict) or counts.get(n) != c]
            typed = [n for n in expected if n not in wrong and not _is_int(counts[n])]
            credit.check(not wrong and not typed,
                         "filter: 'zero_filters' must count (an int), for every Conv2d and Linear weight (a Linear's "
                         "rows are its filters), the output filters whose weights are all exactly zero"
                         + (f"; wrong or missing: {', '.join(wrong)}" if wrong else "")
                         + (f"; not an int: {', '.join(typed)} ({type(counts[typed[0]]).__name__})" if typed else ""))
    credit.verify()


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _observed(value, expected: float) -> str:
    """What was seen, when it explains itself: a percentage for a fraction."""
    if _is_number(value) and expected > 0 and math.isclose(value, 100 * expected, rel_tol=1e-4):
        return " (it looks like a percentage: give the fraction, 0 to 1)"
    if not _is_number(value):
        return f" (it is {type(value).__name__}, not a number)"
    return ""


RETRAIN_LABELS = {"plain": f"{TINY} with its pruned weights set to zero by the grader (plain parameters, no hooks; "
                           "the optimizer already stepped once, so it has momentum)",
                  "hooked": f"{TINY} with masks attached by the grader through torch.nn.utils.prune "
                            "(each masked parameter is <name>_orig, <name> is computed)"}


@pytest.mark.points(6)
def test_masked_retrain_keeps_pruned_weights_zero_and_trains_the_rest(probe, credit):
    for state in RETRAIN_STATES:  # both model states the docstring allows; a crash costs only its own state
        label = RETRAIN_LABELS[state]
        result = probe("masked_retrain", TRAINING, state=state)
        if not result.ok or "raised" in result.value:
            why = result.explain("masked_retrain") if not result.ok else f"masked_retrain {_raised(result.value)}"
            if state == "hooked" and _apply_pruning_leaves_plain_weights(probe):
                credit.note(f"{label}: {why}; not marked down, since your apply_pruning leaves plain weights (no "
                            "hooks), so your own pipeline never hands masked_retrain such a model")
                continue
            credit.check(False, f"{label}: {why}", weight=8)  # all of this state's checks below
            continue
        value = result.value
        regrown, frozen = [], []
        for name, mask in value["masks"].items():
            if name not in value["after"]:
                continue  # BatchNorm masks: their weights are not in the report
            after, before = value["after"][name], value["before"][name]
            if bool((after[mask == 0] != 0).any()):
                regrown.append(name)
            if float((after[mask == 1] != before[mask == 1]).float().mean()) < 0.5:
                frozen.append(name)
        credit.check(not regrown, f"{label}: weights whose mask is 0 are no longer zero after retraining in "
                                  f"{', '.join(regrown)}: masked_retrain must keep them zero itself, from prune_masks",
                     weight=2)
        steps, orphaned = value.get("optimizer_steps", 0), value.get("orphaned", [])
        scheduled = value.get("scheduler_steps", steps)
        credit.check(not frozen and steps > 0 and not orphaned and scheduled == steps,
                     f"{label}: the unpruned weights did not change in {', '.join(frozen)}: masked_retrain must train "
                     "the model for num_epochs with the given optimizer" if frozen else
                     f"{label}: the optimizer passed to masked_retrain never stepped: train with it (its learning rate, "
                     "weight decay and scheduler are the caller's choice), not with an optimizer of your own"
                     if not steps else
                     f"{label}: afterwards {', '.join(orphaned[:3])} are new Parameter objects the given optimizer "
                     "does not hold, so they stopped training: change weights in place (with torch.no_grad(): "
                     "w.mul_(mask)), never replace them" if orphaned else
                     f"{label}: the scheduler passed to masked_retrain stepped {scheduled} time(s) for {steps} "
                     "optimizer steps: step it once after every optimizer step (it is a per-step schedule)")
        epochs, trained = value.get("epochs", 1), value.get("training_passes", 0)
        credit.check(trained == epochs, f"{label}, handed over in eval mode (as after an evaluation), num_epochs="
                                        f"{epochs}: it trained (training mode for every module, gradients on) in "
                                        f"{trained} pass(es) over "
                                        "train_loader: train num_epochs epochs, calling model.train() at the start "
                                        "of each (an evaluation in between switches it to eval mode)")
        credit.check(not steps or value.get("loss_fn_calls", 1) > 0,
                     f"{label}: masked_retrain never called the loss_fn it was given: compute the training loss with it "
                     "(OMP and IMP pass the dense model's loss, with label smoothing)")
        credit.check(not value.get("stale_gradients"),
                     f"{label}: a backward pass added to gradients that an optimizer step had already used: clear them "
                     "(optimizer.zero_grad()) before each batch's backward, or every step sums all earlier gradients")
        live = value.get("live_pruned", [])
        credit.check(not live, f"{label}: during training, forward passes used nonzero values of pruned weights in "
                               f"{', '.join(live[:3])}: keep them zero after every optimizer step (masking only their "
                               "gradients lets momentum and weight decay move them; masking once per epoch is too "
                               "late)")
        history = value["value"] if isinstance(value["value"], list) else []
        last = history[-1].get("test_accuracy") if history and isinstance(history[-1], dict) else None
        measured = value.get("accuracy_end", [])
        credit.check(len(history) == epochs and _accuracy_matches(last, measured),
                     f"{label}: masked_retrain must return one dict per epoch, the last one's 'test_accuracy' the "
                     f"retrained model's test accuracy in percent: " + (
                         f"{len(history)} entries for num_epochs={epochs}" if len(history) != epochs else
                         _accuracy_note(last, measured) + " after retraining"))
    credit.verify()


def _apply_pruning_leaves_plain_weights(probe) -> bool:
    """True when the student's apply_pruning ran and left no torch.nn.utils.prune hooks or parametrizations (the
    apply_pruning test's own probe, cached); False when it attaches them or could not be run."""
    for sparsity_type in ("unstructured", "filter"):
        result = probe("apply_pruning", SHORT, sparsity_type=sparsity_type)
        if result.ok and "value" in result.value and "leaves_hooks" in result.value:
            return not result.value["leaves_hooks"]
    return False


def _final_counts_ok(value, sparsity_type) -> list[str]:
    ratios = value["ratios"]
    return [n for n, count in layer_zero_counts(value["after"], sparsity_type).items()
            if n in ratios and not count_in_range(count, *_units(value["before"][n], sparsity_type), ratios[n])]


def _kept_moved(value) -> bool:
    return _least_moved(value) > 0.5


def _least_moved(value) -> float:
    """The smallest fraction, over the pruned layers, of kept weights that changed (0 when nothing is kept)."""
    changed = [float((value["after"][n] != value["before"][n])[value["after"][n] != 0].float().mean())
               for n in value["ratios"] if bool((value["after"][n] != 0).any())]
    return min(changed) if changed else 0.0


def _not_moved(value, what: str) -> str:
    """Why the kept weights look untrained: none changed, or too few (weights that read a pruned channel get no
    gradient: only weight decay moves them)."""
    least = _least_moved(value)
    if least == 0:
        return f"the unpruned weights did not change: {what}"
    return (f"in some layer only {least:.0%} of the unpruned weights changed: {what}, with the given lr and "
            "weight_decay (a weight that reads a pruned channel gets no gradient; only weight decay moves it)")


def _unchanged(value) -> bool:
    return all(torch.equal(value["after"][n], value["before"][n]) for n in value["before"])


GIVEN_MODEL_UNCHANGED = ("the model it was given is unchanged afterwards: prune and retrain that model in place "
                         "(not a copy)")


def _method_checks(method: str, result, sparsity_type: str, iterations: int = 1, logs=None) -> list[tuple[float, bool, str]]:
    """OMP's or IMP's checks on one probe result, always the same list (weight, passed, message), so that two runs
    (with the student's helpers and with the grader's) can be compared check by check.  IMP's logged accuracies are
    judged on ``logs``, the run made for them (``prune_method(logs=True)``), where given."""
    name = "oneshot_magnitude_prune" if method == "omp" else "iterative_magnitude_prune"
    where = (f"{sparsity_type}, on {TINY}" if method == "omp" else
             f"{sparsity_type}, iterations={iterations}, on {TINY}")
    if not result.ok or "raised" in result.value:  # nothing to judge: every check of this case fails, with one message
        why = result.explain(name) if not result.ok else f"it raised {result.value['raised']}: {result.value['message']}"
        return [(1, False, f"{where}: {why}")] * (8 if method == "omp" else 11)
    value = result.value
    log = value["value"]
    entries = isinstance(log, list) and all(isinstance(e, dict) for e in log)
    log = log if isinstance(log, list) else []
    unchanged = _unchanged(value)
    wrong = _final_counts_ok(value, sparsity_type)
    unit = "weights" if sparsity_type == "unstructured" else "filters"
    checks = [(1, entries, f"{where}: {name} must return a list with one dict per pruning step")]
    trained, epochs = value.get("training_passes", 0), value.get("epochs", 1)
    if method == "omp":
        checks.append((1, len(log) == 1, f"{where}: one-shot pruning must prune once (one log entry), got {len(log)}"))
        checks.append((1, not wrong, f"{where}: " + (GIVEN_MODEL_UNCHANGED if unchanged else
                      f"after OMP each layer must be at its target ratio with the pruned weights still zero; wrong "
                      f"layers: {', '.join(wrong) or 'none'}")))
        late = [n for n in _not_pruned_from_given_weights(value, sparsity_type) if n not in wrong]  # counts judged above
        function = "unstructured_prune" if sparsity_type == "unstructured" else "filter_prune"
        checks.append((1, not late, f"{where}: in {', '.join(late)}, the pruned {unit} are not those your {function} "
                                    "picks from the weights OMP was given: prune them first, then retrain"))
        checks.append((1, _kept_moved(value), f"{where}: " + (GIVEN_MODEL_UNCHANGED if unchanged else
                      _not_moved(value, "OMP must retrain after pruning"))))
        checks.append((1, trained == epochs, f"{where}, epochs={epochs}: it trained (training mode for every module, "
                                             f"gradients on) in {trained} pass(es) over train_loader: retrain for "
                                             "`epochs` epochs"))
        checks.append(_logged_sparsity_check(value, log, where))
        checks.append(_logged_accuracy_check(value, log, where, unchanged))
        return checks
    checks.append((1, len(log) == iterations, f"{where}: expected one log entry per round, got {len(log)}"))
    schedules = [e.get("ratios") if isinstance(e, dict) else None for e in log]
    targets = value["ratios"]
    has_ratios = bool(log) and all(isinstance(s, dict) and set(s) == set(targets) for s in schedules)
    numbers = has_ratios and all(isinstance(s[n], (int, float)) and not isinstance(s[n], bool)
                                 for s in schedules for n in s)
    no_ratios = f"{where}: each log entry needs 'ratios' with every layer of the target, as numbers"
    rising = numbers and all(a[n] < b[n] if targets[n] > 0 else a[n] <= b[n]
                             for a, b in zip(schedules, schedules[1:]) for n in a)
    idle = [n for n, t in targets.items() if t > 0 and schedules[0][n] <= 0] if numbers else []
    checks.append((1, rising and not idle,
                   no_ratios if not numbers else f"{where}: each layer's ratio must rise every round" if not rising else
                   f"{where}: the first round prunes nothing in {', '.join(idle[:3])} (ratio 0): each of the "
                   f"{iterations} rounds must prune more"))
    overshoot = numbers and any(s[n] > targets[n] + 1e-9 for s in schedules for n in s)
    checks.append((1, numbers and not overshoot,
                   f"{where}: a round's ratio went past the layer's target" if numbers else no_ratios))
    landed = numbers and all(math.isclose(schedules[-1][n], t, abs_tol=1e-9) for n, t in targets.items())
    first_below = numbers and all(s[n] < targets[n] for s in schedules[:1] for n in s if targets[n] > 0)
    checks.append((1, landed and first_below,
                   (f"{where}: the last round's ratios must equal the targets (to 1e-9)" if not landed else
                    f"{where}: the first round must prune less than the target (that is what makes it iterative)")
                   if numbers else no_ratios))
    checks.append((1, not wrong, f"{where}: " + (GIVEN_MODEL_UNCHANGED if unchanged else
                  f"after the last round each layer must be at its target ratio; wrong layers: {', '.join(wrong) or 'none'}")))
    # Retrained every round: `epochs` training passes per round, the first of them before the last pruning (at
    # fewer zeros than the end) and the last after it (rounds of small layers may round to the same counts, so
    # the levels trained at are not required to be as many as the rounds).
    levels = [tuple(level) for level in value.get("trained_levels", [])]
    final = tuple(value.get("final_level", ()))
    last, early = final in levels, bool(levels) and sum(levels[0]) < sum(final)
    peaks = _round_peak_lrs(value.get("peak_lr", []), iterations, epochs)
    same_lr = not peaks or all(math.isclose(p, peaks[0], rel_tol=1e-3) for p in peaks)
    retrained = last and early and trained == iterations * epochs
    checks.append((1, retrained and same_lr, f"{where}: " + (GIVEN_MODEL_UNCHANGED if unchanged else
                  ("the model was not trained after its last pruning" if not last else
                   "the model was first trained with all its final zeros: it was not pruned step by step between "
                   "trainings" if not early else
                   f"it trained (training mode for every module, gradients on) in {trained} pass(es) over "
                   "train_loader, not "
                   f"{iterations} x {epochs}" if not retrained else
                   "the rounds retrained at different peak learning rates ("
                   + ", ".join(f"{p:.4g}" for p in peaks) + "), as if one schedule ran over all of them")
                  + f": retrain for `epochs` epochs after each of the {iterations} rounds, each with the `lr` it is "
                    "given")))
    checks.append((1, _kept_moved(value), f"{where}: " + (GIVEN_MODEL_UNCHANGED if unchanged else
                  _not_moved(value, "retrain after each round"))))
    stale = _shrunk_but_kept(value, sparsity_type)
    checks.append((1, not stale, f"{where}: " + (GIVEN_MODEL_UNCHANGED if unchanged else
                  f"in {', '.join(stale)}, the {unit} that retraining had made the smallest were still kept at the end "
                  f"(from the first retraining on, the grader held the largest kept {unit} at 1/1000 of their value; "
                  "later rounds pruned others): each round must rank the weights as the previous round's retraining left them, not "
                  "a copy taken before")))
    checks.append(_logged_sparsity_check(value, log, where))
    checks.append(_round_accuracies_check(logs, where) if logs is not None else
                  _logged_accuracy_check(value, log, where, unchanged))
    return checks


LR_DECAY = 0.75  # a retraining's last learning rate is at most this fraction of its peak (cosine: near 0)


def _recipe_problems(value, rounds: int, epochs: int) -> list[str]:
    """Where a retraining (OMP's one, each IMP round's) departs from the recipe its docstring gives: the learning
    rate decays from its peak (a warm-up before the peak is fine; a rise after it, a restart, is not) to at most
    ``LR_DECAY`` of it, and the loss is cross-entropy with the dense model's label smoothing.  Seen where the probe
    saw it: the rates of torch.optim steps when the passes line up with the rounds, the loss where torch's
    cross_entropy was called.  Not graded (the real run's accuracy shows what the recipe is worth): a note."""
    problems = []
    by_pass = value.get("lr_by_pass", [])
    if len(by_pass) == rounds * epochs and all(by_pass):
        for i in range(rounds):
            rates = [r for rates in by_pass[i * epochs:(i + 1) * epochs] for r in rates]
            peak = rates.index(max(rates))
            round_ = f"round {i + 1}: " if rounds > 1 else ""
            if any(b > a * (1 + 1e-6) for a, b in zip(rates[peak:], rates[peak + 1:])):
                problems.append(f"{round_}the learning rate rose again after its peak of {rates[peak]:.4g} (a schedule "
                                "that restarts)")
            elif rates[-1] > LR_DECAY * rates[peak]:
                problems.append(f"{round_}the learning rate went from {rates[0]:.4g} to {rates[-1]:.4g}: it did not "
                                "decay")
    smoothing, expected = value.get("label_smoothing", []), value.get("expected_label_smoothing")
    if smoothing and expected is not None and not any(math.isclose(x, expected, abs_tol=1e-9) for x in smoothing):
        problems.append(f"the loss was cross-entropy with label_smoothing={', '.join(f'{x:g}' for x in smoothing)}, not "
                        f"LABEL_SMOOTHING ({expected:g}), the dense model's")
    return problems


def _round_peak_lrs(peak_lr: list, iterations: int, epochs: int) -> list[float]:
    """Each IMP round's peak learning rate (the largest a torch.optim step used in its passes); empty where the passes
    do not line up with the rounds or a round's updates bypassed torch.optim (nothing to compare then)."""
    if len(peak_lr) != iterations * epochs or any(p is None for p in peak_lr):
        return []
    return [max(peak_lr[i * epochs:(i + 1) * epochs]) for i in range(iterations)]


def _shrunk_but_kept(value, sparsity_type: str) -> list[str]:
    """IMP layers where the later rounds pruned at least twice as many units (weights or filters) as the probe shrank
    during the first retraining (``LargestShrinker``), yet kept more than half of the shrunk ones."""
    stale = []
    shrunk_info = value.get("shrunk", {})
    zeros = layer_zero_counts({name: value["after"][name] for name in shrunk_info}, sparsity_type)
    for name, info in shrunk_info.items():
        after, chosen = value["after"][name], info["chosen"]
        if sparsity_type == "unstructured":
            shrunk, pruned = int(chosen.sum()), int((after[chosen] == 0).sum())
        else:
            rows = chosen.flatten(1).any(dim=1)
            shrunk, pruned = int(rows.sum()), int((after.flatten(1)[rows] == 0).all(dim=1).sum())
        if zeros[name] - info["zeros_then"] >= 2 * shrunk and 2 * pruned < shrunk:
            stale.append(name)
    return stale


ACCURACY_SLACK = 0.5  # points: a logged accuracy may be rounded (one test image of the probes is 3.125 points)


def _accuracy_matches(logged, measured: list[float]) -> bool:
    """Whether a logged test accuracy is one the probe measured (float32 or as hw2.train.evaluate does by default)."""
    return _is_number(logged) and any(abs(logged - m) <= ACCURACY_SLACK for m in measured)


def _accuracy_note(logged, measured: list[float]) -> str:
    """What the probe measured, and a hint when the logged value reads as a fraction."""
    shown = " or ".join(f"{m:.2f}%" for m in measured)
    fraction = _is_number(logged) and any(abs(100 * logged - m) <= ACCURACY_SLACK for m in measured)
    hint = " (a fraction: log percent)" if fraction else "" if _is_number(logged) else \
        f" ({type(logged).__name__}, not a number)"
    return f"{logged!r} logged, the grader measured {shown}{hint}"


def _logged_accuracy_check(value, log: list, where: str, unchanged: bool) -> tuple[float, bool, str]:
    """The last entry's "accuracy_before_retrain" is the test accuracy (percent) when its retraining began, measured
    by the probe before the first training step at the final sparsity, and its "accuracy" the one at the end."""
    entry = log[-1] if log and isinstance(log[-1], dict) else {}
    end = value.get("accuracy_end", [])
    start = (value.get("accuracy_starts") or [end])[-1]  # never trained: the model just pruned is the final one
    before, after = entry.get("accuracy_before_retrain"), entry.get("accuracy")
    wrong = []
    if not _accuracy_matches(before, start):
        wrong.append(f"'accuracy_before_retrain' ({_accuracy_note(before, start)} after the last pruning, "
                     "before retraining)")
    if not _accuracy_matches(after, end):
        wrong.append(f"'accuracy' ({_accuracy_note(after, end)} at the end)")
    return (1, not wrong, f"{where}: " + (GIVEN_MODEL_UNCHANGED if unchanged else "the last log entry's "
            + " and ".join(wrong) + ": log the test accuracy in percent (hw2.train.evaluate on test_loader) of the model "
            "just pruned, then of the retrained model"))


def _round_accuracies_check(logs, where: str) -> tuple[float, bool, str]:
    """IMP, on the run made for its logs (the tiny model trained first, nothing shrunk): each round's
    "accuracy_before_retrain" is the test accuracy (percent) its retraining began at and its "accuracy" the one it
    ended at, as the probe measured them at the start of the round's first training pass and after the last optimizer
    step of its last (a round whose updates bypass torch.optim has no such measurement: its "accuracy" is judged only
    in the last round, against the final model).  Where the training passes do not line up with the log's rounds
    (judged by the retraining check), only the last entry is judged, as for OMP."""
    where = f"{where}, trained first by the grader (nothing held small)"
    if not logs.ok or "raised" in logs.value:
        why = logs.explain("iterative_magnitude_prune") if not logs.ok else \
            f"it raised {logs.value['raised']}: {logs.value['message']}"
        return (1, False, f"{where}: {why}")
    value = logs.value
    log = value["value"] if isinstance(value["value"], list) else []
    passes, epochs = value.get("accuracy_passes", []), value.get("epochs", 1)
    unchanged = _unchanged(value)
    if unchanged or not log or len(passes) != len(log) * epochs:
        return _logged_accuracy_check(value, log, where, unchanged)
    wrong = []
    for i, entry in enumerate(log):
        entry = entry if isinstance(entry, dict) else {}
        start, end = passes[i * epochs][0], passes[(i + 1) * epochs - 1][1]
        if i == len(log) - 1:
            end = sorted({*(end or []), *value.get("accuracy_end", [])})
        before, after = entry.get("accuracy_before_retrain"), entry.get("accuracy")
        if not _accuracy_matches(before, start):
            wrong.append(f"round {i + 1}'s 'accuracy_before_retrain' ({_accuracy_note(before, start)} when its "
                         "retraining began)")
        if end is not None and not _accuracy_matches(after, end):
            wrong.append(f"round {i + 1}'s 'accuracy' ({_accuracy_note(after, end)} when its retraining ended)")
    more = f" (and {len(wrong) - 2} more)" if len(wrong) > 2 else ""
    return (1, not wrong, f"{where}: " + "; ".join(wrong[:2]) + more + ": log, each round, the test accuracy in "
            "percent (hw2.train.evaluate on test_loader) of the model just pruned, then of the retrained model")


def _logged_sparsity_check(value, log: list, where: str) -> tuple[float, bool, str]:
    """The last entry's "sparsity" is the model's overall sparsity after its last pruning (the masks hold afterwards);
    with several entries, each round's is its own: they rise from the first to the last."""
    after = value["after"]
    overall = sum(int((w == 0).sum()) for w in after.values()) / sum(w.numel() for w in after.values())
    logged = [e.get("sparsity") if isinstance(e, dict) else None for e in log]
    last = logged[-1] if logged else None
    ok = _is_number(last) and math.isclose(last, overall, abs_tol=1e-6)
    rising = all(_is_number(x) for x in logged) and (len(logged) < 2 or (
        all(a <= b + 1e-12 for a, b in zip(logged, logged[1:])) and logged[0] < logged[-1]))
    return (1, ok and rising,
            f"{where}: the last log entry's 'sparsity' must be the model's overall sparsity after that pruning step "
            "(zero weights / all Conv2d and Linear weights)" + _observed(last, overall) if not ok else
            f"{where}: each round's 'sparsity' must be that round's (after its pruning): they must rise from the first "
            "round to the last")


OTHER_LR = 0.037  # OMP and IMP (unstructured) run a second time with this lr: the weights must come out different


def _run_method(probe, method: str, sparsity_type: str, iterations: int, kwargs: dict, helpers: str = "own"):
    """The probe result of OMP / IMP with the default lr and its checks; for unstructured, one more check: a second
    run with ``lr=OTHER_LR`` must not leave exactly the same weights (a function that ignores its lr does)."""
    extra = {"helpers": helpers} if helpers != "own" else {}
    result = probe("prune_method", TRAINING, method=method, sparsity_type=sparsity_type, **extra, **kwargs)
    logs = None
    if method == "imp" and result.ok and "raised" not in result.value:
        logs = probe("prune_method", TRAINING, method=method, sparsity_type=sparsity_type, logs=True, **extra, **kwargs)
    checks = _method_checks(method, result, sparsity_type, iterations, logs)
    if sparsity_type == "unstructured":
        name = "oneshot_magnitude_prune" if method == "omp" else "iterative_magnitude_prune"
        where = f"{sparsity_type}, lr={OTHER_LR}, on {TINY}"
        if not result.ok or "raised" in result.value:
            checks.append((1, False, checks[0][2]))  # the same failure, already stated
        else:
            other = probe("prune_method", TRAINING, method=method, sparsity_type=sparsity_type, lr=OTHER_LR, **extra,
                          **kwargs)
            if not other.ok or "raised" in other.value:
                why = other.explain(name) if not other.ok else \
                    f"it raised {other.value['raised']}: {other.value['message']}"
                checks.append((1, False, f"{where}: {why}"))
            else:
                same = all(torch.equal(other.value["after"][n], result.value["after"][n]) for n in result.value["after"])
                checks.append((1, not same, f"{where}: the weights came out exactly as with the default lr=0.01: "
                                            "retrain with the `lr` it is given"))
    return result, checks


def _judge_method(probe, credit, method: str, sparsity_type: str, **kwargs) -> None:
    """Record OMP's / IMP's checks.  A check that fails with the student's helpers but passes when the grader's own
    helpers (mask functions, apply_pruning, test_sparsity, masked_retrain) stand in for them is a defect of a helper,
    graded in that helper's own test: it costs nothing here."""
    iterations = kwargs.get("iterations", 1)
    result, own = _run_method(probe, method, sparsity_type, iterations, kwargs)
    recipe = _recipe_problems(result.value, iterations, kwargs.get("epochs", 1)) \
        if result.ok and "raised" not in result.value else []
    if recipe:
        credit.note(f"{sparsity_type}: not graded, but the retraining departs from the docstring's recipe: "
                    + "; ".join(recipe[:2]) + ". Retrain with a cosine decay from `lr` (hw2.train.make_scheduler, "
                    "stepped after every optimizer step) and nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING): "
                    "your CIFAR-10 accuracy depends on it.")
    no_helpers = result.ok and result.value.get("helpers_available") is False  # the public checks have none
    # (no second run after a timeout either: it would most likely time out again, doubling the grading time)
    if all(ok for _, ok, _ in own) or no_helpers or result.status in ("timeout", "broken"):
        credit.checks.extend(own)
        return
    _, graders = _run_method(probe, method, sparsity_type, iterations, kwargs, helpers="grader")
    rescued = []
    for (weight, ok, message), (_, ok_with_graders, _) in zip(own, graders):
        credit.check(ok or ok_with_graders, message, weight=weight)
        if not ok and ok_with_graders:
            rescued.append(message)
    if rescued:
        name = "OMP" if method == "omp" else "IMP"
        credit.note(f"{sparsity_type}: with your helpers, {name} failed: " + "; ".join(dict.fromkeys(rescued))
                    + f". With the grader's own versions of the functions it calls (graded in their own tests) in "
                    f"place of yours, your {name} passes this, so it costs points only there.")


@pytest.mark.points(5)
def test_oneshot_prunes_once_to_target_and_retrains(probe, credit):
    for sparsity_type in ("unstructured", "filter"):
        _judge_method(probe, credit, "omp", sparsity_type, epochs=2)
    credit.verify()


def _not_pruned_from_given_weights(value, sparsity_type) -> list[str]:
    """Layers whose pruned weights (filters) differ from what the student's mask function picks from the given weights.

    Judged against the student's own function, so that a ranking bug costs points in the ranking test only;
    layers where that function raised or gave no readable mask are not judged here.
    """
    late = []
    for name, own in value.get("own_masks", {}).items():
        before, after = value["before"][name], value["after"][name]
        mask = _full_mask(own.get("value"), tuple(before.shape), sparsity_type == "filter")
        if mask is None:
            continue
        if sparsity_type == "unstructured":
            same = torch.equal(after == 0, mask == 0)
        else:
            same = torch.equal((after.flatten(1) == 0).all(dim=1), (mask.flatten(1) == 0).all(dim=1))
        if not same:
            late.append(name)
    return late


@pytest.mark.points(7)
def test_iterative_prunes_in_at_least_three_rounds_landing_on_target(probe, credit):
    too_few = probe("imp_too_few_iterations", TRAINING)
    credit.check(too_few.ok and too_few.value.get("raised") == "ValueError",
                 "iterative_magnitude_prune(iterations=2) must raise ValueError (at least 3 rounds)")
    for sparsity_type, iterations in (("unstructured", 3), ("filter", 4)):
        _judge_method(probe, credit, "imp", sparsity_type, iterations=iterations, epochs=2)  # epochs per round, not in all
    credit.verify()


@pytest.mark.points(7)
def test_prune_channels_gives_smaller_model_with_same_outputs(probe, credit):
    for permanent in (False, True):
        label = (f"{TINY}, filter-pruned by the grader, masks made permanent" if permanent else
                 f"{TINY}, filter-pruned by the grader, masks attached with torch.nn.utils.prune")
        result = probe("compact", SHORT, permanent=permanent)
        if not result.ok or "raised" in result.value:
            why = result.explain("prune_channels_after_filter_prune") if not result.ok else f"it {_raised(result.value)}"
            credit.check(False, f"{label}: {why}", weight=5)
            continue
        value = result.value["value"]
        if not value["is_module"]:
            credit.check(False, f"{label}: must return an nn.Module", weight=5)
            continue
        # Credit starts with the model getting smaller by the pruned filters: removing nothing earns nothing.
        if not credit.check(value["widths"] == value["kept_widths"],
                            f"{label}: the returned model's conv widths are {value['widths']} (the given model's: "
                            f"{value['widths_before']}; without its all-zero filters: {value['kept_widths']}); each conv "
                            "must lose exactly its all-zero filters, and nothing else is graded until it does", weight=5):
            continue
        credit.check(value["zero_filters"] == 0, f"{label}: all-zero filters are left in the returned model "
                                                 "(other filters were removed in their place)")
        credit.check(value["input_unchanged"] and not value["same_object"],
                     f"{label}: must return a new model and leave the given one as it was"
                     + ("" if value["input_unchanged"] else " (the given model's state_dict changed)"))
        credit.check(value["parameters"] == expected_parameters(value["kept_widths"], value["classes"]) and not value["has_masks"],
                     f"{label}: the parameter count is not that of the VGG13 with the pruned filters, their BatchNorm "
                     "channels and the next layer's matching inputs removed"
                     + (" (pruning masks are left in it)" if value["has_masks"] else ""))
        outputs = value.get("outputs")
        same = isinstance(outputs, torch.Tensor) and outputs.shape == value["expected"].shape and \
            float((outputs - value["expected"]).abs().max()) <= 1e-4
        credit.check(same, f"{label}: outputs in eval mode must equal the masked model's (max abs difference <= 1e-4)"
                           + (f"; the forward pass failed: {value['forward_error']}" if "forward_error" in value else ""),
                     weight=2)
    credit.verify()


@pytest.mark.points(3)
def test_plot_mask_image_is_one_row_per_filter(probe, probe_dir, credit):
    value = credit.require(probe("plot_mask", SHORT, workdir=probe_dir), "plot_mask")
    changed = []
    cases = (("conv weight (6, 4, 3, 3)", value, True), ("linear weight (5, 7)", value["linear"], True),
             ("conv weight (8, 256, 3, 3), 2304 columns", value["wide"], False),
             ("conv weight (4, 2, 3, 3) with every weight kept", value["dense"], True))
    for label, case, judge_figure in cases:
        weight = case["weight"]
        if not case["input_unchanged"]:
            changed.append(label)
        if "raised" in case:
            credit.check(False, f"{label}: plot_mask raised {case['raised']}: {case['message']}", weight=2)
            continue
        image = case["value"]  # an np.ndarray the function returned comes back as a tensor (probes.plain)
        expected = (weight != 0).reshape(weight.shape[0], -1)
        ok_shape = isinstance(image, torch.Tensor) and tuple(image.shape) == tuple(expected.shape)
        credit.check(ok_shape, f"{label}: the image must have one row per filter and C_in x kH x kW columns")
        credit.check(ok_shape and bool(((image == 0) | (image == 1)).all()) and torch.equal(image != 0, expected),
                     f"{label}: the image must be 1 where the weight is kept and 0 where pruned, row by row")
        if judge_figure:
            problem = _mask_figure_problem(case.get("drawn"), expected)
            if problem is None and bool(expected.all()):  # a hint, not a deduction: imshow's default scaling is common
                hint = _dense_colour_problem(case.get("drawn"), value.get("drawn"),
                                             (value["weight"] != 0).reshape(value["weight"].shape[0], -1))
                if hint:
                    credit.note(f"{label}: {hint} (not marked down)")
            credit.check(problem is None, f"{label}: the saved figure must show the mask, one row per filter, one "
                                          f"colour for kept and another for pruned: {problem}")
    if any("raised" not in case for _, case, _ in cases):  # else nothing to judge
        credit.check(not changed, f"plot_mask must leave the weight it is given unchanged; it changed the "
                                  f"{' and the '.join(changed)}")
    credit.check(is_png(value["path"]), "plot_mask must write a valid PNG to out_path")
    credit.verify()


def _mask_figure_problem(drawn: dict | None, expected: torch.Tensor) -> str | None:
    """None when the saved figure (as it was when saved) or the PNG's pixels show ``expected``; else what was seen.

    An image-like artist matches when its colours split its entries exactly into kept and pruned (upside down
    too: pcolormesh and origin="lower" draw row 0 at the bottom); marker points match when they sit on exactly
    the kept entries.  ``drawn`` None: no figure was saved and the PNG does not map onto the entries (not judged).
    """
    if drawn is None:
        return None
    if "unreadable" in drawn:
        return f"its artists could not be read ({drawn['unreadable']})"
    for rgba in drawn["images"]:
        if tuple(rgba.shape[:2]) != tuple(expected.shape):
            continue
        for keep in (expected, expected.flip(0)):
            kept, pruned = rgba[keep].unique(dim=0), rgba[~keep].unique(dim=0)
            if len(kept) == 1 and len(pruned) <= 1 and not (len(pruned) == 1 and torch.equal(kept, pruned)):
                return None
    rows, cols = expected.shape
    for keep in (expected, expected.flip(0)):
        target = {(c, r) for r, c in keep.nonzero().tolist()}
        for points in drawn["points"]:
            if {(round(x), round(y)) for x, y in points} == target and \
                    all(abs(x - round(x)) < 1e-6 and abs(y - round(y)) < 1e-6 for x, y in points):
                return None
    shapes = sorted({tuple(rgba.shape[:2]) for rgba in drawn["images"]})
    if not shapes:
        return "no image (imshow, matshow, pcolormesh, spy) was in it when it was saved"
    if (cols, rows) in shapes:
        return f"it held an image of shape {(cols, rows)}: the mask transposed (columns as rows)"
    if tuple(expected.shape) in shapes:
        return "its image of the right shape does not colour the kept and the pruned entries apart"
    return f"its images have shapes {', '.join(map(str, shapes))}, not {(rows, cols)}"


def _kept_colours(drawn: dict | None, expected: torch.Tensor) -> list[torch.Tensor]:
    """The kept entries' colour of each image in ``drawn`` that colours ``expected`` apart (see _mask_figure_problem)."""
    colours = []
    for rgba in (drawn or {}).get("images", []):
        if tuple(rgba.shape[:2]) != tuple(expected.shape):
            continue
        for keep in (expected, expected.flip(0)):
            kept, pruned = rgba[keep].unique(dim=0), rgba[~keep].unique(dim=0)
            if len(kept) == 1 and len(pruned) == 1 and not torch.equal(kept, pruned):
                colours.append(kept[0])
    return colours


def _dense_colour_problem(drawn: dict | None, mixed: dict | None, mixed_expected: torch.Tensor) -> str | None:
    """For a layer that keeps everything: None when its image is drawn in the colour that the first figure (kept and
    pruned entries) gives the kept ones, or when that cannot be told (marker points, a figure not judged)."""
    kept = _kept_colours(mixed, mixed_expected)
    if not kept or drawn is None or "unreadable" in drawn:
        return None
    for rgba in drawn["images"]:
        colours = rgba.reshape(-1, rgba.shape[-1]).unique(dim=0)
        if len(colours) == 1 and any(torch.allclose(colours[0], colour, atol=1e-3) for colour in kept):
            return None
    if not drawn["images"]:
        return None  # drawn with markers: _mask_figure_problem judged the points
    return ("every entry is kept, but it is not drawn in the colour the first figure gives kept entries (a colour "
            "map scaled to the image's own range draws an all-kept mask in the pruned colour: pass vmin=0, vmax=1)")


def _drawn_at(points: list, sparsity: float, accuracy: float, ys: float) -> bool:
    """A drawn point at (sparsity, accuracy); sparsity as a fraction or in percent, accuracy scaled by ``ys``."""
    return any(math.isclose(x, sparsity * xs, rel_tol=1e-6, abs_tol=1e-9) and math.isclose(y, accuracy * ys, rel_tol=1e-6)
               for x, y in points for xs in (1, 100))


@pytest.mark.points(2)
def test_plot_sparsity_vs_accuracy_draws_one_point_per_model(probe, probe_dir, credit):
    value = credit.require(probe("plot_sparsity", SHORT, workdir=probe_dir), "plot_sparsity_vs_accuracy")
    if "raised" in value:
        credit.fail(f"plot_sparsity_vs_accuracy raised {value['raised']}: {value['message']}")
    points = value["value"]
    expected = [[r["label"], r["sparsity"], r["accuracy"]] for r in PLOT_RECORDS]
    ok = isinstance(points, list) and len(points) == len(expected) and all(
        isinstance(p, list) and len(p) == 3 and p[0] == e[0] and all(isinstance(x, (int, float)) for x in p[1:])
        and math.isclose(p[1], e[1], abs_tol=1e-9) and math.isclose(p[2], e[2], abs_tol=1e-9) for p, e in zip(points, expected))
    counted = f" (it returned {len(points)} for {len(expected)} records)" \
        if isinstance(points, list) and len(points) != len(expected) else ""
    credit.check(ok, "must return one (label, sparsity, accuracy) per record, in order, with sparsity as the given "
                     f"fraction and accuracy in percent{counted}", weight=2)
    drawn = value.get("drawn")
    if drawn is None:
        credit.check(False, "the figure was not saved with savefig (plt.savefig or fig.savefig), so its points could "
                            "not be read" + (f" ({value['unreadable']})" if value.get("unreadable") else ""))
    else:
        # the accuracy axis in percent, or as fractions: the scale the points use is the one the dense line must use
        scale = max((1, 0.01), key=lambda ys: sum(_drawn_at(drawn, r["sparsity"], r["accuracy"], ys) for r in PLOT_RECORDS))
        missing = [r["label"] for r in PLOT_RECORDS if not _drawn_at(drawn, r["sparsity"], r["accuracy"], scale)]
        credit.check(not missing, "the figure must draw each record as a point at x = sparsity, y = accuracy (lines "
                                  f"or scatter); no such point for {', '.join(missing)}")
        dense = any(math.isclose(h, 93.0 * scale, rel_tol=1e-6) for h in value.get("heights") or [])
        credit.check(dense, "the figure must draw dense_accuracy (e.g. a horizontal line at its height), on the "
                            "accuracy scale of the points")
    credit.check(is_png(value["path"]), "must write a valid PNG to out_path")
    credit.verify()
