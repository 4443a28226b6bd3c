# the returned dict is sorted by name, not in file order

def read_prune_ratios_from_yaml(file_name, model):
    return dict(sorted(_read_ok(file_name, model).items()))


_read_ok = read_prune_ratios_from_yaml
