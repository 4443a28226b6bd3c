# L1Unstructured.compute_mask views the tensor: raises on channels_last weights

def unstructured_prune(tensor: torch.Tensor, sparsity: float) -> torch.Tensor:
    return prune.L1Unstructured(sparsity).compute_mask(tensor.detach(), torch.ones_like(tensor))


def filter_prune(tensor: torch.Tensor, sparsity: float) -> torch.Tensor:
    return prune.LnStructured(sparsity, n=2, dim=0).compute_mask(tensor.detach(), torch.ones_like(tensor))
