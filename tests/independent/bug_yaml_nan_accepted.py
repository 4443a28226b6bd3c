# bug: the range check `v < 0 or v >= 1` lets .nan through (every comparison with NaN is False).
def _is_ratio(value) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if value < 0 or value >= 1:
        return False
    return True
