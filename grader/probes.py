"""Probes: grader code that calls the student's functions inside the sandbox child.

Each probe builds small seeded inputs, keeps a copy of them, calls student code
and returns *plain data* (tensors, numbers, strings, lists, dicts) for the
grader process to check.  Probes never judge: the checks live in the
``grader/test_*.py`` files, in the grader process, where student code cannot
reach them.

This module must not import ``hw2`` at the top: the sandbox child imports the
student's ``hw2`` only after putting the submission first on ``sys.path``.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from grader.sandbox import memory_hint

MEMORY_LIMIT: int | None = None  # bytes each call may allocate; the sandbox child sets it
# A VGG13 with the real layer names and plan but few channels: seconds on a CPU.
TINY_WIDTHS = [4, 6, 8, 8, 12, 12, 16, 16, 16, 16]
TINY_RATIOS = {  # different ratios per layer, so that one global threshold gives the wrong per-layer counts
    "features.0.weight": 0.3, "features.3.weight": 0.5, "features.7.weight": 0.25, "features.10.weight": 0.6,
    "features.14.weight": 0.5, "features.24.weight": 0.75, "classifier.weight": 0.4}
TINY_FILTER_RATIOS = {"features.0.weight": 0.25, "features.3.weight": 0.5, "features.10.weight": 0.25,
                      "features.17.weight": 0.5, "features.31.weight": 0.25}
DEVICE = torch.device("cpu")


def tiny_vgg(seed: int = 0) -> nn.Module:
    """A seeded tiny VGG13 whose BatchNorms have non-trivial affine parameters and statistics."""
    from hw2.models import VGG13

    torch.manual_seed(seed)
    model = VGG13(num_classes=10, widths=TINY_WIDTHS)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(0.5 + torch.rand(n, generator=gen))
                module.bias.copy_(0.2 + 0.3 * torch.rand(n, generator=gen))  # positive shift: a live channel after ReLU
                module.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                module.running_var.copy_(0.5 + torch.rand(n, generator=gen))
    return model


def tiny_loaders(seed: int = 0, batch_size: int = 16):
    from hw2.data import make_loaders, make_synthetic

    data = make_synthetic(num_train=64, num_test=32, seed=seed)
    return make_loaders(data, batch_size, DEVICE, seed=seed)


def plain(value, depth: int = 0):
    """Student return values as data only (tensors, numbers, strings, lists, dicts)."""
    import numpy as np

    if depth > 6:
        return repr(value)[:200]
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.array(value, copy=True)) if value.dtype != object else repr(value)[:200]
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, depth + 1) for v in value]
    return repr(value)[:200]


def call(function, *args, **kwargs) -> dict:
    """Run one student call; an exception becomes data, so one bad case does not hide the others."""
    try:
        return {"value": plain(function(*args, **kwargs))}
    except Exception as exc:  # noqa: BLE001
        return raised(exc)


def raised(exc: Exception) -> dict:
    """An exception as data: its type, and its message (with the memory limit when memory ran out)."""
    message = str(exc)[:300]
    hint = memory_hint(f"{type(exc).__name__}: {message}", MEMORY_LIMIT)
    return {"raised": type(exc).__name__, "message": f"{message} {hint}".strip()}


def weights_of(model: nn.Module) -> dict:
    from hw2.models import prunable_weights

    return {name: w.detach().clone() for name, w in prunable_weights(model).items()}


def attach_masks(model: nn.Module, masks: dict) -> None:
    """Attach masks the way the reference does (torch.nn.utils.prune), independent of the student's apply_pruning."""
    from torch.nn.utils import prune

    for name, mask in masks.items():
        module_name, _, tensor_name = name.rpartition(".")
        prune.custom_from_mask(model.get_submodule(module_name), tensor_name, mask)


def grader_filter_masks(model: nn.Module, ratios: dict) -> dict:
    """Conv masks (smallest-L2 filters) plus the matching BatchNorm weight/bias masks."""
    masks = {}
    for name, ratio in ratios.items():
        weight = model.get_submodule(name.rpartition(".")[0]).weight.detach()
        k = int(round(ratio * weight.shape[0]))
        keep = torch.ones(weight.shape[0])
        keep[torch.argsort(weight.flatten(1).norm(dim=1), stable=True)[:k]] = 0
        masks[name] = keep.view(-1, 1, 1, 1).expand_as(weight).clone()
        index = int(name.split(".")[1])
        for bn_tensor in ("weight", "bias"):
            masks[f"features.{index + 1}.{bn_tensor}"] = keep.clone()
    return masks


def grader_unstructured_masks(model: nn.Module, ratios: dict) -> dict:
    masks = {}
    for name, ratio in ratios.items():
        weight = model.get_submodule(name.rpartition(".")[0]).weight.detach()
        k = int(round(ratio * weight.numel()))
        mask = torch.ones(weight.numel())
        mask[torch.argsort(weight.abs().flatten(), stable=True)[:k]] = 0
        masks[name] = mask.view_as(weight)
    return masks


# ---------------------------------------------------------------------------------------------
# One probe per graded function
# ---------------------------------------------------------------------------------------------
YAML_CASES = {
    "valid": "# layer-wise ratios\nprune_ratios:\n  features.0.weight: 0.5\n  features.14.weight: 0.75\n"
             "  features.31.weight: 0\n  classifier.weight: 0.25\n",
}
# Every rejection the contract promises: case -> (what is wrong, in words; the file's text).
YAML_REJECTIONS = {
    "unknown_layer": ("a layer name the model does not have",
                      "prune_ratios:\n  features.0.weight: 0.5\n  features.99.weight: 0.5\n"),
    "batchnorm_name": ("a BatchNorm weight (not a Conv2d/Linear weight)",
                       "prune_ratios:\n  features.0.weight: 0.5\n  features.1.weight: 0.5\n"),
    "bias_name": ("a bias (not a Conv2d/Linear weight)",
                  "prune_ratios:\n  features.0.weight: 0.5\n  classifier.bias: 0.5\n"),
    "ratio_above_one": ("a ratio above 1", "prune_ratios:\n  features.0.weight: 0.5\n  features.3.weight: 1.2\n"),
    "ratio_one": ("a ratio of 1 (the range is [0, 1))", "prune_ratios:\n  features.0.weight: 0.5\n  features.3.weight: 1.0\n"),
    "ratio_negative": ("a negative ratio", "prune_ratios:\n  features.0.weight: 0.5\n  features.3.weight: -0.2\n"),
    "ratio_not_a_number": ("a ratio that is not a number ('50%')",
                           "prune_ratios:\n  features.0.weight: 0.5\n  features.3.weight: 50%\n"),
    "duplicate_layer": ("a layer named twice",
                        "prune_ratios:\n  features.0.weight: 0.5\n  features.3.weight: 0.5\n  features.0.weight: 0.7\n"),
    "no_mapping": ("no prune_ratios mapping", "ratios:\n  features.0.weight: 0.5\n"),
    "malformed": ("malformed YAML", "prune_ratios:\n  features.0.weight: 0.5\n   features.3.weight: [0.5\n"),
}


def read_yaml(workdir: str) -> dict:
    from hw2 import pruning

    results = {}
    texts = {**YAML_CASES, **{case: text for case, (_, text) in YAML_REJECTIONS.items()}}
    for case, text in texts.items():
        path = Path(workdir) / f"{case}.yaml"
        path.write_text(text)
        results[case] = call(pruning.read_prune_ratios_from_yaml, str(path), tiny_vgg())  # a fresh model each time
    return results


def _tensor_cases(kind: str) -> list[tuple[torch.Tensor, float]]:
    gen = torch.Generator().manual_seed(7 if kind == "unstructured" else 11)
    if kind == "unstructured":
        ties = torch.randint(-3, 4, (4, 4, 3, 3), generator=gen).float()  # many equal magnitudes
        return [(torch.randn(8, 4, 3, 3, generator=gen), 0.5),
                (torch.randn(16, 8, 3, 3, generator=gen), 0.83),
                (torch.randn(100, generator=gen), 0.333),  # 33.3 entries: floor 33 or ceil 34 both accepted
                (torch.randn(6, 5, generator=gen), 0.0),
                (ties, 0.6),
                (torch.randn(12, 10, generator=gen) * torch.linspace(0.1, 3, 12).view(-1, 1), 0.9)]
    # filter cases; the last one ranks differently by L1 and by L2 norm (one big weight vs many small ones)
    l1_vs_l2 = torch.zeros(6, 1, 3, 3)
    for i in range(0, 6, 2):
        l1_vs_l2[i, 0, 1, 1] = 3.0 + i * 0.1           # L2 = L1 = 3.x
        l1_vs_l2[i + 1] = 0.6 + i * 0.01               # L2 = 1.8.., L1 = 5.4..
    return [(torch.randn(8, 4, 3, 3, generator=gen), 0.5),
            (torch.randn(10, 3, 3, 3, generator=gen) * torch.linspace(0.2, 2, 10).view(-1, 1, 1, 1), 0.25),
            (torch.randn(12, 6, 3, 3, generator=gen), 0.4),
            (torch.randn(6, 5, generator=gen), 0.5),
            (torch.randn(5, 8, 3, 3, generator=gen), 0.0),
            (l1_vs_l2, 0.5)]


def mask_function(kind: str) -> list[dict]:
    """Call unstructured_prune or filter_prune on each case: the input, the input afterwards and the mask."""
    from hw2 import pruning

    function = pruning.unstructured_prune if kind == "unstructured" else pruning.filter_prune
    results = []
    for tensor, sparsity in _tensor_cases(kind):
        original = tensor.clone()
        result = call(function, tensor, sparsity)
        result.update(input=original, after=tensor.detach().clone(), sparsity=sparsity)
        results.append(result)
    return results


def apply_pruning(sparsity_type: str) -> dict:
    from hw2 import pruning

    model = tiny_vgg(seed=3)
    ratios = TINY_RATIOS if sparsity_type == "unstructured" else TINY_FILTER_RATIOS
    before = weights_of(model)
    result = call(pruning.apply_pruning, model, sparsity_type, dict(ratios))  # a copy: the probe keeps its own
    after = weights_of(model)
    bn = {}
    for name in ratios:
        index = int(name.split(".")[1]) if name.startswith("features.") else None
        if index is not None:
            module = model.features[index + 1]
            bn[name] = {"weight": module.weight.detach().clone(), "bias": module.bias.detach().clone()}
    # Pruning again with larger ratios must prune further (what IMP relies on).
    larger = {name: min(0.9, ratio + 0.2) for name, ratio in ratios.items()}
    again = call(pruning.apply_pruning, model, sparsity_type, dict(larger)) if "value" in result else {"raised": "skipped"}
    result.update(ratios=dict(ratios), before=before, after=after, bn=bn, larger_ratios=larger,
                  again_raised=again.get("raised"), after_again=weights_of(model))
    return result


def _model_with_known_zeros() -> nn.Module:
    """Zeros in conv weights (some whole filters), in BatchNorm and in the classifier bias; the same every call."""
    model = tiny_vgg(seed=5)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for i, module in enumerate(m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))):
            w = module.weight
            w.mul_((torch.rand(w.shape, generator=gen) > 0.1 * (i % 7)).float())
            if isinstance(module, nn.Conv2d) and i % 2 == 0:
                w[: 1 + i % 3] = 0  # whole zero filters
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight[: module.num_features // 2] = 0  # counting BatchNorm would change the answer
                module.bias[:1] = 0
        model.classifier.bias[:5] = 0
    return model


def sparsity_report() -> dict:
    """test_sparsity on models with known zeros; each call gets its own model, so one call cannot change the next."""
    from hw2 import pruning

    results = {"weights": weights_of(_model_with_known_zeros())}
    for sparsity_type in ("unstructured", "filter"):
        results[sparsity_type] = call(pruning.test_sparsity, _model_with_known_zeros(), sparsity_type)
    # Also with masks attached by the grader through torch.nn.utils.prune, as after apply_pruning.
    hooked = tiny_vgg(seed=6)
    attach_masks(hooked, grader_unstructured_masks(hooked, TINY_RATIOS))
    results["hooked_weights"] = weights_of(hooked)
    results["hooked"] = call(pruning.test_sparsity, hooked, "unstructured")
    return results


RETRAIN_STATES = ("plain", "hooked")  # the two model states masked_retrain's docstring says it is graded on


def masked_retrain(state: str) -> dict:
    """masked_retrain on a pruned tiny VGG13, in one of the two states its contract allows.

    ``plain``: the pruned weights are plain zeros (no hooks), so only the student's
    code can keep them zero.  ``hooked``: the grader attached the masks with
    torch.nn.utils.prune (``weight_orig`` + ``weight_mask``), as apply_pruning may.
    """
    from hw2 import pruning

    model = tiny_vgg(seed=8)
    masks = grader_unstructured_masks(model, TINY_RATIOS)
    masks.update(grader_filter_masks(model, {"features.17.weight": 0.5}))
    if state == "hooked":
        attach_masks(model, masks)
    else:
        with torch.no_grad():
            for name, mask in masks.items():
                module_name, _, tensor_name = name.rpartition(".")
                getattr(model.get_submodule(module_name), tensor_name).mul_(mask)
    train_loader, test_loader = tiny_loaders(seed=8)
    before = weights_of(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    result = call(pruning.masked_retrain, model, {k: v.clone() for k, v in masks.items()}, optimizer,
                  nn.CrossEntropyLoss(), train_loader, test_loader, 1, DEVICE)
    result.update(state=state, masks=masks, before=before, after=weights_of(model))
    return result


def prune_method(method: str, sparsity_type: str, iterations: int = 3, epochs: int = 1) -> dict:
    """OMP or IMP on the tiny model with tiny data: the log and the weights before and after."""
    from hw2 import pruning

    model = tiny_vgg(seed=9)
    train_loader, test_loader = tiny_loaders(seed=9)
    ratios = dict(TINY_RATIOS if sparsity_type == "unstructured" else TINY_FILTER_RATIOS)  # the probe's own targets
    before = weights_of(model)
    common = dict(train_loader=train_loader, test_loader=test_loader, epochs=epochs, device=DEVICE)
    if method == "omp":  # the student gets a copy: a function that edits its dict cannot move the targets
        result = call(pruning.oneshot_magnitude_prune, model, sparsity_type, dict(ratios), **common)
    else:
        result = call(pruning.iterative_magnitude_prune, model, sparsity_type, dict(ratios), iterations=iterations, **common)
    result.update(ratios=ratios, before=before, after=weights_of(model))
    if method == "omp":  # what the student's own mask function picks from the given weights: OMP must prune those
        mask_function = pruning.unstructured_prune if sparsity_type == "unstructured" else pruning.filter_prune
        result["own_masks"] = {name: call(mask_function, before[name].clone(), ratio) for name, ratio in ratios.items()}
    return result


def imp_too_few_iterations() -> dict:
    from hw2 import pruning

    model = tiny_vgg(seed=10)
    train_loader, test_loader = tiny_loaders(seed=10)
    return call(pruning.iterative_magnitude_prune, model, "unstructured", dict(TINY_RATIOS), iterations=2,
                train_loader=train_loader, test_loader=test_loader, epochs=0, device=DEVICE)


def compact(permanent: bool) -> dict:
    """A filter-pruned tiny VGG13 (masks by the grader) and what the student's compact copy of it looks like.

    The returned model is not plain data, so it is examined here: widths, parameter count,
    all-zero filters, and its outputs on the inputs the masked model saw.
    """
    from hw2 import pruning
    from hw2.models import make_pruning_permanent

    model = tiny_vgg(seed=12)
    ratios = {f"features.{i}.weight": r for i, r in zip((0, 3, 7, 10, 14, 17, 21, 24, 28, 31),
                                                        (0.25, 0.5, 0.25, 0.5, 0.25, 0.5, 0.25, 0.5, 0.5, 0.25))}
    masks = grader_filter_masks(model, ratios)
    attach_masks(model, masks)
    if permanent:
        make_pruning_permanent(model)
    model.eval()
    kept = [int(masks[name].flatten(1)[:, 0].sum()) for name in ratios]
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(12))
    with torch.no_grad():
        expected = model(x.clone())
    parameters_before = sum(p.numel() for p in model.parameters())
    state_before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    try:
        compact = pruning.prune_channels_after_filter_prune(model)
    except Exception as exc:  # noqa: BLE001
        return raised(exc)
    out = {"kept_widths": kept, "widths_before": list(TINY_WIDTHS), "parameters_before": parameters_before,
           "expected": expected, "classes": 10, "is_module": isinstance(compact, nn.Module)}
    state_after = model.state_dict()
    out["input_unchanged"] = (state_before.keys() == state_after.keys()
                              and all(torch.equal(state_before[k], state_after[k]) for k in state_before))
    if not out["is_module"]:
        return {"value": out}
    out["same_object"] = compact is model
    out["parameters"] = sum(p.numel() for p in compact.parameters())
    convs = [m for m in compact.modules() if isinstance(m, nn.Conv2d)]
    out["widths"] = [m.out_channels for m in convs]
    out["zero_filters"] = sum(int((m.weight.detach().flatten(1) == 0).all(dim=1).sum()) for m in convs)
    out["has_masks"] = any(name.endswith("_mask") for name, _ in compact.named_buffers())
    try:
        compact.eval()
        with torch.no_grad():
            out["outputs"] = compact(x.clone()).detach().clone()  # a copy: a forward pass may write into its input
    except Exception as exc:  # noqa: BLE001
        out["forward_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    return {"value": out}


def plot_mask(workdir: str) -> dict:
    from hw2 import pruning

    gen = torch.Generator().manual_seed(13)
    weight = torch.randn(6, 4, 3, 3, generator=gen)  # 6 filters, 36 columns: a transposed image has another shape
    weight[weight.abs() < 0.6] = 0
    weight[2] = 0  # one pruned filter
    results = {"weight": weight.clone(), "path": str(Path(workdir) / "mask.png")}
    results.update(call(pruning.plot_mask, weight, results["path"], title="features.0.weight"))
    linear = torch.randn(5, 7, generator=gen)
    linear[linear.abs() < 0.5] = 0
    results["linear_weight"] = linear.clone()
    results["linear"] = call(pruning.plot_mask, linear, str(Path(workdir) / "mask_linear.png"), title="classifier.weight")
    return results


PLOT_RECORDS = [{"label": "Omp_unstructured", "sparsity": 0.7994, "accuracy": 91.37},
                {"label": "Imp_unstructured", "sparsity": 0.8003, "accuracy": 92.11},
                {"label": "Omp_filter", "sparsity": 0.3999, "accuracy": 88.5},
                {"label": "Imp_filter", "sparsity": 0.4012, "accuracy": 89.25}]


def plot_sparsity(workdir: str) -> dict:
    from hw2 import pruning

    path = str(Path(workdir) / "sparsity_vs_accuracy.png")
    result = call(pruning.plot_sparsity_vs_accuracy, copy.deepcopy(PLOT_RECORDS), path, 93.0)
    result.update(records=PLOT_RECORDS, path=path)
    return result


def recompute_masks(pretrained: str, sparsity_type: str, ratios: dict) -> dict:
    """What the student's own unstructured_prune / filter_prune keep of the pretrained weights, per layer.

    For unstructured: the mask as bools of the weight's shape; for filter: one bool per
    output filter.  The grader compares these with the zeros of the handed-in models.
    """
    from hw2 import pruning
    from hw2.checkpoint import load_checkpoint

    state_dict, _ = load_checkpoint(Path(pretrained))
    function = pruning.unstructured_prune if sparsity_type == "unstructured" else pruning.filter_prune
    masks = {}
    for name, ratio in ratios.items():
        weight = state_dict[name].float()
        result = call(function, weight.clone(), float(ratio))
        if "value" not in result:
            masks[name] = result
            continue
        mask = result["value"]
        try:
            keep = torch.as_tensor(mask).ne(0).expand_as(weight)
        except (RuntimeError, TypeError, ValueError):
            masks[name] = {"raised": "ValueError", "message": f"returned a mask of shape {tuple(getattr(mask, 'shape', ()))} "
                                                               f"for a weight of shape {tuple(weight.shape)}"}
            continue
        masks[name] = {"keep": keep.clone() if sparsity_type == "unstructured" else keep.flatten(1).any(1)}
    return masks


def import_pruning() -> dict:
    """Import the student's module once: a module that hangs or fails at import fails every code test at once."""
    from hw2 import pruning

    return {"functions": sorted(name for name in dir(pruning) if callable(getattr(pruning, name)))}


PROBES = {
    "import_pruning": import_pruning,
    "read_yaml": read_yaml,
    "mask_function": mask_function,
    "apply_pruning": apply_pruning,
    "sparsity_report": sparsity_report,
    "masked_retrain": masked_retrain,
    "prune_method": prune_method,
    "imp_too_few_iterations": imp_too_few_iterations,
    "compact": compact,
    "plot_mask": plot_mask,
    "plot_sparsity": plot_sparsity,
    "recompute_masks": recompute_masks,
}
