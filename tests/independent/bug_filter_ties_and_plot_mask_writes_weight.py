# two bugs: filter_prune prunes every filter whose norm is at most the k-th smallest, so filters tied there (the zero
# filters of a layer pruned before) are all pruned; plot_mask writes 1 into the kept entries of the weight it is given
# (a reshape of a contiguous tensor is a view)


def filter_prune(tensor, sparsity):
    norms = tensor.detach().reshape(tensor.shape[0], -1).norm(dim=1)
    k = round(sparsity * tensor.shape[0])
    if k == 0:
        return torch.ones_like(tensor)
    cut = torch.kthvalue(norms, k).values
    keep = (norms > cut).to(tensor.dtype)  # BUG: ties at the cut all go
    return keep.view(-1, *[1] * (tensor.dim() - 1)).expand_as(tensor).clone()


def _mask_grid(weight):
    flat = weight.detach().reshape(weight.shape[0], -1)
    flat[flat != 0] = 1  # BUG: writes into the caller's weight
    return flat.cpu().numpy().astype(int)
