"""HW2 pruning functions -- solution C (mask buffers, own training loop)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
import yaml
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch
from torch import nn
from torch.nn.utils import prune

from hw2.models import VGG13, copy_without_pruning, prunable_weights
from hw2.train import LABEL_SMOOTHING, evaluate, make_optimizer, make_scheduler, train_epoch

SPARSITY_TYPES = ("unstructured", "filter")
MIN_IMP_ITERATIONS = 3
MASK_COLOURS = ("#E69F00", "#0072B2")  # index 0 = pruned, index 1 = kept
FIGURE_DPI = 150


# ----------------------------------------------------------------------------- helpers
class _NoDupLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping."""


def _construct_mapping_no_dups(loader, node, deep=False):
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ValueError(f"line {key_node.start_mark.line + 1}: {key!r} is given twice "
                             f"(first on line {seen[key] + 1})")
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_NoDupLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping_no_dups)


def _split(name: str):
    mod_name, _, attr = name.rpartition(".")
    return mod_name, attr


def _get_module(model: nn.Module, mod_name: str) -> nn.Module:
    return model.get_submodule(mod_name) if mod_name else model


def _trainable_tensor(model: nn.Module, name: str) -> torch.Tensor:
    """The leaf parameter behind ``name``: ``<attr>_orig`` with prune hooks, else ``<attr>``."""
    mod_name, attr = _split(name)
    module = _get_module(model, mod_name)
    if hasattr(module, attr + "_orig"):
        return getattr(module, attr + "_orig")
    return getattr(module, attr)


def _batchnorm_after(model: nn.Module) -> dict[str, str]:
    """conv module name -> name of the BatchNorm that follows it (same channel count)."""
    modules = list(model.named_modules())
    out = {}
    for i, (name, module) in enumerate(modules):
        if isinstance(module, nn.Conv2d):
            for nxt_name, nxt in modules[i + 1:]:
                if isinstance(nxt, (nn.Conv2d, nn.Linear)):
                    break
                if isinstance(nxt, nn.BatchNorm2d) and nxt.num_features == module.out_channels:
                    out[name] = nxt_name
                    break
    return out


def _set_mask(module: nn.Module, attr: str, mask: torch.Tensor) -> None:
    """Store the mask as a buffer ``<attr>_mask`` and zero the pruned entries of the plain parameter."""
    if hasattr(module, attr + "_orig"):  # prune hooks from elsewhere: fold them first
        prune.remove(module, attr)
    param = getattr(module, attr)
    with torch.no_grad():
        param.mul_(mask)
    module.register_buffer(attr + "_mask", mask.detach().clone())


# ----------------------------------------------------------------------------- 3
def read_prune_ratios_from_yaml(file_name, model):
    text = Path(file_name).read_text()
    try:
        data = yaml.load(text, Loader=_NoDupLoader)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark is not None else "?"
        raise ValueError(f"{file_name}: malformed YAML at line {line}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{file_name}: malformed YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("prune_ratios"), dict):
        raise ValueError(f"{file_name}: needs a top-level mapping 'prune_ratios: {{name: ratio}}'")
    valid = list(prunable_weights(model))
    out = {}
    for name, ratio in data["prune_ratios"].items():
        if name not in valid:
            raise ValueError(f"{file_name}: {name!r} is not a Conv2d/Linear weight of the model; valid names: "
                             + ", ".join(valid))
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not (0 <= ratio < 1):
            raise ValueError(f"{file_name}: ratio of {name} must be a number in [0, 1), got {ratio!r}")
        out[name] = float(ratio)
    return out


# ----------------------------------------------------------------------------- 1, 2
def unstructured_prune(tensor, sparsity):
    n = tensor.numel()
    k = int(round(float(sparsity) * n))
    flat = tensor.detach().abs().reshape(-1)
    order = torch.sort(flat, stable=True).indices
    mask = torch.ones(n, dtype=tensor.dtype, device=tensor.device)
    mask[order[:k]] = 0
    return mask.reshape(tensor.shape)


def filter_prune(tensor, sparsity):
    c_out = tensor.shape[0]
    k = int(round(float(sparsity) * c_out))
    norms = tensor.detach().reshape(c_out, -1).float().pow(2).sum(1).sqrt()
    order = torch.sort(norms, stable=True).indices
    keep = torch.ones(c_out, dtype=tensor.dtype, device=tensor.device)
    keep[order[:k]] = 0
    return keep.reshape((c_out,) + (1,) * (tensor.dim() - 1)).expand_as(tensor).clone()


# ----------------------------------------------------------------------------- 4
def apply_pruning(model, sparsity_type, prune_ratio_dict):
    if sparsity_type not in SPARSITY_TYPES:
        raise ValueError(f"unknown sparsity_type {sparsity_type!r}; choose one of {SPARSITY_TYPES}")
    weights = prunable_weights(model)
    bn_of = _batchnorm_after(model)
    masks = {}
    for name, ratio in prune_ratio_dict.items():
        if name not in weights:
            raise ValueError(f"{name!r} is not a Conv2d/Linear weight of the model")
        current = weights[name].detach()
        mod_name, attr = _split(name)
        module = _get_module(model, mod_name)
        if sparsity_type == "unstructured":
            mask = unstructured_prune(current, ratio)
        else:
            mask = filter_prune(current, ratio)
        _set_mask(module, attr, mask)
        masks[name] = mask
        if sparsity_type == "filter" and mod_name in bn_of:
            bn_name = bn_of[mod_name]
            bn = _get_module(model, bn_name)
            channel = mask.reshape(mask.shape[0], -1)[:, 0].to(bn.weight.dtype)
            for bn_attr in ("weight", "bias"):
                _set_mask(bn, bn_attr, channel.clone())
                masks[f"{bn_name}.{bn_attr}"] = channel.clone()
    return masks


# ----------------------------------------------------------------------------- 5
def test_sparsity(model, sparsity_type="unstructured"):
    zeros_all, total_all = 0, 0
    layers, zero_filters = {}, {}
    print(f"{'layer':<24}{'zeros':>10}{'total':>10}{'sparsity':>10}" + ("  zero filters" if sparsity_type == "filter" else ""))
    for name, w in prunable_weights(model).items():
        w = w.detach()
        z = int((w == 0).sum().item())
        n = w.numel()
        zeros_all += z
        total_all += n
        layers[name] = z / n
        line = f"{name:<24}{z:>10}{n:>10}{z / n:>10.4f}"
        if sparsity_type == "filter":
            zf = int((w.reshape(w.shape[0], -1) == 0).all(dim=1).sum().item())
            zero_filters[name] = zf
            line += f"  {zf}/{w.shape[0]}"
        print(line)
    overall = zeros_all / total_all if total_all else 0.0
    print(f"overall sparsity: {overall:.4f} ({zeros_all}/{total_all})")
    out = {"overall": overall, "layers": layers}
    if sparsity_type == "filter":
        out["zero_filters"] = zero_filters
    return out


# ----------------------------------------------------------------------------- 6
def masked_retrain(model, prune_masks, optimizer, loss_fn, train_loader, test_loader, num_epochs, device,
                   scheduler=None, progress=True):
    params = []
    for name, mask in prune_masks.items():
        p = _trainable_tensor(model, name)
        params.append((p, mask.to(device=p.device, dtype=p.dtype)))
    with torch.no_grad():
        for p, m in params:
            p.mul_(m)
    history = []
    for epoch in range(num_epochs):
        model.train()
        total_loss, correct, seen = 0.0, 0, 0
        for x, y in train_loader:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad(set_to_none=True)
            logits = model(x)
            loss = loss_fn(logits.float(), y)
            loss.backward()
            for p, m in params:
                if p.grad is not None:
                    p.grad.mul_(m)
            optimizer.step()
            with torch.no_grad():
                for p, m in params:
                    p.mul_(m)
            if scheduler is not None:
                scheduler.step()
            total_loss += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
        test_acc = evaluate(model, test_loader, device)
        entry = {"loss": total_loss / max(seen, 1), "accuracy": 100.0 * correct / max(seen, 1),
                 "test_accuracy": test_acc, "epoch": epoch + 1}
        if progress:
            print(f"retrain epoch {epoch + 1}/{num_epochs}: loss {entry['loss']:.3f} "
                  f"train {entry['accuracy']:.2f}% test {test_acc:.2f}%")
        history.append(entry)
    return history


def _retrain(model, masks, train_loader, test_loader, epochs, device, lr, weight_decay, progress):
    optimizer = make_optimizer(model, lr, weight_decay=weight_decay)
    scheduler = make_scheduler(optimizer, max(1, epochs * len(train_loader)))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)
    return masked_retrain(model, masks, optimizer, loss_fn, train_loader, test_loader, epochs, device,
                          scheduler=scheduler, progress=progress)


# ----------------------------------------------------------------------------- 7
def oneshot_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, train_loader, test_loader, epochs, device,
                            lr=0.01, weight_decay=5e-4, progress=True):
    ratios = dict(prune_ratio_dict)
    masks = apply_pruning(model, sparsity_type, ratios)
    sparsity = test_sparsity(model, sparsity_type)["overall"]
    before = evaluate(model, test_loader, device, exact=True)
    _retrain(model, masks, train_loader, test_loader, epochs, device, lr, weight_decay, progress)
    after = evaluate(model, test_loader, device, exact=True)
    return [{"iteration": 1, "ratios": ratios, "sparsity": sparsity,
             "accuracy_before_retrain": before, "accuracy": after}]


# ----------------------------------------------------------------------------- 8
def iterative_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, iterations=3, train_loader, test_loader,
                              epochs, device, lr=0.01, weight_decay=5e-4, progress=True):
    if iterations < MIN_IMP_ITERATIONS:
        raise ValueError(f"iterative pruning needs at least {MIN_IMP_ITERATIONS} iterations, got {iterations}")
    log = []
    for t in range(1, iterations + 1):
        if t == iterations:
            ratios = dict(prune_ratio_dict)
        else:
            ratios = {name: target * t / iterations for name, target in prune_ratio_dict.items()}
        masks = apply_pruning(model, sparsity_type, ratios)
        sparsity = test_sparsity(model, sparsity_type)["overall"]
        before = evaluate(model, test_loader, device, exact=True)
        _retrain(model, masks, train_loader, test_loader, epochs, device, lr, weight_decay, progress)
        after = evaluate(model, test_loader, device, exact=True)
        log.append({"iteration": t, "ratios": ratios, "sparsity": sparsity,
                    "accuracy_before_retrain": before, "accuracy": after})
    return log


# ----------------------------------------------------------------------------- 11
def prune_channels_after_filter_prune(model):
    dense = copy_without_pruning(model)
    convs = [m for m in dense.features if isinstance(m, nn.Conv2d)]
    bns = [m for m in dense.features if isinstance(m, nn.BatchNorm2d)]
    keeps = [torch.nonzero(c.weight.detach().reshape(c.out_channels, -1).ne(0).any(1)).flatten() for c in convs]
    widths = [len(k) for k in keeps]
    new = VGG13(num_classes=dense.classifier.out_features, widths=widths, in_channels=convs[0].in_channels)
    new_convs = [m for m in new.features if isinstance(m, nn.Conv2d)]
    new_bns = [m for m in new.features if isinstance(m, nn.BatchNorm2d)]
    prev = torch.arange(convs[0].in_channels)
    with torch.no_grad():
        for conv, bn, nconv, nbn, keep in zip(convs, bns, new_convs, new_bns, keeps):
            nconv.weight.copy_(conv.weight[keep][:, prev])
            nbn.weight.copy_(bn.weight[keep])
            nbn.bias.copy_(bn.bias[keep])
            nbn.running_mean.copy_(bn.running_mean[keep])
            nbn.running_var.copy_(bn.running_var[keep])
            nbn.num_batches_tracked.copy_(bn.num_batches_tracked)
            nbn.eps, nbn.momentum = bn.eps, bn.momentum
            prev = keep
        new.classifier.weight.copy_(dense.classifier.weight[:, prev])
        new.classifier.bias.copy_(dense.classifier.bias)
    device = next(model.parameters()).device
    new = new.to(device)
    new.train(model.training)
    return new


# ----------------------------------------------------------------------------- 10
def plot_sparsity_vs_accuracy(records, out_path, dense_accuracy=None,
                              title="VGG13 on CIFAR-10: accuracy vs sparsity"):
    points = [(str(r["label"]), float(r["sparsity"]), float(r["accuracy"])) for r in records]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for label, s, a in points:
        ax.scatter([s], [a], s=50, label=label, zorder=3)
        ax.annotate(label, (s, a), textcoords="offset points", xytext=(5, 5), fontsize=8)
    if dense_accuracy is not None:
        ax.axhline(dense_accuracy, color="grey", linestyle="--", label=f"dense ({dense_accuracy:.2f}%)")
    ax.set_xlabel("overall sparsity")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if points or dense_accuracy is not None:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_path, dpi=FIGURE_DPI, format="png")
    plt.close(fig)
    return points


# ----------------------------------------------------------------------------- 9
def plot_mask(weight, out_path, title=""):
    w = weight.detach().cpu()
    image = (w.reshape(w.shape[0], -1) != 0).numpy().astype(np.uint8)
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.imshow(image, cmap=ListedColormap(list(MASK_COLOURS)), vmin=0, vmax=1, aspect="auto",
              interpolation="nearest")
    ax.set_xlabel("input channel x kernel position")
    ax.set_ylabel("filter")
    ax.set_title(title)
    ax.legend(handles=[Patch(color=MASK_COLOURS[1], label="kept"), Patch(color=MASK_COLOURS[0], label="pruned")],
              loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out_path, dpi=FIGURE_DPI, format="png")
    plt.close(fig)
    return image
