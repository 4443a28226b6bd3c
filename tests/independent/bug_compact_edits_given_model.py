_compact_copy = prune_channels_after_filter_prune


def prune_channels_after_filter_prune(model):
    compact = _compact_copy(model)
    model.features = compact.features  # "update the model too": the caller's model is now the small one
    model.classifier = compact.classifier
    return compact
