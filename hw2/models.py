"""Models for the homework: the CIFAR-10 VGG13 (provided, not a stub)."""
from __future__ import annotations

import torch
from torch import nn

# Output channels of each conv; "M" is a 2x2 max-pool.  Five pools take 32x32 to 1x1.
VGG13_PLAN: tuple = (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG13(nn.Module):
    """VGG13 for 32x32 inputs: each conv is followed by BatchNorm and ReLU.

    Layer names are stable: convs are ``features.{0,3,7,10,14,17,21,24,28,31}``,
    their BatchNorms the next index, and the classifier is ``classifier``
    (``Linear(512, 10)``).  ``widths`` overrides the conv widths (the same
    length as the conv entries of the plan), which is how a physically pruned,
    smaller VGG13 is built.
    """

    def __init__(self, num_classes: int = 10, widths: list[int] | None = None, in_channels: int = 3):
        super().__init__()
        conv_count = sum(1 for v in VGG13_PLAN if v != "M")
        if widths is None:
            widths = [v for v in VGG13_PLAN if v != "M"]
        if len(widths) != conv_count:
            raise ValueError(f"VGG13 needs {conv_count} conv widths, got {len(widths)}: {widths}")
        layers: list[nn.Module] = []
        width_iter = iter(widths)
        channels = in_channels
        for entry in VGG13_PLAN:
            if entry == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            out = int(next(width_iter))
            layers += [nn.Conv2d(channels, out, kernel_size=3, padding=1, bias=False),
                       nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            channels = out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, 3, 32, 32)
        x = self.features(x)  # (N, C, 1, 1)
        return self.classifier(torch.flatten(x, 1))

    @property
    def widths(self) -> list[int]:
        return [m.out_channels for m in self.features if isinstance(m, nn.Conv2d)]

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, torch.Tensor]) -> "VGG13":
        """Build a VGG13 whose conv widths match ``state_dict`` (dense or compacted) and load it."""
        conv_keys = sorted((k for k, v in state_dict.items() if k.startswith("features.") and k.endswith(".weight") and v.dim() == 4),
                           key=lambda k: int(k.split(".")[1]))
        widths = [state_dict[k].shape[0] for k in conv_keys]
        num_classes = state_dict["classifier.weight"].shape[0]
        in_channels = state_dict[conv_keys[0]].shape[1] if conv_keys else 3
        model = cls(num_classes=num_classes, widths=widths, in_channels=in_channels)
        model.load_state_dict(state_dict)
        return model


ARCHITECTURES = {"vgg13": VGG13}


def build_model(arch: str = "vgg13", num_classes: int = 10, **kwargs) -> nn.Module:
    """Return a fresh model; ``arch`` is one of ``ARCHITECTURES``."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown --arch {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch](num_classes=num_classes, **kwargs)


def prunable_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights that pruning and overall sparsity are about: Conv2d and Linear ``.weight``, by parameter name.

    Works before and after ``torch.nn.utils.prune`` is applied (then the name
    still ends in ``.weight`` and the tensor is the masked weight).
    """
    out = {}
    for module_name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            out[f"{module_name}.weight" if module_name else "weight"] = module.weight
    return out


def make_pruning_permanent(model: nn.Module) -> nn.Module:
    """Fold every ``torch.nn.utils.prune`` re-parametrisation into a plain parameter (zeros stay in place).

    Afterwards ``state_dict()`` has plain keys (``features.0.weight``), no
    ``weight_orig`` / ``weight_mask``.  Works on models without pruning too.
    """
    from torch.nn.utils import prune

    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(module, hook._tensor_name)
    return model


def copy_without_pruning(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with every pruning mask folded in (plain parameters, zeros in place).

    ``copy.deepcopy`` alone fails on a model pruned with ``torch.nn.utils.prune``
    (its masked ``weight`` is a computed, non-leaf tensor); ``model`` is left as it is.
    """
    import copy

    from torch.nn.utils import prune

    computed = [(module, hook._tensor_name, getattr(module, hook._tensor_name))
                for module in model.modules() for hook in module._forward_pre_hooks.values()
                if isinstance(hook, prune.BasePruningMethod)]
    for module, name, _ in computed:
        delattr(module, name)
    try:
        clone = copy.deepcopy(model)
    finally:
        for module, name, value in computed:
            setattr(module, name, value)
    with torch.no_grad():
        for module in clone.modules():
            for hook in module._forward_pre_hooks.values():
                if isinstance(hook, prune.BasePruningMethod):
                    setattr(module, hook._tensor_name, hook.apply_mask(module))
    return make_pruning_permanent(clone)
