"""The reference is one source of truth: stubs are generated from it, exports and the branch hold it."""
from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys

import pytest

from grader import solution
from grader.solution import REPO_ROOT

STUB_MODULE = REPO_ROOT / "hw2" / "pruning.py"
SOLUTION_MODULE = REPO_ROOT / "solution" / "hw2" / "pruning.py"


def public_functions(path):
    tree = ast.parse(path.read_text())
    return {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef) and not node.name.startswith("_")}


def test_stubs_are_exactly_what_the_solution_generates():
    assert solution.drifted_stubs() == [], "run: python -m grader.solution --write-stubs"


def test_stubs_and_reference_share_names_signatures_and_docstrings(ref):
    stubs = public_functions(STUB_MODULE)
    reference = public_functions(SOLUTION_MODULE)
    assert stubs.keys() == reference.keys()
    for name in stubs:
        assert ast.dump(stubs[name].args) == ast.dump(reference[name].args), name
        assert ast.get_docstring(stubs[name]) == ast.get_docstring(reference[name]), name
        assert ast.get_docstring(stubs[name]).strip().splitlines()[-1].startswith("Graded:"), f"{name}: no Graded: line"


def test_every_stub_raises_not_implemented_naming_itself():
    for name, node in public_functions(STUB_MODULE).items():
        body = [stmt for stmt in node.body if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant))]
        assert len(body) == 1 and isinstance(body[0], ast.Raise), f"{name} is not a bare stub"
        assert f"{name}:" in ast.unparse(body[0]) and "NotImplementedError" in ast.unparse(body[0])


def test_reference_fills_every_stub(ref):
    """Each stub raises NotImplementedError; the reference of the same name has a real body."""
    from hw2 import pruning as stubs

    for name in public_functions(STUB_MODULE):
        source = inspect.getsource(getattr(ref, name))
        assert "NotImplementedError" not in source, f"reference {name} is still a stub"
        params = list(inspect.signature(getattr(stubs, name)).parameters.values())
        args = [None] * sum(p.default is inspect.Parameter.empty and p.kind == p.POSITIONAL_OR_KEYWORD for p in params)
        kwargs = {p.name: None for p in params if p.kind == p.KEYWORD_ONLY and p.default is inspect.Parameter.empty}
        with pytest.raises(NotImplementedError, match=name):
            getattr(stubs, name)(*args, **kwargs)


def test_marker_errors_are_reported_with_the_line():
    with pytest.raises(solution.MarkerError, match="line 2"):
        solution.student_source("def f():\n    # BEGIN SOLUTION\n    return 1\n")
    with pytest.raises(solution.MarkerError, match="inside a function"):
        solution.student_source("x = 1\n    # BEGIN SOLUTION\n    y = 2\n    # END SOLUTION\n")


def test_student_source_drops_module_level_helpers_and_stubs_function_bodies():
    text = "import os\n\n\n# BEGIN SOLUTION\ndef _helper():\n    return 1\n# END SOLUTION\n\n\ndef f(x):\n    \"\"\"Doc.\"\"\"\n    # BEGIN SOLUTION\n    return _helper()\n    # END SOLUTION\n"
    student = solution.student_source(text)
    assert "_helper" not in student and 'raise NotImplementedError("f:' in student
    assert "BEGIN SOLUTION" not in solution.reference_source(text) and "_helper" in solution.reference_source(text)
    compile(student, "student", "exec")


def test_export_is_the_project_with_the_reference_in_place(reference_dir):
    assert not (reference_dir / "solution").exists()
    assert (reference_dir / "hw2" / "pruning.py").read_text() == solution.reference_source(SOLUTION_MODULE.read_text())
    assert (reference_dir / "configs" / "filter_0.40.yaml").read_text() == (REPO_ROOT / "solution" / "configs" / "filter_0.40.yaml").read_text()
    assert (reference_dir / "hw2" / "answers.md").read_text() == (REPO_ROOT / "solution" / "hw2" / "answers.md").read_text()
    for rel in ("README.md", "requirements.txt", "hw2/main.py", "hw2/models.py", "grader/solution.py"):
        if (REPO_ROOT / rel).exists():
            assert (reference_dir / rel).read_bytes() == (REPO_ROOT / rel).read_bytes(), rel
    assert "TODO" not in (reference_dir / "hw2" / "answers.md").read_text()


def test_export_refuses_a_non_empty_destination(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    result = subprocess.run([sys.executable, "-m", "grader.solution", str(tmp_path)], cwd=REPO_ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 2 and "not empty" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_branch_holds_exactly_the_exported_tree(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO_ROOT), str(clone)], check=True)
    # the clone has what is committed; copy the working tree over it so the test sees uncommitted work too
    for rel in solution.project_files(REPO_ROOT) + [solution.Path(solution.SOLUTION_DIR) / p for p in solution.solution_files(REPO_ROOT)]:
        target = clone / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((REPO_ROOT / rel).read_bytes())
    env_git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*env_git, "add", "-A"], cwd=clone, check=True)
    subprocess.run([*env_git, "commit", "-qm", "wip", "--allow-empty"], cwd=clone, check=True)
    head_before = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True).stdout
    run = lambda: subprocess.run([sys.executable, "-m", "grader.solution", "--branch", "solution"], cwd=clone,
                                 capture_output=True, text=True, env={**__import__("os").environ,
                                 "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
                                 "GIT_COMMITTER_EMAIL": "t@e"})
    first = run()
    assert first.returncode == 0, first.stderr
    exported = solution.export(tmp_path / "export", clone)
    listed = subprocess.run(["git", "ls-tree", "-r", "--name-only", "solution"], cwd=clone, capture_output=True, text=True).stdout.split()
    expected = sorted(p.relative_to(exported).as_posix() for p in exported.rglob("*") if p.is_file())
    assert sorted(listed) == expected
    shown = subprocess.run(["git", "show", "solution:hw2/pruning.py"], cwd=clone, capture_output=True, text=True).stdout
    assert shown == (exported / "hw2" / "pruning.py").read_text() and "raise NotImplementedError" not in shown
    assert subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True).stdout == head_before
    assert subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True).stdout == ""
    again = run()  # unchanged tree: same commit, no new one
    assert again.returncode == 0 and first.stdout == again.stdout


def test_student_release_has_the_stubs_and_no_reference(tmp_path):
    release = solution.export_student(tmp_path / "release")
    assert not (release / "solution").exists()
    assert (release / "hw2" / "pruning.py").read_bytes() == STUB_MODULE.read_bytes()
    lines = SOLUTION_MODULE.read_text().splitlines()
    blocks = ["\n".join(lines[begin + 1:end]) for begin, end, _ in solution._blocks(lines)]
    released = "\n".join(p.read_text(errors="ignore") for p in release.rglob("*") if p.is_file())
    assert not [block for block in blocks if block.strip() and block in released], "reference code leaked into the release"
    code_lines = {line.strip() for block in blocks for line in block.splitlines()
                  if len(line.strip()) >= 40 and not line.strip().startswith("#")}
    # Single lines too (a test or tool quoting the reference), in every file but the provided hw2 modules,
    # which share plain lines with it (the training step, the dense reference line of a plot).
    provided = [p for p in (release / "hw2").glob("*.py") if p.name != "pruning.py"]
    released_lines = {line.strip() for p in release.rglob("*") if p.is_file() and p not in provided
                      for line in p.read_text(errors="ignore").splitlines()}
    assert len(code_lines) > 50 and not code_lines & released_lines, sorted(code_lines & released_lines)[:5]


def test_student_release_leaves_out_staff_files_and_has_a_student_readme(tmp_path):
    release = solution.export_student(tmp_path / "release")
    for staff in solution.STAFF_ONLY:
        assert not (release / staff).exists(), staff
    readme = (release / "README.md").read_text()
    headings = re.findall(r"^## (.*)$", readme, flags=re.MULTILINE)
    assert headings[0] == "Set-up" and all(h.startswith(solution.STUDENT_SECTIONS) for h in headings[1:])
    assert "### What to implement, in this order" in readme and "For instructors" not in readme
    assert "solution" not in re.sub(r"--branch solution|solution branch", "", readme).lower().replace("solutions", "")
    assert "/results/" not in (release / ".gitignore").read_text().split()  # students hand results/ in
    assert "testpaths = grader" in (release / "pytest.ini").read_text()
    refused = subprocess.run([sys.executable, "-m", "grader.solution", str(tmp_path / "ref")], cwd=release,
                             capture_output=True, text=True)
    assert refused.returncode == 2 and "student release" in refused.stderr and not (tmp_path / "ref").exists()
