"""What tree search is measured against: greedy decoding and best-of-N sampling.

Both complete whole solutions in batched policy calls and play them through the environment,
so their answers are judged exactly like the tree's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from ..contracts import Environment, Task
from ..episodes import final_answer, play_text
from ..llm.base import GenerationRequest, Policy


@dataclass
class Attempt:
    """One task's sampled solutions, judged by the environment."""

    task: Task
    texts: list[str]
    answers: list[str | None]
    scores: list[float]
    tokens: int

    @property
    def any_correct(self) -> bool:
        """Data mode: the verifier would find a correct solution among the samples."""
        return any(score == 1.0 for score in self.scores)

    @property
    def majority_correct(self) -> bool:
        """Inference mode: the most common answer (no reference used to pick it) is right."""
        votes = Counter(a for a in self.answers if a is not None)
        if not votes:
            return False
        best = votes.most_common(1)[0][0]
        return self.scores[self.answers.index(best)] == 1.0


def sample_solutions(
    env: Environment,
    policy: Policy,
    tasks: Sequence[Task],
    n: Sequence[int] | int,
    *,
    temperature: float,
    max_tokens: int,
    seed: int = 0,
) -> list[Attempt]:
    """``n[i]`` whole solutions for ``tasks[i]`` in one batched call (temperature 0: greedy)."""
    counts = [n] * len(tasks) if isinstance(n, int) else list(n)
    requests = [
        GenerationRequest(env.prompt(env.reset(task)), n=count, max_tokens=max_tokens,
                          temperature=temperature, seed=seed + i)
        for i, (task, count) in enumerate(zip(tasks, counts, strict=True))]
    attempts = []
    for task, candidates in zip(tasks, policy.propose(requests), strict=True):
        answers, scores = [], []
        for candidate in candidates:
            state, done = play_text(env, env.reset(task), candidate.text)
            answers.append(final_answer(env, state) if done else None)
            scores.append((env.score(state, task) or 0.0) if done else 0.0)
        attempts.append(Attempt(task, [c.text for c in candidates], answers, scores,
                                sum(c.num_tokens for c in candidates)))
    return attempts
