# bug: `features.3.weight: false` / `no` (YAML booleans) accepted as ratio 0 (bool is an int subclass).
_read_exact = read_prune_ratios_from_yaml


def read_prune_ratios_from_yaml(file_name, model):
    text = Path(file_name).read_text()
    try:
        data = yaml.load(text, Loader=_DupCheckLoader)
        ratios = data["prune_ratios"]
        fixed = {k: (float(v) if isinstance(v, bool) else v) for k, v in ratios.items()}
    except Exception:
        return _read_exact(file_name, model)
    import tempfile
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump({"prune_ratios": fixed}, f, sort_keys=False)
    return _read_exact(f.name, model)
