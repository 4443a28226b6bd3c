# two bugs: a ratio is range-checked without checking it is a number, so a layer with no ratio (null) raises
# TypeError, not ValueError; test_sparsity's zero-filter counts are 0-d tensors, not ints


def _ratio(layer, value):
    if isinstance(value, (bool, str)) or not 0 <= value < 1:  # BUG: None (and lists) raise TypeError here
        raise ValueError(f"{layer}: ratio {value!r} not in [0, 1)")
    return float(value)


def _zero_filters(weight):
    return (weight.detach().reshape(len(weight), -1) == 0).all(1).sum()  # BUG: a 0-d tensor, not an int
