def unstructured_prune(tensor, sparsity):
    scores = tensor.detach().reshape(-1)
    scores.abs_()  # detach() shares storage: this takes the absolute value of the caller's tensor
    n_keep = scores.numel() - round(sparsity * scores.numel())
    mask = torch.zeros_like(scores)
    mask[torch.sort(scores, descending=True, stable=True).indices[:n_keep]] = 1
    return mask.view(tensor.shape)
