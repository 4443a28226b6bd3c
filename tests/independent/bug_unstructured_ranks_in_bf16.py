# bug: magnitudes ranked in bfloat16 "to save memory": close magnitudes round together and are ordered arbitrarily.
def unstructured_prune(tensor, sparsity):
    flat = tensor.detach().abs().to(torch.bfloat16).reshape(-1)
    n = flat.numel()
    n_keep = n - int(round(sparsity * n))
    _, order = torch.sort(flat, descending=True)
    keep = torch.zeros(n, dtype=torch.bool, device=tensor.device)
    keep[order[:n_keep]] = True
    return keep.reshape(tensor.shape)
