# bug: masked_retrain masks the gradients of pruned weights but leaves the optimizer's momentum as it was: an optimizer
# that stepped before the pruning (one optimizer serving several IMP rounds) moves the pruned weights off zero.
def _forget_pruned_momentum(optimizer, leaf, mask):
    pass  # BUG: the momentum gathered before the pruning still moves the pruned entries
