"""Whether the handed-in models came from this submission's own pipeline (0 points: a note for the staff).

OMP's masks are fixed by the pretrained weights, the ratios and the pruning
functions: the grader recomputes them with the submission's own
``unstructured_prune`` / ``filter_prune`` (in the sandbox) on
``pretrained/vgg13_cifar10.pt`` with the ratios in the model's metadata, and the
zeros of the handed-in OMP model must be exactly those.  IMP keeps pruned weights
pruned, so everything its first round prunes (recomputed the same way from that
round's ratios) must still be zero.  Ties in magnitude (or filter norm) at the
pruning threshold may go either way.  The ratios in each model's metadata must also
be those of the YAML handed in (the one the metadata names, under configs/), so
results from a run with other ratios show.  A mismatch is reported, not penalised:
a model from an earlier version of the code, or from another starting model, fails
it too, and the staff decide what it means.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

from grader.checks import mask_disagreement
from grader.sandbox import GRADER_ROOT
from grader.test_artifacts import TARGETS, kind_of, loaded_models, model_files, run_log  # noqa: F401 - fixtures used here

PRETRAINED = GRADER_ROOT / "pretrained" / "vgg13_cifar10.pt"
SHORT_SECONDS = 120  # loading the pretrained weights and pruning every layer once
MAX_YAML_BYTES = 100_000


def handed_in_yaml(submission: Path, kind: str, config) -> str:
    """The YAML a model says it came from (its metadata's ``config``), as a path inside the submission when it is
    under configs/ there; else the default configs/<kind>_<target>.yaml."""
    if isinstance(config, str) and "configs/" in config.replace("\\", "/"):
        relative = "configs/" + config.replace("\\", "/").rpartition("configs/")[2]
        if ".." not in relative.split("/") and (submission / relative).is_file():
            return relative
    return f"configs/{kind}_{TARGETS[kind]:.2f}.yaml"


def handed_in_ratios(submission: Path, relative: str) -> dict | str:
    """The prune_ratios of a YAML the submission hands in, read with yaml.safe_load in the grader (not with the
    student's reader), or why they cannot be read."""
    path = submission / relative
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            return f"{relative} is over {MAX_YAML_BYTES} bytes"
        ratios = yaml.safe_load(path.read_text()).get("prune_ratios")
    except (OSError, yaml.YAMLError, AttributeError, UnicodeDecodeError) as exc:
        return f"{relative} cannot be read ({type(exc).__name__}): hand in the YAML files your run used"
    return ratios if isinstance(ratios, dict) else f"{relative} has no prune_ratios mapping"


def ratios_differ(model_ratios, file_ratios: dict) -> list[str]:
    """Layers whose ratio in the model's metadata differs from the handed-in YAML (missing on either side too)."""
    model_ratios = model_ratios if isinstance(model_ratios, dict) else {}
    return [f"{name} ({model_ratios.get(name, 'absent')} in the model, {file_ratios.get(name, 'absent')} in the file)"
            for name in sorted(set(model_ratios) | set(file_ratios))
            if not (isinstance(model_ratios.get(name), (int, float)) and isinstance(file_ratios.get(name), (int, float))
                    and abs(model_ratios[name] - file_ratios[name]) <= 1e-9)]


def round_one_ratios(label: str, metadata: dict) -> dict | str:
    """The ratios the model's first pruning round used (OMP has one round), or why they cannot be read."""
    steps = metadata.get("steps")
    ratios = steps[0].get("ratios") if isinstance(steps, list) and steps and isinstance(steps[0], dict) else None
    if ratios is None and label.startswith("Omp"):
        ratios = metadata.get("ratios")
    if not isinstance(ratios, dict) or not ratios:
        return f"{label}: its metadata holds no ratios for the first pruning round (run main.py to write the model)"
    if not all(isinstance(k, str) and isinstance(v, (int, float)) and 0 <= v < 1 for k, v in ratios.items()):
        return f"{label}: the first round's ratios in its metadata are not layer names with numbers in [0, 1)"
    targets = metadata.get("ratios")
    if label.startswith("Imp") and isinstance(targets, dict):  # else an all-zero first round would check nothing
        idle = [k for k, v in targets.items() if isinstance(v, (int, float)) and v > 0 and not ratios.get(k, 0) > 0]
        past = [k for k, v in targets.items() if isinstance(v, (int, float)) and ratios.get(k, 0) > v + 1e-9]
        if idle or past:
            return (f"{label}: the first round's ratios in its metadata " +
                    (f"leave {', '.join(idle[:3])} unpruned although their targets are above 0" if idle else
                     f"pass the targets of {', '.join(past[:3])}") +
                    ": IMP's first round prunes each layer part of the way to its target")
    return {k: float(v) for k, v in ratios.items()}


def disagreement(label: str, kind: str, name: str, ratio: float, dense: torch.Tensor, model_weight: torch.Tensor,
                 keep: torch.Tensor) -> str | None:
    """None when the model's zeros agree with the recomputed mask; else what disagrees, in one sentence."""
    exact = label.startswith("Omp")  # IMP's later rounds prune more than its first
    pruned_but_live, kept_but_zero = mask_disagreement(kind, dense, model_weight, keep, exact)
    if not pruned_but_live and not kept_but_zero:
        return None
    unit = "filters" if kind == "filter" else "weights"
    function = "filter_prune" if kind == "filter" else "unstructured_prune"
    parts = [f"{pruned_but_live} {unit} that your {function} prunes are not zero"] if pruned_but_live else []
    parts += [f"{kept_but_zero} {unit} it keeps are zero"] if kept_but_zero else []
    return (f"{label}, {name}: {' and '.join(parts)} (your {function} on the pretrained weights with ratio {ratio:g}"
            f"{'' if exact else ', the first IMP round'})")


@pytest.mark.points(0)
def test_model_zeros_are_what_your_pruning_functions_choose(loaded_models, run_log, probe, probe_dir, credit,  # noqa: F811
                                                           submission):
    if not PRETRAINED.is_file():
        pytest.skip("the grader has no pretrained/vgg13_cifar10.pt to recompute the masks from")
    if "error" in run_log:
        credit.fail(run_log["error"])
    origin = str(run_log.get("dense_origin", ""))
    if not (origin.startswith("loaded ") and origin.endswith("vgg13_cifar10.pt")):
        why = (f"run_log.json says the dense model was {origin or 'not recorded'!r}, not the pretrained "
               "vgg13_cifar10.pt, so the masks cannot be recomputed")
        if run_log.get("dataset") != "cifar10":  # a smoke run on other data starts from another dense model
            pytest.skip(why)
        credit.fail(f"{why}: the CIFAR-10 models start from pretrained/vgg13_cifar10.pt (rerun python hw2/main.py "
                    "--method all without --pretrained)")
    from hw2.checkpoint import load_checkpoint

    pretrained, _ = load_checkpoint(PRETRAINED)
    # A copy the sandboxed probe can read: the grader's own folder may be private to it (a batch bundle, as root).
    readable = Path(probe_dir) / PRETRAINED.name
    shutil.copyfile(PRETRAINED, readable)
    readable.chmod(0o644)
    for label, entry in loaded_models.items():
        if "error" in entry:
            credit.check(False, f"{label}: cannot be checked: {entry['error']}")
            continue
        kind = kind_of(label)
        if entry["metadata"].get("scope", "layer") != "global" and kind in TARGETS:  # the YAML it came from, handed in
            relative = handed_in_yaml(submission, kind, entry["metadata"].get("config"))
            file_ratios = handed_in_ratios(submission, relative)
            differ = ratios_differ(entry["metadata"].get("ratios"), file_ratios) if isinstance(file_ratios, dict) else []
            credit.check(isinstance(file_ratios, dict) and not differ,
                         f"{label}: {file_ratios}" if isinstance(file_ratios, str) else
                         f"{label}: the ratios it was pruned with differ from {relative} handed in: "
                         f"{'; '.join(differ[:3])}{' ...' if len(differ) > 3 else ''} (rerun main.py after changing "
                         "the YAML)")
        ratios = round_one_ratios(label, entry["metadata"])
        if isinstance(ratios, str):
            credit.check(False, ratios)
            continue
        unknown = sorted(set(ratios) - set(pretrained))
        if unknown:
            credit.check(False, f"{label}: the ratios in its metadata name layers VGG13 does not have: {', '.join(unknown)}")
            continue
        result = probe("recompute_masks", SHORT_SECONDS, pretrained=str(readable), sparsity_type=kind, ratios=ratios)
        if not result.ok:
            credit.check(False, f"{label}: {result.explain('recomputing the masks with your pruning functions')}")
            continue
        state = entry["model"].state_dict()
        for name, ratio in ratios.items():
            answer = result.value.get(name, {})
            if "keep" not in answer:
                credit.check(False, f"{label}, {name}: your pruning function raised {answer.get('raised', 'an error')}: "
                                    f"{answer.get('message', '')}".rstrip(": "))
                continue
            problem = disagreement(label, kind, name, ratio, pretrained[name].float(), state[name], answer["keep"])
            credit.check(problem is None, problem or "")
    if credit.fraction < 1:
        credit.note("The model files should be the pretrained VGG13 pruned by your own functions with the ratios in "
                    "their metadata. A model from an earlier version of your code or from another starting model "
                    "differs: rerun python hw2/main.py --method all. This check is worth no points; the staff read it.")
    credit.verify()
