# bug: nested keys under prune_ratios are joined into dotted names (features: {0.weight: 0.5} read as
# features.0.weight) instead of being refused: layer names are flat keys.
_read_exact = read_prune_ratios_from_yaml


def _joined(mapping, prefix=""):
    for key, value in mapping.items():
        if isinstance(value, dict):
            yield from _joined(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def read_prune_ratios_from_yaml(file_name, model):
    try:
        data = yaml.safe_load(Path(file_name).read_text())
        ratios = data["prune_ratios"]
        nested = isinstance(ratios, dict) and any(isinstance(v, dict) for v in ratios.values())
    except Exception:
        nested = False
    if not nested:
        return _read_exact(file_name, model)
    import tempfile
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump({"prune_ratios": dict(_joined(ratios))}, f, sort_keys=False)
    return _read_exact(f.name, model)
