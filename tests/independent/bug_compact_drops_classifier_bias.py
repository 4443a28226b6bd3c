# bug: the compact classifier is built with bias=False.
_compact_exact = prune_channels_after_filter_prune


def prune_channels_after_filter_prune(model):
    new = _compact_exact(model)
    fc = new.classifier
    new_fc = nn.Linear(fc.in_features, fc.out_features, bias=False).to(fc.weight.device)
    with torch.no_grad():
        new_fc.weight.copy_(fc.weight)
    new.classifier = new_fc
    return new
