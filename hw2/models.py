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


# ---------------------------------------------------------------------------------------------
# Further architectures for the studies beyond HW2: LeNets for 28x28 grey digits and
# clothes, CIFAR ResNets.  Output layers are registered last, so ``list(prunable_weights(m))[-1]``
# is always the output layer.
# ---------------------------------------------------------------------------------------------
class LeNet5(nn.Module):
    """LeNet-5 (ReLU, max-pool): conv 6@5x5 (padding 2), pool, conv 16@5x5, pool, 120, 84, ``fc3`` = output.

    Layer names: ``conv1``, ``conv2``, ``fc1``, ``fc2``, ``fc3``.  For 28x28
    inputs the flattened features are 16x5x5 = 400 (61,706 parameters).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        side = (image_size // 2 - 4) // 2  # after pool, the unpadded 5x5 conv, pool
        if side < 1:
            raise ValueError(f"LeNet-5 needs images of at least 10x10 pixels, got image_size={image_size}")
        self.fc1 = nn.Linear(16 * side * side, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, C, H, W)
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)  # (N, 16, side, side)
        x = torch.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc3(torch.relu(self.fc2(x)))


class LeNet300100(nn.Module):
    """LeNet-300-100: a multilayer perceptron ``fc1`` (pixels -> 300), ``fc2`` (300 -> 100), ``fc3`` = output."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28):
        super().__init__()
        self.fc1 = nn.Linear(in_channels * image_size * image_size, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, C, H, W)
        x = torch.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc3(torch.relu(self.fc2(x)))


class BasicBlock(nn.Module):
    """ResNet-18's block: two 3x3 conv-BN pairs plus the input (a 1x1 conv-BN ``shortcut`` when the shape changes)."""
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class Bottleneck(nn.Module):
    """ResNet-50's block: 1x1 reduce, 3x3, 1x1 expand (x4), each with BN, plus the (projected) input."""
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        return torch.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs: a 3x3 stem (no max-pool), four stages (64, 128, 256, 512 planes;
    strides 1, 2, 2, 2), global average pooling and the output layer ``fc``."""

    def __init__(self, block: type, blocks_per_stage: tuple, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        in_planes = 64
        stages = []
        for planes, count, stride in zip((64, 128, 256, 512), blocks_per_stage, (1, 2, 2, 2)):
            layers = []
            for block_stride in [stride] + [1] * (count - 1):
                layers.append(block(in_planes, planes, block_stride))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, C, 32, 32)
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (N, 512 * expansion, 4, 4)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def resnet18(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """CIFAR ResNet-18 (BasicBlock x [2, 2, 2, 2], 11.2M parameters)."""
    return CifarResNet(BasicBlock, (2, 2, 2, 2), num_classes, in_channels)


def resnet50(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """CIFAR ResNet-50 (Bottleneck x [3, 4, 6, 3], 23.5M parameters)."""
    return CifarResNet(Bottleneck, (3, 4, 6, 3), num_classes, in_channels)


ARCHITECTURES = {"vgg13": VGG13, "lenet5": LeNet5, "lenet300_100": LeNet300100, "resnet18": resnet18, "resnet50": resnet50}
SIZED_ARCHITECTURES = ("lenet5", "lenet300_100")  # take ``image_size``; the others work on 32x32 (VGG13) or any size


def build_model_for_images(arch: str, num_classes: int, image_shape: tuple) -> nn.Module:
    """``build_model`` for images of ``image_shape`` = (C, H, W), e.g. ``(1, 28, 28)`` for Fashion-MNIST."""
    channels, height = int(image_shape[0]), int(image_shape[1])
    kwargs = {"in_channels": channels}
    if arch in SIZED_ARCHITECTURES:
        kwargs["image_size"] = height
    return build_model(arch, num_classes, **kwargs)


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
    """Fold every ``torch.nn.utils.prune`` and ``torch.nn.utils.parametrize`` re-parametrisation into a plain
    parameter (zeros stay in place).

    Afterwards ``state_dict()`` has plain keys (``features.0.weight``), no
    ``weight_orig`` / ``weight_mask`` / ``parametrizations.weight.original``
    (masks kept as buffers of your own stay: ``plain_state_dict`` leaves them
    out).  Works on models without pruning too.
    """
    from torch.nn.utils import parametrize, prune

    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(module, hook._tensor_name)
        if parametrize.is_parametrized(module):
            _fold_parametrizations(module)
    return model


def _fold_parametrizations(module: nn.Module) -> None:
    """Replace each parametrized tensor of ``module`` by its current value, kept in the original Parameter object.

    Not ``parametrize.remove_parametrizations``: that deletes the tensor's property from the module's class, which
    a deep copy shares with the module it was copied from, so folding a copy would break the original.
    """
    parametrizations = module.parametrizations
    values = {name: getattr(module, name).detach().clone() for name in parametrizations}
    module.__class__ = next(base for base in type(module).__mro__[1:] if base is not type(module) and
                            not getattr(base, "__name__", "").startswith("Parametrized"))
    del module._modules["parametrizations"]
    for name, value in values.items():
        original = getattr(parametrizations[name], "original", None)
        if isinstance(original, nn.Parameter):
            with torch.no_grad():
                original.set_(value)  # the same Parameter object: optimizers holding it still do
            module.register_parameter(name, original)
        else:
            module.register_buffer(name, value)


def plain_state_dict(model: nn.Module, keys) -> dict[str, torch.Tensor]:
    """``model``'s state_dict with its pruning folded in (``make_pruning_permanent``), holding exactly ``keys``
    (those of the unpruned model): whatever else pruning code registered (a mask buffer of its own, say) is left
    out, so the file loads into a plain model.  Raises ValueError naming a key the model no longer has."""
    state = make_pruning_permanent(model).state_dict()
    missing = [key for key in keys if key not in state]
    if missing:
        raise ValueError(f"the pruned model has no {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''} "
                         "(the unpruned model's state_dict has them): keep the model's own layers and names")
    return {key: state[key] for key in keys}


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
