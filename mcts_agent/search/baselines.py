"""What tree search is measured against: greedy decoding and best-of-N sampling.

Both complete whole solutions in batched policy calls and play them through the environment,
so their answers are judged exactly like the tree's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from ..contracts import Environment, Task, checked_score, final_answer, is_interactive
from ..episodes import play_episodes, play_text
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
    max_turns: int | None = None,
    max_step_tokens: int | None = None,
) -> list[Attempt]:
    """``n[i]`` whole solutions for ``tasks[i]`` in one batched call (temperature 0: greedy).

    An interactive environment (an agent) is played turn by turn instead, every live episode's
    turn in one call, for at most ``max_turns`` turns of ``max_step_tokens`` tokens."""
    counts = [n] * len(tasks) if isinstance(n, int) else list(n)
    if is_interactive(env):
        if max_turns is None or max_step_tokens is None:
            raise ValueError("an interactive environment needs max_turns and max_step_tokens")
        return _play(env, policy, tasks, counts, temperature, max_turns, max_step_tokens, seed)
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
            scores.append((checked_score(env, state, task) or 0.0) if done else 0.0)
        attempts.append(Attempt(task, [c.text for c in candidates], answers, scores,
                                sum(c.num_tokens for c in candidates)))
    return attempts


def _play(env: Environment, policy: Policy, tasks: Sequence[Task], counts: list[int],
          temperature: float, max_turns: int, max_step_tokens: int, seed: int) -> list[Attempt]:
    groups = play_episodes(env, policy, [(task, env.reset(task)) for task in tasks], n=counts,
                           max_turns=max_turns, max_step_tokens=max_step_tokens,
                           temperature=temperature, seed=seed)
    return [Attempt(task, [e.text for e in group], [final_answer(env, e.state) for e in group],
                    [(checked_score(env, e.state, task) or 0.0) for e in group],
                    sum(e.tokens for e in group))
            for task, group in zip(tasks, groups, strict=True)]
