"""HW2 pruning with torch.nn.utils.prune hooks, numpy / topk masks, and the ratio dicts edited in place."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
import yaml
from torch import nn
from torch.nn.utils import prune

from hw2.models import VGG13, copy_without_pruning
from hw2.train import evaluate, make_optimizer, make_scheduler, train_epoch

MIN_IMP_ITERATIONS = 3


class _StrictLoader(yaml.SafeLoader):
    pass


def _pairs_without_repeats(loader, node):
    pairs = loader.construct_pairs(node)
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError(f"repeated key in the mapping at line {node.start_mark.line + 1}")
    return dict(pairs)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _pairs_without_repeats)


def read_prune_ratios_from_yaml(file_name, model):
    try:
        with open(file_name) as handle:
            content = yaml.load(handle, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        raise ValueError(f"could not parse {file_name}: {exc}")
    ratios = content.get("prune_ratios") if isinstance(content, dict) else None
    if not isinstance(ratios, dict):
        raise ValueError(f"{file_name} has no prune_ratios section")
    prunable = {n + ".weight" for n, m in model.named_modules() if type(m) in (nn.Conv2d, nn.Linear)}
    for layer, value in ratios.items():
        if layer not in prunable:
            raise ValueError(f"unknown layer {layer}; choose from {sorted(prunable)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value < 0 or value >= 1:
            raise ValueError(f"{layer}: {value!r} is not a ratio in [0, 1)")
    return {layer: float(value) for layer, value in ratios.items()}


def unstructured_prune(tensor, sparsity):
    percent = 100.0 * sparsity  # this solution thinks in percent
    values = np.abs(tensor.detach().cpu().double().numpy()).ravel()
    count = int(round(percent * values.size / 100.0))
    keep = np.ones(values.size)
    keep[np.argsort(values, kind="stable")[:count]] = 0.0
    return torch.from_numpy(keep.reshape(tuple(tensor.shape))).to(device=tensor.device, dtype=tensor.dtype)


def filter_prune(tensor, sparsity):
    n_filters = tensor.size(0)
    count = int(round(sparsity * n_filters))
    norms = torch.linalg.vector_norm(tensor.detach().flatten(1).double(), dim=1)
    mask = torch.ones_like(tensor)
    if count:
        dropped = torch.topk(norms, count, largest=False).indices
        mask[dropped] = 0
    return mask


def _module(model, name):
    module_name, _, attr = name.rpartition(".")
    return model.get_submodule(module_name), attr


def apply_pruning(model, sparsity_type, prune_ratio_dict):
    if sparsity_type not in ("unstructured", "filter"):
        raise ValueError(f"unknown sparsity type {sparsity_type}")
    chooser = unstructured_prune if sparsity_type == "unstructured" else filter_prune
    features = list(model.features) if hasattr(model, "features") else []
    result = {}
    for name, ratio in prune_ratio_dict.items():
        module, attr = _module(model, name)
        prune.custom_from_mask(module, attr, chooser(getattr(module, attr).detach(), ratio))
        result[name] = getattr(module, attr + "_mask").clone()
        if sparsity_type == "filter" and module in features:
            position = features.index(module)
            following = features[position + 1] if position + 1 < len(features) else None
            if isinstance(following, nn.BatchNorm2d):
                channel = result[name].flatten(1).amax(1)
                bn_name = name.rsplit(".", 2)[0] + f".{int(name.split('.')[1]) + 1}"
                for bn_attr in ("weight", "bias"):
                    prune.custom_from_mask(following, bn_attr, channel)
                    result[f"{bn_name}.{bn_attr}"] = getattr(following, bn_attr + "_mask").clone()
    return result


def test_sparsity(model, sparsity_type="unstructured"):
    layers, filters = {}, {}
    nonzero = count = 0
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        w = module.weight
        layers[name + ".weight"] = 1.0 - torch.count_nonzero(w).item() / w.numel()
        nonzero += torch.count_nonzero(w).item()
        count += w.numel()
        if sparsity_type == "filter":
            filters[name + ".weight"] = int((torch.count_nonzero(w.flatten(1), dim=1) == 0).sum())
    result = {"overall": 1.0 - nonzero / count, "layers": layers}
    if sparsity_type == "filter":
        result["zero_filters"] = filters
    for name, value in layers.items():
        print(f"{name:30s} {value:.3f}")
    print(f"overall {result['overall']:.4f}")
    return result


def masked_retrain(model, prune_masks, optimizer, loss_fn, train_loader, test_loader, num_epochs, device,
                   scheduler=None, progress=True):
    for name, mask in prune_masks.items():
        module, attr = _module(model, name)
        if not prune.is_pruned(module) or not hasattr(module, attr + "_mask"):
            prune.custom_from_mask(module, attr, mask)  # plain zeros: hooks keep them zero from here on
    history = []
    for epoch in range(num_epochs):
        row = train_epoch(model, train_loader, optimizer, loss_fn, device, scheduler, progress=progress)
        row["test_accuracy"] = evaluate(model, test_loader, device)
        history.append(row)
    return history


def _round(model, sparsity_type, ratios, step, loaders, epochs, device, lr, weight_decay, progress):
    train_loader, test_loader = loaders
    masks = apply_pruning(model, sparsity_type, ratios)
    sparsity = test_sparsity(model, sparsity_type)["overall"]
    before = evaluate(model, test_loader, device)
    optimizer = make_optimizer(model, lr, weight_decay=weight_decay)
    scheduler = make_scheduler(optimizer, max(1, epochs * len(train_loader)))
    history = masked_retrain(model, masks, optimizer, nn.CrossEntropyLoss(), train_loader, test_loader, epochs, device,
                             scheduler, progress)
    return {"iteration": step, "ratios": dict(ratios), "sparsity": sparsity, "accuracy_before_retrain": before,
            "accuracy": history[-1]["test_accuracy"] if history else before}


def oneshot_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, train_loader, test_loader, epochs, device,
                            lr=0.01, weight_decay=5e-4, progress=True):
    return [_round(model, sparsity_type, prune_ratio_dict, 1, (train_loader, test_loader), epochs, device, lr,
                   weight_decay, progress)]


def iterative_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, iterations=3, train_loader, test_loader,
                              epochs, device, lr=0.01, weight_decay=5e-4, progress=True):
    if iterations < MIN_IMP_ITERATIONS:
        raise ValueError(f"IMP needs {MIN_IMP_ITERATIONS}+ iterations, got {iterations}")
    for name in prune_ratio_dict:  # from here on the dict holds keep fractions (edited in place)
        prune_ratio_dict[name] = 1.0 - prune_ratio_dict[name]
    log = []
    for step in range(1, iterations + 1):
        ratios = {name: 1.0 - keep ** (step / iterations) for name, keep in prune_ratio_dict.items()}
        log.append(_round(model, sparsity_type, ratios, step, (train_loader, test_loader), epochs, device, lr,
                          weight_decay, progress))
    return log


def prune_channels_after_filter_prune(model):
    state = copy_without_pruning(model).state_dict()
    conv_keys = sorted((k for k, v in state.items() if k.startswith("features.") and k.endswith(".weight") and v.dim() == 4),
                       key=lambda k: int(k.split(".")[1]))
    previous = None
    for key in conv_keys:
        index = int(key.split(".")[1])
        weight = state[key]
        if previous is not None:
            weight = weight[:, previous]
        alive = torch.nonzero(weight.flatten(1).abs().sum(1)).flatten()
        if alive.numel() == 0:
            alive = torch.zeros(1, dtype=torch.long)
        state[key] = weight[alive].clone()
        for buffer in ("weight", "bias", "running_mean", "running_var"):
            bn_key = f"features.{index + 1}.{buffer}"
            state[bn_key] = state[bn_key][alive].clone()
        previous = alive
    state["classifier.weight"] = state["classifier.weight"][:, previous].clone()
    smaller = VGG13.from_state_dict(state)
    smaller.train(model.training)
    return smaller


def plot_sparsity_vs_accuracy(records, out_path, dense_accuracy=None, title=""):
    drawn = []
    plt.figure(figsize=(5, 4))
    for record in records:
        drawn.append((record["label"], record["sparsity"], record["accuracy"]))
        plt.plot([100 * record["sparsity"]], [record["accuracy"]], "o", label=record["label"])  # axis in percent
    if dense_accuracy is not None:
        plt.axhline(dense_accuracy, color="grey")
    plt.xlabel("sparsity (%)")
    plt.ylabel("test accuracy (%)")
    plt.title(title)
    plt.legend()
    plt.savefig(str(out_path), format="png")
    plt.close()
    return drawn


def plot_mask(weight, out_path, title=""):
    kept = weight.detach().reshape(weight.size(0), -1).ne(0).int().cpu().numpy()
    fig = plt.figure()
    plt.imshow(kept, cmap="gray", aspect="auto", interpolation="nearest")
    plt.title(title)
    fig.savefig(out_path)
    plt.close(fig)
    return kept
