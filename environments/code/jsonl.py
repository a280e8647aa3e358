"""`code-jsonl`: the user's own file of programming problems, graded by their tests in the sandbox.

Rows are read like the ``jsonl`` math environment's (``.jsonl``, ``.json``, ``.csv``,
``.parquet``, saved datasets; a malformed line is skipped with a warning naming ``file:line``
and counted in ``skipped``). Two test styles are understood:

* MBPP: ``test_list`` (asserts, each one test; partial credit = share passed), optional
  ``test_setup_code`` and ``text`` (the description, written as comment lines before the
  program). Unless the row gives ``visible_tests``, the first assert is shown in the prompt as
  a comment and is the visible test, as MBPP's own prompts do.
* HumanEval: ``test`` (source defining ``check(candidate)``) and ``entry_point``; one test
  ``check(<entry point>)``. Visible tests: ``visible_tests``, else the prompt's ``>>>`` examples.

``prompt`` is the start of the program (a signature and docstring; may be empty when ``text``
describes the task). Ids: the row's ``id`` or ``task_id``, else a hash of its content (ids then
follow the content, never the row's position).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from environments.code.base import CodeEnvironment, Runner, example_asserts
from environments.math.dataset import RowSource
from mcts_agent.contracts import Task, content_hash
from mcts_agent.errors import ConfigError


class JsonlCodeEnvironment(CodeEnvironment, RowSource):
    """Programming problems from a local file (see the module docstring).

    Args:
        path: the file (or a folder saved with ``datasets``' ``save_to_disk``).
        max_lines: lines the model may write before the episode is cut.
        steps: ``"line"`` or ``"program"`` (see :class:`CodeEnvironment`).
    """

    name = "code-jsonl"
    row_needs = ("a `prompt` or `text` and tests: `test_list` (asserts) or `test` with "
                 "`entry_point`")

    def __init__(self, path: str | Path, max_lines: int = 40, runner: Runner | None = None,
                 sandbox: Any = None, steps: str = "line") -> None:
        super().__init__(max_lines=max_lines, runner=runner, sandbox=sandbox, steps=steps)
        self.path = Path(path)
        if not self.path.exists():
            raise ConfigError(f"no problem file at {self.path}; give a .jsonl, .json, .csv or "
                              ".parquet file (path=)")
        self.name = f"code-jsonl:{self.path.name}"
        self._load_rows()

    def _task(self, location: str, row: Any) -> Task | str:
        return row_task(location, row)


def row_task(location: str, row: Any) -> Task | str:
    """The task of one row, or why the row is skipped."""
    if isinstance(row, ValueError):
        return str(row)
    if not isinstance(row, Mapping):
        return f"not an object but {type(row).__name__}"
    prompt, text = row.get("prompt") or "", row.get("text") or ""
    if not isinstance(prompt, str) or not isinstance(text, str) or not (prompt + text).strip():
        return "needs a non-empty string `prompt` or `text`"
    tests = _tests(row)
    if isinstance(tests, str):
        return tests
    setup, asserts, style = tests
    visible = row.get("visible_tests")
    if visible is not None and not _strings(visible):
        return "`visible_tests` must be a list of strings"
    shown = ""
    if visible is None:
        visible = example_asserts(prompt, row.get("entry_point"))
        if not visible and style == "mbpp":  # MBPP shows its first test in the prompt
            visible, shown = asserts[:1], f"# {asserts[0]}\n"
    comment = "".join(f"# {line}\n" for line in text.strip().splitlines())
    problem = comment + shown + prompt
    reference = {"setup": setup, "tests": asserts}
    ident = _own_id(row) or "code-" + content_hash(problem, reference)
    return Task(ident, problem, reference, {"source": location, "visible_tests": list(visible),
                                           "visible_setup": setup,
                                           "entry_point": row.get("entry_point")})


def _tests(row: Mapping[str, Any]) -> tuple[str, list[str], str] | str:
    """(setup, tests, style) of a row, or why it has none usable."""
    test_list = row.get("test_list")
    if isinstance(test_list, str):  # a CSV cell holding a JSON list
        try:
            test_list = json.loads(test_list)
        except json.JSONDecodeError:
            test_list = [test_list]
    if test_list is not None:
        if not _strings(test_list) or not test_list:
            return "`test_list` must be a non-empty list of strings (asserts)"
        setup = row.get("test_setup_code") or ""
        if not isinstance(setup, str):
            return "`test_setup_code` must be a string"
        return setup, list(test_list), "mbpp"
    test, entry = row.get("test"), row.get("entry_point")
    if isinstance(test, str) and test.strip():
        if not isinstance(entry, str) or not entry.isidentifier():
            return "a `test` (check function) needs an `entry_point` (the function's name)"
        return test, [f"check({entry})"], "humaneval"
    return "needs tests: `test_list` (asserts) or `test` with `entry_point`"


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value)


def _own_id(row: Mapping[str, Any]) -> str | None:
    for key in ("id", "task_id"):
        value = row.get(key)
        if not isinstance(value, bool) and isinstance(value, (str, int)) and str(value).strip():
            return str(value).strip()
    return None
