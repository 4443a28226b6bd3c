# bug: test_sparsity returns values rounded to 4 decimals (as printed).
_test_sparsity_exact = test_sparsity


def test_sparsity(model, sparsity_type="unstructured"):
    out = _test_sparsity_exact(model, sparsity_type)
    out["overall"] = round(out["overall"], 4)
    out["layers"] = {k: round(v, 4) for k, v in out["layers"].items()}
    return out
