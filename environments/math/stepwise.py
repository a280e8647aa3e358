"""Step-by-step text reasoning as an environment: one line per step, ``Answer: …`` ends it.

The state is an immutable value (the rendered prompt plus the steps so far), so branches of a
tree can never share mutable state. Subclasses choose the prompt template and how an answer
is checked against the task's reference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mcts_agent.contracts import Step, Task


@dataclass(frozen=True)
class MathState:
    prompt: str
    steps: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        """Prompt and steps as the policy sees them, each step on its own line."""
        return self.prompt + "".join(step + "\n" for step in self.steps)


class StepwiseMath:
    """Line-per-step reasoning with a final ``Answer:`` line.

    ``prompt_template`` renders the task (``{problem}`` is ``Task.problem``); ``checker(answer,
    reference)`` says whether an extracted answer matches the reference.
    """

    name = "stepwise-math"
    step_delimiter = "\n"

    def __init__(
        self,
        prompt_template: str = "Q: {problem}\n",
        checker: Callable[[str, Any], bool] | None = None,
        answer_prefix: str = "Answer:",
    ) -> None:
        self.prompt_template = prompt_template
        self.checker = checker or (lambda answer, reference: answer == str(reference).strip())
        self.answer_prefix = answer_prefix

    def reset(self, task: Task) -> MathState:
        return MathState(self.prompt_template.format(problem=task.problem))

    def step(self, state: MathState, action: str) -> Step:
        line = action.strip()
        if "\n" in line:
            raise ValueError("one step is one line; got several")
        done = line.startswith(self.answer_prefix)
        return Step(MathState(state.prompt, (*state.steps, line)), done=done)

    def prompt(self, state: MathState) -> str:
        return state.text

    def answer(self, state: MathState) -> str | None:
        """The text after the answer prefix on the last line, if the episode ended there."""
        if not state.steps or not state.steps[-1].startswith(self.answer_prefix):
            return None
        return state.steps[-1][len(self.answer_prefix):].strip() or None

    def score(self, state: MathState, task: Task) -> float | None:
        if task.reference is None:
            return None
        answer = self.answer(state)
        # bool(): a checker may return any truthy value, the score stays 0.0 or 1.0
        return float(answer is not None and bool(self.checker(answer, task.reference)))
