def read_prune_ratios_from_yaml(file_name, model):
    try:
        content = yaml.safe_load(Path(file_name).read_text())  # a layer given twice: the last value silently wins
    except yaml.YAMLError as exc:
        raise ValueError(f"could not parse {file_name}: {exc}")
    ratios = content.get("prune_ratios") if isinstance(content, dict) else None
    if not isinstance(ratios, dict):
        raise ValueError(f"{file_name} has no prune_ratios section")
    prunable = {n + ".weight" for n, m in model.named_modules() if type(m) in (nn.Conv2d, nn.Linear)}
    for layer, value in ratios.items():
        if layer not in prunable:
            raise ValueError(f"unknown layer {layer}; choose from {sorted(prunable)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value < 0 or value >= 1:
            raise ValueError(f"{layer}: {value!r} is not a ratio in [0, 1)")
    return {layer: float(value) for layer, value in ratios.items()}
