"""The public checks: the student release's grader, derived from the course staff's grader.

Students self-check with the visible tests; the hidden tests and anything that computes a
reference answer stay in the staff repository and the Gradescope package.  From the staff
``grader/`` this module writes a release grader that holds:

* the modules ``pytest grader/`` needs: ``conftest.py``, the ``test_*.py`` files and what they
  import from ``grader`` (``probes.py`` too: the sandbox loads it by path).  Staff tools
  (``solution.py``, ``batch.py``, ``gradescope.py``, this module) are left out;
* in the test files, the visible tests only (``@pytest.mark.points(N)`` or
  ``visibility="visible"``) and the fixtures;
* in every module, only the top-level functions, constants and imported names that the kept
  code uses, so a helper of a hidden test (or a check only a hidden test makes) goes too;
* in ``probes.py``, only the probes the kept tests and the harness name, and ``RELEASE_MASKS``
  in place of the staff helpers that pick masked weights by magnitude: the visible checks that
  use those masks judge what the student's function does with masked weights, never which
  weights are masked, so the release masks seeded random positions (and the IMP check holds seeded random kept
  weights small, where the grader holds the largest).  A staff helper that
  ranks weights could otherwise be pasted into ``unstructured_prune`` or ``filter_prune``; and an
  empty ``grader_helpers``: the staff's own helpers (which OMP and IMP are re-run with when they
  fail with the student's) are reference answers.

``release_grader`` refuses (``ValueError``) when a kept module still calls a ranking
operation (``RANKING_CALLS``): give that helper a release version in ``RELEASE_MASKS``.
"""
from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import torch

GRADER = "grader"
RELEASE_INIT = ('"""HW2\'s public checks: ``pytest grader/`` runs the visible tests of the course\'s autograder on your '
                'work."""\n')
HARNESS = ("__init__.py", "conftest.py", "sandbox.py", "probes.py")  # always released: pytest and the sandbox load them
PROBE_TABLE = "PROBES"  # in probes.py: probe name -> function; the sandbox runs probes by name
PROBE_MODULE_ROOTS = ("MEMORY_LIMIT",)  # probes.py names the sandbox sets or reads
RANKING_CALLS = frozenset({"argsort", "sort", "msort", "topk", "kthvalue", "quantile", "nanquantile",
                           "argmin", "argmax", "median", "nanmedian"})
LINE_WIDTH = 120
GENERATED_NOTE = ("# The public checks of HW2 (the visible tests of the course's grader): run them with pytest grader/.\n"
                  "# The hidden checks run when your submission is graded.\n")


# ---------------------------------------------------------------------------------------------
# Release versions of the staff mask helpers (same signatures; masks the same shape and count)
# ---------------------------------------------------------------------------------------------
def grader_unstructured_masks(model, ratios: dict) -> dict:
    """Per layer, a mask with round(ratio x numel) zeros at seeded random positions (1 = keep)."""
    gen = torch.Generator().manual_seed(0)
    masks = {}
    for name, ratio in ratios.items():
        weight = model.get_submodule(name.rpartition(".")[0]).weight.detach()
        positions = torch.randperm(weight.numel(), generator=gen)[:int(round(ratio * weight.numel()))]
        mask = torch.ones(weight.numel())
        mask[positions] = 0
        masks[name] = mask.view_as(weight)
    return masks


def grader_filter_masks(model, ratios: dict) -> dict:
    """Per conv, round(ratio x C_out) whole filters masked at seeded random positions, plus the same
    channels of the BatchNorm after it (``features.<i+1>.weight`` / ``.bias``)."""
    gen = torch.Generator().manual_seed(0)
    masks = {}
    for name, ratio in ratios.items():
        weight = model.get_submodule(name.rpartition(".")[0]).weight.detach()
        channels = torch.ones(weight.shape[0])
        channels[torch.randperm(weight.shape[0], generator=gen)[:int(round(ratio * weight.shape[0]))]] = 0
        masks[name] = channels.view(-1, 1, 1, 1).expand_as(weight).clone()
        index = int(name.split(".")[1])
        masks[f"features.{index + 1}.weight"] = channels.clone()
        masks[f"features.{index + 1}.bias"] = channels.clone()
    return masks


def largest_kept(weight: torch.Tensor, sparsity_type: str, fraction: float) -> torch.Tensor:
    """Seeded random nonzero entries (``fraction`` of them, at least one) or, for filters, one random nonzero filter:
    the public IMP check holds these small, where the grader holds the largest."""
    gen = torch.Generator().manual_seed(0)
    chosen = torch.zeros(weight.shape[0] if sparsity_type == "filter" else weight.numel(), dtype=torch.bool)
    alive = ((weight.flatten(1) != 0).any(dim=1) if sparsity_type == "filter" else (weight != 0).flatten()).nonzero()
    alive = alive.flatten()[torch.randperm(len(alive), generator=gen)]
    chosen[alive[:1 if sparsity_type == "filter" else max(1, int(fraction * len(alive)))]] = True
    if sparsity_type == "filter":
        return chosen.view(-1, *([1] * (weight.dim() - 1))).expand_as(weight).clone()
    return chosen.view_as(weight)


def grader_helpers() -> dict:
    """None in the public checks: OMP and IMP run with your own helpers only (grading also tries the grader's, so
    that a helper's defect costs points in the helper's own test only)."""
    return {}


RELEASE_MASKS = {"probes.py": (grader_unstructured_masks, grader_filter_masks, largest_kept, grader_helpers)}


# ---------------------------------------------------------------------------------------------
# Visibility
# ---------------------------------------------------------------------------------------------
def _points_marker(node: ast.AST) -> ast.Call | None:
    for decorator in getattr(node, "decorator_list", []):
        if isinstance(decorator, ast.Call) and ast.unparse(decorator.func).endswith("mark.points"):
            return decorator
    return None


def visibility_of(node: ast.AST) -> str | None:
    """The ``visibility`` of a ``@pytest.mark.points`` test (``"visible"`` by default); None if not a graded test."""
    marker = _points_marker(node)
    if marker is None:
        return None
    for keyword in marker.keywords:
        if keyword.arg == "visibility":
            return ast.literal_eval(keyword.value)
    return "visible"


def graded_tests(root: Path) -> dict[str, tuple[str, float]]:
    """Every graded test of the staff grader: name -> (visibility, points)."""
    tests = {}
    for path in sorted((Path(root) / GRADER).glob("test_*.py")):
        for node in ast.parse(path.read_text()).body:
            visibility = visibility_of(node)
            if visibility is not None:
                tests[node.name] = (visibility, float(ast.literal_eval(_points_marker(node).args[0])))
    return tests


def _is_fixture(node: ast.AST) -> bool:
    return any("fixture" in ast.unparse(d) for d in getattr(node, "decorator_list", []))


# ---------------------------------------------------------------------------------------------
# Pruning a module to what is used
# ---------------------------------------------------------------------------------------------
class _Statement:
    """One top-level statement: the lines it owns, the names it defines and the names it uses."""

    def __init__(self, node: ast.stmt, lines: list[str]):
        self.node = node
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])]) - 1
        while start > 0 and lines[start - 1].lstrip().startswith("#"):
            start -= 1  # a comment right above belongs to the statement
        self.start, self.end = start, node.end_lineno
        self.defines = _defined_names(node)
        self.uses = _used_names(node) - self.defines
        self.text: str | None = None  # replacement text, if any


def _defined_names(node: ast.stmt) -> set[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in node.names}
    targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
    return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}


def _used_names(node: ast.AST) -> set[str]:
    """Names a statement reads, and the parameters of its functions (pytest passes fixtures by parameter name)."""
    names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
    return names | {a.arg for n in ast.walk(node) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                    for a in n.args.posonlyargs + n.args.args + n.args.kwonlyargs}


def _grader_import(node: ast.stmt) -> str | None:
    """``X`` for ``from grader.X import ...``, else None."""
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(GRADER + "."):
        return node.module.split(".", 1)[1]
    return None


def _import_text(node: ast.ImportFrom | ast.Import, used: set[str]) -> str | None:
    """The import with only the names in ``used``: its own text, None when none is used."""
    aliases = [a for a in node.names if (a.asname or a.name).split(".")[0] in used]
    if not aliases:
        return None
    if len(aliases) == len(node.names):
        return ""  # unchanged
    names = ", ".join(a.name + (f" as {a.asname}" if a.asname else "") for a in aliases)
    head = f"from {node.module} import " if isinstance(node, ast.ImportFrom) else "import "
    if len(head + names) <= LINE_WIDTH or isinstance(node, ast.Import):
        return head + names
    return head + "(" + ",\n    ".join(names.split(", ")) + ")"


class _Module:
    def __init__(self, name: str, text: str):
        self.name, self.text = name, text
        self.lines = text.splitlines()
        self.tree = ast.parse(text)
        self.statements = [_Statement(node, self.lines) for node in self.tree.body]
        self.kept: set[str] = set()  # top-level names kept
        self.imported: dict[int, set[str]] = {}  # id of a `from grader.X import` statement -> names X keeps

    def defining(self, name: str) -> list[_Statement]:
        return [s for s in self.statements if name in s.defines]

    def replace_function(self, function) -> None:
        """Put ``function``'s source in place of the top-level function of the same name."""
        for statement in self.defining(function.__name__):
            statement.text = inspect.getsource(function).rstrip("\n")
            statement.uses = _used_names(ast.parse(statement.text)) - statement.defines

    def render(self) -> str:
        out: list[str] = []
        cursor = 0
        for statement in self.statements:
            out += self.lines[cursor:statement.start]
            cursor = statement.end
            always = not statement.defines or isinstance(statement.node, ast.ImportFrom) and statement.node.module == "__future__"
            if isinstance(statement.node, (ast.Import, ast.ImportFrom)) and not always:
                text = _import_text(statement.node, self.kept | self.imported.get(id(statement), set()))
                if text is None:
                    continue
                out += self.lines[statement.start:statement.end] if text == "" else text.splitlines()
            elif always or statement.defines & self.kept:
                out += statement.text.splitlines() if statement.text is not None else \
                    self.lines[statement.start:statement.end]
        out += self.lines[cursor:]
        return re.sub(r"\n{4,}", "\n\n\n", "\n".join(out).strip("\n") + "\n")  # a dropped statement leaves no wide gap


def _module_name(path: str) -> str:
    return Path(path).stem


def release_grader(root: Path) -> dict[str, str]:
    """Relative path -> text of every file of the release's ``grader/``.  Raises ``ValueError`` when a kept
    module still calls a ranking operation (see the module docstring)."""
    folder = Path(root) / GRADER
    tests = sorted(p.name for p in folder.glob("test_*.py"))
    modules = {name: _Module(name, (folder / name).read_text()) for name in sorted(set(HARNESS) | set(tests))}
    # The release's modules: the harness, the tests and the grader modules they import (transitively).
    queue = list(modules)
    while queue:
        for statement in modules[queue.pop()].statements:
            imported = _grader_import(statement.node)
            if imported and f"{imported}.py" not in modules and (folder / f"{imported}.py").is_file():
                modules[f"{imported}.py"] = _Module(f"{imported}.py", (folder / f"{imported}.py").read_text())
                queue.append(f"{imported}.py")
    for path, functions in RELEASE_MASKS.items():
        for function in functions:
            modules[path].replace_function(function)
    unpruned = set(HARNESS) - {"probes.py"}  # the harness is released whole
    # Roots: whole modules, the visible tests and fixtures, and what the sandbox reads from probes.py.
    needed: dict[str, set[str]] = {name: set() for name in modules}
    for name, module in modules.items():
        for statement in module.statements:
            node = statement.node
            if name in unpruned or not statement.defines:
                needed[name] |= statement.defines | statement.uses
            elif name in tests and (visibility_of(node) == "visible" or _is_fixture(node)):
                needed[name] |= statement.defines
    needed["probes.py"] |= set(PROBE_MODULE_ROOTS) | {PROBE_TABLE}
    # Propagate: a kept statement keeps what it uses, in its module or (through imports) in another.
    changed = True
    while changed:
        changed = False
        for name, module in modules.items():
            for statement in module.statements:
                if not statement.defines & needed[name] or isinstance(statement.node, (ast.Import, ast.ImportFrom)):
                    continue
                uses = statement.uses
                if name == "probes.py" and PROBE_TABLE in statement.defines:
                    uses = _used_probe_names(modules, needed, statement)
                new = uses - needed[name]
                if new:
                    needed[name] |= new
                    changed = True
            for statement in module.statements:  # names imported from another grader module
                imported = _grader_import(statement.node)
                if imported and f"{imported}.py" in modules:
                    wanted = {a.name for a in statement.node.names if (a.asname or a.name) in needed[name]}
                    if wanted - needed[f"{imported}.py"]:
                        needed[f"{imported}.py"] |= wanted
                        changed = True
    for name, module in modules.items():
        module.kept = needed[name]
        for statement in module.statements:
            imported = _grader_import(statement.node)
            if imported and f"{imported}.py" in modules:
                module.imported[id(statement)] = {a.asname or a.name for a in statement.node.names
                                                  if a.name in needed[f"{imported}.py"]}
        if name == "probes.py":
            for statement in module.statements:
                if PROBE_TABLE in statement.defines:
                    statement.text = _probe_table(statement, _used_probe_names(modules, needed, statement))
    files = {}
    for name, module in modules.items():
        text = module.render()
        if name not in unpruned:
            docstring_end = ast.parse(text).body[0].end_lineno if ast.get_docstring(ast.parse(text)) else 0
            lines = text.splitlines(keepends=True)
            text = "".join(lines[:docstring_end]) + GENERATED_NOTE + "".join(lines[docstring_end:])
        files[f"{GRADER}/{name}"] = text
    files[f"{GRADER}/__init__.py"] = RELEASE_INIT  # the staff package's docstring names tools the release lacks
    problems = ranking_calls(files)
    if problems:
        raise ValueError("the release's grader would still rank weights (code a student could paste into a mask "
                         f"function): {'; '.join(problems)}; give that helper a release version in RELEASE_MASKS "
                         "(grader/public_checks.py)")
    return files


def _used_probe_names(modules: dict, needed: dict, table: _Statement) -> set[str]:
    """The probe functions named by a string in the kept code of the tests and the harness."""
    assert isinstance(table.node, ast.Assign) and isinstance(table.node.value, ast.Dict)
    entries = {ast.literal_eval(k): v.id for k, v in zip(table.node.value.keys, table.node.value.values)}
    strings = set()
    for name, module in modules.items():
        if name == "probes.py":
            continue
        for statement in module.statements:
            if statement.defines & needed[name] or not statement.defines:
                strings |= {n.value for n in ast.walk(statement.node) if isinstance(n, ast.Constant)
                            and isinstance(n.value, str)}
    return {entries[key] for key in entries if key in strings}


def _probe_table(table: _Statement, functions: set[str]) -> str:
    keys = [ast.literal_eval(k) for k in table.node.value.keys]
    values = [v.id for v in table.node.value.values]
    entries = [f'    "{key}": {value},' for key, value in zip(keys, values) if value in functions]
    return f"{PROBE_TABLE} = {{\n" + "\n".join(entries) + "\n}"


def ranking_calls(files: dict[str, str]) -> list[str]:
    """``path: function calls op`` for every call of a ``RANKING_CALLS`` operation in the given Python files."""
    found = []
    for path, text in files.items():
        if not path.endswith(".py"):
            continue
        tree = ast.parse(text)
        for top in tree.body:
            for node in ast.walk(top):
                if isinstance(node, ast.Call):
                    called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                    if called in RANKING_CALLS:
                        where = getattr(top, "name", f"line {top.lineno}")
                        found.append(f"{path}: {where} calls {called}")
    return found
