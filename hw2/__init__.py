"""HW2: pruning VGG13 on CIFAR-10.

Conventions used everywhere in this package (and by the grader):

* A **mask** is a tensor of the weight's shape (float, or bool where a function allows it); 1 = keep, 0 = pruned.
* **Sparsity** is a fraction in [0, 1]: zero weights / all weights.  A prune
  ratio of 0.4 on a layer means "make 40% of that layer's weights zero".
* **Overall sparsity** counts the weights of Conv2d and Linear layers only
  (not biases, not BatchNorm).
* **Filter pruning** removes whole output filters (``dim=0`` of a conv weight
  ``(C_out, C_in, kH, kW)``), ranked by their L2 norm.
* Parameter names are exactly those of ``model.named_parameters()``, for
  example ``features.0.weight``.

Files you edit: ``hw2/pruning.py`` (the stubs), ``hw2/answers.md`` and the two
YAML files ``configs/unstructured_0.80.yaml`` and ``configs/filter_0.40.yaml``.
Everything else is provided.
"""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
