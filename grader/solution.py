"""The reference solution, kept apart: ``solution/`` holds only what differs from the student version.

Python files in ``solution/`` mark the reference code with ``# BEGIN SOLUTION`` /
``# END SOLUTION`` lines (nbgrader style).  From that one source:

* the student stub (``hw2/pruning.py``) replaces each marked block inside a
  function by ``raise NotImplementedError(...)`` and drops marked module-level
  blocks (private helpers);
* the reference copy drops the marker lines only.

Commands::

    python -m grader.solution DIR              # write a complete copy of the project with the reference in place
    python -m grader.solution --branch         # commit that tree to git branch 'reference-solution' (working tree untouched)
    python -m grader.solution --release DIR    # write the student release: a git repository, public checks only
    python -m grader.solution --write-stubs    # regenerate the stubs in hw2/ from solution/
    python -m grader.solution --check          # exit 1 if the stubs in hw2/ have drifted from solution/

The branch is not called ``solution``: a branch named like a folder of the tree makes
``git log solution`` ambiguous, so ``--branch`` refuses such names.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SOLUTION_DIR = "solution"
REFERENCE_BRANCH = "reference-solution"  # not "solution": that is a folder of the tree too
BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
# Never copied into an export: VCS data, run outputs, local data and environments.
EXCLUDED_TOP = {".git", SOLUTION_DIR, "results", "data", ".data", ".venv", "venv", ".pytest_cache"}
# Also left out of the student release: the project's own tests (the mutants are edits of the reference),
# CI, and the tools that need the reference.  Its grader/ is written by grader.public_checks (public checks only).
STAFF_ONLY = {"tests", ".ci", "run_reference.sh", "benchmarks/grade_time.py"}
# Logs of real runs left out of the release too: the grading benchmarks (staff tools), and every log that names
# VGG13's layers or the reference's files, since those hold the reference's layer-wise ratios (the run logs and
# their layer tables, the ratio comparisons).
STAFF_LOGS = re.compile(r"^grade_")
REFERENCE_RATIOS = re.compile(r"features\.\d+\.weight|solution/")
# The student release's README: this title, then README.md's "For students" section with its ### headings
# raised to ##, then these other ## sections of README.md.
STUDENT_TITLE = "# HW2: pruning VGG13 on CIFAR-10"
STUDENT_PART = "For students"
STUDENT_EXTRA_SECTIONS = ("Beyond HW2", "Data and credits")
# Who commits the release when git knows no user (git refuses to commit without one).
RELEASE_AUTHOR = ("HW2 release", "hw2-release@example.invalid")
RELEASE_MESSAGE = "HW2 student release"
GIT_LOCATION = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_COMMON_DIR")
_DEF = re.compile(r"^(\s*)def (\w+)\(")


class MarkerError(ValueError):
    """Unbalanced or misplaced solution markers."""


def _blocks(lines: list[str]):
    """Yield ``(begin_index, end_index, indent)`` for each marked block."""
    begin = None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped == BEGIN:
            if begin is not None:
                raise MarkerError(f"line {i + 1}: '{BEGIN}' inside another block (opened at line {begin + 1})")
            begin = i
        elif stripped == END:
            if begin is None:
                raise MarkerError(f"line {i + 1}: '{END}' without '{BEGIN}'")
            indent = len(lines[begin]) - len(lines[begin].lstrip())
            yield begin, i, indent
            begin = None
    if begin is not None:
        raise MarkerError(f"line {begin + 1}: '{BEGIN}' is never closed")


def _enclosing_function(lines: list[str], index: int, indent: int) -> str:
    for line in reversed(lines[:index]):
        match = _DEF.match(line)
        if match and len(match.group(1)) < indent:
            return match.group(2)
    raise MarkerError(f"line {index + 1}: an indented solution block must sit inside a function")


def student_source(text: str, module_path: str = "hw2/pruning.py") -> str:
    """The student version of a solution file: marked blocks become ``NotImplementedError`` stubs."""
    lines = text.splitlines()
    out: list[str] = []
    cursor = 0
    for begin, end, indent in _blocks(lines):
        out += lines[cursor:begin]
        if indent > 0:
            name = _enclosing_function(lines, begin, indent)
            out.append(" " * indent + f'raise NotImplementedError("{name}: write it in {module_path} (see its docstring)")')
        cursor = end + 1
    out += lines[cursor:]
    result = "\n".join(out) + "\n"
    return re.sub(r"\n{4,}", "\n\n\n", result)  # dropped helper blocks leave no gaps wider than PEP 8's two lines


def reference_source(text: str) -> str:
    """The reference version of a solution file: marker lines removed, code kept."""
    lines = text.splitlines()
    list(_blocks(lines))  # validate
    return "\n".join(line for line in lines if line.strip() not in (BEGIN, END)) + "\n"


def solution_files(root: Path = REPO_ROOT) -> list[Path]:
    """Paths (relative to ``solution/``) of every file the reference overrides."""
    base = root / SOLUTION_DIR
    return sorted(p.relative_to(base) for p in base.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def stub_targets(root: Path = REPO_ROOT) -> list[Path]:
    """Relative paths of the stub files generated from ``solution/`` (its Python files with markers)."""
    return [rel for rel in solution_files(root) if rel.suffix == ".py" and BEGIN in (root / SOLUTION_DIR / rel).read_text()]


def write_stubs(root: Path = REPO_ROOT) -> list[Path]:
    """Regenerate the student stubs in place; returns the files written."""
    written = []
    for rel in stub_targets(root):
        text = student_source((root / SOLUTION_DIR / rel).read_text(), rel.as_posix())
        (root / rel).write_text(text)
        written.append(rel)
    return written


def drifted_stubs(root: Path = REPO_ROOT) -> list[Path]:
    """Stub files whose content differs from what ``solution/`` generates."""
    return [rel for rel in stub_targets(root)
            if not (root / rel).is_file()
            or (root / rel).read_text() != student_source((root / SOLUTION_DIR / rel).read_text(), rel.as_posix())]


def project_files(root: Path = REPO_ROOT) -> list[Path]:
    """Files of the project (tracked, or untracked but not ignored), minus ``solution/`` and run outputs."""
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=root,
                                check=True, capture_output=True, text=True).stdout.split("\0")
        files = [Path(p) for p in listed if p]
    except (OSError, subprocess.CalledProcessError):
        files = [p.relative_to(root) for p in root.rglob("*") if p.is_file()]
    return sorted(p for p in files
                  if p.parts[0] not in EXCLUDED_TOP and "__pycache__" not in p.parts and (root / p).is_file())


def _prepare_destination(dest: Path, root: Path) -> Path:
    dest = Path(dest).resolve()
    if dest == root.resolve() or root.resolve() in dest.parents and dest.relative_to(root.resolve()).parts[0] not in EXCLUDED_TOP:
        raise ValueError(f"export destination {dest} is inside the project; choose a directory outside it")
    if dest.exists() and any(dest.iterdir()):
        raise ValueError(f"export destination {dest} is not empty; choose a new or empty directory")
    dest.mkdir(parents=True, exist_ok=True)
    return dest


def _sections(text: str) -> tuple[str, dict[str, str]]:
    """README text -> (what precedes the first ``## `` heading, {heading: section text including its heading})."""
    intro, *sections = re.split(r"^(?=## )", text, flags=re.MULTILINE)
    return intro, {section.splitlines()[0][3:].strip(): section for section in sections}


def student_readme(text: str) -> str:
    """README.md for students: ``STUDENT_TITLE``, the "For students" section with its subsections raised one
    level, then ``STUDENT_EXTRA_SECTIONS`` (sections matched by the start of their heading)."""
    _, sections = _sections(text)
    part = next((body for heading, body in sections.items() if heading.startswith(STUDENT_PART)), None)
    if part is None:
        raise ValueError(f"README.md has no '## {STUDENT_PART}' section, which the student release's README is made of")
    body = re.sub(r"^###(?=#* )", "##", part.split("\n", 1)[1], flags=re.MULTILINE)
    extra = [body_ for heading, body_ in sections.items() if heading.startswith(STUDENT_EXTRA_SECTIONS)]
    return STUDENT_TITLE + "\n" + body.rstrip("\n") + "\n\n" + "".join(extra).rstrip("\n") + "\n"


def init_release_repository(dest: Path) -> str | None:
    """``git init`` + one commit of everything in ``dest``; returns the commit id, or None when git is missing.

    The committer is the user's git identity, else ``RELEASE_AUTHOR``; commit signing is off for this commit.
    """
    env = {k: v for k, v in os.environ.items() if k not in GIT_LOCATION}  # dest's own repository, whoever calls
    try:
        _git(["init", "-q"], dest, env)
    except FileNotFoundError:
        return None
    identity = ["-c", "commit.gpgsign=false"]
    for key, fallback in zip(("user.name", "user.email"), RELEASE_AUTHOR):
        if subprocess.run(["git", "config", key], cwd=dest, capture_output=True, text=True, env=env).stdout.strip() == "":
            identity += ["-c", f"{key}={fallback}"]
    _git([*identity, "add", "--all"], dest, env)
    _git([*identity, "commit", "-q", "-m", RELEASE_MESSAGE], dest, env)
    return _git(["rev-parse", "HEAD"], dest, env)


def _staff_log(root: Path, rel: Path) -> bool:
    """A file of ``results_logs/`` the release leaves out (``STAFF_LOGS``, ``REFERENCE_RATIOS``)."""
    if rel.parts[0] != "results_logs":
        return False
    return bool(STAFF_LOGS.match(rel.name) or REFERENCE_RATIOS.search((root / rel).read_text(errors="ignore")))


def export_student(dest: Path, root: Path = REPO_ROOT, repository: bool = True) -> Path:
    """Write the student release (stubs checked up to date first): no ``solution/``, no ``STAFF_ONLY`` files,
    the public checks as its ``grader/``, a student README, ``results/`` not git-ignored (it is handed in),
    ``pytest`` running the grader; with ``repository``, a git repository with one commit (when git is installed:
    without git the files are written all the same, and ``main`` says what to run)."""
    from grader.public_checks import release_grader  # here, not at the top: it imports torch

    drift = drifted_stubs(root)
    if drift:
        raise ValueError(f"stubs out of date with solution/: {', '.join(map(str, drift))}; run python -m grader.solution --write-stubs")
    grader_files = release_grader(root)  # before anything is written: it refuses a grader that would leak
    dest = _prepare_destination(dest, root)
    for rel in project_files(root):
        if rel.parts[0] in STAFF_ONLY or rel.as_posix() in STAFF_ONLY or rel.parts[0] == "grader" or \
                _staff_log(root, rel):
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, dest / rel)
    for rel, text in grader_files.items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_text(text)
    readme, gitignore, ini = dest / "README.md", dest / ".gitignore", dest / "pytest.ini"
    if readme.is_file():
        readme.write_text(student_readme(readme.read_text()))
    if gitignore.is_file():
        gitignore.write_text("".join(line for line in gitignore.read_text().splitlines(keepends=True)
                                     if line.strip() != "/results/"))
    if ini.is_file():
        text = re.sub(r"^testpaths = .*$", "testpaths = grader", ini.read_text(), flags=re.MULTILINE)
        ini.write_text(re.sub(r"^# `python -m pytest` runs .*$", "# `pytest` (or `pytest grader/`) runs the public "
                              "checks on your work.", text, flags=re.MULTILINE))
    if repository:
        init_release_repository(dest)
    return dest


def export(dest: Path, root: Path = REPO_ROOT) -> Path:
    """Write a complete copy of the project with the reference solution in place; returns ``dest``."""
    if not (root / SOLUTION_DIR).is_dir():
        raise ValueError(f"{root / SOLUTION_DIR} does not exist: there is no reference to export here (the course "
                         "staff's repository has it)")
    dest = _prepare_destination(dest, root)
    for rel in project_files(root):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, dest / rel)
    for rel in solution_files(root):
        source = root / SOLUTION_DIR / rel
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel.suffix == ".py":
            (dest / rel).write_text(reference_source(source.read_text()))
        else:
            shutil.copy2(source, dest / rel)
    return dest


def _git(args: list[str], root: Path, env: dict | None = None) -> str:
    result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def update_branch(branch: str = REFERENCE_BRANCH, root: Path = REPO_ROOT, message: str | None = None) -> str:
    """Commit the exported reference tree onto ``branch`` (created if missing); returns the commit id.

    Uses a private index, so the current branch, index and working tree are untouched.  Refuses a branch
    named like a top-level file or folder of the tree (``git log NAME`` would not know which is meant).
    """
    _git(["rev-parse", "--git-dir"], root)
    clashes = {rel.parts[0] for rel in project_files(root)} | {SOLUTION_DIR}
    if branch in clashes:
        raise ValueError(f"branch name {branch!r} is also a top-level name in the project ({branch}/), so "
                         f"'git log {branch}' would be ambiguous; choose another, e.g. --branch {REFERENCE_BRANCH}")
    with tempfile.TemporaryDirectory() as tmp:
        tree_dir = export(Path(tmp) / "tree", root)
        env = dict(os.environ, GIT_INDEX_FILE=str(Path(tmp) / "index"))
        _git(["--work-tree", str(tree_dir), "add", "--all", "--force", "."], root, env)
        tree = _git(["write-tree"], root, env)
    parents = []
    if subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"], cwd=root,
                      capture_output=True).returncode == 0:
        parent = _git(["rev-parse", f"refs/heads/{branch}"], root)
        if _git(["rev-parse", f"{parent}^{{tree}}"], root) == tree:
            return parent  # nothing changed
        parents = ["-p", parent]
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    message = message or f"Reference solution exported from {head or 'the working tree'}"
    commit = _git(["commit-tree", tree, *parents, "-m", message], root)
    _git(["update-ref", f"refs/heads/{branch}", commit], root)
    return commit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader.solution", description=__doc__.split("\n\n")[0])
    parser.add_argument("dest", nargs="?", type=Path, help="write a complete copy of the project with the reference in place")
    parser.add_argument("--branch", metavar="NAME", nargs="?", const=REFERENCE_BRANCH,
                        help=f"create or update git branch NAME (default: {REFERENCE_BRANCH}) holding that tree; "
                             "a name that is also a folder of the tree is refused")
    parser.add_argument("--release", metavar="DIR", type=Path,
                        help="write the student release to DIR: a git repository with one commit, no solution/, "
                             "tests/ or CI, the public checks only, a student README")
    parser.add_argument("--write-stubs", action="store_true", help="regenerate the student stubs in hw2/ from solution/")
    parser.add_argument("--check", action="store_true", help="exit 1 if the stubs have drifted from solution/")
    args = parser.parse_args(argv)
    if not (args.dest or args.branch or args.release or args.write_stubs or args.check):
        parser.error("give DIR, --branch NAME, --release DIR, --write-stubs or --check")
    try:
        if args.write_stubs:
            for rel in write_stubs():
                print(f"wrote stub {rel}")
        if args.check:
            drift = drifted_stubs()
            if drift:
                print(f"error: stubs out of date with solution/: {', '.join(map(str, drift))}; "
                      "run python -m grader.solution --write-stubs", file=sys.stderr)
                return 1
            print("stubs match solution/")
        if args.dest:
            print(f"exported the reference solution to {export(args.dest)}")
        if args.release:
            release = export_student(args.release)
            if (release / ".git").is_dir():
                print(f"wrote the student release to {release}: a git repository with one commit")
            else:
                print(f"wrote the student release to {release}; git was not found, so it is not a repository yet: "
                      "run git init && git add -A && git commit -m 'HW2 student release' there")
        if args.branch:
            print(f"branch {args.branch} -> {update_branch(args.branch)[:12]}")
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
