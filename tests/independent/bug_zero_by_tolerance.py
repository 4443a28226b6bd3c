# bug: "zero" is taken to mean "below a small tolerance" everywhere: the mask figure shows weights under float32's eps
# as pruned, test_sparsity counts a filter of tiny weights as an all-zero filter, and the compaction removes filters
# whose largest weight is below 1e-4


def _mask_grid(weight):
    return (weight.detach().abs().cpu().numpy().reshape(weight.shape[0], -1) > np.finfo(np.float32).eps).astype(int)  # BUG


def _zero_filters(weight):
    return int((weight.detach().reshape(len(weight), -1).norm(dim=1) < 1e-6).sum())  # BUG


def _slim_conv(layer, carried):
    w = layer.weight.data if carried is None else layer.weight.data[:, carried]
    live = [j for j in range(w.shape[0]) if float(w[j].abs().max()) > 1e-4] or [0]  # BUG: tiny filters dropped
    conv = nn.Conv2d(w.shape[1], len(live), layer.kernel_size, layer.stride, layer.padding, bias=False)
    conv.weight.data = w[live].clone()
    return conv, live
