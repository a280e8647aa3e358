"""What tree search is measured against: greedy decoding and best-of-N sampling.

Both complete whole solutions in batched policy calls and play them through the environment,
so their answers are judged exactly like the tree's.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..contracts import (
    Environment,
    Task,
    TestedEnvironment,
    checked_score,
    final_answer,
    is_interactive,
)
from ..episodes import play_episodes, play_text
from ..llm.base import GenerationRequest, Policy
from .discriminator import FinishedTrajectory, VisibleTestsDiscriminator

log = logging.getLogger(__name__)


@dataclass
class Attempt:
    """One task's sampled solutions, judged by the environment."""

    task: Task
    texts: list[str]
    answers: list[str | None]
    scores: list[float]
    tokens: int
    states: list[Any] = field(default_factory=list)  # each sample's last state
    logprobs: list[float] = field(default_factory=list)  # the policy's, each whole sample
    sample_tokens: list[int] = field(default_factory=list)  # generated tokens, each sample

    def within(self, budget: int) -> Attempt:
        """The first samples whose tokens add up to at most ``budget`` (at least one): best-of-N
        at exactly a tree's token budget. Unchanged without per-sample token counts."""
        if not self.sample_tokens:
            return self
        spent = keep = 0
        for tokens in self.sample_tokens:
            if keep and spent + tokens > budget:
                break
            spent, keep = spent + tokens, keep + 1
        return Attempt(self.task, self.texts[:keep], self.answers[:keep], self.scores[:keep],
                       spent, self.states[:keep], self.logprobs[:keep],
                       self.sample_tokens[:keep])

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

    def picked_correct(self, env: Environment) -> bool:
        """Inference mode, no reference used to pick: whether :meth:`picked` is right."""
        best = self.picked(env)
        return best is not None and self.scores[best] == 1.0

    def picked(self, env: Environment) -> int | None:
        """Inference mode, no reference used to pick: the sample best-of-N answers with. Code (a
        ``TestedEnvironment`` whose task shows tests) picks among the finished samples by the
        tree's own rule (:class:`~mcts_agent.search.discriminator.VisibleTestsDiscriminator`;
        the first sample wins remaining ties); other environments with answers take the first
        sample of the majority answer. None when no sample finished."""
        finished = [i for i, answer in enumerate(self.answers) if answer is not None]
        if not finished:
            return None
        if (not isinstance(env, TestedEnvironment) or not self.states
                or env.visible_score(env.reset(self.task), self.task) is None):  # no tests
            votes = Counter(self.answers[i] for i in finished)
            return self.answers.index(votes.most_common(1)[0][0])
        candidates = [FinishedTrajectory(
            self.task, env, self.states[i], i, None, 0,
            logprob=self.logprobs[i] if self.logprobs else None,
            tokens=self.sample_tokens[i] if self.sample_tokens else 0) for i in finished]
        return finished[VisibleTestsDiscriminator().choose(candidates)]


@dataclass(frozen=True)
class TaskBaseline:
    """One task's baselines beside its tree (a line of a run's ``baselines.jsonl``): the greedy
    solution, and best-of-N at the tokens the tree spent. ``best_answer`` is the answer
    best-of-N gives: the first verified one in data mode, the picked sample's in inference mode
    (:meth:`Attempt.picked`)."""

    task: str
    greedy_answer: str | None
    greedy_correct: bool
    greedy_tokens: int
    samples: int
    best_answer: str | None
    best_correct: bool
    best_tokens: int

    @classmethod
    def of(cls, greedy: Attempt, sampled: Attempt, env: Environment, mode: str) -> TaskBaseline:
        if mode == "data" or not sampled.answers:
            best = next((i for i, s in enumerate(sampled.scores) if s == 1.0), None)
            correct = best is not None
            if best is None and sampled.answers:
                best = sampled.picked(env)
        else:
            best = sampled.picked(env)
            correct = best is not None and sampled.scores[best] == 1.0
        return cls(greedy.task.id, greedy.answers[0] if greedy.answers else None,
                   greedy.any_correct, greedy.tokens, len(sampled.answers),
                   None if best is None else sampled.answers[best], correct, sampled.tokens)

    @classmethod
    def from_json(cls, data: Any) -> TaskBaseline:
        """Read one line; ``ValueError`` saying what is wrong when it is not a baseline."""
        kinds = {"task": str, "greedy_answer": (str, type(None)), "greedy_correct": bool,
                 "greedy_tokens": int, "samples": int, "best_answer": (str, type(None)),
                 "best_correct": bool, "best_tokens": int}
        if not isinstance(data, dict):
            raise ValueError(f"a baseline is a JSON object, got {type(data).__name__}")
        for key, kind in kinds.items():
            if not isinstance(data.get(key), kind) or (kind is int and isinstance(
                    data.get(key), bool)):
                raise ValueError(f"baseline field {key!r} is missing or not {kind}")
        return cls(**{key: data[key] for key in kinds})


def read_baselines(path: str | Path) -> tuple[dict[str, TaskBaseline], int]:
    """The baselines of ``path`` (a run's ``baselines.jsonl``) by task id, and how many lines
    were skipped as unreadable (logged); nothing when the file does not exist."""
    path = Path(path)
    if not path.is_file():
        return {}, 0
    rows, skipped = {}, 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = TaskBaseline.from_json(json.loads(line))
        except ValueError as err:  # json.JSONDecodeError is a ValueError
            skipped += 1
            log.warning("%s:%d: skipped: %s", path, number, err)
            continue
        rows[row.task] = row
    return rows, skipped


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
    proposed = policy.propose(requests)
    played = [[play_text(env, env.reset(task), c.text) for c in candidates]
              for task, candidates in zip(tasks, proposed, strict=True)]
    if isinstance(env, TestedEnvironment):  # every finished program in one sandbox call
        env.prefetch([(state, task) for task, group in zip(tasks, played, strict=True)
                      for state, done in group if done])
    attempts = []
    for task, candidates, group in zip(tasks, proposed, played, strict=True):
        answers = [final_answer(env, state) if done else None for state, done in group]
        scores = [(checked_score(env, state, task) or 0.0) if done else 0.0
                  for state, done in group]
        attempts.append(Attempt(
            task, [c.text for c in candidates], answers, scores,
            sum(c.num_tokens for c in candidates), [state for state, _ in group],
            [c.logprob for c in candidates], [c.num_tokens for c in candidates]))
    return attempts


def best_of_n(env: Environment, policy: Policy, tasks: Sequence[Task],
              budgets: Mapping[str, int], greedy: Sequence[Attempt], *,
              oversample: float = 1.5, **sampling: Any) -> list[Attempt]:
    """Best-of-N at each task's token budget (what its tree spent): draw ``oversample`` times
    the N that the greedy solution's length suggests, then keep the first samples that fit the
    budget (samples ramble where greedy stops early, so N cannot be guessed exactly).
    ``sampling`` goes to :func:`sample_solutions` (temperature, max_tokens, seed …)."""
    counts = [max(1, math.ceil(oversample * budgets.get(t.id, 0) / max(g.tokens, 1)))
              for t, g in zip(tasks, greedy, strict=True)]
    drawn = sample_solutions(env, policy, tasks, counts, **sampling)
    return [a.within(budgets.get(a.task.id, 0)) for a in drawn]


def _play(env: Environment, policy: Policy, tasks: Sequence[Task], counts: list[int],
          temperature: float, max_turns: int, max_step_tokens: int, seed: int) -> list[Attempt]:
    groups = play_episodes(env, policy, [(task, env.reset(task)) for task in tasks], n=counts,
                           max_turns=max_turns, max_step_tokens=max_step_tokens,
                           temperature=temperature, seed=seed)
    return [Attempt(task, [e.text for e in group], [final_answer(env, e.state) for e in group],
                    [(checked_score(env, e.state, task) or 0.0) for e in group],
                    sum(e.tokens for e in group), [e.state for e in group],
                    sample_tokens=[e.tokens for e in group])
            for task, group in zip(tasks, groups, strict=True)]
