# bug: a conv that lost no filter is kept as it is ("nothing to remove"), so its input channels are not cut when the
# conv before it lost filters: the compact model fails on its first forward pass.
_slim_every_conv = _slim_conv


def _slim_conv(layer, carried):
    live = [j for j in range(layer.weight.shape[0]) if bool(layer.weight.data[j].any())]
    if len(live) == layer.weight.shape[0]:
        return layer, live  # BUG: the input channels of this conv still need cutting
    return _slim_every_conv(layer, carried)
