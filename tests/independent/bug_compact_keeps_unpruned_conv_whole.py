# bug: a conv that lost no filter is kept as it is ("nothing to remove"), so its input channels are not cut when the
# conv before it lost filters: the compact model fails on its first forward pass.
def prune_channels_after_filter_prune(model):
    new = copy_without_pruning(model)
    items = list(new.features)
    carried = None
    for i, layer in enumerate(items):
        if isinstance(layer, nn.Conv2d):
            live = [j for j in range(layer.weight.shape[0]) if bool(layer.weight.data[j].any())] or [0]
            if len(live) == layer.weight.shape[0]:
                carried = live  # BUG: the input channels of this conv still need cutting
                continue
            w = layer.weight.data if carried is None else layer.weight.data[:, carried]
            conv = nn.Conv2d(w.shape[1], len(live), layer.kernel_size, layer.stride, layer.padding, bias=False)
            conv.weight.data = w[live].clone()
            items[i] = conv
            carried = live
        elif isinstance(layer, nn.BatchNorm2d):
            bn = copy.deepcopy(layer)
            bn.num_features = len(carried)
            bn.weight = nn.Parameter(layer.weight.data[carried].clone())
            bn.bias = nn.Parameter(layer.bias.data[carried].clone())
            bn.running_mean = layer.running_mean[carried].clone()
            bn.running_var = layer.running_var[carried].clone()
            items[i] = bn
    new.features = nn.Sequential(*items)
    fc = nn.Linear(len(carried), new.classifier.out_features)
    fc.weight.data = new.classifier.weight.data[:, carried].clone()
    fc.bias.data = new.classifier.bias.data.clone()
    new.classifier = fc
    return new
