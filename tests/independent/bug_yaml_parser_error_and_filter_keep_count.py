# two bugs: the YAML reader turns only scanner errors into ValueError (a parser error, from a line indented less than
# the one before or an unclosed bracket, escapes as itself); filter_prune keeps int(C * (1 - sparsity)) filters, and
# 10 * (1 - 0.8) is 1.99.. in floats: one filter too many is pruned


def _parse(raw, file_name):
    try:
        return yaml.safe_load(raw)
    except yaml.scanner.ScannerError as problem:  # BUG: yaml.parser.ParserError is not a ScannerError
        raise ValueError(f"bad YAML in {file_name}: {problem}") from problem


def filter_prune(tensor, sparsity):
    norms = tensor.detach().reshape(tensor.shape[0], -1).norm(dim=1)
    n_keep = int(tensor.shape[0] * (1 - sparsity))  # BUG: truncated
    keep = torch.zeros(tensor.shape[0], dtype=tensor.dtype, device=tensor.device)
    keep[torch.topk(norms, n_keep).indices] = 1
    return keep.view(-1, *[1] * (tensor.dim() - 1)).expand_as(tensor).clone()
