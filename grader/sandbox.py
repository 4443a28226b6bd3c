"""Run student code in a child process with a time limit, and bring back only plain data.

The grader (the pytest process) never imports the student's ``hw2/pruning.py``.
It starts one *probe server* per grading session: a Python process that imports
torch and ``grader.probes`` once (from sources the grader read before any
student code ran, passed on stdin) and then, for every request, forks a fresh child
that runs one probe (grader code calling student functions) and saves the
probe's return value with ``torch.save``.  The grader reads it back with
``torch.load(weights_only=True)``: plain tensors, numbers, strings, lists and
dicts, never code.

Why a server that forks: importing torch takes seconds, a fork takes
milliseconds, and the server itself never runs a torch kernel (forking a process
whose OpenMP pool is running can deadlock the child).

What a child may do, and what the grader then reports:

* raise, or call ``sys.exit``     -> ``status="raised"`` with the exception line;
* call ``os._exit`` or crash      -> ``status="exited"`` with the exit code or signal;
* run past its time limit         -> the whole process group is killed, ``status="timeout"``;
* print megabytes                 -> output goes to a file capped at ``OUTPUT_LIMIT_BYTES``
                                     (``RLIMIT_FSIZE``); only its tail is reported;
* allocate gigabytes              -> its memory is capped at the server's own plus ``memory_limit``
                                     bytes (``RLIMIT_DATA``): the allocation fails, ``status="raised"``
                                     with the limit named, instead of the machine running out of memory;
* write over grader files         -> the probes are in the server's memory (a restarted server gets
                                     the sources read at the start), and the grader writes
                                     results.json only after every child is gone;
* leave processes behind          -> the server and the grader are child subreapers (Linux): a grandchild
  (fork, setsid, double fork)        that left its session is re-parented to them, not to init, and every
                                     descendant is killed after each call and again before results.json
                                     is written;
* run as root (as on Gradescope)  -> each child drops to an unprivileged user (``nobody``) before any
                                     student code runs: it cannot write the grader's files or the
                                     results folder, nor signal the grader, and has at most
                                     ``PROCESS_LIMIT`` processes.
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

GRADER_ROOT = Path(__file__).resolve().parent.parent  # holds grader/ and the trusted hw2/ infrastructure
OUTPUT_LIMIT_BYTES = 32 * 2**20  # per child: stdout + stderr + anything else it writes
MEMORY_LIMIT_BYTES = 4 * 2**30  # per child, beyond what the server (torch imported) already holds
TAIL_CHARS = 1500  # of the child's output, shown in a failure message
SERVER_START_SECONDS = 120  # importing torch on a loaded CI machine
SANDBOX_USER = "nobody"  # who student code runs as when the grader runs as root
PROCESS_LIMIT = 256  # processes (and threads) the sandbox user may have when the grader runs as root
PR_SET_CHILD_SUBREAPER = 36  # prctl option (linux/prctl.h)


SERVER_MODULES = (("grader", "grader/__init__.py"), ("grader.sandbox", "grader/sandbox.py"),
                  ("grader.probes", "grader/probes.py"))
# The server's first stdin line holds the sources of SERVER_MODULES; they become modules in memory.
BOOTSTRAP = """
import json, sys, types
sources = json.loads(sys.stdin.readline())
for name, (path, text) in sources.items():
    module = types.ModuleType(name)
    module.__file__ = path
    if name == "grader":
        module.__path__ = []
    sys.modules[name] = module
    if "." in name:
        setattr(sys.modules[name.rpartition(".")[0]], name.rpartition(".")[2], module)
    exec(compile(text, path, "exec"), module.__dict__)
sys.modules["grader.sandbox"].serve()
"""


@dataclass
class ProbeResult:
    """What one probe run gave back."""

    status: str  # "ok", "raised", "exited", "timeout", "broken" (grader-side problem)
    value: object = None
    error: str = ""  # one line: the exception, exit code or time limit
    where: str = ""  # the student's source line the exception came from, if any
    output_tail: str = ""
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def explain(self, function: str) -> str:
        """A one-paragraph reason for a failed run, addressed to the student."""
        function = self.extra.get("what", function)
        if self.status == "raised":
            text = f"{function} raised {self.error}"
            if self.where:
                text += f" (at {self.where})"
            hint = memory_hint(self.error, self.extra.get("memory_limit"))
            text += f" {hint}" if hint else ""
        elif self.status == "timeout":
            text = f"{function} did not finish within the time limit of {self.error}; look for an endless loop or work on far more data than the test gives"
        elif self.status == "exited":
            text = f"the grading process ended while running {function} ({self.error}); do not call sys.exit/os._exit or kill the process"
        else:
            text = f"the grader could not run {function}: {self.error}"
        if self.output_tail.strip():
            text += f"\n--- last lines your code printed ---\n{self.output_tail.strip()}"
        return text


class ProbeServer:
    """One long-lived server process; ``run`` sends it one probe at a time."""

    def __init__(self, workspace: Path, scratch: Path, memory_limit: int = MEMORY_LIMIT_BYTES,
                 identity: tuple[int, int] | None = None):
        self.workspace = Path(workspace)
        self.scratch = Path(scratch)
        self.memory_limit = int(memory_limit)
        self.identity = identity  # (uid, gid) the children drop to, or None to keep this process's
        self.process: subprocess.Popen | None = None
        self.counter = 0
        # Read now, before any student code runs: a server restarted later (after a child killed it)
        # runs these sources, not whatever a submission may have written into grader/ since.
        self.sources = {name: (str(GRADER_ROOT / path), (GRADER_ROOT / path).read_text()) for name, path in SERVER_MODULES}

    def _start(self) -> None:
        env = dict(os.environ, PYTHONPATH="", PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self.process = subprocess.Popen([sys.executable, "-c", BOOTSTRAP], cwd=self.scratch,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        env=env, text=True, bufsize=1, start_new_session=True)
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(self.sources) + "\n")
        self.process.stdin.flush()
        line = self._read_line(SERVER_START_SECONDS)
        if not line or json.loads(line).get("ready") is not True:
            self.close()
            raise RuntimeError("the probe server did not start (is torch importable by this Python?)")

    def _read_line(self, timeout: float) -> str | None:
        assert self.process is not None and self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            return None
        return self.process.stdout.readline()  # "" at end of file: the server is gone

    def run(self, probe: str, timeout: float, **kwargs) -> ProbeResult:
        """Run ``grader.probes.<probe>(**kwargs)`` in a fresh child; never raises for student misbehaviour."""
        if self.process is None or self.process.poll() is not None:
            try:
                self._start()
            except RuntimeError as exc:
                return ProbeResult("broken", error=str(exc))
        self.counter += 1
        out = self.scratch / f"probe_{self.counter}_{probe}.pt"
        log = self.scratch / f"probe_{self.counter}_{probe}.log"
        request = {"probe": probe, "kwargs": kwargs, "timeout": timeout, "out": str(out), "log": str(log),
                   "workspace": str(self.workspace), "scratch": str(self.scratch / f"cwd_{self.counter}"),
                   "memory_limit": self.memory_limit, "identity": self.identity}
        start = time.perf_counter()
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self._read_line(timeout + 30)
        seconds = time.perf_counter() - start
        tail = _tail(log)
        if not line:
            died = line == ""  # end of file before the time limit: the server died (a child killed it)
            self.close()
            if died:  # the child killed its parent, the server; the next probe starts a new one
                return ProbeResult("exited", error="the grader's process was killed", output_tail=tail, seconds=seconds)
            return ProbeResult("timeout", error=f"{timeout:.0f} s", output_tail=tail, seconds=seconds)
        reply = json.loads(line)
        if reply["timed_out"]:
            return ProbeResult("timeout", error=f"{timeout:.0f} s", output_tail=tail, seconds=seconds)
        payload = _load_payload(out)
        if payload is None:
            how = (f"killed by signal {reply['signal']}" if reply["signal"] else f"exit code {reply['exit_code']}")
            if reply["signal"] == int(signal.SIGXFSZ):
                how += f": it wrote more than {OUTPUT_LIMIT_BYTES // 2**20} MB (printing in a loop?)"
            return ProbeResult("exited", error=how, output_tail=tail, seconds=seconds)
        if payload.get("status") == "ok":
            return ProbeResult("ok", value=payload.get("value"), output_tail=tail, seconds=seconds)
        return ProbeResult("raised", error=str(payload.get("error", "an exception")), where=str(payload.get("where", "")),
                           output_tail=tail, seconds=seconds, extra={"memory_limit": self.memory_limit})

    def close(self) -> None:
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.process.wait()
            for stream in (self.process.stdin, self.process.stdout):
                try:
                    stream.close()
                except (OSError, AttributeError):
                    pass
            self.process = None


def memory_hint(error: str, limit: int | None) -> str:
    """For an error that says memory ran out: the limit and where to look; else ''."""
    if not limit or not (error.startswith("MemoryError") or "can't allocate memory" in error
                         or "out of memory" in error.lower()):
        return ""
    return (f"(the grader lets each call allocate {limit / 2**30:.1f} GB; the tests use small tensors, so look for "
            "a copy made in a loop or a tensor far larger than its input)")


def become_subreaper() -> bool:
    """Make orphaned descendants of this process its children instead of init's (Linux ``prctl``).

    A grandchild that calls ``setsid()`` after its parent exits leaves the process
    group the grader kills, but not the process tree: it comes back to the nearest
    subreaper.  Returns False where the system has no such thing (then only the
    process-group kill applies).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def child_pids(parent: int) -> list[int]:
    """The processes whose parent is ``parent`` (read from ``/proc``; empty where there is none)."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    pids = []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()
        except OSError:  # gone meanwhile
            continue
        if len(fields) > 1 and int(fields[1]) == parent:
            pids.append(int(entry))
    return pids


def kill_descendants(keep: frozenset[int] | set[int] = frozenset(), rounds: int = 1000) -> int:
    """SIGKILL and reap every child of this process except ``keep``, until none is left; returns how many.

    In a subreaper the children of a killed child come back to it, so repeating
    until no child is left kills the whole tree, however it forked or whatever
    session it moved to.
    """
    killed = 0
    for _ in range(rounds):
        pids = [pid for pid in child_pids(os.getpid()) if pid not in keep]
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for pid in pids:
            try:
                os.waitpid(pid, 0)
                killed += 1
            except ChildProcessError:  # already reaped (or not ours after all)
                pass
    return killed


def sandbox_identity(user: str | None) -> tuple[int, int] | None:
    """The (uid, gid) student code runs as: ``user``'s when this process is root, else None (no change)."""
    if not user or not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise ValueError(f"the sandbox user {user!r} does not exist on this machine: create it, or pass "
                         "--sandbox-user with an unprivileged user that does") from None
    return None if entry.pw_uid == 0 else (entry.pw_uid, entry.pw_gid)


def python_paths() -> list[str]:
    """Files the sandbox user must be able to read for student code to run: Python's and the libraries' own."""
    import importlib.util

    paths = [os.__file__, sys.executable]
    for module in ("torch", "numpy", "yaml", "matplotlib"):
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.origin:
            paths.append(spec.origin)
    return paths


def drop_privileges(identity: tuple[int, int]) -> None:
    """Become ``identity`` for good (groups, gid, then uid), with at most ``PROCESS_LIMIT`` processes."""
    import resource

    uid, gid = identity
    resource.setrlimit(resource.RLIMIT_NPROC, (PROCESS_LIMIT, PROCESS_LIMIT))
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)


def unreadable_for(identity: tuple[int, int], paths: list[str]) -> list[str]:
    """The ``paths`` that the user ``identity`` cannot read, checked in a forked child that drops to it."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # only os calls here: safe in a child of a process that runs threads
        code = 1
        try:
            os.close(read_end)
            drop_privileges(identity)
            os.write(write_end, json.dumps([p for p in paths if not os.access(p, os.R_OK)]).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
        return list(paths)  # could not even drop to it
    return json.loads(b"".join(chunks))


def _data_bytes() -> int:
    """This process's data segment and private mappings (``VmData``), what ``RLIMIT_DATA`` counts."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmData:"):
            return int(line.split()[1]) * 1024
    return 0


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - TAIL_CHARS))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return ("[...]\n" if size > TAIL_CHARS else "") + text


def _load_payload(path: Path):
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # missing (the child died first), truncated, or not plain data
        return None
    return payload if isinstance(payload, dict) else None


# ---------------------------------------------------------------------------------------------
# Server side (python -m grader.sandbox --serve): runs in its own process
# ---------------------------------------------------------------------------------------------
def _student_line(tb) -> str:
    """The last traceback frame outside the grader and the standard library: the student's line."""
    frames = [f for f in traceback.extract_tb(tb) if "grader" not in Path(f.filename).parts
              and "site-packages" not in f.filename and "lib/python" not in f.filename]
    if not frames:
        return ""
    frame = frames[-1]
    return f"{Path(frame.filename).name}:{frame.lineno} in {frame.name}"


def _child(request: dict) -> None:
    """In the forked child: sandbox the process, run the probe, save its value. Never returns."""
    code = 0
    try:
        os.setsid()
        cwd = Path(request["scratch"])
        cwd.mkdir(parents=True, exist_ok=True)
        identity = request.get("identity")
        if identity:
            os.chown(cwd, *identity)  # the one folder the student's code may write in
        os.chdir(cwd)
        log_fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        out = open(request["out"], "wb")  # opened now: the folder is the grader's, not writable after the drop
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (OUTPUT_LIMIT_BYTES, OUTPUT_LIMIT_BYTES))
        memory = _data_bytes() + int(request["memory_limit"])
        resource.setrlimit(resource.RLIMIT_DATA, (memory, memory))
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores it; past the limit the child is stopped
        if identity:
            drop_privileges(tuple(identity))
            os.environ.update(HOME=str(cwd), MPLCONFIGDIR=str(cwd / ".matplotlib"))
        sys.stdin = open(os.devnull)
        sys.stdout = os.fdopen(1, "w", buffering=1)
        sys.stderr = os.fdopen(2, "w", buffering=1)
        sys.path.insert(0, request["workspace"])
        for name in [m for m in sys.modules if m == "hw2" or m.startswith("hw2.")]:
            del sys.modules[name]
        import torch

        from grader import probes

        probes.MEMORY_LIMIT = int(request["memory_limit"])
        torch.set_num_threads(1)
        torch.manual_seed(0)
        try:
            value = probes.PROBES[request["probe"]](**request["kwargs"])
            payload = {"status": "ok", "value": value}
        except BaseException as exc:  # noqa: BLE001 - SystemExit and KeyboardInterrupt are student failures too
            if isinstance(exc, SystemExit):
                error = f"SystemExit({exc.code!r}) (sys.exit was called)"
            else:
                message = str(exc).strip().splitlines()[0][:400] if str(exc).strip() else ""
                error = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
            payload = {"status": "raised", "error": error, "where": _student_line(exc.__traceback__)}
        try:
            torch.save(payload, out)
        except Exception as exc:  # a value that is not plain data is a grader bug: say so
            out.seek(0)
            out.truncate()
            torch.save({"status": "raised", "error": f"grader could not save the probe result: {exc}"}, out)
        out.close()
        sys.stdout.flush()
    except BaseException:  # noqa: BLE001
        code = 70
    os._exit(code)


def serve() -> None:
    import torch  # noqa: F401 - imported once here so that every fork starts warm

    from grader import probes  # noqa: F401 - in memory before any student code can touch the files

    become_subreaper()  # whatever a child leaves running comes back here, to be killed after its call
    protocol = sys.stdout
    protocol.write(json.dumps({"ready": True}) + "\n")
    protocol.flush()
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request)
        deadline = time.monotonic() + float(request["timeout"])
        timed_out = False
        status = None
        while status is None:
            done, raw = os.waitpid(pid, os.WNOHANG)
            if done:
                status = raw
                break
            if time.monotonic() > deadline:
                timed_out = True
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    os.kill(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
                break
            time.sleep(0.005)
        try:
            os.killpg(pid, signal.SIGKILL)  # anything the child left running in its group
        except (ProcessLookupError, PermissionError):
            pass
        kill_descendants()  # and anything that left the group: the server has no other children
        reply = {"timed_out": timed_out,
                 "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                 "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None}
        protocol.write(json.dumps(reply) + "\n")
        protocol.flush()
