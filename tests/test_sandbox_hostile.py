"""Hostile programs against the sandbox: each test asserts what must NOT happen (a file still
exists, a secret is absent from the output, a listener saw no connection, no process is left),
not only that the run failed. Isolation properties run on the bwrap tier; verdict tampering,
timeouts and output caps also on the subprocess tier, where they hold without namespaces."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mcts_agent.sandbox import Limits, Sandbox, TestJob, run_tests

PROJECT = Path(__file__).resolve().parents[1]
LIMITS = Limits(cpu_seconds=2, wall_seconds=3, memory_mb=512, processes=32,
                output_bytes=1 << 16)


@pytest.fixture(scope="module")
def isolated():
    box = Sandbox(LIMITS, workers=2)
    if box.isolation != "bwrap":
        box.close()
        pytest.skip(f"bubblewrap unusable here ({box.missing}): isolation cannot be tested")
    yield box
    box.close()


@pytest.fixture(scope="module")
def plain():
    with Sandbox(LIMITS, workers=2, tier="subprocess") as box:
        yield box


@pytest.fixture(params=["bwrap", "subprocess"])
def any_tier(request, isolated, plain):
    """Both tiers, for properties that do not need namespaces."""
    return isolated if request.param == "bwrap" else plain


def run(box: Sandbox, program: str):
    return box.run_python([program])[0]


def output(execution) -> str:
    return execution.stdout + execution.stderr


def marked(marker: str, body: str) -> str:
    """A program that re-executes itself with ``marker`` in its command line, so every process
    it (and its forks) leaves behind can be found afterwards."""
    return (f"import os, sys\nos.execv(sys.executable, [sys.executable, '-c', {body!r}, "
            f"{marker!r}])\n")


def leftovers(marker: str) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{entry.name}/cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def no_leftovers(marker: str) -> None:
    deadline = time.monotonic() + 2
    while leftovers(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert leftovers(marker) == [], "a sandboxed process outlived its run"


# ------------------------------------------------------------------ processes and time


def test_fork_bomb(isolated):
    marker = f"bomb-{secrets.token_hex(6)}"
    body = ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n"
            "        pass\n")
    result = run(isolated, marked(marker, body))
    assert result.timed_out and result.seconds < LIMITS.wall_seconds + 3
    no_leftovers(marker)
    assert run(isolated, "print('alive')").stdout == "alive\n"  # the machine still works


def test_infinite_loop(any_tier):
    result = run(any_tier, "while True:\n    pass\n")
    assert result.verdict is None or result.verdict["status"] != "ok"
    assert result.seconds < LIMITS.wall_seconds + 2  # CPU limit or wall clock, not forever


def test_cpu_spinning_threads(any_tier):
    body = ("import threading\ndef spin():\n    while True:\n        pass\n"
            "threads = [threading.Thread(target=spin) for _ in range(8)]\n"
            "[t.start() for t in threads]\n[t.join() for t in threads]\n")
    result = run(any_tier, body)
    assert result.verdict is None and result.seconds < LIMITS.wall_seconds + 2


def test_ignoring_sigterm(any_tier):
    marker = f"term-{secrets.token_hex(6)}"
    body = ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "while True:\n    time.sleep(0.1)\n")
    result = run(any_tier, marked(marker, body))
    assert result.timed_out and result.seconds < LIMITS.wall_seconds + 2
    no_leftovers(marker)


def test_double_fork_daemon_does_not_outlive_the_run(any_tier, tmp_path):
    marker = f"daemon-{secrets.token_hex(6)}"
    late = tmp_path / "written-late"
    body = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            "        time.sleep(2)\n"
            f"        open({str(late)!r}, 'w').write('late')\n"
            "        time.sleep(60)\n    os._exit(0)\nos._exit(0)\n")
    result = run(any_tier, marked(marker, body))
    assert result.seconds < LIMITS.wall_seconds + 2
    no_leftovers(marker)
    time.sleep(2.5)
    assert not late.exists()


def test_killing_its_parent(isolated):
    # bwrap only: in the subprocess tier the parent is this very process (not isolation)
    result = run(isolated, "import os, signal\nparent = os.getppid()\n"
                           "os.kill(parent, signal.SIGKILL)\nprint(parent)\n")
    # its parent is the PID namespace's init (pid 1, unkillable from inside), never this one
    assert result.stdout.split() == ["1"] and os.getpid() != 1
    assert run(isolated, "print('still here')").stdout == "still here\n"


def test_kill_every_process_it_can_see(isolated):
    sentinel = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        run(isolated, "import os, signal\nos.kill(-1, signal.SIGKILL)\n")
        assert sentinel.poll() is None, "a sandboxed kill(-1) reached a process outside"
    finally:
        sentinel.kill()
        sentinel.wait()


def test_raising_its_own_limits(any_tier):
    body = ("import resource\nfor kind in (resource.RLIMIT_CPU, resource.RLIMIT_AS, "
            "resource.RLIMIT_NPROC):\n    try:\n        resource.setrlimit(kind, (resource."
            "RLIM_INFINITY, resource.RLIM_INFINITY))\n        print('RAISED', kind)\n"
            "    except (ValueError, OSError):\n        pass\nwhile True:\n    pass\n")
    result = run(any_tier, body)
    assert "RAISED" not in result.stdout and result.seconds < LIMITS.wall_seconds + 2


# ------------------------------------------------------------------ memory, output, crashes


def test_memory_bomb(any_tier):
    result = run(any_tier, "blocks = []\nwhile True:\n    blocks.append(bytearray(64 << 20))\n")
    assert "MemoryError" in (result.verdict or {}).get("error", "") or result.verdict is None
    assert result.seconds < LIMITS.wall_seconds + 2


def test_single_huge_allocation(any_tier):
    result = run(any_tier, "x = bytearray(16 << 30)\nprint('GOT IT')\n")
    assert "GOT IT" not in result.stdout and "MemoryError" in result.verdict["error"]


def test_stdout_flood(any_tier):
    started = time.monotonic()
    result = run(any_tier, "import sys\nchunk = 'x' * 65536\nwhile True:\n"
                           "    sys.stdout.write(chunk)\n")
    assert result.truncated and len(result.stdout) <= LIMITS.output_bytes
    assert time.monotonic() - started < 2.5 and result.verdict is None


def test_stderr_flood_by_a_raw_fd(any_tier):
    result = run(any_tier, "import os\nchunk = b'y' * 65536\nwhile True:\n"
                           "    os.write(2, chunk)\n")
    assert result.truncated and len(result.stderr) <= LIMITS.output_bytes


def test_segfault_through_ctypes(any_tier):
    result = run(any_tier, "import ctypes\nctypes.string_at(0)\n")
    assert result.verdict is None and result.exit_code != 0
    assert run(any_tier, "print(1)").stdout == "1\n"


def test_deep_recursion(any_tier):
    body = "import sys\nsys.setrecursionlimit(10**7)\ndef f(n):\n    return f(n + 1)\nf(0)\n"
    result = run(any_tier, body)
    assert result.verdict is None or result.verdict["status"] == "error"
    assert result.seconds < LIMITS.wall_seconds + 2


def test_file_size_bomb(isolated):
    result = run(isolated, "with open('/tmp/big', 'wb') as f:\n    while True:\n"
                           "        f.write(b'z' * (1 << 20))\n")
    assert result.verdict is None or result.verdict["status"] == "error"
    assert result.seconds < LIMITS.wall_seconds + 2


def test_open_file_exhaustion(any_tier):
    result = run(any_tier, "import os\nfds = []\nwhile True:\n    fds.append(os.open('/dev/null',"
                           " os.O_RDONLY))\n")
    assert "Too many open files" in result.verdict["error"]
    assert run(any_tier, "print(2)").stdout == "2\n"


# ------------------------------------------------------------------ filesystem


def test_rm_rf_home(isolated, tmp_path):
    home = tmp_path / "home"
    (home / "docs").mkdir(parents=True)
    (home / "docs" / "thesis.txt").write_text("precious")
    body = ("import os, shutil, subprocess\n"
            f"for path in (os.path.expanduser('~'), {str(home)!r}, {str(Path.home())!r}):\n"
            "    subprocess.run(['rm', '-rf', path])\n    shutil.rmtree(path, True)\n")
    run(isolated, body)
    assert (home / "docs" / "thesis.txt").read_text() == "precious"
    assert Path.home().exists()


def test_rm_rf_root(isolated, tmp_path):
    precious = tmp_path / "precious.txt"
    precious.write_text("keep")
    result = run(isolated, "import subprocess\nsubprocess.run(['rm', '-rf', "
                           "'--no-preserve-root', '/'])\n")
    assert result.seconds < LIMITS.wall_seconds + 2
    assert precious.read_text() == "keep"
    assert (PROJECT / "pyproject.toml").exists() and Path("/usr/bin/env").exists()


def test_writing_outside_its_temp_dir(isolated, tmp_path):
    name = f"escape-{secrets.token_hex(4)}"
    targets = [tmp_path / name, PROJECT / name, Path("/usr") / name, Path("/etc") / name,
               Path("/var/tmp") / name, Path.home() / name]
    body = (f"for path in {[str(t) for t in targets]!r}:\n    try:\n"
            "        open(path, 'w').write('x')\n    except OSError:\n        pass\n")
    run(isolated, body)
    assert [t for t in targets if t.exists()] == []


def test_reading_ssh_keys(isolated, tmp_path):
    secret = f"PRIVATE-KEY-{secrets.token_hex(8)}"
    fake_home = tmp_path / "home" / ".ssh"
    fake_home.mkdir(parents=True)
    (fake_home / "id_ed25519").write_text(secret)
    real = Path.home() / ".ssh" / f"mcts-sandbox-fake-{secrets.token_hex(4)}"
    made_dir = not real.parent.exists()
    real.parent.mkdir(exist_ok=True)
    real.write_text(secret)
    try:
        body = ("import glob, os\n"
                f"paths = [{str(fake_home / 'id_ed25519')!r}, {str(real)!r}]\n"
                "paths += glob.glob(os.path.expanduser('~/.ssh/*'))\nfor path in paths:\n"
                "    try:\n        print(open(path).read())\n    except OSError as err:\n"
                "        print('denied', err)\n")
        assert secret not in output(run(isolated, body))
    finally:
        real.unlink()
        if made_dir:
            real.parent.rmdir()


def test_reading_etc_shadow(isolated):
    result = run(isolated, "for path in ('/etc/shadow', '/etc/passwd', '/etc/gshadow'):\n"
                           "    try:\n        print(open(path).read())\n    except OSError:\n"
                           "        pass\n")
    assert "root:" not in output(result)


def test_reading_the_projects_files(isolated):
    text = (PROJECT / "pyproject.toml").read_text()
    body = ("import os\n"
            f"for path in ({str(PROJECT / 'pyproject.toml')!r}, {str(PROJECT / 'README.md')!r}):\n"
            "    try:\n        print(open(path).read())\n    except OSError:\n        pass\n"
            f"print(os.path.exists({str(PROJECT)!r}))\n")
    result = run(isolated, body)
    assert "[build-system]" not in output(result) and text[:200] not in output(result)
    assert result.stdout.strip().endswith("False")


def test_environment_secret(any_tier, monkeypatch):
    secret = f"sk-{secrets.token_hex(12)}"
    monkeypatch.setenv("MCTS_SANDBOX_TEST_SECRET", secret)
    body = ("import os\nprint(dict(os.environ))\nfor pid in os.listdir('/proc'):\n"
            "    try:\n        print(open(f'/proc/{pid}/environ', 'rb').read())\n"
            "    except OSError:\n        pass\n")
    result = run(any_tier, body) if any_tier.isolation == "bwrap" else \
        run(any_tier, "import os\nprint(dict(os.environ))\n")
    assert secret not in output(result)


def test_the_subprocess_tier_works_in_a_private_temp_dir(plain):
    """What keeps the hostile programs that both tiers run (they delete their temp dir and
    working dir) away from the host's /tmp, where the subprocess tier has no namespace."""
    result = run(plain, "import os, tempfile\nprint(tempfile.gettempdir(), os.getcwd(), "
                        "os.environ['HOME'])\n")
    places = set(output(result).split())
    assert len(places) == 1 and "/tmp" not in places and "mcts-sandbox-" in places.pop()


def test_reading_the_hidden_tests_from_disk(any_tier):
    token = f"HIDDEN-{secrets.token_hex(8)}"
    program = ("import os\nhits = []\nfor root, dirs, files in os.walk('/tmp'):\n"
               "    for name in files:\n        try:\n"
               "            hits.append(open(os.path.join(root, name), errors='ignore').read())\n"
               "        except OSError:\n            pass\n"
               "for fd in os.listdir('/proc/self/fd'):\n    try:\n"
               "        hits.append(os.readlink(f'/proc/self/fd/{fd}'))\n"
               "        hits.append(os.read(int(fd), 1 << 20).decode(errors='ignore'))\n"
               "    except OSError:\n        pass\n"
               "hits.append(open('/proc/self/cmdline', 'rb').read().decode(errors='ignore'))\n"
               "print('\\n'.join(hits))\n"
               "def answer():\n    return None\n")
    [report] = run_tests([TestJob(program, (f"assert answer() == {token!r}",))], any_tier)
    assert not report.solved
    # the harness output is not returned by run_tests; rerun as a plain program to read it
    execution = any_tier.run_jobs([_tests_job(program, token)])[0]
    assert token not in output(execution)


def _tests_job(program: str, token: str):
    from mcts_agent.sandbox.runner import _Job

    return _Job("tests", program, tests=(f"assert answer() == {token!r}",))


def test_files_left_for_a_later_program(isolated):
    token = f"LEAK-{secrets.token_hex(8)}"
    writer = ("import os\n"
              "for path in ('/tmp/leak', '/dev/shm/leak', os.path.expanduser('~/.leak'), "
              "'/var/tmp/leak'):\n    try:\n"
              f"        open(path, 'w').write({token!r})\n    except OSError:\n        pass\n")
    reader = ("import os\nfor root in ('/tmp', '/dev/shm', '/var/tmp', os.path.expanduser('~')):"
              "\n    for dirpath, _, files in os.walk(root):\n        for name in files:\n"
              "            try:\n                print(open(os.path.join(dirpath, name)).read())"
              "\n            except OSError:\n                pass\n")
    before = _sandbox_dirs()
    run(isolated, writer)
    assert token not in output(run(isolated, reader))
    assert _sandbox_dirs() <= before  # the run's temp dir is gone


def _sandbox_dirs() -> set[str]:
    import tempfile

    return {p.name for p in Path(tempfile.gettempdir()).glob("mcts-sandbox-*")}


def test_mounting_over_the_system(isolated):
    result = run(isolated, "import subprocess\nr = subprocess.run(['mount', '-t', 'tmpfs', "
                           "'none', '/usr'], capture_output=True)\nprint(r.returncode)\n"
                           "import os\nprint(os.path.exists('/usr/bin/env'))\n")
    assert result.stdout.split()[-1] == "True" and result.stdout.split()[0] != "0"


def test_processes_outside_are_invisible(isolated):
    result = run(isolated, "import os\nfor pid in os.listdir('/proc'):\n    if pid.isdigit():\n"
                           "        print(open(f'/proc/{pid}/cmdline', 'rb').read())\n")
    assert "pytest" not in output(result) and str(os.getpid()) not in result.stdout.split()


# ------------------------------------------------------------------ network


def test_network_to_a_local_listener(isolated):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    port, seen, stop = server.getsockname()[1], [], threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                seen.append(server.accept())
            except OSError:
                continue

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        body = ("import socket\nfor host in ('127.0.0.1', 'localhost', '1.1.1.1'):\n    try:\n"
                f"        socket.create_connection((host, {port}), timeout=1)\n"
                "        print('CONNECTED', host)\n    except OSError:\n        pass\n")
        result = run(isolated, body)
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join()
        server.close()
    assert seen == [] and "CONNECTED" not in result.stdout


# ------------------------------------------------------------------ verdict tampering

GOOD_TESTS = ("assert add(1, 2) == 3", "assert add(5, 5) == 10")
WRONG = "def add(a, b):\n    return 0\n"
TAMPERING = {
    "prints_passed": WRONG + "print('PASSED'); print('All 2 tests passed.')\n",
    "sys_exit_0": WRONG + "import sys\nsys.exit(0)\n",
    "os_exit_0": WRONG + "import os\nos._exit(0)\n",
    "exit_during_test": "import os\ndef add(a, b):\n    os._exit(0)\n",
    "system_exit_during_test": "def add(a, b):\n    raise SystemExit(0)\n",
    "patches_builtins": WRONG + "import builtins\nbuiltins.AssertionError = type('X', (), {})\n"
                                "builtins.all = lambda *a: True\nbuiltins.abs = lambda x: 0\n",
    "patches_os_write_and_json": WRONG + "import os, json\nos.write = lambda fd, data: len(data)"
                                         "\njson.dumps = lambda *a, **k: '{}'\n",
    "always_equal": "class Any:\n    def __eq__(self, other):\n        return True\n"
                    "    def __ne__(self, other):\n        return False\n"
                    "    def __bool__(self):\n        return True\n"
                    "    def __sub__(self, other):\n        return 0\n"
                    "def add(a, b):\n    return Any()\n",
    "int_subclass_always_equal": "class Int(int):\n    def __eq__(self, other):\n"
                                 "        return True\n    __hash__ = int.__hash__\n"
                                 "def add(a, b):\n    return Int(0)\n",
    "forged_verdict_lines": WRONG + "import os\nfor fd in range(3, 64):\n    try:\n"
                                    "        os.write(fd, b'x test 0 1\\nx test 1 1\\nx done \\n')"
                                    "\n    except OSError:\n        pass\n",
    # deletes what it can reach of its own temp dir and working dir (its /tmp under bwrap);
    # never the host's /tmp: the subprocess tier runs this too, and it is not isolation
    "redefines_check_and_deletes_tests": WRONG + "def check(candidate):\n    return None\n"
                                                 "import glob, os, tempfile\n"
                                                 "for top in {tempfile.gettempdir(), os.getcwd()}:"
                                                 "\n    for p in glob.glob(top + '/**', "
                                                 "recursive=True):\n        try:\n"
                                                 "            os.remove(p)\n"
                                                 "        except OSError:\n            pass\n",
    "kills_harness_after_patching": "import os, signal\ndef add(a, b):\n"
                                    "    os.kill(os.getpid(), signal.SIGKILL)\n",
}


@pytest.mark.parametrize("name", sorted(TAMPERING))
def test_verdict_tampering_fails(any_tier, name):
    setup = "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert abs(candidate(2, " \
            "2) - 4) < 1e-9\n    assert all([candidate(0, 0) == 0])\n"
    jobs = [TestJob(TAMPERING[name], GOOD_TESTS), TestJob(TAMPERING[name], ("check(add)",),
                                                          setup)]
    for report in run_tests(jobs, any_tier):
        assert not report.solved and report.passed == 0, (name, report)


# ------------------------------------------------------------------ the gym eval() hole

EVAL_DATASETS = ["string_insertion", "countdown"]


def _touch(path: Path) -> str:
    return f"__import__('os').system('touch {path}')"


@pytest.mark.parametrize("dataset", EVAL_DATASETS)
def test_gym_scorer_does_not_run_the_answer(dataset, tmp_path):
    from environments.math.gym import ReasoningGymEnvironment
    from environments.math.stepwise import MathState

    env = ReasoningGymEnvironment(dataset)
    task = env.tasks(1)[0]
    target = tmp_path / "PWNED"
    assert env.score(MathState(task.problem, (f"Answer: {_touch(target)}",)), task) == 0.0
    assert not target.exists()
    right = MathState(task.problem, (f"Answer: {task.reference['answer']}",))
    assert env.score(right, task) == 1.0  # the sandboxed scorer still scores


def test_replayed_trees_do_not_run_a_crafted_answer_or_reference(tmp_path):
    from environments.math.gym import ReasoningGymEnvironment
    from mcts_agent.data.labels import labelled_nodes
    from mcts_agent.trees import NodeRecord, ResultFile, TreeRecord

    env = ReasoningGymEnvironment("string_insertion")
    task = env.tasks(1)[0]
    answer_file, reference_file = tmp_path / "FROM_ANSWER", tmp_path / "FROM_REFERENCE"
    crafted = json.loads(json.dumps(task.reference))
    crafted["answer"] = _touch(reference_file)
    forged_task = type(task)(task.id + "-forged", task.problem, crafted, {})
    trees = tmp_path / "trees.jsonl"
    file = ResultFile(trees)
    for t in (task, forged_task):
        nodes = (NodeRecord(None, "", 0, 2, 0.5, 1.0, 0.0, 0, 0.0, False),
                 NodeRecord(0, f"Answer: {_touch(answer_file)}", 1, 1, 0.0, 1.0, -1.0, 5, 0.0,
                            True))
        file.append(TreeRecord(t, "data", nodes, None, None))
    nodes = labelled_nodes(ResultFile(trees).read(), env)
    assert [n.label for n in nodes] == [False, False]  # both scored (in the sandbox), wrong
    from typer.testing import CliRunner

    from mcts_agent.cli import app

    result = CliRunner().invoke(app, ["eval-critic", str(trees), "--critic", "verifier",
                                      "--env", "gym", "--env-arg", "dataset=string_insertion",
                                      "--out", str(tmp_path / "report")])
    assert result.exit_code == 0 and "verifier" in result.output, result.output
    assert not answer_file.exists() and not reference_file.exists(), result.output


def test_every_executing_scorer_is_sandboxed():
    """Re-scan reasoning-gym: a scorer module that evals / execs / parses with sympy must be
    in the sandboxed list."""
    import inspect
    import re

    from reasoning_gym.factory import DATASETS

    from environments.math.gym import EXECUTING_SCORERS

    pattern = re.compile(r"\beval\(|\bexec\(|parse_expr|sympify|parse_latex|(?<!re\.)\bcompile\(")
    missing = []
    for name, (cls, _) in DATASETS.items():
        modules = {sys.modules[k.__module__] for k in cls.__mro__ if "score_answer" in k.__dict__}
        if any(pattern.search(inspect.getsource(m)) for m in modules) and \
                name not in EXECUTING_SCORERS:
            missing.append(name)
    assert missing == []


def test_sandbox_survives_the_suite(isolated):
    os.kill(os.getpid(), 0)
    assert signal.getsignal(signal.SIGTERM) is not None
    assert run(isolated, "print('ok')").stdout == "ok\n"
