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

import copy
import math


# ----- solution J: the "state_dict student" -----------------------------------------------------

class _DupCheckLoader(yaml.SafeLoader):
    pass


def _construct_mapping_nodup(loader, node, deep=False):
    loader.flatten_mapping(node)
    seen = {}
    for key_node, _value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ValueError(f"line {key_node.start_mark.line + 1}: {key!r} is given twice "
                             f"(first on line {seen[key] + 1})")
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_DupCheckLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping_nodup)


def read_prune_ratios_from_yaml(file_name, model):
    text = Path(file_name).read_text()
    try:
        data = yaml.load(text, Loader=_DupCheckLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "unknown line"
        raise ValueError(f"{file_name}: malformed YAML at {where}: {exc}") from None
    if not isinstance(data, dict) or "prune_ratios" not in data or not isinstance(data["prune_ratios"], dict):
        raise ValueError(f"{file_name}: expected a top-level mapping 'prune_ratios: {{name: ratio}}'")
    valid = list(prunable_weights(model).keys())
    out = {}
    for name, ratio in data["prune_ratios"].items():
        if name not in valid:
            raise ValueError(f"{file_name}: {name!r} is not a Conv2d/Linear weight of the model; valid names: "
                             + ", ".join(valid))
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
            raise ValueError(f"{file_name}: ratio of {name} must be a number in [0, 1), got {ratio!r}")
        if not (0.0 <= float(ratio) < 1.0):
            raise ValueError(f"{file_name}: ratio of {name} must be in [0, 1), got {ratio!r}")
        out[name] = float(ratio)
    return out


def unstructured_prune(tensor, sparsity):
    flat = tensor.detach().abs().reshape(-1)
    n = flat.numel()
    n_prune = int(round(sparsity * n))
    n_keep = n - n_prune
    _, order = torch.sort(flat, descending=True)
    keep = torch.zeros(n, dtype=torch.bool, device=tensor.device)
    keep[order[:n_keep]] = True
    return keep.reshape(tensor.shape)


def filter_prune(tensor, sparsity):
    c_out = tensor.shape[0]
    norms = tensor.detach().float().reshape(c_out, -1).norm(dim=1)
    n_prune = int(round(sparsity * c_out))
    _, order = torch.sort(norms, descending=True)
    keep_rows = torch.zeros(c_out, dtype=torch.bool, device=tensor.device)
    keep_rows[order[:c_out - n_prune]] = True
    view_shape = (c_out,) + (1,) * (tensor.dim() - 1)
    return keep_rows.reshape(view_shape).expand(tensor.shape).clone()


def _sd_weight(sd, name):
    """The effective value of parameter ``name`` in a state_dict (torch.nn.utils.prune stores _orig/_mask)."""
    if name in sd:
        return sd[name], name
    if name + "_orig" in sd:
        return sd[name + "_orig"] * sd[name + "_mask"], name + "_orig"
    raise KeyError(name)


def _bn_after(model, conv_module_name):
    mods = list(model.named_modules())
    for i, (n, _) in enumerate(mods):
        if n == conv_module_name:
            for n2, m2 in mods[i + 1:]:
                if isinstance(m2, (nn.Conv2d, nn.Linear)):
                    return None
                if isinstance(m2, nn.BatchNorm2d):
                    return n2
            return None
    return None


def apply_pruning(model, sparsity_type, prune_ratio_dict):
    if sparsity_type not in SPARSITY_TYPES:
        raise ValueError(f"unknown sparsity type {sparsity_type!r}; use one of {SPARSITY_TYPES}")
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    masks = {}
    new_sd = {}
    for name, ratio in prune_ratio_dict.items():
        w, key = _sd_weight(sd, name)
        if sparsity_type == "unstructured":
            m = unstructured_prune(w, ratio)
        else:
            m = filter_prune(w, ratio)
        m = m.to(w.dtype)
        masks[name] = m
        new_sd[key] = sd[key] * m
        if sparsity_type == "filter" and w.dim() == 4:
            bn = _bn_after(model, name.rsplit(".", 1)[0])
            if bn is not None:
                rows = m.reshape(m.shape[0], -1)[:, 0]
                for part in ("weight", "bias"):
                    bw, bkey = _sd_weight(sd, f"{bn}.{part}")
                    bm = rows.to(bw.dtype)
                    masks[f"{bn}.{part}"] = bm
                    new_sd[bkey] = sd[bkey] * bm
    sd.update(new_sd)
    model.load_state_dict(sd)
    stored = dict(getattr(model, "_hw2_masks", {}))
    stored.update(masks)
    model._hw2_masks = stored
    return masks


def test_sparsity(model, sparsity_type="unstructured"):
    layers, zero_filters = {}, {}
    total_zero, total = 0, 0
    rows = []
    for mname, module in model.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        name = f"{mname}.weight"
        w = module.weight.detach()
        z = int((w == 0).sum().item())
        n = w.numel()
        total_zero += z
        total += n
        layers[name] = z / n
        row = f"{name:28s} {z:10d} {n:10d} {z / n:8.4f}"
        if sparsity_type == "filter":
            zf = int((w.reshape(w.shape[0], -1) == 0).all(dim=1).sum().item())
            zero_filters[name] = zf
            row += f" {zf:5d}/{w.shape[0]}"
        rows.append(row)
    print(f"{'layer':28s} {'zeros':>10s} {'total':>10s} {'sparsity':>8s}")
    print("\n".join(rows))
    overall = total_zero / max(total, 1)
    print(f"overall sparsity: {overall:.4f}")
    out = {"overall": overall, "layers": layers}
    if sparsity_type == "filter":
        out["zero_filters"] = zero_filters
    return out


def _reapply(model, masks):
    with torch.no_grad():
        for pname, p in model.named_parameters():
            key = pname[:-5] if pname.endswith("_orig") else pname
            if key in masks:
                p.data.mul_(masks[key].to(device=p.device, dtype=p.dtype))


def masked_retrain(model, prune_masks, optimizer, loss_fn, train_loader, test_loader, num_epochs, device,
                   scheduler=None, progress=True):
    masks = {k: v.detach().to(device) for k, v in prune_masks.items()}
    model._hw2_masks = dict(masks)
    _reapply(model, masks)
    steps_per_epoch = len(train_loader)
    total_steps = max(1, num_epochs * steps_per_epoch)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    history = []
    global_step = 0
    for epoch in range(num_epochs):
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        for i, (images, labels) in enumerate(train_loader):
            images, labels = images.to(device), labels.to(device)
            if scheduler is None:  # my own cosine schedule
                factor = 0.5 * (1 + math.cos(math.pi * global_step / total_steps))
                for g, base in zip(optimizer.param_groups, base_lrs):
                    g["lr"] = base * factor
            optimizer.zero_grad()
            out = model(images)
            loss = loss_fn(out, labels)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            _reapply(model, masks)
            global_step += 1
            loss_sum += loss.item() * labels.shape[0]
            correct += (out.argmax(1) == labels).sum().item()
            seen += labels.shape[0]
        test_acc = evaluate(model, test_loader, device)
        entry = {"loss": loss_sum / max(seen, 1), "accuracy": 100.0 * correct / max(seen, 1), "test_accuracy": test_acc}
        history.append(entry)
        if progress:
            print(f"epoch {epoch + 1}/{num_epochs}: {entry}")
    if scheduler is None:
        for g, base in zip(optimizer.param_groups, base_lrs):
            g["lr"] = base
    return history


def oneshot_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, train_loader, test_loader, epochs, device,
                            lr=0.01, weight_decay=5e-4, progress=True):
    masks = apply_pruning(model, sparsity_type, prune_ratio_dict)
    sparsity = test_sparsity(model, sparsity_type)["overall"]
    acc_before = evaluate(model, test_loader, device)
    optimizer = make_optimizer(model, lr, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)
    masked_retrain(model, masks, optimizer, loss_fn, train_loader, test_loader, epochs, device, None, progress)
    acc = evaluate(model, test_loader, device)
    return [{"iteration": 1, "ratios": dict(prune_ratio_dict), "sparsity": sparsity,
             "accuracy_before_retrain": acc_before, "accuracy": acc}]


def _j_schedule(target, t, iterations):
    # the same fraction of what is left is removed each round: keep_t = exp(t/T * log(1 - target))
    if target <= 0:
        return 0.0
    return 1.0 - math.exp(t / iterations * math.log1p(-target))


def iterative_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, iterations=3, train_loader, test_loader,
                              epochs, device, lr=0.01, weight_decay=5e-4, progress=True):
    if iterations < MIN_IMP_ITERATIONS:
        raise ValueError(f"IMP needs at least {MIN_IMP_ITERATIONS} iterations, got {iterations}")
    log = []
    loss_fn = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)
    for t in range(1, iterations + 1):
        if t == iterations:
            ratios = dict(prune_ratio_dict)
        else:
            ratios = {k: _j_schedule(v, t, iterations) for k, v in prune_ratio_dict.items()}
        masks = apply_pruning(model, sparsity_type, ratios)
        sparsity = test_sparsity(model, sparsity_type)["overall"]
        acc_before = evaluate(model, test_loader, device)
        optimizer = make_optimizer(model, lr, weight_decay=weight_decay)
        masked_retrain(model, masks, optimizer, loss_fn, train_loader, test_loader, epochs, device, None, progress)
        log.append({"iteration": t, "ratios": ratios, "sparsity": sparsity,
                    "accuracy_before_retrain": acc_before, "accuracy": evaluate(model, test_loader, device)})
    return log


def prune_channels_after_filter_prune(model):
    has_hooks = any(isinstance(h, prune.BasePruningMethod)
                    for m in model.modules() for h in m._forward_pre_hooks.values())
    new = copy_without_pruning(model) if has_hooks else copy.deepcopy(model)
    if hasattr(new, "_hw2_masks"):
        del new._hw2_masks
    feats = new.features
    prev_keep = None
    i = 0
    children = list(feats.children())
    while i < len(children):
        conv = children[i]
        if isinstance(conv, nn.Conv2d):
            w = conv.weight.detach()
            keep = (w.reshape(w.shape[0], -1) != 0).any(dim=1).nonzero().flatten()
            in_idx = prev_keep if prev_keep is not None else torch.arange(w.shape[1], device=w.device)
            new_conv = nn.Conv2d(len(in_idx), len(keep), conv.kernel_size, conv.stride, conv.padding,
                                 conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode).to(w.device, w.dtype)
            with torch.no_grad():
                new_conv.weight.copy_(w[keep][:, in_idx])
                if conv.bias is not None:
                    new_conv.bias.copy_(conv.bias.detach()[keep])
            feats[i] = new_conv
            if i + 1 < len(children) and isinstance(children[i + 1], nn.BatchNorm2d):
                bn = children[i + 1]
                new_bn = nn.BatchNorm2d(len(keep), eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                                        track_running_stats=bn.track_running_stats).to(w.device, w.dtype)
                with torch.no_grad():
                    if bn.affine:
                        new_bn.weight.copy_(bn.weight.detach()[keep])
                        new_bn.bias.copy_(bn.bias.detach()[keep])
                    if bn.track_running_stats:
                        new_bn.running_mean.copy_(bn.running_mean[keep])
                        new_bn.running_var.copy_(bn.running_var[keep])
                        new_bn.num_batches_tracked.copy_(bn.num_batches_tracked)
                feats[i + 1] = new_bn
            prev_keep = keep
        i += 1
    fc = new.classifier
    per_channel = fc.in_features // len(children[[j for j, c in enumerate(children) if isinstance(c, nn.Conv2d)][-1]].weight) \
        if prev_keep is not None else 1
    if prev_keep is not None:
        idx = (prev_keep[:, None] * per_channel + torch.arange(per_channel, device=prev_keep.device)).flatten()
        new_fc = nn.Linear(len(idx), fc.out_features, bias=fc.bias is not None).to(fc.weight.device, fc.weight.dtype)
        with torch.no_grad():
            new_fc.weight.copy_(fc.weight.detach()[:, idx])
            if fc.bias is not None:
                new_fc.bias.copy_(fc.bias.detach())
        new.classifier = new_fc
    return new


def plot_sparsity_vs_accuracy(records, out_path, dense_accuracy=None, title="VGG13 on CIFAR-10: accuracy vs sparsity"):
    points = [(r["label"], float(r["sparsity"]), float(r["accuracy"])) for r in records]
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, s, a in points:
        ax.scatter([s], [a], label=label)
    if dense_accuracy is not None:
        ax.axhline(dense_accuracy, color="k", linestyle="--", label="dense")
    ax.set_xlabel("overall sparsity")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.legend()
    fig.savefig(out_path, dpi=FIGURE_DPI)
    plt.close(fig)
    return points


def plot_mask(weight, out_path, title=""):
    w = weight.detach().cpu()
    img = (w.reshape(w.shape[0], -1) != 0).numpy().astype(np.uint8)
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.imshow(img, cmap=ListedColormap(list(MASK_COLOURS)), vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    ax.set_xlabel("C_in * kH * kW")
    ax.set_ylabel("filter")
    ax.set_title(title)
    fig.savefig(out_path, dpi=FIGURE_DPI)
    plt.close(fig)
    return img
