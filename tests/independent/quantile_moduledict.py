"""HW2 pruning functions: the part you write.

Style of this solution: magnitude thresholds from ``torch.quantile`` with explicit tie
handling, masks kept in a dict on the model keyed by the module objects, weights
multiplied in place through ``.data``, a plain float32 retraining loop that re-applies
the masks with ``torch.where``, IMP with a geometric schedule, and the compacted model
built by editing the layers of a deep copy.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures go to files; no screen needed
import matplotlib.pyplot as plt
import numpy as np
import torch
import yaml
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch
from torch import nn
from torch.nn.utils import prune

from hw2.models import copy_without_pruning, prunable_weights
from hw2.train import LABEL_SMOOTHING, evaluate, make_optimizer, make_scheduler, train_epoch

SPARSITY_TYPES = ("unstructured", "filter")
MIN_IMP_ITERATIONS = 3
# Colour-blind-safe pair (Okabe-Ito): blue = kept, orange = pruned.
MASK_COLOURS = ("#E69F00", "#0072B2")  # index 0 = pruned, index 1 = kept
FIGURE_DPI = 150

_MASK_ATTR = "_hw2_masks"  # model attribute: {module object: {tensor name: mask}}


# ---------------------------------------------------------------------------------------------
# YAML
# ---------------------------------------------------------------------------------------------
def _check_duplicate_keys(node: yaml.Node, file_name) -> None:
    """Walk the composed YAML node graph; a mapping with the same key twice is an error."""
    if isinstance(node, yaml.MappingNode):
        seen: dict = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key = key_node.value
                if key in seen:
                    raise ValueError(f"{file_name}: line {key_node.start_mark.line + 1}: {key!r} is given twice "
                                     f"(first at line {seen[key]})")
                seen[key] = key_node.start_mark.line + 1
            _check_duplicate_keys(value_node, file_name)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_duplicate_keys(item, file_name)


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
    text = Path(file_name).read_text()
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        if root is not None:
            _check_duplicate_keys(root, file_name)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "unknown line"
        raise ValueError(f"{file_name}: malformed YAML at {where}: {getattr(exc, 'problem', None) or exc}") from None

    if not isinstance(data, dict) or not isinstance(data.get("prune_ratios"), dict):
        raise ValueError(f"{file_name}: expected a top-level mapping 'prune_ratios:' of layer name -> ratio")

    valid = list(prunable_weights(model))
    ratios: dict[str, float] = {}
    for name, ratio in data["prune_ratios"].items():
        if not isinstance(name, str) or name not in valid:
            raise ValueError(f"{file_name}: {name!r} is not a Conv2d/Linear weight of the model; valid names: "
                             f"{', '.join(valid)}")
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
            raise ValueError(f"{file_name}: the ratio of {name!r} is {ratio!r}, not a number in [0, 1)")
        if not math.isfinite(ratio) or not 0.0 <= ratio < 1.0:
            raise ValueError(f"{file_name}: the ratio of {name!r} is {ratio!r}, outside [0, 1)")
        ratios[name] = float(ratio)
    return ratios


# ---------------------------------------------------------------------------------------------
# Masks
# ---------------------------------------------------------------------------------------------
def _smallest_k_mask(values: torch.Tensor, k: int) -> torch.Tensor:
    """Bool keep-mask over the 1-D ``values``: False at exactly ``k`` of the smallest entries.

    The k-th smallest value comes from ``torch.quantile`` (nearest rank); everything strictly
    below it is pruned, and entries equal to it are pruned in index order until ``k`` are gone.
    """
    n = values.numel()
    keep = torch.ones(n, dtype=torch.bool, device=values.device)
    if k <= 0:
        return keep
    if k >= n:
        return torch.zeros_like(keep)
    v = values.detach().float()  # quantile needs a floating dtype (bf16 -> float32 is exact)
    q = (k - 1) / (n - 1)
    threshold = torch.quantile(v, q, interpolation="nearest")
    below = v < threshold
    tied = v == threshold
    need = k - int(below.sum())
    # explicit tie handling: the first `need` entries equal to the threshold go
    tie_rank = torch.cumsum(tied.to(torch.int64), 0)
    pruned = below | (tied & (tie_rank <= need))
    keep[pruned] = False
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
    magnitudes = tensor.detach().abs().reshape(-1)  # a copy for non-contiguous layouts; logical order kept
    k = int(round(float(sparsity) * tensor.numel()))
    keep = _smallest_k_mask(magnitudes, k)
    return keep.reshape(tensor.shape).to(dtype=tensor.dtype)


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
    c_out = tensor.shape[0]
    flat = tensor.detach().reshape(c_out, -1).float()
    norms = torch.linalg.vector_norm(flat, ord=2, dim=1)  # (C_out,)
    k = int(round(float(sparsity) * c_out))
    keep_filter = _smallest_k_mask(norms, k)  # (C_out,)
    shape = (c_out,) + (1,) * (tensor.dim() - 1)
    mask = keep_filter.reshape(shape).expand(tensor.shape)
    return mask.to(dtype=tensor.dtype).clone()


def _resolve(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    module_name, _, attr = name.rpartition(".")
    return (model.get_submodule(module_name) if module_name else model), attr


def _trainable_tensor(module: nn.Module, attr: str) -> nn.Parameter:
    """The Parameter that holds ``attr``: ``<attr>_orig`` when torch.nn.utils.prune is attached."""
    if f"{attr}_orig" in module._parameters:
        return module._parameters[f"{attr}_orig"]
    return module._parameters[attr]


def _effective(module: nn.Module, attr: str) -> torch.Tensor:
    """The tensor the forward pass uses (orig * mask when a prune hook is attached)."""
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, prune.BasePruningMethod) and hook._tensor_name == attr:
            return hook.apply_mask(module)
    return getattr(module, attr)


def _apply_mask_in_place(module: nn.Module, attr: str, mask: torch.Tensor) -> None:
    param = _trainable_tensor(module, attr)
    mask = mask.to(device=param.device, dtype=param.dtype)
    param.data.mul_(mask)  # in place: the same Parameter object, optimizers keep it
    buffer = module._buffers.get(f"{attr}_mask")
    if buffer is not None:  # prune hooks attached: keep their mask in step and refresh the computed weight
        buffer.mul_(mask.to(buffer.dtype))
        setattr(module, attr, param * buffer)


def _following_batchnorm(model: nn.Module, conv: nn.Module) -> tuple[str, nn.Module] | None:
    """The first BatchNorm registered after ``conv`` and before the next Conv2d/Linear, with one channel per filter."""
    seen = False
    for name, module in model.named_modules():
        if module is conv:
            seen = True
            continue
        if not seen:
            continue
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            return None
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            return (name, module) if module.num_features == conv.weight.shape[0] else None
    return None


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
        raise ValueError(f"unknown sparsity_type {sparsity_type!r}; choose one of {SPARSITY_TYPES}")
    store: dict = model.__dict__.setdefault(_MASK_ATTR, {})  # {module: {attr: mask}}
    masks: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, ratio in prune_ratio_dict.items():
            module, attr = _resolve(model, name)
            current = _effective(module, attr).detach()  # the weights as they are now
            if sparsity_type == "unstructured":
                mask = unstructured_prune(current, ratio)
            else:
                mask = filter_prune(current, ratio)
            _apply_mask_in_place(module, attr, mask)
            masks[name] = mask
            store.setdefault(module, {})[attr] = mask
            if sparsity_type == "filter":
                found = _following_batchnorm(model, module)
                if found is None:
                    continue
                bn_name, bn = found
                keep = mask.reshape(mask.shape[0], -1)[:, 0]  # (C_out,) 1 = filter kept
                for bn_attr in ("weight", "bias"):
                    if getattr(bn, bn_attr, None) is None:
                        continue
                    bn_mask = keep.to(dtype=_trainable_tensor(bn, bn_attr).dtype).clone()
                    _apply_mask_in_place(bn, bn_attr, bn_mask)
                    masks[f"{bn_name}.{bn_attr}"] = bn_mask
                    store.setdefault(bn, {})[bn_attr] = bn_mask
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
    layers: dict[str, float] = {}
    zero_filters: dict[str, int] = {}
    total_zeros = total = 0
    rows = []
    for module_name, module in model.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        name = f"{module_name}.weight" if module_name else "weight"
        with torch.no_grad():
            weight = _effective(module, "weight").detach()
        zeros = int((weight == 0).sum().item())
        count = weight.numel()
        layers[name] = zeros / count
        total_zeros += zeros
        total += count
        row = f"{name:<28}{zeros:>12,}{count:>12,}{zeros / count:>10.4f}"
        if sparsity_type == "filter":
            dead = int((weight.reshape(weight.shape[0], -1) == 0).all(dim=1).sum().item())
            zero_filters[name] = dead
            row += f"{dead:>8}/{weight.shape[0]}"
        rows.append(row)
    overall = total_zeros / total if total else 0.0
    header = f"{'layer':<28}{'zeros':>12}{'total':>12}{'sparsity':>10}" + ("  zero filters" if sparsity_type == "filter" else "")
    print(header)
    for row in rows:
        print(row)
    print(f"overall sparsity: {overall:.4f} ({total_zeros:,} of {total:,} conv/linear weights are zero)")
    result = {"overall": float(overall), "layers": layers}
    if sparsity_type == "filter":
        result["zero_filters"] = zero_filters
    return result


# ---------------------------------------------------------------------------------------------
# Retraining
# ---------------------------------------------------------------------------------------------
def _masks_by_module(model: nn.Module, prune_masks: dict[str, torch.Tensor]) -> dict:
    """{module object: [(parameter to hold, bool keep-mask on its device)]}."""
    by_module: dict = {}
    for name, mask in prune_masks.items():
        module, attr = _resolve(model, name)
        param = _trainable_tensor(module, attr)
        keep = (mask != 0).to(param.device)
        by_module.setdefault(module, []).append((param, keep))
    return by_module


@torch.no_grad()
def _hold(by_module: dict) -> None:
    for entries in by_module.values():
        for param, keep in entries:
            param.copy_(torch.where(keep, param, torch.zeros((), dtype=param.dtype, device=param.device)))


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
    by_module = _masks_by_module(model, prune_masks)
    _hold(by_module)  # zero before the first forward pass too
    history: list[dict] = []
    for epoch in range(num_epochs):
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        for step, (images, labels) in enumerate(train_loader):
            images, labels = images.to(device), labels.to(device)
            logits = model(images)
            loss = loss_fn(logits, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            _hold(by_module)  # momentum and weight decay may have moved pruned weights: back to 0
            loss_sum += float(loss.detach()) * len(labels)
            correct += int((logits.detach().argmax(1) == labels).sum())
            seen += len(labels)
        if seen == 0:
            raise ValueError("the training loader yielded no batches")
        test_accuracy = evaluate(model, test_loader, device)
        entry = {"epoch": epoch + 1, "loss": loss_sum / seen, "accuracy": 100.0 * correct / seen,
                 "test_accuracy": test_accuracy}
        history.append(entry)
        if progress:
            print(f"masked retrain epoch {epoch + 1}/{num_epochs}: loss {entry['loss']:.3f}, "
                  f"train {entry['accuracy']:.2f}%, test {test_accuracy:.2f}%")
    return history


def _prune_and_retrain(model, sparsity_type, ratios, iteration, *, train_loader, test_loader, epochs, device, lr,
                       weight_decay, progress) -> dict:
    masks = apply_pruning(model, sparsity_type, ratios)
    sparsity = test_sparsity(model, sparsity_type)["overall"]
    before = evaluate(model, test_loader, device)
    optimizer = make_optimizer(model, lr, weight_decay=weight_decay)
    scheduler = make_scheduler(optimizer, max(1, epochs * len(train_loader)))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)
    history = masked_retrain(model, masks, optimizer, loss_fn, train_loader, test_loader, epochs, device,
                             scheduler, progress)
    after = history[-1]["test_accuracy"] if history else evaluate(model, test_loader, device)
    return {"iteration": iteration, "ratios": dict(ratios), "sparsity": sparsity,
            "accuracy_before_retrain": before, "accuracy": after}


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
    entry = _prune_and_retrain(model, sparsity_type, dict(prune_ratio_dict), 1, train_loader=train_loader,
                               test_loader=test_loader, epochs=epochs, device=device, lr=lr,
                               weight_decay=weight_decay, progress=progress)
    return [entry]


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
        raise ValueError(f"iterative_magnitude_prune needs at least {MIN_IMP_ITERATIONS} iterations, got {iterations}")
    targets = dict(prune_ratio_dict)
    steps = []
    for t in range(1, iterations + 1):
        if t == iterations:
            ratios = dict(targets)
        else:
            ratios = {name: 1.0 - (1.0 - target) ** (t / iterations) for name, target in targets.items()}
        steps.append(_prune_and_retrain(model, sparsity_type, ratios, t, train_loader=train_loader,
                                        test_loader=test_loader, epochs=epochs, device=device, lr=lr,
                                        weight_decay=weight_decay, progress=progress))
    return steps


# ---------------------------------------------------------------------------------------------
# Compaction
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
    compact = copy_without_pruning(model)  # plain parameters, zeros in place; ``model`` untouched
    keep_in = None  # bool (C,) channels the previous conv keeps
    bn_keep = None  # the filters the BatchNorm after the last conv must keep
    with torch.no_grad():
        for _, module in compact.named_modules():
            if isinstance(module, nn.Conv2d):
                weight = module.weight.detach()
                keep_out = (weight.reshape(weight.shape[0], -1) != 0).any(dim=1)  # judged on the full weights
                new_weight = weight[keep_out]
                if keep_in is not None:
                    new_weight = new_weight[:, keep_in]
                module.weight = nn.Parameter(new_weight.contiguous().clone())
                if module.bias is not None:
                    module.bias = nn.Parameter(module.bias.detach()[keep_out].clone())
                module.out_channels = int(keep_out.sum())
                module.in_channels = int(new_weight.shape[1]) * module.groups
                keep_in = bn_keep = keep_out
            elif isinstance(module, nn.modules.batchnorm._BatchNorm) and bn_keep is not None:
                if module.num_features == bn_keep.numel():
                    if module.weight is not None:
                        module.weight = nn.Parameter(module.weight.detach()[bn_keep].clone())
                        module.bias = nn.Parameter(module.bias.detach()[bn_keep].clone())
                    if module.running_mean is not None:
                        module.running_mean = module.running_mean[bn_keep].clone()
                        module.running_var = module.running_var[bn_keep].clone()
                    module.num_features = int(bn_keep.sum())
                bn_keep = None
            elif isinstance(module, nn.Linear) and keep_in is not None:
                if module.in_features == keep_in.numel():  # one feature per channel of the last conv
                    module.weight = nn.Parameter(module.weight.detach()[:, keep_in].contiguous().clone())
                    module.in_features = int(keep_in.sum())
                keep_in = None  # later Linears keep their inputs
    compact.__dict__.pop(_MASK_ATTR, None)  # stale: keyed by the copy's old-size modules
    return compact


# ---------------------------------------------------------------------------------------------
# Figures
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
    points = [(str(r["label"]), float(r["sparsity"]), float(r["accuracy"])) for r in records]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    markers = ["o", "s", "^", "D", "v", "P", "X", "*"]
    for i, (label, sparsity, accuracy) in enumerate(points):
        ax.scatter([sparsity], [accuracy], marker=markers[i % len(markers)], s=60, label=label, zorder=3)
        ax.annotate(label, (sparsity, accuracy), textcoords="offset points", xytext=(5, 5), fontsize=8)
    if dense_accuracy is not None:
        ax.axhline(float(dense_accuracy), color="grey", linestyle="--", label=f"dense ({float(dense_accuracy):.2f}%)")
    ax.set_xlabel("overall sparsity (fraction of zero conv/linear weights)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if points or dense_accuracy is not None:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_path, dpi=FIGURE_DPI, format="png")
    plt.close(fig)
    return points


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
    w = weight.detach()
    image = (w != 0).reshape(w.shape[0], -1).cpu().numpy().astype(np.uint8)  # (C_out, C_in*kH*kW)
    rows, cols = image.shape
    fig, ax = plt.subplots(figsize=(min(12.0, 3.0 + cols / 60), min(9.0, 2.5 + rows / 20)))
    ax.imshow(image, cmap=ListedColormap(list(MASK_COLOURS)), vmin=0, vmax=1, aspect="auto",
              interpolation="nearest")
    ax.set_xlabel("weight within the filter (C_in x kH x kW, flattened)")
    ax.set_ylabel("filter (output channel)")
    kept = image.mean() if image.size else 0.0
    ax.set_title(f"{title}\nkept {kept:.1%} of {image.size:,} weights" if title else f"kept {kept:.1%}")
    ax.legend(handles=[Patch(color=MASK_COLOURS[1], label="kept"), Patch(color=MASK_COLOURS[0], label="pruned")],
              loc="upper right", bbox_to_anchor=(1.0, -0.12), ncol=2, fontsize=8)
    fig.tight_layout()
    fig.savefig(out_path, dpi=FIGURE_DPI, format="png")
    plt.close(fig)
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
