# a quoted "0.5" is converted to 0.5 instead of rejected

def read_prune_ratios_from_yaml(file_name, model):
    text = Path(file_name).read_text()
    try:
        data = yaml.load(text, Loader=_NoDupLoader)
    except yaml.YAMLError:
        return _read_strict(file_name, model)
    if isinstance(data, dict) and isinstance(data.get("prune_ratios"), dict):
        for name, ratio in list(data["prune_ratios"].items()):
            if isinstance(ratio, str):
                try:  # BUG: a quoted "0.5" is turned into a number instead of being rejected
                    data["prune_ratios"][name] = float(ratio)
                except ValueError:
                    pass
        import tempfile
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            yaml.safe_dump(data, f, sort_keys=False)
        return _read_strict(f.name, model)
    return _read_strict(file_name, model)


_read_strict = read_prune_ratios_from_yaml
