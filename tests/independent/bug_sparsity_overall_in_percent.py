# 'overall' in percent

def test_sparsity(model, sparsity_type="unstructured"):
    out = _test_sparsity_fraction(model, sparsity_type)
    out["overall"] = 100.0 * out["overall"]  # BUG: overall reported in percent, layers as fractions
    return out


_test_sparsity_fraction = test_sparsity
