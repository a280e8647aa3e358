"""The user's own math problems (JSONL, GSM8K style) checked with `math-verify`."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from environments.math.stepwise import MathState, StepwiseMath
from mcts_agent.contracts import Task

log = logging.getLogger(__name__)

_GSM8K_FINAL = re.compile(r"####\s*(.+?)\s*$", re.S)


def final_answer(answer: Any) -> str:
    """The final answer of a reference: the text after GSM8K's ``####``, commas dropped."""
    text = str(answer).strip()
    match = _GSM8K_FINAL.search(text)
    if match:
        text = match.group(1).strip()
    return text.replace(",", "")


def math_equal(answer: str, reference: Any) -> bool:
    """``math-verify`` equivalence (``\\frac{1}{2}`` ≡ ``0.5``); plain comparison if it fails.

    math-verify bounds its work with signal timers, which work only in the main thread;
    elsewhere it raises, and the plain comparison decides.
    """
    from math_verify import parse, verify

    gold, pred = final_answer(reference), answer.strip()
    try:
        return bool(verify(parse(f"${gold.strip('$')}$"), parse(f"${pred.strip('$')}$")))
    except Exception:
        return gold == pred


class JsonlMathEnvironment(StepwiseMath):
    """Problems from a JSON-lines file: one object per line with a question and an answer.

    ``system_prompt`` and ``few_shot`` (worked examples in the same line-per-step format) go
    before every problem. Malformed lines are skipped and counted (``skipped``), each with a
    warning naming the file and line.
    """

    name = "jsonl"

    def __init__(
        self,
        path: str | Path,
        question_field: str = "question",
        answer_field: str = "answer",
        id_field: str | None = None,
        prompt_template: str = "Q: {problem}\n",
        system_prompt: str = "",
        few_shot: str = "",
    ) -> None:
        super().__init__(prompt_template, checker=math_equal)
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no dataset file at {self.path}")
        self.fields = question_field, answer_field, id_field
        self.preamble = system_prompt + few_shot
        self.skipped = 0

    def reset(self, task: Task) -> MathState:
        return MathState(self.preamble + self.prompt_template.format(problem=task.problem))

    def tasks(self, n: int | None = None, split: str | None = None,
              seed: int | None = None) -> list[Task]:
        """The file's usable problems in order (the first ``n``); ``split``/``seed`` unused."""
        tasks, self.skipped = [], 0
        with self.path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                task = self._task(line, number)
                if task is None:
                    self.skipped += 1
                else:
                    tasks.append(task)
        if not tasks:
            question, answer, _ = self.fields
            raise ValueError(f"{self.path}: no usable line (each needs a JSON object with a "
                             f"string {question!r} and an {answer!r}); {self.skipped} skipped")
        return tasks if n is None else tasks[:n]

    def _task(self, line: str, number: int) -> Task | None:
        question_field, answer_field, id_field = self.fields
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            log.warning("%s:%d: skipped, not JSON (%s)", self.path, number, err.msg)
            return None
        if not isinstance(row, dict) or not isinstance(row.get(question_field), str) \
                or not row[question_field].strip() or row.get(answer_field) is None:
            log.warning("%s:%d: skipped, needs a string %r and an %r", self.path, number,
                        question_field, answer_field)
            return None
        task_id = str(row[id_field]) if id_field and id_field in row else \
            f"{self.path.stem}-{number}"
        return Task(task_id, row[question_field].strip(), final_answer(row[answer_field]),
                    {"line": number})
