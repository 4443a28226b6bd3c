# 2-D weights pruned by columns (inputs), not rows

def filter_prune(tensor, sparsity):
    if tensor.dim() == 2:
        t = tensor.detach().t()
        n = t.shape[0]
        count = int(round(sparsity * n))
        norms = t.double().pow(2).sum(1).sqrt()
        order = torch.sort(norms, stable=True).indices
        cols = torch.ones(n, dtype=tensor.dtype, device=tensor.device)
        cols[order[:count]] = 0
        return cols.view(1, -1).expand_as(tensor).clone()
    c_out = tensor.shape[0]
    count = int(round(sparsity * c_out))
    norms = tensor.detach().reshape(c_out, -1).double().pow(2).sum(1).sqrt()
    order = torch.sort(norms, stable=True).indices
    rows = torch.ones(c_out, dtype=tensor.dtype, device=tensor.device)
    rows[order[:count]] = 0
    return rows.view(-1, *([1] * (tensor.dim() - 1))).expand_as(tensor).clone()
