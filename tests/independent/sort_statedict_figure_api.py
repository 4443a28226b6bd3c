"""HW2 pruning functions: the part you write.

Style of this solution: the YAML read as ordered (key, value) pairs so that duplicates can be
seen, thresholds from ``torch.sort`` values with ties resolved in index order (one helper for
weights and for filter norms), ``masked_fill_`` to zero weights in place, my own
autocast training loop, IMP with a cubic (gradual-pruning) schedule, the compacted model
rebuilt from a sliced state_dict, and figures drawn on ``matplotlib.figure.Figure`` without pyplot.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures go to files; no screen needed
import matplotlib.pyplot as plt  # noqa: F401  (kept from the template)
import numpy as np
import torch
import yaml
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from torch import nn
from torch.nn.utils import prune
from tqdm import tqdm

from hw2.models import VGG13, copy_without_pruning, prunable_weights
from hw2.train import LABEL_SMOOTHING, autocast, evaluate, make_optimizer, make_scheduler, train_epoch

SPARSITY_TYPES = ("unstructured", "filter")
MIN_IMP_ITERATIONS = 3
# Colour-blind-safe pair (Okabe-Ito): blue = kept, orange = pruned.
MASK_COLOURS = ("#E69F00", "#0072B2")  # index 0 = pruned, index 1 = kept
FIGURE_DPI = 150


# ---------------------------------------------------------------------------------------------
# 3. YAML
# ---------------------------------------------------------------------------------------------
class _Pairs(list):
    """A YAML mapping as the list of its (key, value) pairs, in file order, duplicates included."""


class _PairsLoader(yaml.SafeLoader):
    pass


def _construct_pairs(loader: yaml.SafeLoader, node: yaml.MappingNode) -> _Pairs:
    loader.flatten_mapping(node)
    return _Pairs((loader.construct_object(k, deep=True), loader.construct_object(v, deep=True))
                  for k, v in node.value)


_PairsLoader.add_constructor("tag:yaml.org,2002:map", _construct_pairs)


def _as_dict(pairs: _Pairs, where: str) -> dict:
    out = {}
    for key, value in pairs:
        try:
            if key in out:
                raise ValueError(f"{where}: {key!r} is given twice")
        except TypeError:
            raise ValueError(f"{where}: unusable key {key!r}") from None
        out[key] = value
    return out


def read_prune_ratios_from_yaml(file_name: str | Path, model: nn.Module) -> dict[str, float]:
    """Read layer-wise prune ratios from a YAML file and check them against ``model``.

    The file's top-level key ``prune_ratios`` maps parameter names, exactly as in
    ``model.named_parameters()`` (e.g. ``features.0.weight``), to ratios::

        prune_ratios:
          features.0.weight: 0.5
          features.3.weight: 0.8

    Args:
        file_name: path of the YAML file.
        model: the model the ratios are for; only its Conv2d and Linear weights
            (``hw2.models.prunable_weights``) may be named.

    Returns:
        dict[str, float]: parameter name -> ratio, in file order.

    Raises:
        ValueError: malformed YAML (the message gives the line), no
            ``prune_ratios`` mapping, a name given twice, a name the model does
            not have or that is not a Conv2d/Linear weight (a BatchNorm weight, a
            bias; the message lists the valid names), or a ratio that is not a
            number in [0, 1) (1.0, a negative number, NaN, a boolean, a string
            such as ``50%``; the message names the layer).  ``prune_ratios`` must
            be top-level and flat: one layer name per key.

    Graded: the returned dict equals the file's mapping, in file order; each bad input listed under Raises (a quoted number such as "0.5" is a string) raises ValueError.
    """
    where = str(file_name)
    source = Path(file_name).read_text(encoding="utf-8")
    try:
        document = yaml.load(source, Loader=_PairsLoader)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark is not None else None
        raise ValueError(f"{where}: malformed YAML at line {line}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{where}: malformed YAML: {exc}") from None

    if not isinstance(document, _Pairs):
        raise ValueError(f"{where}: expected a mapping with the top-level key 'prune_ratios'")
    top = _as_dict(document, where)
    section = top.get("prune_ratios")
    if not isinstance(section, _Pairs):
        raise ValueError(f"{where}: 'prune_ratios' must be a mapping of layer name -> ratio")
    entries = _as_dict(section, where)  # raises on a layer given twice

    valid = prunable_weights(model)
    ratios: dict[str, float] = {}
    for layer, ratio in entries.items():
        if layer not in valid:
            raise ValueError(f"{where}: {layer!r} is not a prunable (Conv2d/Linear) weight; valid names: "
                             f"{', '.join(valid)}")
        number_ok = isinstance(ratio, (int, float)) and not isinstance(ratio, bool)
        if not number_ok or math.isnan(ratio) or ratio < 0 or ratio >= 1:
            raise ValueError(f"{where}: layer {layer!r} has ratio {ratio!r}; it must be a number in [0, 1)")
        ratios[layer] = float(ratio)
    return ratios


# ---------------------------------------------------------------------------------------------
# 1-2. masks
# ---------------------------------------------------------------------------------------------
def _prune_smallest(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Float keep-mask (1/0) over the 1-D ``scores``: 0 at exactly ``count`` of the smallest scores.

    Threshold = the count-th smallest value (from the sorted values); everything below it goes, and of
    the entries equal to it the first ones (by index) go until ``count`` are pruned.
    """
    keep = torch.ones_like(scores, dtype=torch.float32)
    if count <= 0:
        return keep
    if count >= scores.numel():
        return torch.zeros_like(keep)
    ordered = torch.sort(scores).values
    threshold = ordered[count - 1]
    below = scores < threshold
    keep[below] = 0.0
    missing = count - int(below.sum())
    ties = torch.nonzero(scores == threshold).flatten()[:missing]
    keep[ties] = 0.0
    return keep


def unstructured_prune(tensor: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Magnitude-prune individual weights: mark the smallest ``|w|`` for removal.

    Args:
        tensor: a weight of any shape, e.g. ``(C_out, C_in, kH, kW)``; not modified.
        sparsity: fraction in [0, 1) of entries to prune.

    Returns:
        Tensor: mask of ``tensor``'s shape and device (its dtype, or bool); 0 at
        the ``round(sparsity * tensor.numel())`` entries of smallest magnitude
        (floor or ceil is accepted too), 1 elsewhere.  Entries tied in magnitude
        at the threshold may be pruned either way.  Weights may come in any
        memory layout (channels_last after bf16 training, a transposed view):
        use ``reshape``, not ``view``.

    Graded: the mask has the input's shape; the number of zeros is floor or ceil of sparsity*n; every pruned |w| <= every kept |w|; the input is unchanged; also on channels_last and transposed inputs.
    """
    scores = tensor.detach().reshape(-1).abs().float()
    keep = _prune_smallest(scores, int(round(sparsity * scores.numel())))
    return keep.reshape(tensor.shape).to(tensor.dtype)


def filter_prune(tensor: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Prune whole output filters (``dim=0``) with the smallest L2 norm.

    Args:
        tensor: a conv weight ``(C_out, C_in, kH, kW)`` (a 2-D ``(out, in)``
            weight works the same, one row per output); not modified.
        sparsity: fraction in [0, 1) of filters to prune.

    Returns:
        Tensor: mask of ``tensor``'s shape and device (its dtype, or bool); every
        entry of the ``round(sparsity * C_out)`` filters (floor or ceil is
        accepted too) with the smallest L2 norm is 0, all others 1.  Filters
        tied in norm at the threshold may be pruned either way.  Weights may come
        in any memory layout (channels_last after bf16 training).

    Graded: the mask has the input's shape; whole filters only; floor or ceil of sparsity*C_out filters pruned; every pruned filter's L2 norm <= every kept one's; the input is unchanged; also on channels_last inputs.
    """
    rows = tensor.detach().reshape(tensor.shape[0], -1).float()
    norms = torch.norm(rows, p=2, dim=1)  # (C_out,) L2 norm of each filter
    keep = _prune_smallest(norms, int(round(sparsity * tensor.shape[0])))
    view = [tensor.shape[0]] + [1] * (tensor.dim() - 1)
    return (keep.reshape(view) * torch.ones(tensor.shape, device=tensor.device)).to(tensor.dtype)


# ---------------------------------------------------------------------------------------------
# 4-5. applying and measuring
# ---------------------------------------------------------------------------------------------
def _conv_to_bn(model: nn.Module) -> dict:
    """{conv module: (bn name, bn module)} for each conv directly followed by its BatchNorm."""
    named = list(model.named_modules())
    pairs = {}
    for (_, first), (second_name, second) in zip(named, named[1:]):
        if isinstance(first, nn.Conv2d) and isinstance(second, nn.BatchNorm2d) and second.num_features == first.out_channels:
            pairs[first] = (second_name, second)
    return pairs


def apply_pruning(model: nn.Module, sparsity_type: str, prune_ratio_dict: dict[str, float]) -> dict[str, torch.Tensor]:
    """Compute a mask for every layer in ``prune_ratio_dict`` and apply it to ``model`` in place.

    Masks are computed on the weights as they are now, so calling this again
    with larger ratios prunes further (what iterative pruning does).  Apply them
    so that they persist through training, e.g. with
    ``torch.nn.utils.prune.custom_from_mask``.  For ``filter`` pruning, also
    mask the scale and shift (``weight``, ``bias``) of each pruned filter's
    BatchNorm channel, so the channel outputs exactly zero.

    Args:
        model: the network, modified in place.
        sparsity_type: ``"unstructured"`` or ``"filter"``.
        prune_ratio_dict: parameter name -> ratio (from ``read_prune_ratios_from_yaml``);
            for ``filter``, conv weights only (main.py refuses a Linear weight there).

    Returns:
        dict[str, Tensor]: parameter name -> mask now in force (1 = keep), one for
        every name in ``prune_ratio_dict`` (plus the BatchNorm ones for ``filter``).

    Raises:
        ValueError: unknown ``sparsity_type``.

    Graded: a mask of the weight's shape for each named layer (the grader names one at ratio 0 too); each named layer's weight is zero exactly where its returned mask is 0, with the counts of unstructured_prune / filter_prune per layer (not one global threshold); other layers untouched; the model's parameters stay the same objects (an optimizer built before still trains them); after some kept weights shrink (as in retraining), a second call with larger ratios prunes each layer further to its new ratio, ranking the weights as they are then; for filter, each pruned filter's BatchNorm weight and bias are 0, and the returned dict holds their masks (0 on those channels).
    """
    if sparsity_type not in SPARSITY_TYPES:
        raise ValueError(f"sparsity_type must be one of {SPARSITY_TYPES}, got {sparsity_type!r}")
    params = dict(model.named_parameters())
    following_bn = _conv_to_bn(model) if sparsity_type == "filter" else {}
    masks: dict[str, torch.Tensor] = {}
    for name, ratio in prune_ratio_dict.items():
        weight = params[name]
        if sparsity_type == "unstructured":
            mask = unstructured_prune(weight, ratio)
        else:
            mask = filter_prune(weight, ratio)
        with torch.no_grad():
            weight.masked_fill_(mask == 0, 0.0)
        masks[name] = mask
        if sparsity_type == "filter":
            module = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            if module in following_bn:
                bn_name, bn = following_bn[module]
                channel_keep = mask.reshape(mask.shape[0], -1).amax(dim=1)  # 1 if the filter is kept
                with torch.no_grad():
                    for part in ("weight", "bias"):
                        p = getattr(bn, part)
                        p.masked_fill_(channel_keep == 0, 0.0)
                        masks[f"{bn_name}.{part}"] = channel_keep.to(p.dtype).clone()
    return masks


def test_sparsity(model: nn.Module, sparsity_type: str = "unstructured") -> dict:
    """Measure, print and return the sparsity of every Conv2d and Linear weight.

    Prints a table (one row per layer: name, zeros, total, sparsity; for
    ``filter`` also all-zero filters / filters) and the overall sparsity.

    Args:
        model: the network (pruned with hooks, or with zeros made permanent).
        sparsity_type: ``"unstructured"`` or ``"filter"``.

    Returns:
        dict with ``"overall"``: float, zero weights / all weights over every
        Conv2d and Linear weight; ``"layers"``: dict name -> float sparsity of
        that weight; and for ``filter`` also ``"zero_filters"``: dict name -> int
        for every Conv2d and Linear weight (a Linear's rows are its filters), the
        number of output filters whose weights are all zero.  Only exact zeros
        count: a tiny weight is not pruned.

    Graded: "overall" (a fraction, not a percentage) and each "layers" value (a float) equal the exact fraction of zero weights (BatchNorm and biases not counted; with prune hooks attached, the weights as the forward pass uses them, some zero under a mask of 1); "zero_filters" counts (an int) the filters of every layer whose weights are all exactly zero (a filter of tiny weights, or of weights that sum to 0, is not one).
    """
    layers, zero_filters = {}, {}
    zeros_all = count_all = 0
    lines = []
    with torch.no_grad():
        for module_name, module in model.named_modules():
            if not isinstance(module, (nn.Conv2d, nn.Linear)):
                continue
            name = f"{module_name}.weight" if module_name else "weight"
            if prune.is_pruned(module) and hasattr(module, "weight_orig"):
                w = module.weight_orig * module.weight_mask  # what the next forward pass computes
            else:
                w = module.weight
            is_zero = w == 0
            z, n = int(is_zero.sum()), is_zero.numel()
            zeros_all, count_all = zeros_all + z, count_all + n
            layers[name] = z / n
            text = f"  {name:<26} {z:>10} / {n:<10} {z / n:7.2%}"
            if sparsity_type == "filter":
                zero_filters[name] = int(is_zero.reshape(is_zero.shape[0], -1).all(dim=1).sum())
                text += f"   all-zero filters {zero_filters[name]} / {is_zero.shape[0]}"
            lines.append(text)
    overall = zeros_all / count_all if count_all else 0.0
    print(f"sparsity ({sparsity_type}):")
    print("\n".join(lines))
    print(f"  overall: {zeros_all} / {count_all} = {overall:.4f}")
    report = {"overall": overall, "layers": layers}
    if sparsity_type == "filter":
        report["zero_filters"] = zero_filters
    return report


# ---------------------------------------------------------------------------------------------
# 6-8. retraining, OMP, IMP
# ---------------------------------------------------------------------------------------------
def masked_retrain(model: nn.Module, prune_masks: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
                   loss_fn, train_loader, test_loader, num_epochs: int, device, scheduler=None,
                   progress: bool = True) -> list[dict]:
    """Retrain a pruned model for ``num_epochs`` while every pruned weight stays exactly zero.

    The model may come in either state ``apply_pruning`` may leave it in, and
    the masks must hold in both: masks attached with ``torch.nn.utils.prune``
    (each masked parameter is then ``<name>_orig``, and ``<name>`` is computed
    from it and ``<name>_mask``), or plain parameters whose pruned entries are
    zero (nothing but your code keeps them zero: re-apply the masks after each
    optimizer step, or attach them first).

    Args:
        model: the pruned network, in either state above.
        prune_masks: parameter name (``model.named_parameters()`` style, e.g.
            ``features.0.weight``) -> mask (1 = keep) of that parameter's shape,
            as returned by ``apply_pruning``.
        optimizer: optimizer over ``model.parameters()``.
        loss_fn: e.g. ``nn.CrossEntropyLoss()``.
        train_loader, test_loader: batches of ``(images (B, 3, 32, 32), labels (B,))``.
        num_epochs: passes over ``train_loader``.
        device: where the model and batches are.
        scheduler: optional per-step learning-rate scheduler.
        progress: show a progress bar per epoch.

    Returns:
        list[dict]: one entry per epoch with ``"loss"``, ``"accuracy"`` (train,
        percent) and ``"test_accuracy"`` (percent).

    Graded: on the grader's tiny VGG13 in both states (pruned weights set to plain zeros, no hooks; masks attached with torch.nn.utils.prune: where your apply_pruning leaves plain weights, an error in this state is only noted), handed over in eval mode, num_epochs=2, with a scheduler and an optimizer that has already taken a step (it has momentum, as one optimizer serving several IMP rounds has): every weight whose mask is 0 is exactly 0 afterwards and in every training forward pass; the unpruned weights change through steps of the given optimizer (updated in place, never replaced), the scheduler stepping once per optimizer step, the loss computed with loss_fn, the gradients cleared before each backward pass; it trains (training mode, BatchNorm included) in each of the num_epochs passes over train_loader; it returns one entry per epoch, the last one's "test_accuracy" the retrained model's test accuracy in percent (the tiny model is trained first, so the figure moves).
    """
    params = dict(model.named_parameters())
    pinned = []  # (parameter, bool tensor: True where pruned)
    for name, mask in prune_masks.items():
        param = params.get(name + "_orig", params.get(name))  # <name>_orig when prune hooks are attached
        if param is None:
            raise KeyError(f"masked_retrain: the model has no parameter {name!r}")
        pinned.append((param, (mask == 0).to(param.device)))

    def pin():
        with torch.no_grad():
            for param, pruned in pinned:
                param.masked_fill_(pruned, 0.0)

    pin()
    history = []
    for epoch in range(1, num_epochs + 1):
        model.train()
        running_loss, hits, count = 0.0, 0, 0
        batches = tqdm(train_loader, desc=f"retrain {epoch}/{num_epochs}", leave=False, disable=not progress)
        for inputs, targets in batches:
            inputs, targets = inputs.to(device), targets.to(device)
            optimizer.zero_grad(set_to_none=True)
            with autocast(device):
                outputs = model(inputs)
                loss = loss_fn(outputs.float(), targets)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            pin()
            running_loss += loss.item() * targets.numel()
            hits += (outputs.argmax(dim=1) == targets).sum().item()
            count += targets.numel()
        batches.close()
        record = {"epoch": epoch, "loss": running_loss / max(count, 1), "accuracy": 100.0 * hits / max(count, 1),
                  "test_accuracy": evaluate(model, test_loader, device)}
        history.append(record)
        print(f"  epoch {epoch}: loss {record['loss']:.3f}, train {record['accuracy']:.2f}%, "
              f"test {record['test_accuracy']:.2f}%")
    return history


def _one_round(model, sparsity_type, ratios, iteration, train_loader, test_loader, epochs, device, lr,
               weight_decay, progress):
    masks = apply_pruning(model, sparsity_type, ratios)
    sparsity = test_sparsity(model, sparsity_type)["overall"]
    accuracy_before = evaluate(model, test_loader, device)
    optimizer = make_optimizer(model, lr, weight_decay=weight_decay)
    scheduler = make_scheduler(optimizer, max(1, epochs * len(train_loader)))
    history = masked_retrain(model, masks, optimizer, nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING),
                             train_loader, test_loader, epochs, device, scheduler=scheduler, progress=progress)
    return {"iteration": iteration, "ratios": ratios, "sparsity": sparsity,
            "accuracy_before_retrain": accuracy_before,
            "accuracy": history[-1]["test_accuracy"] if history else accuracy_before}


def oneshot_magnitude_prune(model: nn.Module, sparsity_type: str, prune_ratio_dict: dict[str, float], *,
                            train_loader, test_loader, epochs: int, device, lr: float = 0.01,
                            weight_decay: float = 5e-4, progress: bool = True) -> list[dict]:
    """One-shot magnitude pruning (OMP): prune once to the target ratios, then masked retraining.

    Args:
        model: the trained dense network, pruned in place.
        sparsity_type: ``"unstructured"`` or ``"filter"``.
        prune_ratio_dict: parameter name -> target ratio.
        train_loader, test_loader, device: as in ``masked_retrain``.
        epochs: retraining epochs.
        lr: peak learning rate of the retraining (SGD, cosine decay; loss: cross-entropy with
            label smoothing ``LABEL_SMOOTHING``, the loss the dense model was trained with).
        weight_decay: L2 penalty on conv/linear weights.
        progress: show progress bars.

    Returns:
        list[dict]: one entry (one pruning step) with ``"iteration"`` (1),
        ``"ratios"`` (the dict applied), ``"sparsity"`` (overall, after pruning),
        ``"accuracy_before_retrain"`` and ``"accuracy"`` (test, percent, after retraining).

    Graded: the model is pruned once (one entry) to the given ratios (per layer, floor or ceil), the pruned weights (filters) being those unstructured_prune / filter_prune pick from the weights it was given, and retrained for `epochs` epochs with the `lr` it is given: pruned weights stay zero, the others change; the entry's "sparsity" is the model's overall sparsity after pruning; "accuracy_before_retrain" and "accuracy" are the test accuracies in percent of the model just pruned and of the retrained one (the grader trains the tiny model first and measures both itself). A defect of a function graded in its own test (the mask functions, apply_pruning, test_sparsity, masked_retrain) costs points there only: where your OMP fails with your helpers but passes with the grader's, it is not marked down here (the grader's apply_pruning attaches no hooks: the masks hold in retraining only where your OMP passes them on).
    """
    return [_one_round(model, sparsity_type, dict(prune_ratio_dict), 1, train_loader, test_loader, epochs, device,
                       lr, weight_decay, progress)]


def _cubic_schedule(target: float, t: int, iterations: int) -> float:
    """Zhu & Gupta's gradual pruning: fast at first, slower near the target; exactly the target at t = iterations."""
    if t >= iterations:
        return target
    return target * (1.0 - (1.0 - t / iterations) ** 3)


def iterative_magnitude_prune(model: nn.Module, sparsity_type: str, prune_ratio_dict: dict[str, float], *,
                              iterations: int = 3, train_loader, test_loader, epochs: int, device,
                              lr: float = 0.01, weight_decay: float = 5e-4, progress: bool = True) -> list[dict]:
    """Iterative magnitude pruning (IMP): ``iterations`` rounds of (prune a bit more, masked retraining).

    Each round prunes the weights as they are then, after the previous round's retraining.
    Each layer's ratio grows every round (a layer whose target is 0 stays at 0)
    and lands on its target in the last round (the reference removes the same fraction of the remaining
    weights each round: ratio_t = 1 - (1 - target) ** (t / iterations)).

    Args:
        model, sparsity_type, prune_ratio_dict, train_loader, test_loader, device,
        lr, weight_decay, progress: as in ``oneshot_magnitude_prune``.
        iterations: number of prune-retrain rounds, at least 3.
        epochs: retraining epochs per round.

    Returns:
        list[dict]: one entry per round, keys as in ``oneshot_magnitude_prune``;
        the last round's ``"ratios"`` equal ``prune_ratio_dict``.

    Raises:
        ValueError: ``iterations`` < 3.

    Graded: at least 3 rounds (fewer raises ValueError), one entry with "ratios" each; each layer's ratio rises every round without passing its target (also for targets of 0.9 and more), starts above 0 (the first round prunes) and below it and the last round's equals it (to 1e-9); each layer ends at its target; each round ranks the weights as the previous round's retraining left them (not a copy taken before); retrained for `epochs` epochs with the `lr` it is given after every round's pruning (each round at the same peak learning rate), the last one included; each entry's "sparsity" is its round's (they rise), the last one the model's overall sparsity; each entry's "accuracy_before_retrain" and "accuracy" are the test accuracies in percent of its round's model just pruned and retrained (judged on a second run, on the tiny model trained first by the grader, with both measured by the grader). Helper defects as in oneshot_magnitude_prune.
    """
    if iterations < MIN_IMP_ITERATIONS:
        raise ValueError(f"iterations must be at least {MIN_IMP_ITERATIONS}, got {iterations}")
    targets = dict(prune_ratio_dict)
    rounds = []
    for t in range(1, iterations + 1):
        ratios = {name: _cubic_schedule(target, t, iterations) for name, target in targets.items()}
        print(f"IMP round {t}/{iterations}")
        rounds.append(_one_round(model, sparsity_type, ratios, t, train_loader, test_loader, epochs, device, lr,
                                 weight_decay, progress))
    return rounds


# ---------------------------------------------------------------------------------------------
# 11. compaction
# ---------------------------------------------------------------------------------------------
def prune_channels_after_filter_prune(model: nn.Module) -> nn.Module:
    """Physically remove pruned filters: return a new, smaller dense model with the same outputs.

    For every conv, the all-zero output filters go, together with their
    BatchNorm channel (``weight``, ``bias``, ``running_mean``, ``running_var``)
    and the matching input channels of the next conv (or input features of the
    Linear classifier).  ``model`` itself is left as it is.

    Args:
        model: a filter-pruned VGG-style network (``features`` then a Linear
            ``classifier`` that reads one feature per channel of the last conv:
            its map is 1x1, as VGG13's on 32x32 images), masks attached or made
            permanent.

    Returns:
        nn.Module: a new model with plain parameters, smaller ``out_channels`` /
        ``num_features`` / ``in_channels`` / ``in_features``, whose outputs in
        eval mode equal ``model``'s (max abs difference <= 1e-4).

    Questions (answer them in ``hw2/answers.md``):
        1. After removing the pruned filters *and* the matching input channels
           of the next layer, what happens to the sparsity of the remaining
           model, and to its parameter count?  Why?
        2. Does accuracy go down, up, or stay the same after the removal?  Why?
           (Think about what a pruned filter's BatchNorm shift does.)
        3. Would the same hold for a ResNet?  Why or why not?
        4. Why does unstructured sparsity give no speed-up on a GPU, while the
           compacted filter-pruned model does?

    Graded: on the grader's tiny VGG13, where some convs lose no filter (they still lose the input channels of the conv before): first, each conv keeps exactly its non-zero filters, judged on the weights (a filter of tiny weights stays; one all zero under a mask of 1 goes; a model that removes nothing earns nothing); then a new model (the given one left as it is) with exactly the expected parameter count, no all-zero filters, and the same outputs as the masked model (max abs difference <= 1e-4 in eval mode), whether the masks are attached or made permanent.
    """
    plain = copy_without_pruning(model)  # masks folded in, model untouched
    state = {k: v.detach().clone() for k, v in plain.state_dict().items()}
    conv_ids = sorted({int(k.split(".")[1]) for k, v in state.items()
                       if k.startswith("features.") and k.endswith(".weight") and v.dim() == 4})
    previous_keep = None
    for index in conv_ids:
        key = f"features.{index}.weight"
        weight = state[key]
        keep = (weight.reshape(weight.shape[0], -1) != 0).any(dim=1)  # judged on the full weight
        weight = weight[keep]
        if previous_keep is not None:
            weight = weight[:, previous_keep]
        state[key] = weight.contiguous()
        if f"features.{index}.bias" in state:
            state[f"features.{index}.bias"] = state[f"features.{index}.bias"][keep]
        for part in ("weight", "bias", "running_mean", "running_var"):  # its BatchNorm: features.{index + 1}
            bn_key = f"features.{index + 1}.{part}"
            if bn_key in state:
                state[bn_key] = state[bn_key][keep]
        previous_keep = keep
    if previous_keep is not None:
        state["classifier.weight"] = state["classifier.weight"][:, previous_keep].contiguous()
    first = next(iter(plain.parameters()))
    compact = VGG13.from_state_dict(state).to(device=first.device, dtype=first.dtype)
    compact.train(model.training)
    return compact


# ---------------------------------------------------------------------------------------------
# 9-10. figures
# ---------------------------------------------------------------------------------------------
def plot_sparsity_vs_accuracy(records: list[dict], out_path: str | Path, dense_accuracy: float | None = None,
                              title: str = "VGG13 on CIFAR-10: accuracy vs sparsity") -> list[tuple[str, float, float]]:
    """Draw one point per pruned model at (overall sparsity, test accuracy) and save it as a PNG.

    Args:
        records: one dict per model with ``"label"`` (e.g. ``"Omp_unstructured"``),
            ``"sparsity"`` (fraction) and ``"accuracy"`` (percent).
        out_path: where to write the PNG.
        dense_accuracy: if given, drawn as a horizontal reference line.
        title: figure title.

    Returns:
        list of ``(label, sparsity, accuracy)``: exactly the points drawn, in ``records`` order.

    Graded: the returned list, and the figure as it is when saved: a point (line vertex or scatter) per record at x = sparsity, y = accuracy, and dense_accuracy drawn (e.g. a horizontal line); a valid PNG is written to out_path.
    """
    drawn = []
    fig = Figure(figsize=(7, 5))
    ax = fig.add_subplot(1, 1, 1)
    for record in records:
        label, x, y = record["label"], record["sparsity"], record["accuracy"]
        ax.plot([x], [y], marker="o", linestyle="", markersize=9, label=f"{label}: {y:.2f}% at {x:.3f}")
        drawn.append((label, x, y))
    if dense_accuracy is not None:
        ax.axhline(dense_accuracy, color="black", linewidth=1, linestyle="--", label=f"dense {dense_accuracy:.2f}%")
    ax.set(xlabel="overall sparsity (zero conv/linear weights)", ylabel="test accuracy (%)", title=title)
    ax.grid(True, linestyle=":")
    if drawn or dense_accuracy is not None:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(out_path, dpi=FIGURE_DPI)
    return drawn


def plot_mask(weight: torch.Tensor, out_path: str | Path, title: str = "") -> np.ndarray:
    """Draw which weights of one layer are kept and which are pruned, and save it as a PNG.

    Args:
        weight: a conv weight ``(C_out, C_in, kH, kW)`` (or a 2-D Linear weight), not
            modified; zero entries count as pruned, every other entry (however small) as kept.
        out_path: where to write the PNG.
        title: figure title, e.g. ``"Omp_unstructured: features.14.weight"``.

    Returns:
        np.ndarray: the image drawn, shape ``(C_out, C_in * kH * kW)``, 1 where the
        weight is kept (nonzero) and 0 where pruned; one row per filter.  Two
        colours only (colour-blind safe): kept vs pruned.

    Graded: for a small conv weight, a Linear weight, a conv weight of 2304 columns and a conv weight with no zeros, the returned image has shape (C_out, C_in*kH*kW), values in {0, 1}, and matches (weight != 0) row by row; for all but the wide one, the figure as it is when saved shows that image (imshow, matshow, pcolormesh or spy; one colour for kept, another for pruned; a layer that keeps everything, drawn in another colour than the kept entries elsewhere, is only noted; row 0 at the top or the bottom); the weight is left unchanged; a valid PNG is written to out_path.
    """
    w = weight.detach().cpu()
    image = (w.reshape(w.shape[0], -1) != 0).numpy().astype(np.float32)  # (C_out, C_in*kH*kW), 1 = kept
    fig = Figure(figsize=(9, 5))
    ax = fig.add_subplot(1, 1, 1)
    ax.pcolormesh(image, cmap=ListedColormap(MASK_COLOURS), vmin=0.0, vmax=1.0)
    ax.invert_yaxis()  # filter 0 on top
    ax.set_xlabel("input channel x kernel position")
    ax.set_ylabel("filter")
    ax.set_title(title or "pruning mask")
    fig.legend(handles=[Patch(color=MASK_COLOURS[1], label="kept (nonzero)"),
                        Patch(color=MASK_COLOURS[0], label="pruned (zero)")], loc="lower center", ncol=2)
    fig.subplots_adjust(bottom=0.18)
    fig.savefig(out_path, dpi=FIGURE_DPI)
    return image


# ---------------------------------------------------------------------------------------------
# Bonus (not required for HW2): global magnitude pruning, one threshold across layers
# ---------------------------------------------------------------------------------------------
def global_unstructured_prune(tensors: dict[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """Magnitude-prune several weights with ONE threshold, as ``torch.nn.utils.prune.global_unstructured`` does.

    Layer-wise pruning removes the same fraction from every layer; global
    pruning ranks all entries of all the tensors together, so big layers with
    many small weights lose more and sensitive small layers lose less.

    Args:
        tensors: parameter name -> weight of any shape (e.g. ``(C_out, C_in, kH, kW)``
            or ``(out, in)``); not modified.
        sparsity: fraction in [0, 1) of all their entries together to prune.

    Returns:
        dict[str, Tensor]: name -> mask of that tensor's shape, dtype and device;
        0 at the ``round(sparsity * N)`` entries of smallest ``|w|`` among all
        ``N`` entries of all the tensors, 1 elsewhere.  Ties are broken by
        position in the concatenation (dict order, then flat index): of equal
        magnitudes, the earlier ones are pruned first.

    Graded: one mask per tensor with its shape; the zeros over all masks total floor or ceil of sparsity*N; every pruned |w| <= every kept |w| across all tensors; the inputs are unchanged.
    """
    raise NotImplementedError("global_unstructured_prune: write it in hw2/pruning.py (see its docstring)")


def global_magnitude_prune(model: nn.Module, sparsity: float, layer_names: list[str] | None = None, *,
                           iterations: int = 1, train_loader, test_loader, epochs: int, device,
                           lr: float = 0.01, weight_decay: float = 5e-4, progress: bool = True) -> list[dict]:
    """Global magnitude pruning with masked retraining: one-shot (``iterations=1``) or iterative (``>= 3``).

    Round ``t`` prunes, with one threshold across ``layer_names`` (your
    ``global_unstructured_prune``), to ``1 - (1 - sparsity) ** (t / iterations)``
    of their weights, i.e. the same fraction of the remaining weights each
    round, landing exactly on ``sparsity`` in the last round; then it retrains
    with the masks kept (your ``masked_retrain``).  For the classic study
    "20% of the remaining weights per round until about 0.9", use
    ``sparsity=0.9, iterations=10`` (20.6% per round).

    Args:
        model: the trained dense network, pruned in place.
        sparsity: target fraction in [0, 1) of zeros over the weights of ``layer_names``.
        layer_names: Conv2d/Linear weight names (``model.named_parameters()``
            style) that share the threshold; ``None`` = all of them.
        iterations: 1 (OMP) or at least 3 (IMP).
        train_loader, test_loader, epochs, device, lr, weight_decay, progress:
            as in ``oneshot_magnitude_prune`` (``epochs`` per round).

    Returns:
        list[dict]: one entry per round with ``"iteration"``, ``"ratios"``
        (``{"global": the round's target}``), ``"sparsity"`` (overall, after
        pruning: over every Conv2d and Linear weight, as ``test_sparsity``
        counts), ``"layer_sparsity"`` (every such weight's name -> fraction),
        ``"accuracy_before_retrain"`` and ``"accuracy"`` (test, percent).

    Raises:
        ValueError: ``iterations`` is neither 1 nor at least 3, or a name is not a Conv2d/Linear weight of ``model``.

    Graded: after each round the named weights hold floor or ceil of target*N zeros under one threshold; pruned weights stay zero through retraining; the last round lands on sparsity.
    """
    raise NotImplementedError("global_magnitude_prune: write it in hw2/pruning.py (see its docstring)")


# ---------------------------------------------------------------------------------------------
# Bonus (not required for HW2): ThiNet-style filter selection, a data-driven criterion
# ---------------------------------------------------------------------------------------------
def next_layer_contributions(model: nn.Module, conv_name: str, images: torch.Tensor, samples: int = 1024,
                             seed: int = 0) -> torch.Tensor:
    """How much each filter of ``conv_name`` adds to the next layer's pre-activations, on ``images``.

    Runs ``images`` through ``model`` (eval mode), captures the input ``X`` of
    the next Conv2d or Linear layer (registered after ``conv_name``; VGG-style
    networks, where that input is this conv's filters after BatchNorm, ReLU and
    pooling; in a ResNet it also holds the skip connection, which is caught only
    when the widths differ), and samples ``samples`` random (image, output unit, position)
    triples.  Entry ``[m, c]`` is channel ``c``'s term in that output:
    ``sum over the kernel of W_next[o, c] * X[n, c, patch]``.  Removing a set
    ``S`` of filters changes sample ``m`` by ``sum_{c in S} contributions[m, c]``.

    Args:
        model: the network (masks attached or not).
        conv_name: a Conv2d module name, e.g. ``"features.0"``.
        images: a batch ``(N, C, H, W)`` of (normalised) training images on the model's device.
        samples: number of sampled output units ``M``.
        seed: for the sampling.

    Returns:
        Tensor ``(M, C_out)`` float32 on the CPU, ``C_out`` = filters of ``conv_name``.

    Raises:
        ValueError: ``conv_name`` is not a Conv2d, has no layer after it, or the
            next layer's input does not have one channel per filter.

    Graded: shape (samples, C_out); a filter whose output is zero end to end (weights and BatchNorm scale and shift) has an all-zero column; bad names raise ValueError.
    """
    raise NotImplementedError("next_layer_contributions: write it in hw2/pruning.py (see its docstring)")


def thinet_select_filters(contributions: torch.Tensor, sparsity: float) -> torch.Tensor:
    """ThiNet's greedy choice: the filters whose removal least changes the next layer's input.

    Starting from an empty set ``S``, repeatedly add the filter ``c`` that
    minimises ``sum_m (sum_{s in S + {c}} contributions[m, s]) ** 2`` (the squared
    change of the sampled next-layer outputs), until ``S`` holds
    ``round(sparsity * C)`` filters.  Ties go to the lower index.

    Args:
        contributions: ``(M, C)`` from ``next_layer_contributions``; not modified.
        sparsity: fraction in [0, 1) of the ``C`` filters to remove.

    Returns:
        Tensor ``(C,)`` of the contributions' dtype: 0 for the filters to remove, 1 to keep.

    Graded: exactly round(sparsity*C) zeros; they are the greedy choice above (on seeded inputs); a filter whose contributions are all 0 is removed before any other.
    """
    raise NotImplementedError("thinet_select_filters: write it in hw2/pruning.py (see its docstring)")


def apply_thinet_pruning(model: nn.Module, prune_ratio_dict: dict[str, float], images: torch.Tensor,
                         samples: int = 1024) -> dict[str, torch.Tensor]:
    """Filter pruning with the ThiNet criterion instead of the filter norm, layer by layer, in file order.

    For each conv weight in ``prune_ratio_dict``: measure
    ``next_layer_contributions`` on ``images`` (with the masks of the layers
    before it already in force), choose filters with ``thinet_select_filters``,
    and attach the mask (and the BatchNorm masks) as ``apply_pruning`` does for
    ``"filter"``.

    Args:
        model: the network, modified in place.
        prune_ratio_dict: conv weight name -> fraction of its filters to remove.
        images: a batch ``(N, C, H, W)`` of training images on the model's device.
        samples: sampled next-layer outputs per layer.

    Returns:
        dict[str, Tensor]: parameter name -> mask in force, as ``apply_pruning`` returns.

    Graded: each named conv has round(ratio*C_out) all-zero filters, chosen by thinet_select_filters on its contributions; their BatchNorm scale and shift are masked too.
    """
    raise NotImplementedError("apply_thinet_pruning: write it in hw2/pruning.py (see its docstring)")
