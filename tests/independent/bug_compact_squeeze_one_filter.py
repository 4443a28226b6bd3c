# nonzero().squeeze() breaks when a conv keeps one filter

def prune_channels_after_filter_prune(model: nn.Module) -> nn.Module:
    if not (hasattr(model, "features") and hasattr(model, "classifier")):
        raise ValueError("prune_channels_after_filter_prune needs a VGG-style model with .features and .classifier")
    new = copy_without_pruning(model)
    features = new.features
    keep_in = None  # indices of the input channels kept for the next layer
    last_conv_out = None
    with torch.no_grad():
        for idx, module in enumerate(list(features)):
            if isinstance(module, nn.Conv2d):
                if module.groups != 1:
                    raise ValueError("grouped convolutions are not supported")
                w = module.weight.detach()
                keep = (w.reshape(w.shape[0], -1) != 0).any(dim=1).nonzero().squeeze()
                if keep.numel() == 0:  # every filter pruned: PyTorch cannot run a 0-channel conv; keep one zero filter
                    keep = torch.zeros(1, dtype=torch.long, device=w.device)
                w_new = w[keep]
                if keep_in is not None:
                    w_new = w_new[:, keep_in]
                conv = nn.Conv2d(w_new.shape[1], w_new.shape[0], module.kernel_size, stride=module.stride,
                                 padding=module.padding, dilation=module.dilation, bias=module.bias is not None,
                                 padding_mode=module.padding_mode).to(device=w.device, dtype=w.dtype)
                conv.weight.copy_(w_new)
                if module.bias is not None:
                    conv.bias.copy_(module.bias.detach()[keep])
                features[idx] = conv
                keep_in = keep
                last_conv_out = w.shape[0]
            elif isinstance(module, nn.BatchNorm2d) and keep_in is not None and module.num_features == last_conv_out:
                bn = nn.BatchNorm2d(len(keep_in), eps=module.eps, momentum=module.momentum, affine=module.affine,
                                    track_running_stats=module.track_running_stats)
                ref = module.running_mean if module.running_mean is not None else module.weight
                bn = bn.to(device=ref.device, dtype=ref.dtype)
                if module.affine:
                    bn.weight.copy_(module.weight.detach()[keep_in])
                    bn.bias.copy_(module.bias.detach()[keep_in])
                if module.track_running_stats:
                    bn.running_mean.copy_(module.running_mean[keep_in])
                    bn.running_var.copy_(module.running_var[keep_in])
                    bn.num_batches_tracked.copy_(module.num_batches_tracked)
                features[idx] = bn
        if keep_in is not None:
            holder, attr_name = new, "classifier"
            linear = new.classifier
            if isinstance(linear, nn.Sequential):
                first = next((i for i, m in enumerate(linear) if isinstance(m, nn.Linear)), None)
                if first is None:
                    raise ValueError("the classifier has no Linear layer")
                holder, attr_name, linear = linear, str(first), linear[first]
            if not isinstance(linear, nn.Linear):
                raise ValueError("the classifier must be a Linear layer (or a Sequential starting with one)")
            if linear.in_features % last_conv_out:
                raise ValueError(f"classifier in_features {linear.in_features} is not a multiple of {last_conv_out} channels")
            spatial = linear.in_features // last_conv_out
            cols = (keep_in.reshape(-1, 1) * spatial + torch.arange(spatial, device=keep_in.device)).flatten()
            w = linear.weight.detach()
            fc = nn.Linear(len(cols), linear.out_features, bias=linear.bias is not None).to(device=w.device, dtype=w.dtype)
            fc.weight.copy_(w[:, cols])
            if linear.bias is not None:
                fc.bias.copy_(linear.bias.detach())
            if isinstance(holder, nn.Sequential):
                holder[int(attr_name)] = fc
            else:
                setattr(holder, attr_name, fc)
    new.train(model.training)
    return new
