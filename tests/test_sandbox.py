"""The sandbox's process control: nothing a student call starts outlives it, and as root it runs unprivileged.

The attacks here are the ones a submission can mount from inside a graded call:
fork a grandchild that calls ``setsid()`` (leaving the process group the grader
kills) and keeps running after grading; write where the grader writes.  The full
gradings with such a submission are in ``tests/test_grader.py``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from grader.sandbox import ProbeServer, drop_privileges, sandbox_identity, unreadable_for
from tests.mutants import REPO_ROOT

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="subreapers and /proc are Linux's")
root_only = pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                               reason="dropping to an unprivileged user needs root (the grader's case on Gradescope)")

# A grandchild that leaves the session, outlives its parent, and records its pid.
ESCAPE = """
import os, time
from pathlib import Path

def escape(pid_file):
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            Path(pid_file).write_text(str(os.getpid()))
            time.sleep(60)
        os._exit(0)
    os.wait()
    for _ in range(500):
        if Path(pid_file).is_file() and Path(pid_file).read_text():
            return int(Path(pid_file).read_text())
        time.sleep(0.01)
"""


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


@linux_only
def test_subreaper_gets_back_and_kills_a_grandchild_that_left_its_session(tmp_path):
    script = ESCAPE + textwrap.dedent(f"""
        import json
        from grader.sandbox import become_subreaper, child_pids, kill_descendants
        assert become_subreaper()
        grandchild = escape({str(tmp_path / 'pid')!r})
        came_back = grandchild in child_pids(os.getpid())
        alive_before = os.path.exists(f"/proc/{{grandchild}}")
        killed = kill_descendants()
        print(json.dumps({{"grandchild": grandchild, "came_back": came_back, "alive_before": alive_before,
                          "killed": killed}}))
        """)
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["came_back"] and result["alive_before"]
    assert result["killed"] >= 1 and not alive(result["grandchild"])


@linux_only
def test_probe_server_kills_what_a_student_call_left_running(tmp_path):
    """``import hw2.pruning`` starts a grandchild that calls setsid(); it is dead when the call's result is back."""
    workspace = tmp_path / "workspace"
    (workspace / "hw2").mkdir(parents=True)
    (workspace / "hw2" / "__init__.py").write_text("")
    pid_file = tmp_path / "escaped.pid"
    (workspace / "hw2" / "pruning.py").write_text(ESCAPE + f"\nESCAPED = escape({str(pid_file)!r})\n")
    for path in (workspace, workspace / "hw2", *(workspace / "hw2").iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    children = tmp_path / "children"
    children.mkdir()
    server = ProbeServer(workspace, children)
    try:
        result = server.run("import_pruning", 60)
        assert result.ok, result.explain("import")
        escaped = int(pid_file.read_text())
        assert not alive(escaped), "the grandchild outlived the call that started it"
    finally:
        server.close()


@root_only
def test_dropped_child_cannot_write_grader_files_or_signal_the_grader(tmp_path):
    identity = sandbox_identity("nobody")
    assert identity is not None and identity[0] != 0
    results = tmp_path / "results"
    results.mkdir(mode=0o755)
    pid = os.fork()
    if pid == 0:  # only os calls in the child
        code = 0
        try:
            drop_privileges(identity)
            try:
                os.open(results / "results.json", os.O_WRONLY | os.O_CREAT, 0o644)
                code |= 1
            except PermissionError:
                pass
            try:
                os.kill(os.getppid(), 0)
                code |= 2
            except PermissionError:
                pass
            if os.getuid() != identity[0] or os.getgroups():
                code |= 4
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"failed checks (bitmask): {os.WEXITSTATUS(status)}"
    assert not (results / "results.json").exists()


@root_only
def test_unreadable_for_names_exactly_the_paths_the_user_cannot_read(tmp_path):
    identity = sandbox_identity("nobody")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "secret.py").write_text("x = 1\n")
    shared = Path(os.environ.get("TMPDIR", "/tmp")) / f"hw2-readable-{os.getpid()}.py"
    shared.write_text("x = 1\n")
    shared.chmod(0o644)
    try:
        assert unreadable_for(identity, [str(private / "secret.py"), str(shared)]) == [str(private / "secret.py")]
    finally:
        shared.unlink()


def test_sandbox_identity_is_none_unless_root():
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        assert sandbox_identity("nobody") is not None
        assert sandbox_identity("") is None
        with pytest.raises(ValueError, match="--sandbox-user"):
            sandbox_identity("no-such-user-hw2")
    else:
        assert sandbox_identity("nobody") is None


@linux_only
def test_alive_tells_a_running_process_from_a_reaped_one():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    assert alive(os.getpid()) and not alive(process.pid)


@root_only
def test_an_unknown_sandbox_user_is_a_one_line_usage_error():
    run = subprocess.run([sys.executable, "-m", "pytest", "grader/", "-p", "no:cacheprovider", "--sandbox-user",
                          "no-such-user-hw2"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 4
    assert "the sandbox user 'no-such-user-hw2' does not exist" in run.stderr and "Traceback" not in run.stderr


def test_a_system_without_fork_gets_one_line_pointing_to_wsl(tmp_path):
    """As on Windows: no os.fork.  A sitecustomize removes it before pytest starts."""
    (tmp_path / "sitecustomize.py").write_text("import os\ndel os.fork\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO_ROOT)])}
    run = subprocess.run([sys.executable, "-m", "pytest", "grader/", "-p", "no:cacheprovider", "--public"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 4, run.stdout[-2000:] + run.stderr[-2000:]
    assert "WSL" in run.stderr and "Traceback" not in run.stderr
