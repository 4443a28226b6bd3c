"""HW2 pruning functions: the part you write.

Read the conventions in ``hw2/__init__.py`` first (mask: 1 = keep; sparsity:
fraction of zeros; filter = output channel, ``dim=0``).  Each function below
says what it takes, what it returns and, on its last line, which property the
grader checks.  Work through them in file order; ``python main.py`` calls them.

Useful tools: ``torch.nn.utils.prune.custom_from_mask`` (attach a mask so it
survives training), ``hw2.models.prunable_weights`` (the Conv2d/Linear weights
by name), ``hw2.train.train_epoch`` / ``evaluate`` / ``make_optimizer`` /
``make_scheduler`` (the provided training loop).
"""
from __future__ import annotations

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

# BEGIN SOLUTION
class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses a key given twice (plain safe_load silently keeps the last value)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"{key!r} is given twice; give each layer once",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _check_sparsity_type(sparsity_type: str) -> None:
    if sparsity_type not in SPARSITY_TYPES:
        raise ValueError(f"unknown sparsity type {sparsity_type!r}; choose one of {', '.join(SPARSITY_TYPES)}")


def _count_to_prune(n: int, sparsity: float) -> int:
    if not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    return int(round(float(sparsity) * n))


def _module_of(model: nn.Module, param_name: str) -> tuple[nn.Module, str]:
    module_name, _, tensor_name = param_name.rpartition(".")
    return model.get_submodule(module_name), tensor_name


def _following_batchnorm(model: nn.Module, conv_name: str) -> tuple[str, nn.Module] | None:
    """The first BatchNorm registered after ``conv_name`` with one feature per filter of that conv."""
    conv = model.get_submodule(conv_name)
    seen_conv = False
    for name, module in model.named_modules():
        if name == conv_name:
            seen_conv = True
        elif seen_conv and isinstance(module, nn.BatchNorm2d) and module.num_features == conv.out_channels:
            return name, module
        elif seen_conv and isinstance(module, nn.Conv2d):
            return None
    return None


def _attach_mask(module: nn.Module, tensor_name: str, mask: torch.Tensor) -> torch.Tensor:
    """Attach ``mask`` with torch.nn.utils.prune (combined with an existing one); return the mask in force."""
    prune.custom_from_mask(module, tensor_name, mask.to(getattr(module, tensor_name).device))
    return getattr(module, tensor_name + "_mask").detach().clone()


def _mask_batchnorm_after(model: nn.Module, conv_name: str, filter_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mask the scale and shift of the BatchNorm channels of pruned filters, so those channels output exactly 0."""
    found = _following_batchnorm(model, conv_name)
    if found is None:
        return {}
    bn_name, bn = found
    channel_mask = filter_mask.flatten(1)[:, 0].contiguous()  # (C_out,), 1 = filter kept
    masks = {}
    for bn_tensor in ("weight", "bias"):
        masks[f"{bn_name}.{bn_tensor}"] = _attach_mask(bn, bn_tensor, channel_mask)
    return masks
# END SOLUTION


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
    # BEGIN SOLUTION
    path = Path(file_name)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read prune-ratio file {path}: {exc.strerror or exc}") from None
    try:
        config = yaml.load(text, Loader=_UniqueKeyLoader)  # safe_load, but a key given twice is an error
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"{path}: malformed YAML{where}: {problem}") from None
    if not isinstance(config, dict) or not isinstance(config.get("prune_ratios"), dict):
        raise ValueError(f"{path}: expected a top-level mapping 'prune_ratios: {{parameter name: ratio}}'")
    valid = list(prunable_weights(model))
    ratios: dict[str, float] = {}
    for name, ratio in config["prune_ratios"].items():
        if name not in valid:
            raise ValueError(f"{path}: layer {name!r} is not a prunable weight of {type(model).__name__}; "
                             f"valid names: {', '.join(valid)}")
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio < 1.0:
            raise ValueError(f"{path}: ratio for {name!r} is {ratio!r}; it must be a number in [0, 1)")
        ratios[name] = float(ratio)
    return ratios
    # END SOLUTION


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
    # BEGIN SOLUTION
    k = _count_to_prune(tensor.numel(), sparsity)
    flat_mask = torch.ones(tensor.numel(), dtype=tensor.dtype, device=tensor.device)
    if k > 0:
        order = torch.argsort(tensor.detach().abs().flatten(), stable=True)  # ascending |w|
        flat_mask[order[:k]] = 0
    return flat_mask.view_as(tensor)
    # END SOLUTION


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
    # BEGIN SOLUTION
    filters = tensor.shape[0]
    k = _count_to_prune(filters, sparsity)
    keep = torch.ones(filters, dtype=tensor.dtype, device=tensor.device)
    if k > 0:
        norms = tensor.detach().reshape(filters, -1).norm(p=2, dim=1)  # (C_out,)
        keep[torch.argsort(norms, stable=True)[:k]] = 0
    return keep.view(-1, *([1] * (tensor.dim() - 1))).expand_as(tensor).clone()
    # END SOLUTION


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
    # BEGIN SOLUTION
    _check_sparsity_type(sparsity_type)
    masks: dict[str, torch.Tensor] = {}
    for name, ratio in prune_ratio_dict.items():
        module, tensor_name = _module_of(model, name)
        weight = getattr(module, tensor_name).detach()
        if sparsity_type == "unstructured":
            masks[name] = _attach_mask(module, tensor_name, unstructured_prune(weight, ratio))
            continue
        if weight.dim() != 4:
            raise ValueError(f"filter pruning applies to conv weights; {name!r} has shape {tuple(weight.shape)}: "
                             "remove it from the filter YAML or prune it unstructured")
        masks[name] = _attach_mask(module, tensor_name, filter_prune(weight, ratio))
        masks.update(_mask_batchnorm_after(model, name.rpartition(".")[0], masks[name]))
    return masks
    # END SOLUTION


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
    # BEGIN SOLUTION
    _check_sparsity_type(sparsity_type)
    layers, zero_filters = {}, {}
    zeros_total = weights_total = 0
    rows = []
    for name, weight in prunable_weights(model).items():
        weight = weight.detach()
        zeros = int((weight == 0).sum())
        layers[name] = zeros / weight.numel()
        zeros_total += zeros
        weights_total += weight.numel()
        row = f"{name:<24}{zeros:>12,}{weight.numel():>12,}{layers[name]:>10.4f}"
        if sparsity_type == "filter":
            zero_filters[name] = int((weight.reshape(weight.shape[0], -1) == 0).all(dim=1).sum())
            row += f"{zero_filters[name]:>8}/{weight.shape[0]}"
        rows.append(row)
    overall = zeros_total / max(weights_total, 1)
    header = f"{'layer':<24}{'zeros':>12}{'total':>12}{'sparsity':>10}" + ("  zero filters" if sparsity_type == "filter" else "")
    print("\n".join([header, "-" * len(header), *rows, "-" * len(header),
                     f"{'overall':<24}{zeros_total:>12,}{weights_total:>12,}{overall:>10.4f}"]))
    report = {"overall": overall, "layers": layers}
    if sparsity_type == "filter":
        report["zero_filters"] = zero_filters
    return report
    # END SOLUTION


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
    # BEGIN SOLUTION
    for name, mask in prune_masks.items():  # masks not attached yet (e.g. zeros set by hand) get attached now
        module, tensor_name = _module_of(model, name)
        if not hasattr(module, tensor_name + "_mask"):
            _attach_mask(module, tensor_name, mask)
    history = []
    for epoch in range(num_epochs):
        stats = train_epoch(model, train_loader, optimizer, loss_fn, device, scheduler,
                            desc=f"retrain {epoch + 1}/{num_epochs}", progress=progress)
        stats["test_accuracy"] = evaluate(model, test_loader, device)
        history.append(stats)
    return history
    # END SOLUTION


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
    # BEGIN SOLUTION
    _check_sparsity_type(sparsity_type)
    return [_prune_and_retrain(model, sparsity_type, dict(prune_ratio_dict), 1, train_loader, test_loader,
                               epochs, device, lr, weight_decay, progress)]
    # END SOLUTION


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
    # BEGIN SOLUTION
    _check_sparsity_type(sparsity_type)
    if iterations < MIN_IMP_ITERATIONS:
        raise ValueError(f"iterative pruning needs at least {MIN_IMP_ITERATIONS} iterations, got {iterations}; "
                         f"pass --iterations {MIN_IMP_ITERATIONS} or more")
    log = []
    for step in range(1, iterations + 1):
        ratios = {name: (target if step == iterations else 1.0 - (1.0 - target) ** (step / iterations))
                  for name, target in prune_ratio_dict.items()}
        log.append(_prune_and_retrain(model, sparsity_type, ratios, step, train_loader, test_loader,
                                      epochs, device, lr, weight_decay, progress))
    return log
    # END SOLUTION


# BEGIN SOLUTION
def _prune_and_retrain(model, sparsity_type, ratios, step, train_loader, test_loader, epochs, device, lr,
                       weight_decay, progress) -> dict:
    masks = apply_pruning(model, sparsity_type, ratios)
    sparsity = test_sparsity(model, sparsity_type)["overall"]
    before, after = _retrain_pruned(model, masks, train_loader, test_loader, epochs, device, lr, weight_decay, progress)
    print(f"step {step}: sparsity {sparsity:.4f}, accuracy {before:.2f}% -> {after:.2f}% after {epochs} epoch(s)")
    return {"iteration": step, "ratios": ratios, "sparsity": sparsity,
            "accuracy_before_retrain": before, "accuracy": after}


def _retrain_pruned(model, masks, train_loader, test_loader, epochs, device, lr, weight_decay, progress):
    """Masked retraining with a fresh optimizer, cosine schedule and the dense recipe's label smoothing;
    returns test accuracy (before, after)."""
    before = evaluate(model, test_loader, device)
    optimizer = make_optimizer(model, lr, weight_decay=weight_decay)
    scheduler = make_scheduler(optimizer, max(1, epochs * len(train_loader)))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)
    history = masked_retrain(model, masks, optimizer, loss_fn, train_loader, test_loader, epochs, device, scheduler,
                             progress)
    return before, history[-1]["test_accuracy"] if history else before
# END SOLUTION


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
    # BEGIN SOLUTION
    compact = copy_without_pruning(model)
    keep_in = None  # input channels of the next layer that survive
    layers = list(compact.features)
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.Conv2d):
            weight = layer.weight.data
            keep_out = weight.reshape(weight.shape[0], -1).ne(0).any(dim=1).nonzero().flatten()  # on all its inputs
            if keep_in is not None:
                weight = weight[:, keep_in]
            if keep_out.numel() == 0:
                keep_out = torch.zeros(1, dtype=torch.long, device=weight.device)  # keep one (zero) channel
            new_conv = nn.Conv2d(len(weight[0]), len(keep_out), layer.kernel_size, layer.stride, layer.padding,
                                 layer.dilation, layer.groups, bias=layer.bias is not None).to(weight.device)
            new_conv.weight.data.copy_(weight[keep_out])
            if layer.bias is not None:
                new_conv.bias.data.copy_(layer.bias.data[keep_out])
            compact.features[i] = new_conv
            keep_in = keep_out
        elif isinstance(layer, nn.BatchNorm2d) and keep_in is not None:
            new_bn = nn.BatchNorm2d(len(keep_in), eps=layer.eps, momentum=layer.momentum).to(layer.weight.device)
            for tensor_name in ("weight", "bias"):
                getattr(new_bn, tensor_name).data.copy_(getattr(layer, tensor_name).data[keep_in])
            for buffer in ("running_mean", "running_var"):
                getattr(new_bn, buffer).copy_(getattr(layer, buffer)[keep_in])
            new_bn.num_batches_tracked.copy_(layer.num_batches_tracked)
            compact.features[i] = new_bn
    if keep_in is not None:
        old = compact.classifier
        new_fc = nn.Linear(len(keep_in), old.out_features, bias=old.bias is not None).to(old.weight.device)
        new_fc.weight.data.copy_(old.weight.data[:, keep_in])
        if old.bias is not None:
            new_fc.bias.data.copy_(old.bias.data)
        compact.classifier = new_fc
    compact.train(model.training)
    return compact
    # END SOLUTION


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
    # BEGIN SOLUTION
    points = [(str(r["label"]), float(r["sparsity"]), float(r["accuracy"])) for r in records]
    markers = {"unstructured": "o", "filter": "s"}
    colours = {"Omp": "#0072B2", "Imp": "#D55E00"}  # Okabe-Ito blue / vermillion
    fig, ax = plt.subplots(figsize=(6.4, 5.0))
    for label, sparsity, accuracy in points:
        method, _, kind = label.partition("_")
        colour = colours.get(method, "#009E73")
        filled = method != "Imp"  # IMP hollow and larger: OMP and IMP at the same point both stay visible
        ax.scatter([sparsity * 100], [accuracy], s=60 if filled else 130, marker=markers.get(kind, "D"),
                   facecolors=colour if filled else "none", edgecolors=colour, linewidths=2,
                   label=f"{label} ({100 * sparsity:.1f}% sparse, {accuracy:.2f}%)", zorder=3)
    if dense_accuracy is not None:
        ax.axhline(dense_accuracy, color="#555555", linestyle="--", linewidth=1, label=f"dense ({dense_accuracy:.2f}%)")
    ax.set_xlabel("overall sparsity of conv + linear weights (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_xlim(0, 100)
    ax.set_title(title, fontsize=10, wrap=True)
    ax.grid(alpha=0.3)
    if points or dense_accuracy is not None:  # below the axes: it never hides a point
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    fig.tight_layout()
    _save_figure(fig, out_path)
    return points
    # END SOLUTION


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
    # BEGIN SOLUTION
    image = (weight.detach().cpu() != 0).reshape(weight.shape[0], -1).to(torch.uint8).numpy()
    fig, ax = plt.subplots(figsize=(7, 4.4))
    ax.imshow(image, cmap=ListedColormap(MASK_COLOURS), vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    ax.set_xlabel(f"weight index within the filter (C_in x kH x kW = {image.shape[1]})")
    ax.set_ylabel(f"output filter index (C_out = {image.shape[0]})")
    kept = image.mean() * 100
    ax.set_title(f"{title}\nkept {kept:.1f}% (blue), pruned {100 - kept:.1f}% (orange)" if title else
                 f"kept {kept:.1f}% (blue), pruned {100 - kept:.1f}% (orange)", fontsize=10)
    handles = [Patch(color=MASK_COLOURS[1], label="kept"),
               Patch(color=MASK_COLOURS[0], label="pruned")]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)  # outside: covers no weights
    fig.tight_layout()
    _save_figure(fig, out_path)
    return image
    # END SOLUTION


# BEGIN SOLUTION
def _save_figure(fig, out_path) -> None:
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=FIGURE_DPI)
    plt.close(fig)
# END SOLUTION


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
    # BEGIN SOLUTION
    names = list(tensors)
    magnitudes = torch.cat([tensors[name].detach().abs().flatten().float().cpu() for name in names])  # (N,)
    k = _count_to_prune(magnitudes.numel(), sparsity)
    keep = torch.ones(magnitudes.numel())
    if k > 0:
        keep[torch.argsort(magnitudes, stable=True)[:k]] = 0
    masks, start = {}, 0
    for name in names:
        tensor = tensors[name]
        masks[name] = keep[start:start + tensor.numel()].view_as(tensor).to(dtype=tensor.dtype, device=tensor.device)
        start += tensor.numel()
    return masks
    # END SOLUTION


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
    # BEGIN SOLUTION
    if iterations != 1 and iterations < MIN_IMP_ITERATIONS:
        raise ValueError(f"global pruning runs 1 round (one-shot) or at least {MIN_IMP_ITERATIONS} (iterative), "
                         f"got iterations={iterations}")
    valid = list(prunable_weights(model))
    names = list(layer_names) if layer_names is not None else valid
    unknown = [name for name in names if name not in valid]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not a prunable weight of {type(model).__name__}; valid names: {', '.join(valid)}")
    log = []
    for step in range(1, iterations + 1):
        target = sparsity if step == iterations else 1.0 - (1.0 - sparsity) ** (step / iterations)
        weights = prunable_weights(model)
        masks = global_unstructured_prune({name: weights[name] for name in names}, target)
        for name, mask in masks.items():
            module, tensor_name = _module_of(model, name)
            masks[name] = _attach_mask(module, tensor_name, mask)
        report = test_sparsity(model, "unstructured")
        before, after = _retrain_pruned(model, masks, train_loader, test_loader, epochs, device, lr, weight_decay,
                                        progress)
        print(f"global step {step}: sparsity {report['overall']:.4f}, accuracy {before:.2f}% -> {after:.2f}% "
              f"after {epochs} epoch(s)")
        log.append({"iteration": step, "ratios": {"global": target}, "sparsity": report["overall"],
                    "layer_sparsity": report["layers"], "accuracy_before_retrain": before, "accuracy": after})
    return log
    # END SOLUTION


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
    # BEGIN SOLUTION
    modules = dict(model.named_modules())
    if not isinstance(modules.get(conv_name), nn.Conv2d):
        convs = [name for name, m in modules.items() if isinstance(m, nn.Conv2d)]
        raise ValueError(f"{conv_name!r} is not a Conv2d of {type(model).__name__}; conv layers: {', '.join(convs)}")
    names = list(modules)
    following = [n for n in names[names.index(conv_name) + 1:] if isinstance(modules[n], (nn.Conv2d, nn.Linear))]
    if not following:
        raise ValueError(f"{conv_name!r} has no Conv2d or Linear layer after it")
    next_layer = modules[following[0]]
    captured = {}
    handle = next_layer.register_forward_pre_hook(lambda module, inputs: captured.setdefault("x", inputs[0].detach()))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(images)
    finally:
        handle.remove()
        model.train(was_training)
    x = captured["x"].float()
    weight = next_layer.weight.detach().float()
    gen = torch.Generator().manual_seed(seed)
    channels = modules[conv_name].out_channels
    if isinstance(next_layer, nn.Linear):  # x: (N, C * S) after flattening S positions per channel
        per_channel = x.shape[1] // channels
        n = torch.randint(0, x.shape[0], (samples,), generator=gen)
        o = torch.randint(0, weight.shape[0], (samples,), generator=gen)
        terms = x[n].view(samples, channels, per_channel) * weight[o].view(samples, channels, per_channel)
        return terms.sum(2).cpu()
    if x.shape[1] != channels:
        raise ValueError(f"the layer after {conv_name!r} takes {x.shape[1]} channels, not its {channels} filters: "
                         "ThiNet here handles VGG-style networks (conv -> BN -> ReLU -> pool -> next conv) only")
    cols = nn.functional.unfold(x, next_layer.kernel_size, next_layer.dilation, next_layer.padding,
                                next_layer.stride)  # (N, C * kH * kW, L)
    n = torch.randint(0, cols.shape[0], (samples,), generator=gen)
    position = torch.randint(0, cols.shape[2], (samples,), generator=gen)
    o = torch.randint(0, weight.shape[0], (samples,), generator=gen)
    patches = cols[n, :, position].view(samples, channels, -1)  # (M, C, kH * kW)
    return (patches * weight[o].view(samples, channels, -1)).sum(2).cpu()
    # END SOLUTION


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
    # BEGIN SOLUTION
    channels = contributions.shape[1]
    k = _count_to_prune(channels, sparsity)
    keep = torch.ones(channels, dtype=contributions.dtype)
    running = torch.zeros(contributions.shape[0], dtype=torch.float64)  # (M,) change of each sampled output
    terms = contributions.detach().to(torch.float64)
    for _ in range(k):
        cost = (running[:, None] + terms).pow(2).sum(0)  # (C,) if that filter were removed next
        cost[keep == 0] = float("inf")
        chosen = int(torch.argmin(cost))  # first minimum: the lower index on ties
        keep[chosen] = 0
        running += terms[:, chosen]
    return keep
    # END SOLUTION


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
    # BEGIN SOLUTION
    masks: dict[str, torch.Tensor] = {}
    for name, ratio in prune_ratio_dict.items():
        module, tensor_name = _module_of(model, name)
        weight = getattr(module, tensor_name).detach()
        if weight.dim() != 4:
            raise ValueError(f"ThiNet selects conv filters; {name!r} has shape {tuple(weight.shape)}")
        conv_name = name.rpartition(".")[0]
        keep = thinet_select_filters(next_layer_contributions(model, conv_name, images, samples), ratio)  # (C_out,)
        filter_mask = keep.to(weight.device, weight.dtype).view(-1, 1, 1, 1).expand_as(weight).clone()
        masks[name] = _attach_mask(module, tensor_name, filter_mask)
        masks.update(_mask_batchnorm_after(model, conv_name, masks[name]))
    return masks
    # END SOLUTION
