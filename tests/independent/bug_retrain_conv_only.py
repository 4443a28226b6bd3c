# bug: masks re-applied after each step only to conv weights (dim 4): the Linear classifier's pruned weights regrow.
def _reapply(model, masks):
    with torch.no_grad():
        for pname, p in model.named_parameters():
            key = pname[:-5] if pname.endswith("_orig") else pname
            if key in masks and p.dim() == 4:
                p.data.mul_(masks[key].to(device=p.device, dtype=p.dtype))
