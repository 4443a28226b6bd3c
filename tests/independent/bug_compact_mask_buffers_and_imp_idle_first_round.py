# two bugs: the compaction reads which filters live from the weight_mask buffers when masks are attached (a filter
# all zero under a mask of 1 is kept); IMP's schedule starts at 0 (ratio_t = target * (t - 1) / (T - 1)), so its
# first round prunes nothing
_slim_by_weights, _compact_by_weights = _slim_conv, prune_channels_after_filter_prune
_from_masks = {"live": {}, "calls": 0}


def prune_channels_after_filter_prune(model):
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    _from_masks["live"] = {k: [j for j in range(len(c.weight_mask)) if bool(c.weight_mask[j].any())] or [0]
                           for k, c in enumerate(convs) if hasattr(c, "weight_mask")}  # BUG: masks, not weights
    _from_masks["calls"] = 0
    return _compact_by_weights(model)


def _slim_conv(layer, carried):
    k = _from_masks["calls"]
    _from_masks["calls"] += 1
    if k not in _from_masks["live"]:
        return _slim_by_weights(layer, carried)
    w = layer.weight.data if carried is None else layer.weight.data[:, carried]
    live = _from_masks["live"][k]
    conv = nn.Conv2d(w.shape[1], len(live), layer.kernel_size, layer.stride, layer.padding, bias=False)
    conv.weight.data = w[live].clone()
    return conv, live


def iterative_magnitude_prune(model, sparsity_type, prune_ratio_dict, *, iterations=3, train_loader, test_loader,
                              epochs, device, lr=0.01, weight_decay=5e-4, progress=True):
    if iterations < MIN_IMP_ITERATIONS:
        raise ValueError("iterative pruning needs at least 3 iterations")
    schedule = {n: np.linspace(0.0, t, iterations) for n, t in prune_ratio_dict.items()}  # BUG: round 1 at 0
    return [_one_round(model, sparsity_type, {n: float(s[i]) for n, s in schedule.items()}, i + 1, train_loader,
                       test_loader, epochs, device, lr, weight_decay) for i in range(iterations)]
