# variation: OMP and IMP retrain with a hand-written SGD (an object with zero_grad and step, not a torch.optim
# optimizer), so no optimizer hook sees their steps.
class _HandSGD:
    def __init__(self, params, lr, weight_decay):
        self.params = [p for p in params if p.requires_grad]
        self.param_groups = [{"params": self.params, "lr": lr}]
        self.weight_decay = weight_decay

    def zero_grad(self, set_to_none=True):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        for p in self.params:
            if p.grad is not None:
                p.add_(p.grad + self.weight_decay * p, alpha=-self.param_groups[0]["lr"])


def _prune_round(model, sparsity_type, ratios, step, train_loader, test_loader, epochs, device, lr, weight_decay):
    masks = apply_pruning(model, sparsity_type, ratios)
    sparsity = test_sparsity(model, sparsity_type)["overall"]
    before = _accuracy(model, test_loader, device)
    history = masked_retrain(model, masks, _HandSGD(model.parameters(), lr, weight_decay), nn.CrossEntropyLoss(),
                             train_loader, test_loader, epochs, device)
    return {"iteration": step, "ratios": dict(ratios), "sparsity": sparsity, "accuracy_before_retrain": before,
            "accuracy": history[-1]["test_accuracy"] if history else before}
