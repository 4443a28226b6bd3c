"""HW2 pruning without torch.nn.utils.prune: plain weights, kthvalue thresholds, masks re-applied after every step."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
import yaml
from torch import nn

from hw2.models import VGG13

MIN_IMP_ITERATIONS = 3


def _weight_layers(model):
    """name -> module for every Conv2d / Linear."""
    return {name: m for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def read_prune_ratios_from_yaml(file_name, model):
    text = Path(file_name).read_text()
    try:
        tree = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"{file_name}: not valid YAML ({err})") from err
    if not isinstance(data, dict) or not isinstance(data.get("prune_ratios"), dict):
        raise ValueError(f"{file_name}: needs a 'prune_ratios' mapping")
    section = next(value for key, value in tree.value if key.value == "prune_ratios")
    keys = [key.value for key, _ in section.value]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ValueError(f"{file_name}: layers listed more than once: {repeated}")
    allowed = [f"{name}.weight" for name in _weight_layers(model)]
    ratios = {}
    for name, ratio in data["prune_ratios"].items():
        if name not in allowed:
            raise ValueError(f"{file_name}: {name} is not one of {allowed}")
        if type(ratio) not in (int, float) or not 0 <= ratio < 1:
            raise ValueError(f"{file_name}: ratio of {name} must be a number in [0, 1), got {ratio!r}")
        ratios[name] = float(ratio)
    return ratios


def _lowest(scores, k):
    """Boolean tensor marking the k lowest scores (ties: lowest index first), found with kthvalue."""
    chosen = torch.zeros(scores.shape, dtype=torch.bool)
    if k == 0:
        return chosen
    threshold = scores.kthvalue(k).values
    chosen = scores < threshold
    missing = k - int(chosen.sum())
    ties = (scores == threshold).nonzero().flatten()[:missing]
    chosen[ties] = True
    return chosen


def unstructured_prune(tensor, sparsity):
    n = tensor.numel()
    k = int(sparsity * n + 0.5)
    pruned = _lowest(tensor.detach().abs().reshape(-1).cpu(), k)
    return (~pruned).to(tensor.dtype).reshape(tensor.shape).to(tensor.device)


def filter_prune(tensor, sparsity):
    filters = tensor.shape[0]
    norms = tensor.detach().reshape(filters, -1).pow(2).sum(1).sqrt().cpu()
    pruned = _lowest(norms, int(sparsity * filters + 0.5))
    keep = (~pruned).to(tensor.dtype).to(tensor.device)
    return keep.reshape(-1, *[1] * (tensor.dim() - 1)) * torch.ones_like(tensor)


def _parameter(model, name):
    """The trainable tensor behind ``name`` (``<name>_orig`` when torch.nn.utils.prune renamed it)."""
    module_name, _, attr = name.rpartition(".")
    module = model.get_submodule(module_name)
    return getattr(module, attr + "_orig", None) if hasattr(module, attr + "_orig") else getattr(module, attr)


def _batchnorm_after(model, conv_name):
    names = [name for name, _ in model.named_modules()]
    modules = dict(model.named_modules())
    for name in names[names.index(conv_name) + 1:]:
        if isinstance(modules[name], nn.BatchNorm2d):
            return name
        if isinstance(modules[name], (nn.Conv2d, nn.Linear)):
            return None
    return None


def apply_pruning(model, sparsity_type, prune_ratio_dict):
    if sparsity_type not in ("unstructured", "filter"):
        raise ValueError(f"sparsity_type must be unstructured or filter, got {sparsity_type}")
    masks = {}
    with torch.no_grad():
        for name, ratio in prune_ratio_dict.items():
            module_name = name.rpartition(".")[0]
            current = model.get_submodule(module_name).weight.detach()
            mask = unstructured_prune(current, ratio) if sparsity_type == "unstructured" else filter_prune(current, ratio)
            _parameter(model, name).mul_(mask)
            masks[name] = mask
            if sparsity_type == "filter":
                bn_name = _batchnorm_after(model, module_name)
                if bn_name is not None:
                    channel = mask.reshape(mask.shape[0], -1)[:, 0].clone()
                    for attr in ("weight", "bias"):
                        _parameter(model, f"{bn_name}.{attr}").mul_(channel)
                        masks[f"{bn_name}.{attr}"] = channel.clone()
    return masks


def test_sparsity(model, sparsity_type="unstructured"):
    layers, zero_filters = {}, {}
    zeros = total = 0
    for name, module in _weight_layers(model).items():
        w = module.weight.detach()
        z = int((w == 0).sum())
        layers[f"{name}.weight"] = z / w.numel()
        zeros, total = zeros + z, total + w.numel()
        if sparsity_type == "filter":
            zero_filters[f"{name}.weight"] = int((w.reshape(w.shape[0], -1).abs().sum(1) == 0).sum())
        print(f"{name}.weight: {z}/{w.numel()} zero ({100 * layers[name + '.weight']:.1f}%)")
    report = {"overall": zeros / total, "layers": layers}
    if sparsity_type == "filter":
        report["zero_filters"] = zero_filters
    print(f"overall sparsity: {report['overall']:.4f}")
    return report


@torch.no_grad()
def _accuracy(model, loader, device):
    model.eval()
    right = seen = 0
    for images, labels in loader:
        right += int((model(images.to(device)).argmax(1) == labels.to(device)).sum())
        seen += len(labels)
    return 100.0 * right / max(seen, 1)


def masked_retrain(model, prune_masks, optimizer, loss_fn, train_loader, test_loader, num_epochs, device,
                   scheduler=None, progress=True):
    pairs = [(_parameter(model, name), mask) for name, mask in prune_masks.items()]

    def reapply():
        with torch.no_grad():
            for tensor, mask in pairs:
                tensor.mul_(mask.to(tensor.device, tensor.dtype))

    reapply()
    history = []
    for epoch in range(num_epochs):
        model.train()
        loss_sum, right, seen = 0.0, 0, 0
        for images, labels in train_loader:
            images, labels = images.to(device), labels.to(device)
            optimizer.zero_grad()
            logits = model(images)
            loss = loss_fn(logits, labels)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            reapply()  # the step moved the pruned weights: put them back to zero
            loss_sum += loss.item() * len(labels)
            right += int((logits.argmax(1) == labels).sum())
            seen += len(labels)
        history.append({"loss": loss_sum / max(seen, 1), "accuracy": 100.0 * right / max(seen, 1),
                        "test_accuracy": _accuracy(model, test_loader, device)})
    return history


def _prune_round(model, sparsity_type, ratios, step, train_loader, test_loader, epochs, device, lr, weight_decay):
    masks = apply_pruning(model, sparsity_type, ratios)
    sparsity = test_sparsity(model, sparsity_type)["overall"]
    before = _accuracy(model, test_loader, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * len(train_loader)))
    history = masked_retrain(model, masks, optimizer, nn.CrossEntropyLoss(), train_loader, test_loader, epochs, device,
                             scheduler)
    return {"iteration": step, "ratios": dict(ratios), "sparsity": sparsity, "accuracy_before_retrain": before,
            "accuracy": history[-1]["test_accuracy"] if history else before}


def oneshot_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, train_loader, test_loader, epochs, device,
                            lr=0.01, weight_decay=5e-4, progress=True):
    return [_prune_round(model, sparsity_type, prune_ratio_dict, 1, train_loader, test_loader, epochs, device, lr,
                         weight_decay)]


def iterative_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, iterations=3, train_loader, test_loader,
                              epochs, device, lr=0.01, weight_decay=5e-4, progress=True):
    if iterations < MIN_IMP_ITERATIONS:
        raise ValueError(f"need at least {MIN_IMP_ITERATIONS} iterations")
    log = []
    for step in range(1, iterations + 1):  # linear schedule: an equal share of the target each round
        ratios = {name: target * step / iterations for name, target in prune_ratio_dict.items()}
        log.append(_prune_round(model, sparsity_type, ratios, step, train_loader, test_loader, epochs, device, lr,
                                weight_decay))
    return log


def prune_channels_after_filter_prune(model):
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    norms = [m for m in model.features if isinstance(m, nn.BatchNorm2d)]
    keeps = []
    for conv in convs:
        alive = (conv.weight.detach().reshape(conv.out_channels, -1) != 0).any(1).nonzero().reshape(-1)
        keeps.append(alive if len(alive) else torch.tensor([0]))
    small = VGG13(num_classes=model.classifier.out_features, widths=[len(k) for k in keeps],
                  in_channels=convs[0].in_channels)
    small_convs = [m for m in small.features if isinstance(m, nn.Conv2d)]
    small_norms = [m for m in small.features if isinstance(m, nn.BatchNorm2d)]
    inputs = torch.arange(convs[0].in_channels)
    with torch.no_grad():
        for conv, bn, new_conv, new_bn, keep in zip(convs, norms, small_convs, small_norms, keeps):
            new_conv.weight.copy_(conv.weight.detach()[keep][:, inputs])
            for attr in ("weight", "bias", "running_mean", "running_var"):
                getattr(new_bn, attr).copy_(getattr(bn, attr).detach()[keep])
            inputs = keep
        small.classifier.weight.copy_(model.classifier.weight.detach()[:, inputs])
        small.classifier.bias.copy_(model.classifier.bias.detach())
    small.train(model.training)
    return small


def plot_sparsity_vs_accuracy(records, out_path, dense_accuracy=None, title="accuracy vs sparsity"):
    points = [(r["label"], float(r["sparsity"]), float(r["accuracy"])) for r in records]
    fig, ax = plt.subplots()
    for label, s, a in points:
        ax.scatter(s, a, label=label)
    if dense_accuracy is not None:
        ax.axhline(dense_accuracy, linestyle=":", label="dense")
    ax.set_xlabel("sparsity")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.legend()
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path)
    plt.close(fig)
    return points


def plot_mask(weight, out_path, title=""):
    image = (weight.detach().cpu().reshape(weight.shape[0], -1) != 0).numpy().astype(np.uint8)
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(out_path, image, cmap="cividis", vmin=0, vmax=1)
    return image
