"""HW2 pruning with a forward pre-hook of its own that zeroes the pruned weights before every forward pass.

Masks are kept as module attributes, thresholds come from torch.topk on the kept
entries, IMP follows the cubic schedule of Zhu & Gupta (2017), and the channel
removal rebuilds each layer and copies the surviving slices.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
import yaml
from torch import nn

MIN_IMP_ITERATIONS = 3


def read_prune_ratios_from_yaml(file_name, model):
    prunable = [f"{name}.weight" for name, module in model.named_modules() if isinstance(module, (nn.Conv2d, nn.Linear))]
    loader = yaml.SafeLoader(Path(file_name).read_text())
    try:
        node = loader.get_single_node()
        document = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as error:
        raise ValueError(f"{file_name}: invalid YAML: {error}") from error
    finally:
        loader.dispose()
    if not isinstance(document, dict) or not isinstance(document.get("prune_ratios"), dict):
        raise ValueError(f"{file_name}: missing the prune_ratios mapping")
    section = [value for key, value in node.value if key.value == "prune_ratios"][0]
    counted = {}
    for key, _ in section.value:
        counted[key.value] = counted.get(key.value, 0) + 1
    twice = [key for key, times in counted.items() if times > 1]
    if twice:
        raise ValueError(f"{file_name}: {twice[0]} is given {counted[twice[0]]} times")
    out = {}
    for name, ratio in document["prune_ratios"].items():
        if name not in prunable:
            raise ValueError(f"{file_name}: {name} is not a prunable weight ({', '.join(prunable)})")
        if not (type(ratio) in (float, int) and 0.0 <= ratio < 1.0):
            raise ValueError(f"{file_name}: {name} has ratio {ratio!r}, not a number in [0, 1)")
        out[name] = float(ratio)
    return out


def unstructured_prune(tensor, sparsity):
    n = tensor.numel()
    keep = n - int(round(n * sparsity))
    mask = torch.zeros(n, dtype=tensor.dtype, device=tensor.device)
    if keep:
        mask[torch.topk(tensor.detach().abs().flatten(), keep, largest=True, sorted=False).indices] = 1
    return mask.reshape_as(tensor)


def filter_prune(tensor, sparsity):
    c_out = tensor.shape[0]
    keep = c_out - int(round(c_out * sparsity))
    norms = (tensor.detach().reshape(c_out, -1) ** 2).sum(dim=1)  # squared L2: same order as L2
    mask = torch.zeros_like(tensor)
    if keep:
        mask[torch.topk(norms, keep).indices] = 1
    return mask


def _zero_masked(module, inputs):
    for attr, mask in module.hw2_masks.items():
        getattr(module, attr).data.mul_(mask)


def _hold(module, attr, mask):
    """Keep ``attr`` of ``module`` zero where ``mask`` is 0: now, and before every forward pass."""
    if not hasattr(module, "hw2_masks"):
        module.hw2_masks = {}
        module.register_forward_pre_hook(_zero_masked)
    mask = mask.to(getattr(module, attr).device, getattr(module, attr).dtype)
    module.hw2_masks[attr] = mask * module.hw2_masks[attr] if attr in module.hw2_masks else mask
    getattr(module, attr).data.mul_(module.hw2_masks[attr])
    return module.hw2_masks[attr].clone()


def apply_pruning(model, sparsity_type, prune_ratio_dict):
    if sparsity_type == "unstructured":
        choose = unstructured_prune
    elif sparsity_type == "filter":
        choose = filter_prune
    else:
        raise ValueError(f"sparsity_type must be 'unstructured' or 'filter', not {sparsity_type!r}")
    masks = {}
    modules = list(model.named_modules())
    for name, ratio in prune_ratio_dict.items():
        module_name, _, attr = name.rpartition(".")
        module = model.get_submodule(module_name)
        masks[name] = _hold(module, attr, choose(getattr(module, attr).detach(), ratio))
        if sparsity_type == "filter":
            index = [n for n, _ in modules].index(module_name)
            bn_name, bn = next(((n, m) for n, m in modules[index + 1:] if isinstance(m, nn.BatchNorm2d)), (None, None))
            if bn is not None and bn.num_features == masks[name].shape[0]:
                alive = (masks[name].reshape(masks[name].shape[0], -1).sum(1) > 0).to(bn.weight.dtype)
                masks[f"{bn_name}.weight"] = _hold(bn, "weight", alive)
                masks[f"{bn_name}.bias"] = _hold(bn, "bias", alive)
    return masks


def test_sparsity(model, sparsity_type="unstructured"):
    stats = {"overall": 0.0, "layers": {}}
    if sparsity_type == "filter":
        stats["zero_filters"] = {}
    zero_count = weight_count = 0
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            w = module.weight.detach()
            zero_count += int(w.eq(0).sum())
            weight_count += w.numel()
            stats["layers"][name + ".weight"] = int(w.eq(0).sum()) / w.numel()
            if sparsity_type == "filter":
                stats["zero_filters"][name + ".weight"] = sum(1 for row in w.reshape(w.shape[0], -1) if not row.any())
    stats["overall"] = zero_count / weight_count
    print(stats)
    return stats


def _test_accuracy(model, loader):
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels in loader:
            correct += model(images).argmax(-1).eq(labels).sum().item()
            total += labels.numel()
    return 100.0 * correct / total


def masked_retrain(model, prune_masks, optimizer, loss_fn, train_loader, test_loader, num_epochs, device,
                   scheduler=None, progress=True):
    for name, mask in prune_masks.items():
        module_name, _, attr = name.rpartition(".")
        module = model.get_submodule(module_name)
        _hold(module, attr, mask)  # a no-op for masks already held; plain zeros get held now
    history = []
    for epoch in range(num_epochs):
        model.train()
        seen = hits = 0
        loss_total = 0.0
        for images, labels in train_loader:
            logits = model(images)
            loss = loss_fn(logits, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            seen += labels.numel()
            hits += logits.argmax(-1).eq(labels).sum().item()
            loss_total += loss.item() * labels.numel()
        history.append({"loss": loss_total / seen, "accuracy": 100.0 * hits / seen,
                        "test_accuracy": _test_accuracy(model, test_loader)})  # its forward passes re-zero
    for module in model.modules():  # the last optimizer step moved them: zero them now, not at the next forward
        if hasattr(module, "hw2_masks"):
            _zero_masked(module, None)
    return history


def _step(model, sparsity_type, ratios, iteration, train_loader, test_loader, epochs, device, lr, weight_decay):
    masks = apply_pruning(model, sparsity_type, ratios)
    sparsity = test_sparsity(model, sparsity_type)["overall"]
    before = _test_accuracy(model, test_loader)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    history = masked_retrain(model, masks, optimizer, nn.CrossEntropyLoss(), train_loader, test_loader, epochs, device)
    return {"iteration": iteration, "ratios": dict(ratios), "sparsity": sparsity, "accuracy_before_retrain": before,
            "accuracy": history[-1]["test_accuracy"] if history else before}


def oneshot_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, train_loader, test_loader, epochs, device,
                            lr=0.01, weight_decay=5e-4, progress=True):
    return [_step(model, sparsity_type, prune_ratio_dict, 1, train_loader, test_loader, epochs, device, lr, weight_decay)]


def iterative_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, iterations=3, train_loader, test_loader,
                              epochs, device, lr=0.01, weight_decay=5e-4, progress=True):
    if iterations < MIN_IMP_ITERATIONS:
        raise ValueError(f"iterations={iterations}: IMP needs at least {MIN_IMP_ITERATIONS}")
    log = []
    for t in range(1, iterations + 1):  # cubic schedule: prune fast first, then slowly; exactly the target at the end
        ratios = {name: target * (1 - (1 - t / iterations) ** 3) for name, target in prune_ratio_dict.items()}
        log.append(_step(model, sparsity_type, ratios, t, train_loader, test_loader, epochs, device, lr, weight_decay))
    return log


def prune_channels_after_filter_prune(model):
    old = [m for m in model.features]
    new_layers = []
    survivors = None
    for layer in old:
        if isinstance(layer, nn.Conv2d):
            weight = layer.weight.detach()
            if survivors is not None:
                weight = weight.index_select(1, survivors)
            survivors = torch.where(weight.flatten(1).abs().amax(1) > 0)[0]
            if survivors.numel() == 0:
                survivors = torch.tensor([0])
            conv = nn.Conv2d(weight.shape[1], survivors.numel(), layer.kernel_size, layer.stride, layer.padding, bias=False)
            with torch.no_grad():
                conv.weight.copy_(weight.index_select(0, survivors))
            new_layers.append(conv)
        elif isinstance(layer, nn.BatchNorm2d):
            bn = nn.BatchNorm2d(survivors.numel(), eps=layer.eps, momentum=layer.momentum)
            with torch.no_grad():
                bn.weight.copy_(layer.weight.detach()[survivors])
                bn.bias.copy_(layer.bias.detach()[survivors])
                bn.running_mean.copy_(layer.running_mean[survivors])
                bn.running_var.copy_(layer.running_var[survivors])
            new_layers.append(bn)
        elif isinstance(layer, nn.ReLU):
            new_layers.append(nn.ReLU(inplace=True))
        else:
            new_layers.append(nn.MaxPool2d(layer.kernel_size, layer.stride))

    class Compact(nn.Module):
        def __init__(self, features, classifier):
            super().__init__()
            self.features, self.classifier = features, classifier

        def forward(self, x):
            return self.classifier(torch.flatten(self.features(x), 1))

    classifier = nn.Linear(survivors.numel(), model.classifier.out_features)
    with torch.no_grad():
        classifier.weight.copy_(model.classifier.weight.detach()[:, survivors])
        classifier.bias.copy_(model.classifier.bias.detach())
    compact = Compact(nn.Sequential(*new_layers), classifier)
    compact.train(model.training)
    return compact


def plot_sparsity_vs_accuracy(records, out_path, dense_accuracy=None, title=""):
    xs = [float(r["sparsity"]) for r in records]
    ys = [float(r["accuracy"]) for r in records]
    labels = [str(r["label"]) for r in records]
    plt.figure()
    plt.scatter(xs, ys)
    for x, y, label in zip(xs, ys, labels):
        plt.annotate(label, (x, y))
    if dense_accuracy is not None:
        plt.axhline(dense_accuracy, linestyle="--")
    plt.title(title)
    plt.savefig(out_path)
    plt.close()
    return list(zip(labels, xs, ys))


def plot_mask(weight, out_path, title=""):
    image = weight.detach().cpu().reshape(weight.shape[0], -1).bool().float()
    plt.figure()
    plt.imshow(image.numpy(), cmap="Greys_r")
    plt.title(title)
    plt.savefig(out_path)
    plt.close()
    return image
