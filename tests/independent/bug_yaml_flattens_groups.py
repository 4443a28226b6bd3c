# bug: a mapping nested under prune_ratios is flattened, so `group: {features.0.weight: 0.5}` is accepted.
_read_exact = read_prune_ratios_from_yaml


def read_prune_ratios_from_yaml(file_name, model):
    path = Path(file_name)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: malformed YAML: {exc}") from None
    ratios = data.get("prune_ratios") if isinstance(data, dict) else None
    if isinstance(ratios, dict) and any(isinstance(v, dict) for v in ratios.values()):
        valid = list(hw2_models.prunable_weights(model))
        out = {}

        def walk(d):
            for k, v in d.items():
                if isinstance(v, dict):
                    walk(v)
                    continue
                if k not in valid or k in out or not _is_ratio(v):
                    raise ValueError(f"{path}: bad entry {k!r}: {v!r}; valid names: {', '.join(valid)}")
                out[k] = float(v)
        walk(ratios)
        return out
    return _read_exact(file_name, model)
