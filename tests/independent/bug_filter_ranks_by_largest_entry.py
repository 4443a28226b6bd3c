def filter_prune(tensor, sparsity):
    filters = tensor.shape[0]
    peaks = tensor.detach().reshape(filters, -1).abs().amax(1).cpu()  # a filter's largest |w| as its size
    pruned = _lowest(peaks, int(sparsity * filters + 0.5))
    keep = (~pruned).to(tensor.dtype).to(tensor.device)
    return keep.reshape(-1, *[1] * (tensor.dim() - 1)) * torch.ones_like(tensor)
