# the compact BatchNorms get running_var 1

def prune_channels_after_filter_prune(model):
    new = _compact_ok(model)
    for m in new.features:
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_var.fill_(1.0)  # BUG: fresh BatchNorm's running_var left at its default
    return new


_compact_ok = prune_channels_after_filter_prune
