"""`arith` as a search environment, in the tiny reasoner's format (``Q: 3+9*3=?``)."""

from __future__ import annotations

from environments.math.arith import ArithConfig, Split, check_step, generate
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
    """

    name = "arith"

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

    def tasks(self, n: int, split: Split = "test", seed: int | None = None) -> list[Task]:
        """``n`` distinct problems of one split as tasks (held out: ``split="test"``)."""
        return [Task(p.id, p.question, p.answer, {"steps": list(p.steps), "split": p.split})
                for p in generate(self.config, n, seed=seed, split=split)]
