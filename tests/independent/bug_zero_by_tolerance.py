# bug: "zero" is taken to mean "below a small tolerance" everywhere: the mask figure shows weights under float32's eps
# as pruned, test_sparsity counts a filter of tiny weights as an all-zero filter, and the compaction removes filters
# whose largest weight is below 1e-4


def plot_mask(weight, out_path, title=""):
    grid = (weight.detach().abs().cpu().numpy().reshape(weight.shape[0], -1) > np.finfo(np.float32).eps).astype(int)  # BUG
    fig, ax = plt.subplots()
    ax.matshow(grid, cmap="binary")
    ax.set_title(title)
    fig.savefig(out_path)
    plt.close(fig)
    return grid


def test_sparsity(model, sparsity_type="unstructured"):
    weights = prunable_weights(model)
    layers = {n: float((w == 0).float().mean()) for n, w in weights.items()}
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    report = {"overall": zeros / sum(w.numel() for w in weights.values()), "layers": layers}
    if sparsity_type == "filter":
        report["zero_filters"] = {n: int((w.detach().reshape(len(w), -1).norm(dim=1) < 1e-6).sum())  # BUG
                                  for n, w in weights.items()}
    return report


def _slim_conv(layer, carried):
    w = layer.weight.data if carried is None else layer.weight.data[:, carried]
    live = [j for j in range(w.shape[0]) if float(w[j].abs().max()) > 1e-4] or [0]  # BUG: tiny filters dropped
    conv = nn.Conv2d(w.shape[1], len(live), layer.kernel_size, layer.stride, layer.padding, bias=False)
    conv.weight.data = w[live].clone()
    return conv, live
