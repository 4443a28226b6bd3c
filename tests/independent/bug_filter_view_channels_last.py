# bug: .view(C_out, -1) raises on channels_last weights (the layout of bf16 training).
@torch.no_grad()
def filter_prune(tensor, sparsity):
    rows = tensor.view(tensor.shape[0], -1).to(torch.float32)
    norms = rows.pow(2).sum(dim=1).sqrt()
    keep = _smallest_k_mask(norms, round(sparsity * tensor.shape[0]))
    return (keep.reshape((-1,) + (1,) * (tensor.dim() - 1)) * torch.ones(tensor.shape)).to(tensor.dtype)
