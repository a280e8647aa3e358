"""`arith` as a search environment, in the tiny reasoner's format (``Q: 3+9*3=?``)."""

from __future__ import annotations

from environments.math.arith import ArithConfig, Split, generate
from environments.math.stepwise import StepwiseMath
from mcts_agent.contracts import Task


def same_integer(answer: str, reference: object) -> bool:
    try:
        return int(answer) == int(reference)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return False


class ArithEnvironment(StepwiseMath):
    """Multi-step integer arithmetic; knobs as in :class:`ArithConfig`."""

    name = "arith"

    def __init__(self, config: ArithConfig | None = None, **knobs: object) -> None:
        super().__init__("Q: {problem}=?\n", checker=same_integer)
        self.config = config or ArithConfig(**knobs)

    def tasks(self, n: int, split: Split = "test", seed: int | None = None) -> list[Task]:
        """``n`` distinct problems of one split as tasks (held out: ``split="test"``)."""
        return [Task(p.id, p.question, p.answer, {"steps": list(p.steps), "split": p.split})
                for p in generate(self.config, n, seed=seed, split=split)]
