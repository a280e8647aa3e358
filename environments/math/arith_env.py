"""`arith` as a search environment, in the tiny reasoner's format (``Q: 3+9*3=?``)."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from typing import Any

from environments.math.arith import (
    SPLITS,
    ArithConfig,
    ArithProblem,
    Split,
    check_split,
    check_step,
    generate,
    iter_problems,
    parse_answer,
    render_solution,
    solve,
)
from environments.math.stepwise import MathState, StepwiseMath
from mcts_agent.contracts import Step, Task


def same_integer(answer: str, reference: object) -> bool:
    try:
        return int(answer) == int(reference)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return False


class ArithEnvironment(StepwiseMath):
    """Multi-step integer arithmetic; knobs as in :class:`ArithConfig`.

    With ``check_steps`` (the default) the environment works like a calculator beside the
    model: a line whose arithmetic is false (or an answer that is not the last step's result)
    ends the episode as a failure, with no answer. This needs no reference answer, so it holds
    in inference mode too.

    Besides the search contract it serves whole-completion training and evaluation (the tiny
    reasoner's): :meth:`task_stream`, :meth:`solution`, :meth:`is_correct` and
    :attr:`settings`.
    """

    name = "arith"
    splits = SPLITS

    def __init__(
        self, config: ArithConfig | None = None, check_steps: bool = True, **knobs: object
    ) -> None:
        super().__init__("Q: {problem}=?\n", checker=same_integer)
        self.config = config or ArithConfig(**knobs)
        self.check_steps = check_steps

    def step(self, state: MathState, action: str) -> Step:
        step = super().step(state, action)
        if self.check_steps and not check_step(state.text, action.strip()):
            return Step(step.state, reward=0.0, done=True, info={"invalid_step": True})
        return step

    def answer(self, state: MathState) -> str | None:
        if self.check_steps and state.steps and not check_step(
            MathState(state.prompt, state.steps[:-1]).text, state.steps[-1]
        ):
            return None  # a failed episode has no answer
        return super().answer(state)

    def corrupt_step(self, state: MathState, action: str, rng: random.Random) -> str | None:
        """RISE-style negative: ``action`` with the number after its last ``=`` (or after
        ``Answer:``) changed slightly (one digit, or ±1 / ±10), checked false with the calculator
        (:func:`check_step`); None when ``action`` is not itself a valid line."""
        line = action.strip()
        if not check_step(state.text, line) or not (m := _LAST_NUMBER.search(line)):
            return None
        value = int(m.group(1))
        for edited in _nearby(value, rng):
            candidate = line[:m.start(1)] + str(edited) + line[m.end(1):]
            if not check_step(state.text, candidate):
                return candidate
        return None

    def tasks(self, n: int, split: Split = "test", seed: int | None = None) -> list[Task]:
        """``n`` distinct problems of one split as tasks (held out: ``split="test"``); an
        unknown split is a :class:`~mcts_agent.errors.ConfigError`."""
        return [_task(p) for p in generate(self.config, n, seed=seed, split=check_split(split))]

    @property
    def settings(self) -> dict[str, Any]:
        """The generator's knobs as JSON data (what a training report records)."""
        return self.config.model_dump(mode="json")

    def task_stream(self, split: Split | None = "train", seed: int | None = None
                    ) -> Iterator[Task]:
        """An endless, seeded stream of tasks of ``split`` (they may repeat): training data."""
        return map(_task, iter_problems(self.config, seed=seed, split=split))

    def solution(self, task: Task) -> str:
        """The reference completion after the prompt: ``Step i: a op b=c`` lines, then
        ``Answer: N``, each ending in a newline."""
        return render_solution(_problem(task))

    def is_correct(self, task: Task, completion: str) -> bool:
        """Whether the first ``Answer:`` line of a whole completion equals the reference."""
        return parse_answer(completion) == _problem(task).answer


_LAST_NUMBER = re.compile(r"(-?\d+)\s*$")


def _nearby(value: int, rng: random.Random) -> list[int]:
    """Plausible slips for ``value``, in a seeded order: one digit changed, or ±1 / ±10."""
    digits = str(abs(value))
    sign = -1 if value < 0 else 1
    slips = {value + d for d in (-10, -1, 1, 10)}
    for i in range(len(digits)):
        for d in "0123456789":
            if d != digits[i] and not (i == 0 and d == "0" and len(digits) > 1):
                slips.add(sign * int(digits[:i] + d + digits[i + 1:]))
    slips.discard(value)
    ordered = sorted(slips)
    rng.shuffle(ordered)
    return ordered


def _task(problem: ArithProblem) -> Task:
    return Task(problem.id, problem.question, problem.answer,
                {"steps": list(problem.steps), "split": problem.split})


def _problem(task: Task) -> ArithProblem:
    """The problem behind a task; one made elsewhere (no steps) is solved here."""
    steps = task.metadata.get("steps")
    if steps is None:
        steps, answer = solve(task.problem)
    else:
        answer = int(task.reference)
    return ArithProblem(task.id, task.problem, answer, tuple(steps),
                        task.metadata.get("split", "train"))
