# two bugs: the YAML reader calls .get on whatever the file holds (an empty file or a top-level list raises
# AttributeError, not ValueError); masked_retrain puts the BatchNorm layers back in eval mode after model.train(), so
# their statistics stay frozen while the rest trains
_trains_bn = masked_retrain


def _table(parsed, file_name):
    table = parsed.get("prune_ratios")  # BUG: parsed may be None, a list or a string
    if not isinstance(table, dict):
        raise ValueError(f"{file_name}: expected a 'prune_ratios' mapping")
    return table


def masked_retrain(model, prune_masks, optimizer, loss_fn, train_loader, test_loader, num_epochs, device,
                   scheduler=None, progress=True):
    def freeze_batchnorm(module, inputs):
        if module.training:
            for layer in module.modules():
                if isinstance(layer, nn.BatchNorm2d):
                    layer.eval()  # BUG: "keep the dense statistics"; the contract trains in training mode

    handle = model.register_forward_pre_hook(freeze_batchnorm)
    try:
        return _trains_bn(model, prune_masks, optimizer, loss_fn, train_loader, test_loader, num_epochs, device,
                          scheduler, progress)
    finally:
        handle.remove()
