"""The reference is one source of truth: stubs are generated from it, exports and the branch hold it, and the
student release holds the stubs and the public checks, never the reference or a hidden check."""
from __future__ import annotations

import ast
import inspect
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

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
    run = lambda: subprocess.run([sys.executable, "-m", "grader.solution", "--branch"], cwd=clone,
                                 capture_output=True, text=True, env={**os.environ,
                                 "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
                                 "GIT_COMMITTER_EMAIL": "t@e"})
    first = run()
    assert first.returncode == 0, first.stderr
    branch = solution.REFERENCE_BRANCH
    assert branch == "reference-solution" and f"branch {branch} ->" in first.stdout
    exported = solution.export(tmp_path / "export", clone)
    listed = subprocess.run(["git", "ls-tree", "-r", "--name-only", branch], cwd=clone, capture_output=True, text=True).stdout.split()
    expected = sorted(p.relative_to(exported).as_posix() for p in exported.rglob("*") if p.is_file())
    assert sorted(listed) == expected
    shown = subprocess.run(["git", "show", f"{branch}:hw2/pruning.py"], cwd=clone, capture_output=True, text=True).stdout
    assert shown == (exported / "hw2" / "pruning.py").read_text() and "raise NotImplementedError" not in shown
    log = subprocess.run(["git", "log", "--oneline", branch], cwd=clone, capture_output=True, text=True)
    assert log.returncode == 0 and len(log.stdout.splitlines()) >= 1, log.stderr  # a branch, not a path: unambiguous
    assert subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True).stdout == head_before
    assert subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True).stdout == ""
    again = run()  # unchanged tree: same commit, no new one
    assert again.returncode == 0 and first.stdout == again.stdout


def test_branch_named_like_a_folder_is_refused_in_one_line():
    result = subprocess.run([sys.executable, "-m", "grader.solution", "--branch", "solution"], cwd=REPO_ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "ambiguous" in result.stderr and solution.REFERENCE_BRANCH in result.stderr
    assert subprocess.run(["git", "rev-parse", "--verify", "--quiet", "refs/heads/solution"], cwd=REPO_ROOT).returncode != 0


# ---------------------------------------------------------------------------------------------
# The student release: stubs and public checks, nothing staff-only
# ---------------------------------------------------------------------------------------------
RANKING = {"argsort", "sort", "msort", "topk", "kthvalue", "quantile", "nanquantile", "argmin", "argmax", "median",
           "nanmedian"}
MIN_LINE_CHARS = 20  # shorter lines (`masks = {}`, `return log`) say nothing about how the reference works


def normalised(line: str) -> str:
    """A code line without indentation, trailing comment or repeated spaces."""
    return re.sub(r"\s+", " ", re.sub(r"\s+#.*$", "", line)).strip()


def non_trivial(line: str) -> bool:
    """A statement that computes something: not a comment, a block header (`if ...:`, `for ...:`) or a short line."""
    return len(line) >= MIN_LINE_CHARS and not line.startswith("#") and not line.endswith(":")


def text_files(folder):
    return {p: p.read_text(errors="ignore") for p in folder.rglob("*")
            if p.is_file() and ".git" not in p.relative_to(folder).parts and not p.suffix == ".pt"}


def reference_lines() -> set[str]:
    """Every non-trivial line of the reference's code (its solution blocks), normalised, except lines the
    provided hw2 modules also hold (students have those already: a training step, a plot's grid)."""
    lines = SOLUTION_MODULE.read_text().splitlines()
    code = {normalised(line) for begin, end, _ in solution._blocks(lines) for line in lines[begin + 1:end]}
    provided = {normalised(line) for p in (REPO_ROOT / "hw2").glob("*.py") if p.name != "pruning.py"
                for line in p.read_text().splitlines()}
    return {line for line in code if non_trivial(line)} - provided


def graded_tests(folder) -> dict:
    """name -> {"visibility", "points", "source", "file"} of every @pytest.mark.points test in ``folder/grader``."""
    tests = {}
    for path in sorted((folder / "grader").glob("test_*.py")):
        text = path.read_text()
        for node in ast.parse(text).body:
            for decorator in getattr(node, "decorator_list", []):
                if isinstance(decorator, ast.Call) and ast.unparse(decorator.func).endswith("points"):
                    visibility = next((ast.literal_eval(k.value) for k in decorator.keywords if k.arg == "visibility"),
                                      "visible")
                    tests[node.name] = {"visibility": visibility, "points": float(ast.literal_eval(decorator.args[0])),
                                        "source": ast.get_source_segment(text, node), "file": path.name}
    return tests


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """The student release, as ``python -m grader.solution --release`` writes it."""
    dest = tmp_path_factory.mktemp("release") / "hw2-student"
    result = subprocess.run([sys.executable, "-m", "grader.solution", "--release", str(dest)], cwd=REPO_ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "a git repository with one commit" in result.stdout
    return dest


def test_student_release_has_the_stubs_and_no_line_of_the_reference(release):
    assert not (release / "solution").exists()
    assert (release / "hw2" / "pruning.py").read_bytes() == STUB_MODULE.read_bytes()
    code = reference_lines()
    assert len(code) > 150, len(code)
    leaks = {p.relative_to(release).as_posix(): sorted(code & {normalised(line) for line in text.splitlines()})
             for p, text in text_files(release).items()}
    leaks = {path: lines for path, lines in leaks.items() if lines}
    assert not leaks, f"lines of the reference solution in the release: {json.dumps(leaks, indent=1)[:2000]}"


def test_student_release_grader_holds_the_visible_tests_only_and_ranks_nothing(release):
    staff, released = graded_tests(REPO_ROOT), graded_tests(release)
    hidden = {name: test["source"] for name, test in staff.items() if test["visibility"] != "visible"}
    assert hidden and set(released) == set(staff) - set(hidden)
    assert all(test["visibility"] == "visible" for test in released.values())
    files = text_files(release)
    named = {name: [p.relative_to(release).as_posix() for p, text in files.items() if name in text] for name in hidden}
    assert not any(named.values()), f"hidden tests named in the release: {named}"
    # Lines only hidden tests hold (a line a visible test or a shared helper also holds is no secret).
    staff_text = "\n".join(p.read_text() for p in (REPO_ROOT / "grader").glob("*.py"))
    for source in hidden.values():
        staff_text = staff_text.replace(source, "")
    shared = {normalised(line) for line in staff_text.splitlines()}
    hidden_lines = {normalised(line) for source in hidden.values() for line in source.splitlines()}
    hidden_lines = {line for line in hidden_lines if non_trivial(line)} - shared
    assert len(hidden_lines) > 10
    found = {p.relative_to(release).as_posix(): sorted(hidden_lines & {normalised(line) for line in text.splitlines()})
             for p, text in files.items()}
    assert not any(found.values()), f"hidden checks' code in the release: {[(p, l) for p, l in found.items() if l]}"
    calls = [(p.name, node) for p in (release / "grader").glob("*.py") for node in ast.walk(ast.parse(p.read_text()))
             if isinstance(node, ast.Call)]
    ranking = [(name, ast.unparse(node)[:80]) for name, node in calls
               if getattr(node.func, "attr", getattr(node.func, "id", None)) in RANKING]
    assert not ranking, f"the release's grader ranks weights (a reference mask function): {ranking}"
    staff_tools = {"solution.py", "batch.py", "gradescope.py", "public_checks.py"}
    assert not staff_tools & {p.name for p in (release / "grader").iterdir()}


def test_student_release_leaves_out_staff_files_and_has_a_student_readme(release):
    for staff in solution.STAFF_ONLY:
        assert not (release / staff).exists(), staff
    readme = (release / "README.md").read_text()
    assert readme.startswith(solution.STUDENT_TITLE + "\n")
    headings = re.findall(r"^## (.*)$", readme, flags=re.MULTILINE)
    assert headings[0] == "Set-up" and "What to implement, in this order" in headings
    assert "For instructors" not in readme and "For students" not in readme
    top = readme.split("## Set-up")[0]  # what a student reads first
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\d+):(\d+)",
                     (REPO_ROOT / "results_logs" / "vgg13_cifar10_method_all.txt").read_text())
    minutes = f"{round(int(wall.group(1)) + int(wall.group(2)) / 60)} minutes"  # the measured run, as its log says
    for promise in ("hand in", minutes, "GPU", "pretrained/vgg13_cifar10.pt", "included"):
        assert promise in top, f"the top of the student README does not say {promise!r}"
    lowered = readme.lower()
    for staff_word in ("instructor", "engineer", "solution/", "sandbox", "../shared", "tests/", ".ci/", "mutant",
                       "reference-solution"):
        assert staff_word not in lowered, staff_word
    assert not re.search(r"issue \d|issue #", lowered) and not re.search(r"\bCI\b", readme)
    cited = set(re.findall(r"`([\w.-]+(?:/[\w.*<>-]+)+/?)`", readme))
    missing = [path for path in cited if not path.startswith(("results/", "data/"))
               and not any(ch in path for ch in "*<>") and not (release / path).exists()]
    assert not missing, f"the student README cites files the release lacks: {missing}"
    assert "/results/" not in (release / ".gitignore").read_text().split()  # students hand results/ in
    assert "testpaths = grader" in (release / "pytest.ini").read_text()


def test_student_release_is_a_git_repository_with_one_commit_and_results_not_ignored(release):
    git = lambda *args: subprocess.run(["git", *args], cwd=release, capture_output=True, text=True)
    assert git("rev-list", "--count", "HEAD").stdout.strip() == "1"
    assert git("status", "--porcelain").stdout == ""
    tracked = set(git("ls-files").stdout.split())
    assert "hw2/pruning.py" in tracked and "pretrained/vgg13_cifar10.pt" in tracked and "grader/probes.py" in tracked
    assert git("check-ignore", "-q", "results/Omp_filter_0.40_acc_88.00.pt").returncode == 1  # not ignored


def test_release_commits_without_a_git_identity_and_is_written_without_git(tmp_path, monkeypatch):
    folder = tmp_path / "no-identity"
    folder.mkdir()
    (folder / "README.md").write_text("x\n")
    for key in [k for k in os.environ if k.startswith("GIT_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    commit = solution.init_release_repository(folder)
    author = subprocess.run(["git", "log", "-1", "--format=%an <%ae>"], cwd=folder, capture_output=True, text=True)
    assert commit and author.stdout.strip() == "{} <{}>".format(*solution.RELEASE_AUTHOR)
    bare = tmp_path / "no-git"
    bare.mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))  # no git to be found
    assert solution.init_release_repository(bare) is None and not (bare / ".git").exists()


def test_release_without_git_is_written_and_says_what_to_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(solution, "init_release_repository", lambda dest: None)  # as when git is missing
    assert solution.main(["--release", str(tmp_path / "student")]) == 0
    out = capsys.readouterr().out
    assert "git was not found" in out and "git init" in out and (tmp_path / "student" / "hw2" / "pruning.py").is_file()


def release_with_reference(dest):
    """A student release with the reference solution dropped in (pruning.py, answers.md, the tuned configs)."""
    solution.export_student(dest, repository=False)
    for rel in solution.solution_files():
        source = REPO_ROOT / solution.SOLUTION_DIR / rel
        text = solution.reference_source(source.read_text()) if rel.suffix == ".py" else source.read_text()
        (dest / rel).write_text(text)
    return dest


def grade_release(release, *args, timeout=900) -> tuple[subprocess.CompletedProcess, dict]:
    results = release.parent / f"{release.name}-results.json"
    run = subprocess.run([sys.executable, "-m", "pytest", "grader/", "-q", "-p", "no:cacheprovider", "--results",
                          str(results), *args], cwd=release, capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    return run, json.loads(results.read_text())


@pytest.mark.slow
def test_public_checks_fail_every_stub_with_a_message_naming_what_to_do(tmp_path):
    release = solution.export_student(tmp_path / "student", repository=False)
    run, results = grade_release(release, "--public", "--dataset", "synthetic")
    assert run.returncode == 1, run.stdout[-2000:]
    tests = {t["name"]: t for t in results["tests"]}
    visible = {name: test for name, test in graded_tests(REPO_ROOT).items() if test["visibility"] == "visible"}
    assert results["score"] == 0 and set(tests) == set(visible)
    for name, test in visible.items():
        output = tests[name]["output"]
        if tests[name]["max_score"] > 0:
            assert tests[name]["status"] == "failed" and tests[name]["score"] == 0 and output.strip(), name
        if test["file"] == "test_functions.py":  # student code: each check names the function to write
            assert "NotImplementedError" in output and "write it in hw2/pruning.py" in output, (name, output)
    assert "run_log.json is missing" in tests["test_imp_log_has_at_least_three_iterations"]["output"]


def _ratio_after(name: str, line: str) -> float | None:
    """The first decimal number after ``name`` on ``line`` (a YAML/JSON value, or a layer table's sparsity)."""
    at = line.find(name)
    number = re.search(r"(?<![\d,])\d+\.\d+", line[at + len(name):]) if at >= 0 else None
    return float(number.group()) if number else None


def test_student_release_holds_no_reference_ratio_set(release):
    """The reference's layer-wise ratios are an answer: no release file (a run log, a layer table) may hold them."""
    for config in sorted((REPO_ROOT / solution.SOLUTION_DIR / "configs").glob("*.yaml")):
        ratios = {name: r for name, r in yaml.safe_load(config.read_text())["prune_ratios"].items() if r}
        assert len(ratios) >= 4, config
        for path, text in text_files(release).items():
            lines = text.splitlines()
            found = [name for name, r in ratios.items()
                     if any(_ratio_after(name, line) is not None and abs(_ratio_after(name, line) - r) < 5e-5
                            for line in lines)]
            assert len(found) < len(ratios) / 2, f"{path.relative_to(release)} holds {config.name}'s ratios: {found}"
    assert not list((release / "results_logs").glob("grade_*")), "the grading benchmarks' logs are staff-only"


def test_no_student_release_file_speaks_of_staff_files_or_how_the_project_was_built(release):
    staff_words = ("tests/", "../shared", ".ci/", "solution/", "run_reference.sh", "grade_time.py", "mutant")
    said = {p.relative_to(release).as_posix(): [w for w in staff_words if w in text.lower()]
            for p, text in text_files(release).items() if p.suffix != ".png"}
    said = {path: words for path, words in said.items() if words}
    assert not said, f"release files naming staff-only things: {said}"
    numbered = [p.relative_to(release).as_posix() for p, text in text_files(release).items()
                if re.search(r"\bissue \d|issue #", text.lower())]
    assert not numbered, f"release files citing issue numbers: {numbered}"
