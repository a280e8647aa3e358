"""Any `reasoning-gym` generator as a search environment, scored by its own scorer."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from environments.math.stepwise import MathState, StepwiseMath
from mcts_agent.contracts import Task


def _split_of(question: str) -> str:
    """Half the questions are held out, chosen by a hash of their text."""
    return "test" if hashlib.sha256(question.encode()).digest()[0] < 128 else "train"


class ReasoningGymEnvironment(StepwiseMath):
    """``reasoning_gym.create_dataset(dataset, **dataset_kwargs)`` tasks (chain_sum,
    basic_arithmetic, gsm_symbolic, countdown …), reasoned line by line, ended by ``Answer:``.

    Questions are split into train and test by a hash of their text, so held-out tasks never
    appear in training. ``score`` is the dataset's own ``score_answer`` (partial credit in [0, 1]
    where the dataset gives it; a tree counts as solved only at 1).
    """

    name = "gym"

    def __init__(
        self,
        dataset: str = "chain_sum",
        prompt_template: str = "Q: {problem}\n",
        seed: int = 0,
        **dataset_kwargs: Any,
    ) -> None:
        super().__init__(prompt_template)
        self.dataset, self.seed, self.dataset_kwargs = dataset, seed, dataset_kwargs
        self._scorer = self._build_scorer()  # fails now, not mid-search, on bad settings

    def _build_scorer(self) -> Any:
        import reasoning_gym

        try:
            return reasoning_gym.create_dataset(self.dataset, size=1, seed=self.seed,
                                                **self.dataset_kwargs)
        except Exception as err:
            raise ValueError(f"reasoning-gym could not build {self.dataset!r} with "
                             f"{self.dataset_kwargs}: {err}") from err

    def tasks(self, n: int, split: str = "test", seed: int | None = None) -> list[Task]:
        """``n`` tasks of one split (``train`` / ``test``), the same for the same seed.

        A question belongs to one split by a hash of its text, so no held-out question can
        ever be drawn for training, whatever the seed.
        """
        import reasoning_gym

        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        base = self.seed if seed is None else seed
        size = 2 * n + 16
        while True:
            entries = reasoning_gym.create_dataset(self.dataset, size=size, seed=base,
                                                   **self.dataset_kwargs)
            mine = [e for e in entries if _split_of(e["question"]) == split][:n]
            if len(mine) == n or size > 64 * n + 1024:
                break
            size *= 2
        if len(mine) < n:
            raise ValueError(f"{self.dataset!r} gave only {len(mine)} {split} tasks of {n}")
        # the entry is the scorer's reference; JSON-safe so results files can hold it
        return [Task(f"{self.dataset}-{split}-{base}-{i}", entry["question"],
                     json.loads(json.dumps(entry, default=str)), {"dataset": self.dataset})
                for i, entry in enumerate(mine)]

    def score(self, state: MathState, task: Task) -> float | None:
        if task.reference is None:
            return None
        answer = self.answer(state)
        if answer is None:
            return 0.0
        try:
            return float(self._scorer.score_answer(answer, task.reference))
        except Exception:  # a scorer that chokes on a garbled answer: not correct
            return 0.0
