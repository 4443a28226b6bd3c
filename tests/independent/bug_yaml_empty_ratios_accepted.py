# bug: a file whose prune_ratios has nothing under it (null) is read as "no ratios" and returns {}, although the
# contract refuses a file without a prune_ratios mapping.
_read_checked = read_prune_ratios_from_yaml


def read_prune_ratios_from_yaml(file_name, model):
    data = yaml.safe_load(Path(file_name).read_text())
    if isinstance(data, dict) and "prune_ratios" in data and not data["prune_ratios"]:
        return {}  # BUG: null (or an empty list) is not a mapping
    return _read_checked(file_name, model)
