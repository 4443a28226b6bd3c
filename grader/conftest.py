"""The grading harness: options, points, the student sandbox, the score table and results.json.

    pytest grader/                                   # grade this checkout (hw2/ and results/)
    pytest grader/ --submission DIR --results R.json # grade another copy; Gradescope results at R.json
    pytest grader/ --public                          # only the visible tests (what students run)

Every test carries ``@pytest.mark.points(N, visibility=...)``.  A test that
records checks through the ``credit`` fixture earns partial credit (the weighted
fraction of its checks that passed); any other test earns all or nothing.
Student code runs only inside ``probe(...)`` calls: a child process with a time
limit (see ``grader/sandbox.py``).  This process reads checkpoints with
``weights_only=True`` and writes results.json last, after every child is gone.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from grader.checks import Credit, GradeFailure
from grader.sandbox import (GRADER_ROOT, MEMORY_LIMIT_BYTES, SANDBOX_USER, ProbeResult, ProbeServer, become_subreaper,
                            child_pids, kill_descendants, python_paths, sandbox_identity, unreadable_for)

STUDENT_FILES = ("pruning.py", "answers.md")  # in hw2/: the student's; every other hw2 file is the grader's copy
VISIBILITIES = ("visible", "hidden", "after_due_date", "after_published")  # Gradescope's values
OUTPUT_CHARS = 3000  # per test in results.json
IMPORT_SECONDS = 60  # importing hw2/pruning.py once, before any code test


@dataclass
class Outcome:
    name: str
    points: float
    visibility: str
    status: str = "failed"  # passed, failed, skipped
    score: float = 0.0
    output: str = ""
    seconds: float = 0.0


def pytest_addoption(parser):
    group = parser.getgroup("hw2 grader")
    group.addoption("--submission", type=Path, default=None,
                    help="folder of the submission to grade (default: this checkout)")
    group.addoption("--artifacts", type=Path, default=None,
                    help="folder with the submission's run outputs (default: SUBMISSION/results, where main.py writes)")
    group.addoption("--results", type=Path, default=None, help="write Gradescope results.json here")
    group.addoption("--data-dir", type=Path, default=None,
                    help="CIFAR-10 folder for re-measuring accuracies (default: the grader's data/; never the submission's: "
                         "its files are the student's, and reading them would unpickle them in the grader)")
    group.addoption("--dataset", default="cifar10",
                    help="data set the models must have been evaluated on, per run_log.json (default: %(default)s; "
                         "'synthetic' for smoke runs)")
    group.addoption("--time-limit", type=float, default=None,
                    help="seconds each student call may take, overriding the per-test limits")
    group.addoption("--memory-limit", type=float, default=MEMORY_LIMIT_BYTES / 2**30,
                    help="gigabytes each student call may allocate (default: %(default)s)")
    group.addoption("--public", action="store_true", help="run only the visible tests")
    group.addoption("--sandbox-user", default=SANDBOX_USER,
                    help="when grading as root (as on Gradescope), run student code as this unprivileged user "
                         "(default: %(default)s)")


def pytest_configure(config):
    if not hasattr(os, "fork"):  # the sandbox forks a child per student call
        raise pytest.UsageError("the grader runs student code in forked child processes, which this system (Windows) "
                                "cannot do: run it under WSL, Linux or macOS")
    try:  # a sandbox user that does not exist is a usage error, before any test
        config._hw2_sandbox_user = sandbox_identity(config.getoption("--sandbox-user"))
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.addinivalue_line("markers", "points(n, visibility='visible'): points and Gradescope visibility of a graded test")
    config._hw2_grades = GradePlugin(config)
    config.pluginmanager.register(config._hw2_grades, "hw2_grades")


def pytest_collection_modifyitems(config, items):
    for item in items:
        marker = item.get_closest_marker("points")
        if marker is None:
            raise pytest.UsageError(f"{item.nodeid} has no @pytest.mark.points(...): every grader test needs points")
        visibility = marker.kwargs.get("visibility", "visible")
        if visibility not in VISIBILITIES:
            raise pytest.UsageError(f"{item.nodeid}: visibility {visibility!r} is not one of {VISIBILITIES}")
    if config.getoption("--public"):
        keep = [i for i in items if i.get_closest_marker("points").kwargs.get("visibility", "visible") == "visible"]
        hidden = [i for i in items if i not in keep]
        config._hw2_grades.not_run = sum(float(i.get_closest_marker("points").args[0]) for i in hidden)
        config.hook.pytest_deselected(items=hidden)
        items[:] = keep


def pytest_collection_finish(session):
    """The points of the tests that will run (after -k and --public): a layout failure is out of these."""
    session.config._hw2_grades.collected_points = sum(float(i.get_closest_marker("points").args[0]) for i in session.items)


class GradePlugin:
    def __init__(self, config):
        self.config = config
        self.outcomes: dict[str, Outcome] = {}
        self.start = time.perf_counter()
        self.not_run = 0.0  # points of the hidden tests that --public leaves out
        self.collected_points = 0.0
        self.layout_error: str | None = None  # the submission could not be found: results.json says why

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        report = (yield).get_result()
        marker = item.get_closest_marker("points")
        if marker is None:
            return
        name = item.name
        outcome = self.outcomes.setdefault(name, Outcome(name, float(marker.args[0]),
                                                         marker.kwargs.get("visibility", "visible")))
        outcome.seconds += report.duration
        if report.when == "call" or (report.when == "setup" and not report.passed):
            credit = item.funcargs.get("credit") if hasattr(item, "funcargs") else None
            notes = "\n".join(credit.notes) + "\n" if credit is not None and credit.notes else ""
            if report.passed:
                outcome.status, outcome.score = "passed", outcome.points
                outcome.output = notes
            elif report.skipped:
                reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
                outcome.status, outcome.score = "skipped", 0.0
                outcome.output = f"SKIPPED, not graded here: {reason.removeprefix('Skipped: ')}"
            else:
                outcome.status = "failed"
                exc = call.excinfo.value if call.excinfo is not None else None
                partial = credit is not None and isinstance(exc, GradeFailure)
                outcome.score = round(outcome.points * credit.fraction, 2) if partial else 0.0
                if isinstance(exc, GradeFailure):
                    outcome.output = notes + str(exc)
                    report.longrepr = f"{name}: {outcome.score:g} of {outcome.points:g} points\n{outcome.output}"  # no traceback
                elif exc is not None:
                    outcome.output = f"grader error ({type(exc).__name__}: {str(exc)[:300]}); tell the course staff"
                else:
                    outcome.output = str(report.longrepr)[:OUTPUT_CHARS]
        if report.when == "teardown" and not report.passed and outcome.status == "passed":
            outcome.status, outcome.score = "failed", 0.0
            outcome.output = "grader error in teardown; tell the course staff"

    def total(self) -> tuple[float, float]:
        return (round(sum(o.score for o in self.outcomes.values()), 2),
                sum(o.points for o in self.outcomes.values()))

    def results_json(self) -> dict:
        if self.layout_error is not None:  # one visible test that says what was expected and what was found
            return {"score": 0.0, "execution_time": round(time.perf_counter() - self.start, 2),
                    "output": f"Not graded: {self.layout_error}",
                    "tests": [{"name": "submission_layout", "score": 0.0, "max_score": self.collected_points,
                               "status": "failed", "output": self.layout_error, "visibility": "visible"}]}
        score, maximum = self.total()
        tests = []
        for o in self.outcomes.values():
            status = "passed" if o.status == "passed" else "failed"  # Gradescope knows passed/failed only
            tests.append({"name": o.name, "score": o.score, "max_score": o.points, "status": status,
                          "output": o.output[:OUTPUT_CHARS], "visibility": o.visibility})
        skipped = [o.name for o in self.outcomes.values() if o.status == "skipped"]
        summary = f"Total: {score:g} / {maximum:g} points."
        if skipped:
            summary += f" Not graded here (skipped, 0 points): {', '.join(skipped)}."
        return {"score": score, "execution_time": round(time.perf_counter() - self.start, 2),
                "output": summary, "tests": tests}

    def pytest_sessionfinish(self, session):
        server = getattr(session.config, "_hw2_server", None)
        if server is not None:
            server.close()  # every child is gone before results.json is written
            kill_descendants(keep=session.config._hw2_own_children)  # and whatever they left behind
        path = session.config.getoption("--results")
        if path is not None:
            write_results(Path(path), self.results_json())

    def pytest_terminal_summary(self, terminalreporter):
        score, maximum = self.total()
        write = terminalreporter.write_line
        terminalreporter.section("HW2 score")
        width = max([len(o.name) for o in self.outcomes.values()] + [4])
        write(f"{'test':<{width}}  {'points':>6}  {'max':>5}  {'status':<7}  visibility")
        for o in self.outcomes.values():
            write(f"{o.name:<{width}}  {o.score:>6g}  {o.points:>5g}  {o.status:<7}  {o.visibility}")
        write(f"{'TOTAL':<{width}}  {score:>6g}  {maximum:>5g}")
        if self.not_run:
            write(f"(--public: the hidden tests, {self.not_run:g} more points, were not run)")


def write_results(path: Path, results: dict) -> None:
    """Write results.json atomically (over anything a submission may have put there)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.is_dir():
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    fd, tmp = tempfile.mkstemp(prefix=".results.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(results, f, indent=2)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------
def locate_submission(path: Path) -> Path:
    """The folder that holds ``hw2/``: ``path`` itself, or its one sub-folder that does (a repository zipped
    inside a top-level folder).  Raises ``ValueError`` saying what was expected and what was found."""
    path = Path(path).resolve()
    if (path / "hw2").is_dir():
        return path
    if not path.is_dir():
        raise ValueError(f"the submission {path} is not a folder")
    folders = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith((".", "__MACOSX")))
    nested = [p for p in folders if (p / "hw2").is_dir()]
    if len(nested) == 1:
        return nested[0]
    found = ", ".join(p.name + "/" for p in sorted(path.iterdir()) if not p.name.startswith("."))[:300] or "nothing"
    if nested:
        raise ValueError(f"expected one hw2/ folder in the submission, found {len(nested)}: "
                         f"{', '.join(p.name + '/hw2/' for p in nested)}; submit one repository")
    raise ValueError(f"expected the repository's hw2/ (and results/) at the top of the submission or inside one "
                     f"folder, found: {found}")


@pytest.fixture(scope="session")
def submission(pytestconfig) -> Path:
    try:
        return locate_submission(pytestconfig.getoption("--submission") or GRADER_ROOT)
    except ValueError as exc:
        pytestconfig._hw2_grades.layout_error = str(exc)
        pytest.exit(f"not graded: {exc}", returncode=4)


@pytest.fixture(scope="session")
def artifacts(pytestconfig, submission) -> Path:
    return (pytestconfig.getoption("--artifacts") or submission / "results").resolve()


@pytest.fixture(scope="session")
def data_dir(pytestconfig) -> Path | None:
    given = pytestconfig.getoption("--data-dir")
    candidate = Path(given) if given else GRADER_ROOT / "data"  # never the submission's data/ (see --data-dir)
    return candidate if (candidate / "cifar-10-batches-py" / "test_batch").is_file() else None


@pytest.fixture(scope="session")
def sandbox_user(pytestconfig) -> tuple[int, int] | None:
    """(uid, gid) to run student code as when grading as root; None when not root (nothing to drop)."""
    return pytestconfig._hw2_sandbox_user


@pytest.fixture(scope="session")
def scratch(tmp_path_factory, sandbox_user) -> Path:
    if sandbox_user is None:
        yield tmp_path_factory.mktemp("hw2-grading")
        return
    # pytest's own temporary folders are private to root: this one the sandbox user may enter, not list or write
    path = Path(tempfile.mkdtemp(prefix="hw2-grading-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def workspace(submission, scratch) -> Path:
    """The package the student code runs in: the student's hw2/ with the grader's copies of the provided files."""
    package = scratch / "workspace" / "hw2"
    package.mkdir(parents=True)
    for source in sorted((submission / "hw2").iterdir()):
        if source.is_file() and source.suffix in (".py", ".md"):
            shutil.copy2(source, package / source.name)
    for trusted in sorted((GRADER_ROOT / "hw2").glob("*.py")):
        if trusted.name not in STUDENT_FILES:
            shutil.copy2(trusted, package / trusted.name)
    for path in (package.parent, package, *package.iterdir()):  # readable by the sandbox user, writable by no one else
        path.chmod(0o755 if path.is_dir() else 0o644)
    return package.parent


@pytest.fixture(scope="session")
def identity(pytestconfig, sandbox_user, workspace) -> tuple[int, int] | None:
    """The sandbox user, once it is known to be able to read the student's code and this Python's libraries."""
    if sandbox_user is None:
        return None
    unreadable = unreadable_for(sandbox_user, [str(workspace / "hw2" / "pruning.py"), *python_paths()])
    if unreadable:
        user = pytestconfig.getoption("--sandbox-user")
        message = (f"warning: student code runs as root, not as {user!r}, who cannot read {unreadable[0]} "
                   f"(install Python and the grader where every user can read them, as on Gradescope)")
        reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(message, yellow=True)
        return None
    return sandbox_user


@pytest.fixture(scope="session")
def probe(pytestconfig, workspace, scratch, identity):
    """``probe(name, timeout, **kwargs) -> ProbeResult``: run grader.probes.<name> in the sandbox (results cached)."""
    child_dir = scratch / "children"
    child_dir.mkdir()
    child_dir.chmod(0o711)
    # Orphans of the server's children come back to this process, to be killed before results.json is written.
    pytestconfig._hw2_own_children = set(child_pids(os.getpid()))
    become_subreaper()
    server = ProbeServer(workspace, child_dir, memory_limit=int(pytestconfig.getoption("--memory-limit") * 2**30),
                         identity=identity)
    pytestconfig._hw2_server = server
    override = pytestconfig.getoption("--time-limit")
    cache: dict = {}
    imported = server.run("import_pruning", override if override is not None else IMPORT_SECONDS)
    imported.extra["what"] = "importing hw2/pruning.py"

    def run(name: str, timeout: float = 60.0, **kwargs) -> ProbeResult:
        if not imported.ok:  # hw2/pruning.py does not import: every probe would fail (or hang) the same way
            return imported
        key = (name, json.dumps(kwargs, sort_keys=True))
        if key not in cache:
            cache[key] = server.run(name, override if override is not None else timeout, **kwargs)
        return cache[key]

    yield run
    server.close()


@pytest.fixture
def credit() -> Credit:
    return Credit()


@pytest.fixture
def probe_dir(scratch, identity, request) -> str:
    """A fresh folder a probe may write into (YAML files, figures)."""
    path = scratch / "files" / request.node.name
    path.mkdir(parents=True, exist_ok=True)
    if identity is not None:
        (scratch / "files").chmod(0o711)
        os.chown(path, *identity)
    return str(path)
