# bug: filter pruning masks the BatchNorm *before* the conv (index - 1), the previous layer's BN.
def _bn_after(model, conv_module_name):
    mods = list(model.named_modules())
    for i, (n, _) in enumerate(mods):
        if n == conv_module_name:
            for n2, m2 in reversed(mods[:i]):
                if isinstance(m2, nn.BatchNorm2d) and m2.num_features == model.get_submodule(n).out_channels:
                    return n2
            return None
    return None
