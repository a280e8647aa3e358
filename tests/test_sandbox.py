"""The sandbox's API: grading, feedback, partial credit, batching, the isolation probe and the
refusal to run without isolation when asked."""

from __future__ import annotations

import logging
import subprocess

import pytest

from mcts_agent.errors import UserError
from mcts_agent.sandbox import (
    Limits,
    Sandbox,
    TestJob,
    default_sandbox,
    find_bwrap,
    run_tests,
)
from mcts_agent.sandbox import runner as sandbox_runner

ADD = "def add(a, b):\n    return a + b\n"
TESTS = ("assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(2, 2) == 4")


@pytest.fixture(scope="module")
def box():
    with Sandbox(Limits(cpu_seconds=3, wall_seconds=6), workers=2) as sandbox:
        yield sandbox


def test_correct_program_passes(box):
    [report] = run_tests([TestJob(ADD, TESTS)], box)
    assert report.solved and report.score == 1.0 and report.error is None
    assert (report.passed, report.total) == (3, 3)
    assert report.feedback == "All 3 tests passed."


def test_wrong_program_fails_with_feedback_naming_the_assert(box):
    [report] = run_tests([TestJob("def add(a, b):\n    return a - b\n", TESTS)], box)
    assert not report.solved and report.score == 0.0 and report.error is None
    assert "assert add(1, 2) == 3" in report.feedback and "AssertionError" in report.feedback
    assert not report.outcomes[0].passed and "AssertionError" in report.outcomes[0].error


def test_syntax_error_names_its_line(box):
    program = "def add(a, b):\n    x = 1\n    return a +\n"
    [report] = run_tests([TestJob(program, TESTS)], box)
    assert report.error is not None and report.error.startswith("SyntaxError")
    assert "line 3" in report.error and report.score == 0.0 and not report.solved
    assert "line 3" in report.feedback


def test_partial_credit(box):
    program = "def add(a, b):\n    return a + b if a >= 0 else 5\n"
    [report] = run_tests([TestJob(program, TESTS)], box)
    assert report.passed == 2 and report.score == pytest.approx(2 / 3)
    assert "Test 2 failed" in report.feedback and "add(-1, 1)" in report.feedback


def test_humaneval_style_check_in_setup(box):
    setup = ("def check(candidate):\n    assert candidate(2, 3) == 5\n"
             "    assert candidate(0, 0) == 0\n")
    [good, bad] = run_tests([TestJob(ADD, ("check(add)",), setup),
                             TestJob("def add(a, b):\n    return a * b\n", ("check(add)",),
                                     setup)], box)
    assert good.solved and not bad.solved
    assert "candidate(2, 3) == 5" in bad.feedback  # the failing line of the check function


def test_exceptions_and_crash_at_import(box):
    [raising, crashing] = run_tests([
        TestJob("def add(a, b):\n    raise ValueError('nope')\n", TESTS),
        TestJob("import nonexistent_module_xyz\n", TESTS)], box)
    assert raising.error is None and "ValueError: nope" in raising.outcomes[0].error
    assert "ModuleNotFoundError" in crashing.error and crashing.score == 0.0


def test_batch_of_50_equals_one_by_one(box):
    jobs = [TestJob(f"def add(a, b):\n    return a + b + {i % 3 == 0}\n"
                    + ("" if i % 7 else "syntax error here\n"), TESTS) for i in range(50)]
    together = run_tests(jobs, box)
    alone = [run_tests([job], box)[0] for job in jobs]
    key = [(r.passed, r.total, r.error, tuple(o.passed for o in r.outcomes)) for r in together]
    assert key == [(r.passed, r.total, r.error, tuple(o.passed for o in r.outcomes))
                   for r in alone]
    assert sum(r.solved for r in together) == sum(1 for i in range(50) if i % 3 and i % 7)


def test_run_python_stdin_result_and_exit_codes(box):
    ok, failing, exiting = box.run_python(
        ["import sys\ntext = sys.stdin.read()\nprint(text.upper())\n__result__ = len(text)\n",
         "1 / 0\n", "import sys\nsys.exit(3)\n"], stdin=["abc", "", ""])
    assert ok.exit_code == 0 and ok.stdout == "ABC\n" and ok.verdict["result"] == 3
    assert failing.exit_code == 1 and "ZeroDivisionError" in failing.verdict["error"]
    assert exiting.exit_code == 3 and exiting.verdict["status"] == "exit"
    with pytest.raises(ValueError, match="1 stdin"):
        box.run_python(["pass", "pass"], stdin=["x"])


def _namespaces_work() -> bool:
    bwrap = find_bwrap()
    if bwrap is None:
        return False
    done = subprocess.run([bwrap, "--unshare-all", "--ro-bind", "/", "/", "true"],
                          capture_output=True, check=False)
    return done.returncode == 0


def test_isolation_probe(box):
    if _namespaces_work():
        assert box.isolation == "bwrap" and box.missing is None
    else:
        assert box.isolation == "subprocess" and box.missing


def test_require_isolation_refuses_without_bwrap(caplog):
    with pytest.raises(UserError, match="isolation required"):
        Sandbox(bwrap="/nonexistent/bwrap", require_isolation=True)
    sandbox_runner._WARNED.clear()
    with caplog.at_level(logging.WARNING, logger="mcts_agent.sandbox.runner"):
        fallback = Sandbox(bwrap="/nonexistent/bwrap")
        Sandbox(bwrap="/nonexistent/bwrap").close()
    warnings = [r for r in caplog.records if "NOT ISOLATED" in r.getMessage()]
    assert len(warnings) == 1 and "bwrap failed to start" in warnings[0].getMessage()
    assert fallback.isolation == "subprocess"
    [report] = run_tests([TestJob(ADD, TESTS)], fallback)  # the fallback still grades
    assert report.solved
    fallback.close()


def test_subprocess_tier_grades_the_same(box):
    jobs = [TestJob(ADD, TESTS), TestJob("def add(a, b):\n    return 0\n", TESTS),
            TestJob("def add(:\n", TESTS)]
    with Sandbox(Limits(cpu_seconds=3, wall_seconds=6), workers=2, tier="subprocess") as sub:
        assert sub.isolation == "subprocess"
        plain = run_tests(jobs, sub)
    isolated = run_tests(jobs, box)
    assert [(r.passed, r.error) for r in plain] == [(r.passed, r.error) for r in isolated]


def test_default_sandbox_is_shared():
    assert default_sandbox() is default_sandbox()


def test_bad_settings_are_user_errors():
    with pytest.raises(UserError, match="tier"):
        Sandbox(tier="docker")
