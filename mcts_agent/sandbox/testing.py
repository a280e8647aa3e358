"""Unit tests as a verifier: a wave of (program, tests) jobs graded in one batched call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mcts_agent.sandbox.runner import Execution, Sandbox, _Job, default_sandbox

FEEDBACK_CHARS = 1024


@dataclass(frozen=True)
class TestJob:
    """A candidate program and the tests it must pass. Each test runs after the program, with
    the program's names in scope, ``setup`` (imports, a HumanEval ``check``) run before it."""

    __test__ = False  # not a pytest class

    program: str
    tests: tuple[str, ...]
    setup: str = ""


@dataclass(frozen=True)
class TestOutcome:
    """One test: passed, or the assertion / exception text with a short traceback."""

    __test__ = False

    passed: bool
    error: str | None


@dataclass(frozen=True)
class TestReport:
    """A job's grade. ``error``: the program itself failed (syntax error with its line, a crash
    at import, a timeout, no verdict); ``feedback``: readable text for a critic or the next
    expansion (the first failing test and its error, or the program error)."""

    __test__ = False

    passed: int
    total: int
    outcomes: tuple[TestOutcome, ...]
    error: str | None
    feedback: str

    @property
    def score(self) -> float:
        """Share of tests passed; 0 when there are none or the program failed."""
        return 0.0 if self.error or not self.total else self.passed / self.total

    @property
    def solved(self) -> bool:
        return self.error is None and self.total > 0 and self.passed == self.total


def run_tests(jobs: Sequence[TestJob], sandbox: Sandbox | None = None) -> list[TestReport]:
    """Grade every job of a wave in one batched, parallel sandbox call."""
    box = sandbox or default_sandbox()
    runs = box.run_jobs([_Job("tests", job.program, setup=job.setup, tests=tuple(job.tests))
                         for job in jobs])
    return [report(job, run, box) for job, run in zip(jobs, runs, strict=True)]


def report(job: TestJob, run: Execution, box: Sandbox) -> TestReport:
    """The :class:`TestReport` of one run (failures the harness could not report included)."""
    total = len(job.tests)
    error = _run_error(run, box)
    verdict = run.verdict or {}
    if error is None and verdict.get("status") == "error":
        error = verdict["error"]
    results = verdict.get("tests") or []
    outcomes = tuple(_outcome(results[i] if i < len(results) else None) for i in range(total))
    passed = sum(outcome.passed for outcome in outcomes) if error is None else 0
    return TestReport(passed, total, outcomes, error, _feedback(job, outcomes, error))


def _run_error(run: Execution, box: Sandbox) -> str | None:
    """Why the harness gave no verdict, or None when it did."""
    tail = run.stderr.strip()[-300:]
    if run.timed_out:
        return f"timed out after {box.limits.wall_seconds:g} s (wall-clock limit)"
    if run.truncated:
        return f"output over {box.limits.output_bytes} bytes: killed"
    if run.verdict is None:
        how = (f"killed by signal {-run.exit_code}" if run.exit_code and run.exit_code < 0
               else f"exit code {run.exit_code}")
        return f"no verdict (exited early: {how})" + (f"\n{tail}" if tail else "")
    return None


def _outcome(result: dict | None) -> TestOutcome:
    if result is None:
        return TestOutcome(False, "no result for this test")
    return TestOutcome(bool(result["passed"]), result.get("error"))


def _feedback(job: TestJob, outcomes: Sequence[TestOutcome], error: str | None) -> str:
    if error is not None:
        text = f"The program failed: {error}"
    else:
        failing = [i for i, outcome in enumerate(outcomes) if not outcome.passed]
        if not failing:
            return f"All {len(outcomes)} tests passed."
        first = failing[0]
        text = (f"{len(outcomes) - len(failing)}/{len(outcomes)} tests passed. Test {first + 1} "
                f"failed:\n{job.tests[first].strip()[:300]}\n{outcomes[first].error or ''}")
    return text if len(text) <= FEEDBACK_CHARS else text[:FEEDBACK_CHARS - 3] + "..."
