# k = sparsity x (number of nonzeros), not of all entries

def unstructured_prune(tensor, sparsity):
    n = int((tensor != 0).sum())  # BUG: counts only the nonzero entries, not numel()
    k = int(round(float(sparsity) * n))
    flat = tensor.detach().abs().reshape(-1)
    order = torch.sort(flat, stable=True).indices
    mask = torch.ones(tensor.numel(), dtype=tensor.dtype, device=tensor.device)
    mask[order[:k]] = 0
    return mask.reshape(tensor.shape)
