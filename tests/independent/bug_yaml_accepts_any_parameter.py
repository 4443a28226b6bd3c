def read_prune_ratios_from_yaml(file_name, model):
    text = Path(file_name).read_text()
    try:
        tree = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"{file_name}: not valid YAML ({err})") from err
    if not isinstance(data, dict) or not isinstance(data.get("prune_ratios"), dict):
        raise ValueError(f"{file_name}: needs a 'prune_ratios' mapping")
    section = next(value for key, value in tree.value if key.value == "prune_ratios")
    keys = [key.value for key, _ in section.value]
    if len(keys) != len(set(keys)):
        raise ValueError(f"{file_name}: a layer is listed more than once")
    known = dict(model.named_parameters())  # every parameter: BatchNorm weights and biases pass too
    ratios = {}
    for name, ratio in data["prune_ratios"].items():
        if name not in known:
            raise ValueError(f"{file_name}: the model has no parameter {name}")
        if type(ratio) not in (int, float) or not 0 <= ratio < 1:
            raise ValueError(f"{file_name}: ratio of {name} must be a number in [0, 1), got {ratio!r}")
        ratios[name] = float(ratio)
    return ratios
