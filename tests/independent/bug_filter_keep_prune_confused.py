# ln_structured's amount given as the kept fraction

def filter_prune(tensor: torch.Tensor, sparsity: float) -> torch.Tensor:
    return prune.LnStructured(1 - sparsity, n=2, dim=0).compute_mask(tensor.detach(), torch.ones_like(tensor))
