"""A pids cgroup per run: the process cap that works for root too (RLIMIT_NPROC exempts
uid 0, and a root-owned sandbox maps to uid 0), and a list of every process a run started, so
none outlives it. Optional: where no writable pids hierarchy exists this is skipped."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import time
from pathlib import Path


def pids_root() -> Path | None:
    """A pids-controller cgroup folder this process may create children in, or None."""
    own = _own_cgroups()
    candidates = [Path("/sys/fs/cgroup/pids") / own.get("pids", "/").lstrip("/")]
    unified = Path("/sys/fs/cgroup")
    with contextlib.suppress(OSError):
        if "pids" in (unified / "cgroup.subtree_control").read_text().split():
            candidates.append(unified / own.get("", "/").lstrip("/"))
    for base in candidates:
        probe = base / f"mcts-sandbox-probe-{secrets.token_hex(4)}"
        try:
            probe.mkdir()
        except OSError:
            continue
        ok = (probe / "pids.max").exists() and (probe / "cgroup.procs").exists()
        with contextlib.suppress(OSError):
            probe.rmdir()
        if ok:
            return base
    return None


def _own_cgroups() -> dict[str, str]:
    """controller -> this process's cgroup path ("" for the unified hierarchy)."""
    found: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                found[name] = path
    return found


class RunGroup:
    """One run's cgroup: capped at ``max_pids`` tasks (threads count), emptied on kill."""

    def __init__(self, root: Path, max_pids: int) -> None:
        self.path = root / f"mcts-sandbox-{secrets.token_hex(8)}"
        self.path.mkdir()
        (self.path / "pids.max").write_text(str(max_pids))
        self._procs = os.open(self.path / "cgroup.procs", os.O_WRONLY)

    def join(self) -> None:
        """Called in the child between fork and exec: move itself in ("0" means the
        writer), so everything it and its descendants start is counted from the first fork."""
        os.write(self._procs, b"0")

    def kill_all(self) -> None:
        """SIGKILL every process left in the group, then remove it."""
        with contextlib.suppress(OSError):
            os.close(self._procs)
        for _ in range(100):
            try:
                pids = [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
            except OSError:
                return
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)
        with contextlib.suppress(OSError):
            self.path.rmdir()
