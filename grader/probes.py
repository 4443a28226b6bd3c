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

import contextlib
import copy
import functools
from pathlib import Path

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from grader.sandbox import memory_hint

MEMORY_LIMIT: int | None = None  # bytes each call may allocate; the sandbox child sets it
# A VGG13 with the real layer names and plan but few channels: seconds on a CPU.
TINY_WIDTHS = [4, 6, 8, 8, 12, 12, 16, 16, 16, 16]
TINY_RATIOS = {  # different ratios per layer, so that one global threshold gives the wrong per-layer counts
    "features.0.weight": 0.3, "features.3.weight": 0.5, "features.7.weight": 0.25, "features.10.weight": 0.6,
    "features.14.weight": 0.5, "features.24.weight": 0.75, "classifier.weight": 0.4}
TINY_FILTER_RATIOS = {"features.0.weight": 0.25, "features.3.weight": 0.5, "features.10.weight": 0.25,
                      "features.17.weight": 0.5, "features.31.weight": 0.25}
# apply_pruning is also given a layer at ratio 0, as the real configs have: it gets a mask (all ones) like the others
APPLY_RATIOS = {"unstructured": {**TINY_RATIOS, "features.17.weight": 0.0},
                "filter": {**TINY_FILTER_RATIOS, "features.24.weight": 0.0}}
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


def fit(model: nn.Module, train_loader, seed: int, epochs: int = 15, lr: float = 0.05) -> None:
    """Train ``model`` in float32 with the grader's own loop (plain SGD with momentum): a tiny VGG13 learns the tiny
    synthetic data in well under a second.  Seeded, and the global random state is left as it was.

    The same start (weights, data, the loader's random state, seed) always ends the same way, so a process that
    grades many submissions (the project's tests) keeps each end state and sets it again, the loader's random state
    included: what follows sees exactly what it would after training.
    """
    key = _fit_key(model, train_loader, seed, epochs, lr)
    if key is not None and key in _FITTED:
        state, generator_state = _FITTED[key]
        model.load_state_dict(state)
        train_loader.generator.set_state(generator_state)
        model.train()
        return
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        model.train()
        for _ in range(epochs):
            for x, y in train_loader:
                loss = nn.functional.cross_entropy(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    if key is not None:
        _FITTED[key] = ({k: v.detach().clone() for k, v in model.state_dict().items()},
                        train_loader.generator.get_state().clone())


_FITTED: dict = {}  # fit's end states by start (see fit)


def _fit_key(model: nn.Module, train_loader, seed: int, epochs: int, lr: float) -> tuple | None:
    """Everything fit's result depends on, hashed; None for a loader without its own generator (not cached)."""
    import hashlib

    generator = getattr(train_loader, "generator", None)
    if not isinstance(generator, torch.Generator) or not hasattr(train_loader, "images"):
        return None
    digest = hashlib.sha256()
    for tensor in [*model.state_dict().values(), train_loader.images, train_loader.labels, generator.get_state()]:
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return (type(model).__name__, type(train_loader).__name__, train_loader.batch_size, seed, epochs, lr,
            torch.get_num_threads(), digest.hexdigest())


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
    "ratio_quoted": ("a ratio given as a string (\"0.5\" in quotes)",
                     "prune_ratios:\n  features.0.weight: 0.5\n  features.3.weight: \"0.5\"\n"),
    "duplicate_layer": ("a layer named twice",
                        "prune_ratios:\n  features.0.weight: 0.5\n  features.3.weight: 0.5\n  features.0.weight: 0.7\n"),
    "ratio_nan": ("a ratio of .nan (not a number in [0, 1))", "prune_ratios:\n  features.0.weight: .nan\n"),
    "ratio_boolean": ("a boolean ratio ('false')", "prune_ratios:\n  features.0.weight: 0.5\n  features.3.weight: false\n"),
    "no_mapping": ("no prune_ratios mapping", "ratios:\n  features.0.weight: 0.5\n"),
    "empty_value": ("prune_ratios with nothing under it (null, not a mapping)",
                    "prune_ratios:\n#  features.0.weight: 0.5\n"),
    "list_value": ("prune_ratios given as a list, not a mapping", "prune_ratios:\n  - features.0.weight\n"),
    "nested_mapping": ("prune_ratios nested under another key (it must be top-level)",
                       "hw2:\n  prune_ratios:\n    features.0.weight: 0.5\n"),
    "grouped_layers": ("layers grouped under a name that is not a layer",
                       "prune_ratios:\n  early:\n    features.0.weight: 0.5\n"),
    "split_names": ("a layer name split into nested keys (features: {0.weight: ...}; names are flat)",
                    "prune_ratios:\n  features:\n    0.weight: 0.5\n"),
    "malformed": ("malformed YAML", "prune_ratios:\n  features.0.weight: 0.5\n   features.3.weight: [0.5\n"),
    "malformed_indent": ("malformed YAML (a line indented less than the one before: a parser error, not a scanner "
                         "error)", "prune_ratios:\n  features.0.weight: 0.5\n features.3.weight: 0.5\n"),
    "ratio_missing": ("a layer with no ratio (null)", "prune_ratios:\n  features.0.weight: 0.5\n  features.3.weight:\n"),
    "flow_duplicate": ("a layer named twice in flow style", "prune_ratios: {features.0.weight: 0.5, features.0.weight: 0.6}\n"),
    "empty_file": ("a file with no mapping at all (only a comment)", "# prune_ratios: to do\n"),
    "top_level_list": ("a list at the top level, not a mapping", "- prune_ratios\n"),
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
                (torch.randn(12, 10, generator=gen) * torch.linspace(0.1, 3, 12).view(-1, 1), 0.9),
                (torch.randn(10, generator=gen), 0.96),  # floor 9 or ceil 10: all but one, or all
                # the layouts training gives weights: channels_last (bf16 runs) and a transposed view
                (torch.randn(6, 4, 3, 3, generator=gen).to(memory_format=torch.channels_last), 0.5),
                (torch.randn(10, 12, generator=gen).t(), 0.4)]
    # filter cases; the last one ranks differently by L1 and by L2 norm (one big weight vs many small ones)
    l1_vs_l2 = torch.zeros(6, 1, 3, 3)
    for i in range(0, 6, 2):
        l1_vs_l2[i, 0, 1, 1] = 3.0 + i * 0.1           # L2 = L1 = 3.x
        l1_vs_l2[i + 1] = 0.6 + i * 0.01               # L2 = 1.8.., L1 = 5.4..
    already_pruned = torch.randn(8, 3, 3, 3, generator=gen)  # a layer pruned before (IMP's later rounds)
    already_pruned[[1, 4, 6]] = 0
    return [(torch.randn(8, 4, 3, 3, generator=gen), 0.5),
            (torch.randn(10, 3, 3, 3, generator=gen) * torch.linspace(0.2, 2, 10).view(-1, 1, 1, 1), 0.25),
            (torch.randn(12, 6, 3, 3, generator=gen), 0.4),
            (torch.randn(6, 5, generator=gen), 0.5),
            (torch.randn(5, 8, 3, 3, generator=gen), 0.0),
            (l1_vs_l2, 0.5),
            (torch.randn(10, 2, 3, 3, generator=gen), 0.96),  # floor 9 or ceil 10 filters
            (torch.randn(8, 4, 3, 3, generator=gen).to(memory_format=torch.channels_last), 0.5),
            (torch.randn(10, 2, 3, 3, generator=gen), 0.8),  # exactly 8 filters: 10 * (1 - 0.8) is 1.99.. in floats
            (already_pruned, 0.25)]  # 2 of its 3 zero filters, tied at norm 0: a threshold test prunes all 3


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
    ratios = APPLY_RATIOS[sparsity_type]
    before = weights_of(model)
    objects = {id(p): name for name, p in model.named_parameters()}  # an optimizer built now holds these
    result = call(pruning.apply_pruning, model, sparsity_type, dict(ratios))  # a copy: the probe keeps its own
    after = weights_of(model)
    held = {id(p) for p in model.parameters()}
    replaced = [name for key, name in objects.items() if key not in held]
    bn = {}
    for name in ratios:
        index = int(name.split(".")[1]) if name.startswith("features.") else None
        if index is not None:
            module = model.features[index + 1]
            bn[name] = {"weight": module.weight.detach().clone(), "bias": module.bias.detach().clone()}
    # Pruning again with larger ratios must prune further (what IMP relies on), ranking the weights as they are
    # then: first some kept weights shrink, as retraining moves them, below the magnitudes of the pruned ones.
    larger = {name: min(0.9, ratio + 0.2) for name, ratio in ratios.items()}
    shrink_kept_weights(model, ratios, sparsity_type)
    current = weights_of(model)
    # the state apply_pruning leaves: torch.nn.utils.prune hooks / parametrizations, or plain weights (masked_retrain's
    # test needs it: a pipeline whose apply_pruning leaves plain weights never hands masked_retrain a hooked model)
    leaves_hooks = any(n.endswith("_orig") or ".parametrizations." in n for n, _ in model.named_parameters())
    again = call(pruning.apply_pruning, model, sparsity_type, dict(larger)) if "value" in result else {"raised": "skipped"}
    # The student's own mask function on the same weights: apply_pruning is judged against its counts too, so that a
    # count bug in unstructured_prune / filter_prune costs points in its own test only.
    function = pruning.unstructured_prune if sparsity_type == "unstructured" else pruning.filter_prune
    own = {name: _own_zero_count(function, before[name], ratio, sparsity_type) for name, ratio in ratios.items()}
    own_again = {name: _own_zero_count(function, current[name], ratio, sparsity_type) for name, ratio in larger.items()}
    result.update(ratios=dict(ratios), before=before, after=after, bn=bn, larger_ratios=larger, replaced=replaced,
                  leaves_hooks=leaves_hooks,
                  again_raised=again.get("raised"), after_again=weights_of(model), own_counts=own,
                  own_counts_again=own_again)
    return result


def _own_zero_count(function, weight: torch.Tensor, ratio: float, sparsity_type: str) -> int | None:
    """Zeros (entries, or whole filters) once the mask the student's own function gives for ``weight`` is applied to
    it (its zeros stay); None if the function gives no readable mask."""
    mask = call(function, weight.clone(), ratio).get("value")
    if not isinstance(mask, torch.Tensor):
        return None
    try:
        mask = torch.broadcast_to(mask.reshape(-1, *([1] * (weight.dim() - 1))) if mask.numel() == weight.shape[0]
                                  and mask.dim() <= 1 and sparsity_type == "filter" else mask, weight.shape)
    except RuntimeError:
        return None
    pruned = (mask == 0) | (weight == 0)  # what stays pruned after this mask is added to the zeros already there
    if sparsity_type == "unstructured":
        return int(pruned.sum())
    return int(pruned.reshape(weight.shape[0], -1).all(dim=1).sum())


def shrink_kept_weights(model: nn.Module, names, sparsity_type: str, factor: float = 0.01) -> None:
    """Scale every third kept weight (or kept filter) of each named layer by ``factor``, wherever the model keeps it.

    Stands in for retraining between two pruning calls: a second call must rank the weights as they are now, and a
    function that ranks stale values (the unmasked ``weight_orig``, the first call's copy) prunes the wrong ones.
    Every parameter of the layer's module with the weight's shape is scaled (the weight itself, or ``weight_orig``,
    or a parametrization's ``original``), then one forward pass refreshes weights that hooks compute.
    """
    from hw2.models import prunable_weights

    current = prunable_weights(model)
    with torch.no_grad():
        for name in names:
            module = model.get_submodule(name.rpartition(".")[0])
            weight = current[name].detach()
            if sparsity_type == "unstructured":
                kept = (weight != 0).flatten().nonzero().flatten()
                chosen = torch.zeros(weight.numel(), dtype=torch.bool)
                chosen[kept[::3]] = True
                chosen = chosen.view_as(weight)
            else:
                kept = (weight.flatten(1) != 0).any(dim=1).nonzero().flatten()
                rows = torch.zeros(weight.shape[0], dtype=torch.bool)
                rows[kept[::3]] = True
                chosen = rows.view(-1, *([1] * (weight.dim() - 1))).expand_as(weight)
            scale = torch.where(chosen, torch.full_like(weight, factor), torch.ones_like(weight))
            for parameter in module.parameters():
                if parameter.shape == weight.shape:
                    parameter.mul_(scale.to(parameter.dtype))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    model.train(was_training)


def largest_kept(weight: torch.Tensor, sparsity_type: str, fraction: float) -> torch.Tensor:
    """A bool tensor of ``weight``'s shape: its largest nonzero entries (``fraction`` of them, at least one) or, for
    filters, its filter with the largest L2 norm."""
    if sparsity_type == "unstructured":
        kept = (weight != 0).flatten()
        magnitude = torch.where(kept, weight.abs().flatten(), torch.full_like(weight.flatten(), -1.0))
        chosen = torch.zeros(weight.numel(), dtype=torch.bool)
        chosen[torch.topk(magnitude, max(1, int(fraction * int(kept.sum())))).indices] = True
        return chosen.view_as(weight)
    rows = torch.zeros(weight.shape[0], dtype=torch.bool)
    rows[int(weight.flatten(1).norm(dim=1).argmax())] = True
    return rows.view(-1, *([1] * (weight.dim() - 1))).expand_as(weight).clone()


class LargestShrinker:
    """A forward pre-hook: from the model's first training forward pass on, holds the largest kept weights of each
    named layer (the top 5 % by magnitude, at least one; for filters, the filter with the largest L2 norm) at 1/1000
    of their value, before every forward pass (evaluations too: a hand-written update that no optimizer hook sees is
    undone before the evaluation that follows retraining) and after every optimizer step (``hold``), as if retraining
    had made them the smallest.

    Stands in for what retraining does between IMP's rounds: the later rounds of an IMP that ranks the weights as
    retraining left them prune these first, while one that ranks a copy taken before retraining (the weights it was
    given) never does, since they were its largest.  They are held, not scaled once: after a BatchNorm, a filter's
    scale does not change the layer's output, so training would grow a scaled filter back.  Entries already pruned
    (zero) are left alone.  Records what it holds and the zeros each layer had when it started.
    """

    FACTOR = 1e-3
    FRACTION = 0.05

    def __init__(self, names, sparsity_type: str):
        self.names = list(names)
        self.sparsity_type = sparsity_type
        self.shrunk: dict[str, dict] = {}
        self._values: dict[str, torch.Tensor] = {}

    def __call__(self, model: nn.Module, inputs) -> None:
        if model.training and torch.is_grad_enabled():
            self.hold(model, start=True)
        elif self.shrunk:
            self.hold(model)

    def hold(self, model: nn.Module, start: bool = False) -> None:
        """Put the chosen kept entries back to their held values (``start``: choosing them first if not yet done)."""
        from hw2.models import prunable_weights

        current = prunable_weights(model)
        if not self.shrunk and start:
            for name in self.names:
                self._choose(name, current[name].detach().float().cpu())
        with torch.no_grad():
            for name, info in self.shrunk.items():
                alive = info["chosen"] & (current[name].detach().cpu() != 0)
                module = model.get_submodule(name.rpartition(".")[0])
                for parameter in module.parameters():
                    if parameter.shape == alive.shape:
                        held = self._values[name].to(parameter.device, parameter.dtype)
                        parameter.copy_(torch.where(alive.to(parameter.device), held, parameter))

    def _choose(self, name: str, weight: torch.Tensor) -> None:
        chosen = largest_kept(weight, self.sparsity_type, self.FRACTION)
        units = weight.flatten(1) if self.sparsity_type == "filter" else weight.reshape(-1, 1)  # filters or entries
        self._values[name] = weight * self.FACTOR
        self.shrunk[name] = {"chosen": chosen, "zeros_then": int((units == 0).all(dim=1).sum())}


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
        model.features[3].weight[1, 0, 0, :] = 1e-9  # tiny but not zero: not pruned (isclose(w, 0) would say so)
        model.features[10].weight[2] *= 1e-9  # a whole filter of tiny weights: not an all-zero filter
        model.features[17].weight[0] = 0
        model.features[17].weight[0, 0, 0, :2] = torch.tensor([0.5, -0.5])  # sums to 0, yet not all zero
    return model


def sparsity_report() -> dict:
    """test_sparsity on models with known zeros; each call gets its own model, so one call cannot change the next."""
    from hw2 import pruning

    results = {"weights": weights_of(_model_with_known_zeros())}
    for sparsity_type in ("unstructured", "filter"):
        results[sparsity_type] = call(pruning.test_sparsity, _model_with_known_zeros(), sparsity_type)
    # Also with masks attached by the grader through torch.nn.utils.prune, as after apply_pruning: whole filters masked
    # in a model that has zeros of its own, so some zeros are weights under a mask of 1 (count the weights, not masks).
    hooked = _model_with_known_zeros()
    attach_masks(hooked, grader_filter_masks(hooked, TINY_FILTER_RATIOS))
    results["hooked_weights"] = weights_of(hooked)
    results["hooked"] = call(pruning.test_sparsity, hooked, "unstructured")
    return results


RETRAIN_STATES = ("plain", "hooked")  # the two model states masked_retrain's docstring says it is graded on


def masked_retrain(state: str) -> dict:
    """masked_retrain on a pruned tiny VGG13, in one of the two states its contract allows.

    ``plain``: the pruned weights are plain zeros (no hooks), so only the student's
    code can keep them zero.  ``hooked``: the grader attached the masks with
    torch.nn.utils.prune (``weight_orig`` + ``weight_mask``), as apply_pruning may.

    The optimizer it is given has already taken a step on the dense model, as one optimizer that serves several
    IMP rounds has: its momentum moves every weight, so masking the gradients alone does not keep pruned weights zero.
    """
    from hw2 import pruning

    model = tiny_vgg(seed=8)
    train_loader, test_loader = tiny_loaders(seed=8)
    fit(model, train_loader, seed=8)  # trained first: pruning costs accuracy, retraining wins some back
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    with torch.random.fork_rng():  # one step before the pruning: momentum for every weight
        torch.manual_seed(8)
        model.train()
        x, y = next(iter(train_loader))
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()
    masks = grader_unstructured_masks(model, TINY_RATIOS)
    masks.update(grader_filter_masks(model, {"features.17.weight": 0.5}))
    if state == "hooked":
        attach_masks(model, masks)
    else:
        with torch.no_grad():
            for name, mask in masks.items():
                module_name, _, tensor_name = name.rpartition(".")
                getattr(model.get_submodule(module_name), tensor_name).mul_(mask)
    before = weights_of(model)
    running_means_before = [m.running_mean.clone() for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    model.eval()  # as after an evaluation: masked_retrain must put it in training mode itself
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    steps, live_pruned = [], []
    optimizer.register_step_post_hook(lambda *_: steps.append(1))  # was the caller's optimizer the one that trained?
    recorder = TrainingRecorder()
    recorder.watch(train_loader, model)
    for name, mask in masks.items():  # the weights each training forward pass used: pruned ones must be 0 there
        module_name, _, tensor_name = name.rpartition(".")
        model.get_submodule(module_name).register_forward_hook(
            functools.partial(_record_live_pruned, live_pruned, name, tensor_name, mask == 0))
    scheduler = CountingScheduler(optimizer, lambda step: 1.0)  # constant: it only counts its steps
    loss_fn = CountingLoss()
    gradients = GradientWatch(model, steps)
    result = call(pruning.masked_retrain, model, {k: v.clone() for k, v in masks.items()}, optimizer,
                  loss_fn, train_loader, test_loader, RETRAIN_EPOCHS, DEVICE, scheduler)
    gradients.remove()
    result.update(state=state, masks=masks, before=before, after=weights_of(model), optimizer_steps=len(steps),
                  scheduler_steps=scheduler.counted, loss_fn_calls=loss_fn.calls, stale_gradients=gradients.stale,
                  batches=len(train_loader), running_means_before=running_means_before, epochs=RETRAIN_EPOCHS,
                  running_means_after=[m.running_mean.clone() for m in model.modules() if isinstance(m, nn.BatchNorm2d)],
                  orphaned=sorted(n for n, p in model.named_parameters() if id(p) not in held),
                  live_pruned=sorted(set(live_pruned)), accuracy_end=measured_accuracies(model, test_loader),
                  **recorder.report())
    return result


class CountingScheduler(torch.optim.lr_scheduler.LambdaLR):
    """A LambdaLR that counts the steps taken after it was made."""

    def __init__(self, *args, **kwargs):
        self.counted = -1  # the constructor takes one step itself
        super().__init__(*args, **kwargs)

    def step(self, *args, **kwargs):
        self.counted += 1
        return super().step(*args, **kwargs)


class CountingLoss(nn.CrossEntropyLoss):
    """The loss masked_retrain is given: cross-entropy that counts the calls made with gradients on."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, logits, labels):
        self.calls += int(torch.is_grad_enabled())
        return super().forward(logits, labels)


class GradientWatch:
    """Notes a backward pass that adds to gradients an optimizer step has already used (no zero_grad in between).

    A hook on each parameter sees the incoming gradient before it is added to ``.grad``: if ``.grad`` still holds
    nonzero values from before the last optimizer step (``steps``, a list the step post-hook appends to), the
    step about to come sums this batch's gradient with old ones.
    """

    def __init__(self, model: nn.Module, steps: list):
        self.steps, self.stale, self._seen = steps, 0, {}
        self._handles = [p.register_hook(functools.partial(self._incoming, p))
                         for p in model.parameters() if p.requires_grad]

    def _incoming(self, parameter: torch.Tensor, grad: torch.Tensor) -> None:
        old = parameter.grad
        if old is not None and self._seen.get(id(parameter), len(self.steps)) < len(self.steps) and bool(old.any()):
            self.stale += 1
        self._seen[id(parameter)] = len(self.steps)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


RETRAIN_EPOCHS = 2  # more than one: a bug that shows only from the second epoch on (train mode, masks) is seen


def _record_live_pruned(found: list, name: str, tensor_name: str, pruned: torch.Tensor, module, inputs, output):
    """After a training forward pass of ``module``: note ``name`` if a pruned entry of the tensor it used is not 0."""
    if module.training and torch.is_grad_enabled():
        tensor = getattr(module, tensor_name).detach()
        if tensor.shape == pruned.shape and bool((tensor[pruned] != 0).any()):
            found.append(name)


# OMP and IMP targets: the per-layer ratios plus one layer pruned hard (the real 0.80 configs prune some layers
# past 0.9), where schedules that overshoot before the last round show it.
METHOD_RATIOS = {"unstructured": {**TINY_RATIOS, "features.28.weight": 0.915},  # 3 decimals: ratios rounded show
                 "filter": {**TINY_FILTER_RATIOS, "features.28.weight": 0.9}}
GRADED_HELPERS = ("unstructured_prune", "filter_prune", "apply_pruning", "test_sparsity", "masked_retrain")


def prune_method(method: str, sparsity_type: str, iterations: int = 3, epochs: int = 1, helpers: str = "own",
                 lr: float | None = None, logs: bool = False) -> dict:
    """OMP or IMP on the tiny model with tiny data: the log, the weights before and after, the sparsity levels
    (zeros per layer) the model was trained at, in order, the passes over the training data, and the test accuracies
    the probe measured when the retraining after each pruning began and at the end (``AccuracyWatch``).  For OMP the
    grader trains the tiny model first (``fit``).  For IMP, a ``LargestShrinker`` holds each layer's largest kept
    weights small from the first retraining on (``"shrunk"``).

    ``logs=True`` (IMP) is the run that judges the logged accuracies: the tiny model is trained first, as for OMP,
    and nothing is shrunk (the shrinker leaves every accuracy near chance, where a figure measured at the wrong
    moment looks right), so each round's pruning and retraining move the accuracy; ``"accuracy_passes"`` holds the
    accuracies each training pass began and ended at (``AccuracyWatch.passes``).

    ``helpers="grader"`` runs it with the grader's own versions of the functions graded in their own tests
    (``GRADED_HELPERS``) in place of the student's: a defect in one of those costs points in its own test, and the
    OMP / IMP tests judge what OMP / IMP themselves do.  ``lr`` (if given) is passed on; else the function's default.
    """
    from hw2 import pruning

    saved = {name: getattr(pruning, name, None) for name in GRADED_HELPERS}
    held = None  # IMP: the optimizer step hook (the shrinker's, or with logs the watch's), removed at the end
    noted = None  # the step hook that notes the learning rates
    replacements = grader_helpers()
    if helpers == "grader":
        for name, function in replacements.items():
            setattr(pruning, name, function)
    try:
        model = tiny_vgg(seed=9)
        train_loader, test_loader = tiny_loaders(seed=9)
        if method == "omp" or logs:  # trained first, so pruning costs accuracy and retraining wins some back: a log
            fit(model, train_loader, seed=9)  # that holds the same accuracy before and after retraining shows it
        ratios = dict(METHOD_RATIOS[sparsity_type])  # the probe's own targets
        before = weights_of(model)
        recorder = TrainingRecorder()
        recorder.watch(train_loader, model)
        watch = AccuracyWatch(test_loader, recorder if logs else None)
        model.register_forward_pre_hook(watch, prepend=True)
        if logs:
            held = register_optimizer_step_post_hook(watch.after_step)
        shrinker = LargestShrinker([n for n, r in ratios.items() if r > 0], sparsity_type) \
            if method == "imp" and not logs else None
        if shrinker is not None:
            model.register_forward_pre_hook(shrinker)
            held = register_optimizer_step_post_hook(
                lambda optimizer, args, kwargs: shrinker.hold(model))
        rates_seen: list[tuple[int, float]] = []  # (training pass, learning rate) of every torch.optim step
        noted = register_optimizer_step_pre_hook(functools.partial(_note_lr, rates_seen, recorder))
        common = dict(train_loader=train_loader, test_loader=test_loader, epochs=epochs, device=DEVICE)
        if lr is not None:
            common["lr"] = lr
        with noting_label_smoothing() as smoothing:
            if method == "omp":  # the student gets a copy: a function that edits its dict cannot move the targets
                result = call(pruning.oneshot_magnitude_prune, model, sparsity_type, dict(ratios), **common)
            else:
                result = call(pruning.iterative_magnitude_prune, model, sparsity_type, dict(ratios),
                              iterations=iterations, **common)
        after = weights_of(model)
        result.update(ratios=ratios, before=before, after=after, helpers=helpers, epochs=epochs,
                      helpers_available=bool(replacements), **recorder.report(),
                      final_level=[int((w == 0).sum()) for w in after.values()],
                      accuracy_starts=watch.starts, accuracy_end=measured_accuracies(model, test_loader))
        trained = sorted(recorder.trained_passes)
        result["lr_by_pass"] = [[rate for q, rate in rates_seen if q == p] for p in trained]
        result["label_smoothing"] = sorted(set(smoothing))
        from hw2.train import LABEL_SMOOTHING
        result["expected_label_smoothing"] = float(LABEL_SMOOTHING)
        if method == "imp":
            result["peak_lr"] = [max(rates) if rates else None for rates in result["lr_by_pass"]]  # per pass
        if logs:
            result["accuracy_passes"] = watch.passes
        if shrinker is not None:
            result["shrunk"] = shrinker.shrunk
        if method == "omp":  # what the student's own mask function picks from the given weights: OMP must prune those
            mask_function = pruning.unstructured_prune if sparsity_type == "unstructured" else pruning.filter_prune
            result["own_masks"] = {name: call(mask_function, before[name].clone(), ratio) for name, ratio in ratios.items()}
        return result
    finally:
        for name, function in saved.items():
            setattr(pruning, name, function)
        if held is not None:
            held.remove()
        if noted is not None:
            noted.remove()


def _note_lr(rates_seen: list, recorder: "TrainingRecorder", optimizer, args, kwargs) -> None:
    """Before a torch.optim step: the largest learning rate of its groups, with the training pass it is in."""
    rates = [float(group["lr"]) for group in optimizer.param_groups if "lr" in group]
    if rates:
        rates_seen.append((recorder.passes, max(rates)))


@contextlib.contextmanager
def noting_label_smoothing():
    """Yield a list that gets the label_smoothing of every torch.nn.functional.cross_entropy call made with
    gradients on (nn.CrossEntropyLoss calls it too): the loss a retraining used, where it used that function."""
    import torch.nn.functional as F

    seen, original = [], F.cross_entropy

    @functools.wraps(original)
    def cross_entropy(*args, **kwargs):
        if torch.is_grad_enabled():
            seen.append(float(args[7] if len(args) > 7 else kwargs.get("label_smoothing", 0.0)))
        return original(*args, **kwargs)

    F.cross_entropy = cross_entropy
    try:
        yield seen
    finally:
        F.cross_entropy = original


def zero_level(model: nn.Module) -> list[int]:
    """The model's sparsity level: the zeros of each prunable weight, in order."""
    from hw2.models import prunable_weights

    return [int((w == 0).sum()) for w in prunable_weights(model).values()]


def measured_accuracies(model: nn.Module, loader) -> list[float]:
    """The test accuracies (percent) of ``model`` on ``loader`` that an honest log may hold: as ``hw2.train.evaluate``
    measures in float32 (its default) and with ``exact=False`` (bf16 autocast where training uses it).  The model's train/eval modes and the
    global random state are left as they were, so the student's training goes on as if nothing had happened."""
    from hw2.train import evaluate

    modes = [(module, module.training) for module in model.modules()]
    state = torch.get_rng_state()
    try:
        with torch.no_grad():
            return sorted({evaluate(model, loader, DEVICE), evaluate(model, loader, DEVICE, exact=False)})
    finally:
        torch.set_rng_state(state)
        for module, mode in modes:
            module.train(mode)


class AccuracyWatch:
    """A forward pre-hook that measures the test accuracy when retraining starts at a new sparsity level: before the
    first training forward pass after a pruning (no optimizer step yet), i.e. what "accuracy_before_retrain" must hold.
    ``starts`` lists those measurements in order.  A deep copy of the model shares the watch (training a copy is
    seen too); registered first, it measures before any other hook of the probe changes a weight.

    Given the ``TrainingRecorder`` that counts the passes over the training data, it also measures at the start of
    each pass the model trains in, and, registered as an optimizer step post-hook too (``after_step``), after every
    step: ``passes`` lists, per training pass in order, ``(start, end)``, the accuracies its training began and
    ended at (a round of IMP retrains for ``epochs`` passes, so its figures are those of its first and last pass, even
    where its pruning added no zero)."""

    def __init__(self, loader, recorder: "TrainingRecorder | None" = None):
        self.loader = loader
        self.recorder = recorder
        self.starts: list[list[float]] = []
        self._passes: dict[int, list] = {}
        self._level = None
        self._busy = False
        self._model = None

    def __deepcopy__(self, memo):
        return self

    @property
    def passes(self) -> list[tuple[list[float], list[float] | None]]:
        """Per training pass, in order: (start, end); end is None where no torch.optim step ran in the pass."""
        return [(start, end) for _, (start, end) in sorted(self._passes.items())]

    def _measure(self, model: nn.Module) -> list[float]:
        self._busy = True
        try:
            return measured_accuracies(model, self.loader)
        finally:
            self._busy = False

    def __call__(self, model: nn.Module, inputs) -> None:
        if self._busy or not (model.training and torch.is_grad_enabled()):
            return
        self._model = model
        level = zero_level(model)
        new_level = level != self._level
        new_pass = self.recorder is not None and self.recorder.passes not in self._passes
        if not (new_level or new_pass):
            return
        measured = self._measure(model)
        if new_level:
            self._level = level
            self.starts.append(measured)
        if new_pass:
            self._passes[self.recorder.passes] = [measured, None]

    def after_step(self, optimizer, args, kwargs) -> None:
        current = self._passes.get(self.recorder.passes) if self.recorder is not None else None
        if current is not None and self._model is not None and not self._busy:
            current[1] = self._measure(self._model)


class TrainingRecorder:
    """Counts the passes over a training loader and marks those in which the model trained (a forward pass with
    every module in training mode and gradients on); also records, in order, the sparsity levels (zeros per layer) it trained at.

    ``watch(loader, model)`` makes ``loader`` count its passes (same class, one ``__iter__`` override) and hooks
    ``model``'s forward (a deep copy of the model keeps the hook, so training a copy is seen too).
    """

    def __init__(self):
        self.passes = 0
        self.trained_passes: set[int] = set()
        self.levels: list[list[int]] = []

    def watch(self, loader, model: nn.Module) -> None:
        recorder = self

        class CountingLoader(type(loader)):
            def __iter__(self):
                recorder.passes += 1
                return super().__iter__()

        loader.__class__ = CountingLoader
        model.register_forward_hook(functools.partial(_record_training, self))  # picklable, unlike a lambda

    def report(self) -> dict:
        return {"training_passes": len(self.trained_passes), "loader_passes": self.passes,
                "trained_levels": self.levels}


def _record_training(recorder: TrainingRecorder, model: nn.Module, inputs, output) -> None:
    # training mode means every module's: BatchNorm switched to eval inside a model in train mode trains nothing of
    # its statistics (a pass in which it was is not a training pass)
    if model.training and torch.is_grad_enabled() and all(m.training for m in model.modules()):
        recorder.trained_passes.add(recorder.passes)
        level = zero_level(model)
        if not recorder.levels or recorder.levels[-1] != level:
            recorder.levels.append(level)


# ---------------------------------------------------------------------------------------------
# The grader's own versions of the helpers OMP and IMP call (used only with helpers="grader")
# ---------------------------------------------------------------------------------------------
def _grader_unstructured_prune(tensor: torch.Tensor, sparsity: float) -> torch.Tensor:
    flat = tensor.detach().abs().reshape(-1)
    mask = torch.ones(flat.numel(), dtype=tensor.dtype, device=tensor.device)
    mask[torch.argsort(flat, stable=True)[:int(round(sparsity * flat.numel()))]] = 0
    return mask.reshape(tensor.shape)


def _grader_filter_prune(tensor: torch.Tensor, sparsity: float) -> torch.Tensor:
    norms = tensor.detach().reshape(tensor.shape[0], -1).norm(dim=1)
    keep = torch.ones(tensor.shape[0], dtype=tensor.dtype, device=tensor.device)
    keep[torch.argsort(norms, stable=True)[:int(round(sparsity * tensor.shape[0]))]] = 0
    return keep.reshape(-1, *([1] * (tensor.dim() - 1))).expand(tensor.shape).clone()


def _storage(module: nn.Module, tensor_name: str) -> torch.Tensor:
    """Where a (possibly hooked or parametrized) tensor's values live."""
    from torch.nn.utils import parametrize

    if parametrize.is_parametrized(module, tensor_name):
        return module.parametrizations[tensor_name].original
    return getattr(module, f"{tensor_name}_orig", None) if hasattr(module, f"{tensor_name}_orig") \
        else getattr(module, tensor_name)


def _grader_zero(model: nn.Module, name: str, mask: torch.Tensor) -> None:
    """Zero a parameter where ``mask`` is 0, in place, attaching nothing: the masks hold later only where the code
    that called apply_pruning passes them on (prune hooks would hold them on its behalf, so an OMP / IMP that drops
    the masks would pass with the grader's helpers).  A tensor that already has hooks gets its mask buffer narrowed."""
    module_name, _, tensor_name = name.rpartition(".")
    module = model.get_submodule(module_name)
    with torch.no_grad():
        storage = _storage(module, tensor_name)
        storage.mul_(mask.to(storage))
        hooked_mask = getattr(module, f"{tensor_name}_mask", None)
        if hooked_mask is not None and hasattr(module, f"{tensor_name}_orig"):
            hooked_mask.mul_(mask.to(hooked_mask))
            setattr(module, tensor_name, storage * hooked_mask)


def _grader_apply_pruning(model: nn.Module, sparsity_type: str, prune_ratio_dict: dict) -> dict:
    from hw2.models import prunable_weights

    if sparsity_type not in ("unstructured", "filter"):
        raise ValueError(f"unknown sparsity_type {sparsity_type!r}")
    current = prunable_weights(model)
    masks = {}
    for name, ratio in dict(prune_ratio_dict).items():
        module_name, _, tensor_name = name.rpartition(".")
        module = model.get_submodule(module_name)
        weight = (module.weight_orig * module.weight_mask if hasattr(module, "weight_mask") else current[name]).detach()
        function = _grader_unstructured_prune if sparsity_type == "unstructured" else _grader_filter_prune
        masks[name] = function(weight, ratio)
        _grader_zero(model, name, masks[name])
        if sparsity_type == "filter" and name.startswith("features."):
            keep = masks[name].reshape(masks[name].shape[0], -1)[:, 0].clone()
            for bn_tensor in ("weight", "bias"):
                bn_name = f"features.{int(name.split('.')[1]) + 1}.{bn_tensor}"
                masks[bn_name] = keep.clone()
                _grader_zero(model, bn_name, keep)
    return masks


def _grader_test_sparsity(model: nn.Module, sparsity_type: str = "unstructured") -> dict:
    from hw2.models import prunable_weights

    weights = {n: w.detach() for n, w in prunable_weights(model).items()}
    report = {"overall": sum(int((w == 0).sum()) for w in weights.values()) / sum(w.numel() for w in weights.values()),
              "layers": {n: float((w == 0).float().mean()) for n, w in weights.items()}}
    if sparsity_type == "filter":
        report["zero_filters"] = {n: int((w.reshape(w.shape[0], -1) == 0).all(dim=1).sum()) for n, w in weights.items()}
    return report


def _grader_masked_retrain(model, prune_masks, optimizer, loss_fn, train_loader, test_loader, num_epochs, device,
                           scheduler=None, progress=True) -> list:
    from hw2.train import evaluate, train_epoch

    def reapply():
        with torch.no_grad():
            for name, mask in prune_masks.items():
                module_name, _, tensor_name = name.rpartition(".")
                storage = _storage(model.get_submodule(module_name), tensor_name)
                storage.mul_(mask.to(storage))

    log = []
    for _ in range(num_epochs):
        stats = train_epoch(model, train_loader, optimizer, loss_fn, device, scheduler=scheduler, after_step=reapply,
                            progress=False)
        log.append({**stats, "test_accuracy": evaluate(model, test_loader, device)})
    return log


def grader_helpers() -> dict:
    """The grader's own versions of ``GRADED_HELPERS``, by name (the public checks have none: they run OMP and IMP
    with the student's helpers only)."""
    return {"unstructured_prune": _grader_unstructured_prune, "filter_prune": _grader_filter_prune,
            "apply_pruning": _grader_apply_pruning, "test_sparsity": _grader_test_sparsity,
            "masked_retrain": _grader_masked_retrain}


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
                                                        (0.75, 0.0, 0.25, 0.5, 0.0, 0.5, 0.25, 0.5, 0.5, 0.25))}
    # features.0 keeps 1 of its 4 filters: a one-channel layer must still work (no squeeze() to a 0-d index);
    # features.3 and .14 keep all theirs, yet lose the input channels of the conv before them
    masks = grader_filter_masks(model, ratios)
    attach_masks(model, masks)
    _plant_filters(model, masks)
    if permanent:
        make_pruning_permanent(model)
    model.eval()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(12))
    with torch.no_grad():
        expected = model(x.clone())  # with masks attached, this also recomputes each .weight from weight_orig
    kept = [int((model.get_submodule(name.rpartition(".")[0]).weight.detach().flatten(1) != 0).any(1).sum())
            for name in ratios]
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


def _plant_filters(model: nn.Module, masks: dict) -> None:
    """Filters under a mask of 1 that tell how a solution finds the pruned ones: the weights decide, nothing else.

    features.7: a kept filter scaled to ~1e-7 (nonzero: kept, not a magnitude cut-off); features.10: a kept filter
    of +0.5 and -0.5 on a live input (nonzero, though its entries sum to 0); features.21: a filter that is all zero under a mask of 1,
    its BatchNorm weight and bias zero too (all-zero: removed, though its mask buffer says kept).
    """
    def first_kept(index: int) -> int:
        return int(masks[f"features.{index}.weight"].flatten(1)[:, 0].nonzero()[0])

    with torch.no_grad():
        _storage(model.features[7], "weight")[first_kept(7)] *= 1e-7
        plus_minus = _storage(model.features[10], "weight")[first_kept(10)]
        plus_minus.zero_()
        plus_minus[first_kept(7), 0, :2] = torch.tensor([0.5, -0.5])  # on an input channel that stays
        dead = first_kept(21)
        _storage(model.features[21], "weight")[dead] = 0
        for tensor_name in ("weight", "bias"):
            _storage(model.features[22], tensor_name)[dead] = 0


def plot_mask(workdir: str) -> dict:
    """The returned images, and what each saved figure drew (see ``drawn_mask``)."""
    from hw2 import pruning

    gen = torch.Generator().manual_seed(13)
    weight = torch.randn(6, 4, 3, 3, generator=gen)  # 6 filters, 36 columns: a transposed image has another shape
    weight[weight.abs() < 0.6] = 0
    weight[2] = 0  # one pruned filter
    weight[4, 1, 0, :] = torch.tensor([1e-6, 1e-9, 1e-30])  # tiny but kept: weight != 0, not a magnitude threshold
    cases = {"": (weight, "mask.png", "features.0.weight")}
    linear = torch.randn(5, 7, generator=gen)
    linear[linear.abs() < 0.5] = 0
    cases["linear"] = (linear, "mask_linear.png", "classifier.weight")
    wide = torch.randn(8, 256, 3, 3, generator=gen)  # 2304 columns, as VGG13's late convs have: one column per weight
    wide[wide.abs() < 0.8] = 0
    wide[5] = 0
    cases["wide"] = (wide, "mask_wide.png", "features.24.weight")
    # a layer with ratio 0 keeps every weight: drawn all in the kept colour (a colour map scaled to the image's own
    # range would draw it all in the pruned one)
    cases["dense"] = (torch.randn(4, 2, 3, 3, generator=gen).abs() + 0.1, "mask_dense.png", "features.3.weight")
    results = {}
    for key, (tensor, file_name, title) in cases.items():
        path = str(Path(workdir) / file_name)
        given = tensor.clone()
        with saved_figures(drawn_mask) as saved:
            result = call(pruning.plot_mask, given, path, title=title)
        result.update(weight=tensor, path=path, input_unchanged=torch.equal(given, tensor),
                      drawn=saved[-1] if saved else drawn_mask_file(path, tensor))
        if key:
            results[key] = result
        else:
            results.update(result)
    return results


@contextlib.contextmanager
def saved_figures(snapshot):
    """Yield a list that gets ``snapshot(figure)`` each time a figure is saved, taken as it is saved.

    What a figure holds after the function returned can differ from what the PNG shows
    (artists added after ``savefig``), so the checks read the figure at save time.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    saved = []
    originals = (Figure.savefig, FigureCanvasAgg.print_png)
    inside_savefig = []  # savefig ends in print_png: one snapshot per save

    def take(figure):
        try:
            saved.append(snapshot(figure))
        except Exception as exc:  # noqa: BLE001 - an odd figure: the check says it could not be read
            saved.append({"unreadable": f"{type(exc).__name__}: {str(exc)[:200]}"})

    @functools.wraps(originals[0])
    def savefig(figure, *args, **kwargs):  # plt.savefig and fig.savefig both end here
        take(figure)
        inside_savefig.append(True)
        try:
            return originals[0](figure, *args, **kwargs)
        finally:
            inside_savefig.pop()

    @functools.wraps(originals[1])  # the same signature: savefig passes a print method only the keywords it takes
    def print_png(canvas, *args, **kwargs):  # and a canvas written directly
        if not inside_savefig:
            take(canvas.figure)
        return originals[1](canvas, *args, **kwargs)

    Figure.savefig, FigureCanvasAgg.print_png = savefig, print_png
    try:
        yield saved
    finally:
        Figure.savefig, FigureCanvasAgg.print_png = originals


def drawn_mask(figure) -> dict:
    """The colours of every image-like artist (imshow, matshow, spy, pcolormesh, figimage) as RGBA arrays, and the
    points of every marker line or scatter, in data coordinates."""
    import numpy as np
    from matplotlib.collections import QuadMesh

    images, points = [], []
    artists = list(figure.images)
    for axes in figure.axes:
        artists += list(axes.images) + [c for c in axes.collections if isinstance(c, QuadMesh)]
        for line in axes.get_lines():
            if line.get_marker() not in (None, "None", "", " "):
                points.append(np.asarray(line.get_xydata(), dtype=float).reshape(-1, 2).tolist())
        for collection in axes.collections:
            if not isinstance(collection, QuadMesh):
                points.append(np.asarray(collection.get_offsets(), dtype=float).reshape(-1, 2).tolist())
    for artist in artists:
        data = artist.get_array()
        if data is None:
            continue
        data = np.ma.asarray(data)
        if isinstance(artist, QuadMesh) and data.ndim == 1:
            rows, cols = (n - 1 for n in artist.get_coordinates().shape[:2])
            data = data.reshape(rows, cols)
        rgba = np.asarray(artist.to_rgba(data), dtype=np.float64)
        if rgba.ndim == 3:
            images.append(torch.from_numpy(rgba[..., :4].copy()))
    return {"images": images, "points": points}


def drawn_mask_file(path: str, weight: torch.Tensor) -> dict | None:
    """A PNG written without a matplotlib figure (plt.imsave, PIL): its pixels, when they map onto the mask's
    entries (one pixel per entry, or the same whole-number scale on both axes); otherwise None (not judged)."""
    import numpy as np
    from matplotlib import image

    try:
        pixels = np.asarray(image.imread(path), dtype=np.float64)
    except Exception:  # noqa: BLE001 - no readable PNG: the PNG check says so
        return None
    rows, cols = weight.shape[0], weight[0].numel()
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3 + [np.ones_like(pixels)], axis=-1)
    height, width = pixels.shape[:2]
    if height % rows or width % cols or height // rows != width // cols:
        return None
    scale = height // rows
    pixels = pixels[scale // 2::scale, scale // 2::scale]
    if pixels.shape[-1] == 3:
        pixels = np.concatenate([pixels, np.ones(pixels.shape[:2] + (1,))], axis=-1)
    return {"images": [torch.from_numpy(pixels.copy())], "points": []}


# the four models of --method all and two a run log may add (--scope global, --criterion thinet): code written for
# exactly four (four markers zipped with the records, a 2 x 2 grid) shows it
PLOT_RECORDS = [{"label": "Omp_unstructured", "sparsity": 0.7994, "accuracy": 91.37},
                {"label": "Imp_unstructured", "sparsity": 0.8003, "accuracy": 92.11},
                {"label": "Omp_filter", "sparsity": 0.3999, "accuracy": 88.5},
                {"label": "Imp_filter", "sparsity": 0.4012, "accuracy": 89.25},
                {"label": "Omp_global", "sparsity": 0.9001, "accuracy": 90.42},
                {"label": "Imp_thinet", "sparsity": 0.4996, "accuracy": 87.64}]


def plot_sparsity(workdir: str) -> dict:
    """The returned points, and the points the saved figure draws (every line's and scatter's data, per axes)."""
    from hw2 import pruning

    path = str(Path(workdir) / "sparsity_vs_accuracy.png")
    with saved_figures(lambda figure: {"drawn": drawn_points(figure), "heights": drawn_heights(figure)}) as saved:
        result = call(pruning.plot_sparsity_vs_accuracy, copy.deepcopy(PLOT_RECORDS), path, 93.0)
    last = saved[-1] if saved else {}
    result.update(records=PLOT_RECORDS, path=path, drawn=last.get("drawn"), heights=last.get("heights"),
                  unreadable=last.get("unreadable"))
    return result


def drawn_heights(figure) -> list[float]:
    """Every y value any line (axhline included) or scatter in the figure draws."""
    import numpy as np

    from matplotlib.collections import LineCollection
    from matplotlib.lines import AxLine

    heights = []
    for axes in figure.axes:
        for line in axes.get_lines():
            if isinstance(line, AxLine):  # ax.axline: through xy1, with a slope or through xy2
                (x1, y1), xy2 = line.get_xy1(), line.get_xy2()
                if line.get_slope() == 0 or (xy2 is not None and xy2[1] == y1):
                    heights.append(float(y1))
                continue
            heights += np.asarray(line.get_ydata(), dtype=float).reshape(-1).tolist()
        for collection in axes.collections:
            heights += np.asarray(collection.get_offsets(), dtype=float).reshape(-1, 2)[:, 1].tolist()
            if isinstance(collection, LineCollection):  # ax.hlines
                heights += [float(y) for segment in collection.get_segments() for _, y in segment]
    return [h for h in heights if np.isfinite(h)]


def drawn_points(figure) -> list[list[float]]:
    """(x, y) of every vertex of every line and every scatter point in the figure's axes, in data coordinates."""
    import numpy as np

    points = []
    for axes in figure.axes:
        for line in axes.get_lines():
            xy = np.asarray(line.get_xydata(), dtype=float).reshape(-1, 2)
            if line.get_transform() == axes.transData:  # not axhline's axes-fraction x
                points += xy.tolist()
        for collection in axes.collections:
            offsets = np.asarray(collection.get_offsets(), dtype=float).reshape(-1, 2)
            points += offsets.tolist()
    return [p for p in points if all(np.isfinite(p))]


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
