# bug: looks for prune_ratios at any depth, so `hw2: {prune_ratios: {...}}` (no top-level key) is accepted.
_read_exact = read_prune_ratios_from_yaml


def read_prune_ratios_from_yaml(file_name, model):
    try:
        data = yaml.load(Path(file_name).read_text(), Loader=_DupCheckLoader)
    except yaml.YAMLError:
        return _read_exact(file_name, model)
    if isinstance(data, dict) and "prune_ratios" not in data:
        for v in data.values():
            if isinstance(v, dict) and "prune_ratios" in v:
                import tempfile
                with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
                    yaml.safe_dump({"prune_ratios": v["prune_ratios"]}, f, sort_keys=False)
                return _read_exact(f.name, model)
    return _read_exact(file_name, model)
