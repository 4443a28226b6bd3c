# bug: apply_pruning stores each pruned weight as a new nn.Parameter, so an optimizer built before the pruning (one
# optimizer for every IMP round, say) holds the old tensors and no longer trains the model's.
_apply_in_place = apply_pruning


def apply_pruning(model, sparsity_type, prune_ratio_dict):
    masks = _apply_in_place(model, sparsity_type, prune_ratio_dict)
    for name in prune_ratio_dict:
        module_name, _, tensor_name = name.rpartition(".")
        module = model.get_submodule(module_name)
        setattr(module, tensor_name, nn.Parameter(getattr(module, tensor_name).detach().clone()))  # BUG: a new object
    return masks
