"""Choosing a tree's final trajectory among its finished ones (SWE-Search's discriminator).

A search in inference mode ends with several finished trajectories and no reference to
check them. The tree's own statistics are one vote (:class:`ValueDiscriminator`: the most
visited, as AlphaZero plays the most visited move); a judge that reads each whole trajectory
is another (:class:`JudgeDiscriminator`), which is how SWE-Search picks its final patch. The
judge sees each candidate once, all in one batched critic call, so it costs one model call
per tree however many candidates there are.

Code (a :class:`~mcts_agent.contracts.TestedEnvironment`) has a better verdict than visits:
the tests the prompt shows. :class:`VisibleTestsDiscriminator` picks the finished program that
passes most of them, as a programmer (or best-of-N with those tests) would; the search uses it
in place of ``value`` for such environments. It reads no reference.

Build one from a spec with :func:`build_discriminator` (``value``, ``judge``,
``judge=MODEL``), as the critics are built by :mod:`mcts_agent.search.critic_specs`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..contracts import (
    Assessment,
    Critic,
    CriticInput,
    Environment,
    Task,
    TestedEnvironment,
    final_answer,
)
from ..llm.base import Policy

__all__ = [
    "NAMES",
    "Discriminator",
    "FinishedTrajectory",
    "JudgeDiscriminator",
    "ValueDiscriminator",
    "VisibleTestsDiscriminator",
    "build_discriminator",
]

NAMES = ("value", "judge")


@dataclass(frozen=True)
class FinishedTrajectory:
    """One finished trajectory of a tree, as a discriminator sees it.

    ``node`` is the finished node's local id in the tree (its index in the tree's node list);
    ``value`` its mean backed-up value (None if never backed up); ``visits`` its visit count;
    ``critic`` the search critic's value of it (None if unscored); ``logprob`` and ``tokens``
    the policy's log-probability of the whole trajectory (the sum over its steps) and its
    length in tokens (None / 0 when the steps carry none).
    """

    task: Task
    environment: Environment
    state: Any
    node: int
    value: float | None
    visits: int
    critic: float | None = None
    logprob: float | None = None
    tokens: int = 0

    @property
    def mean_logprob(self) -> float:
        """Log-probability per token (-inf when unknown): how sure the policy was."""
        if self.logprob is None or self.tokens <= 0:
            return -math.inf
        return self.logprob / self.tokens


@runtime_checkable
class Discriminator(Protocol):
    """Picks the final trajectory among one tree's finished ones."""

    name: str

    def choose(self, candidates: Sequence[FinishedTrajectory]) -> int:
        """The index in ``candidates`` of the chosen trajectory (``candidates`` not empty)."""


def _check(candidates: Sequence[FinishedTrajectory]) -> None:
    if not candidates:
        raise ValueError("no finished trajectories to choose from")


class ValueDiscriminator:
    """The search's own verdict: the most visited trajectory, ties to the higher mean value,
    then to the lower node id (deterministic). Costs nothing."""

    name = "value"

    @staticmethod
    def key(candidate: FinishedTrajectory) -> tuple[int, float, int]:
        """Sort key, larger is better (an unvalued trajectory ranks below every valued one)."""
        value = -math.inf if candidate.value is None or math.isnan(candidate.value) \
            else candidate.value
        return candidate.visits, value, -candidate.node

    def order(self, candidates: Sequence[FinishedTrajectory]) -> list[int]:
        """Indices of ``candidates``, best first."""
        return sorted(range(len(candidates)), key=lambda i: self.key(candidates[i]),
                      reverse=True)

    def choose(self, candidates: Sequence[FinishedTrajectory]) -> int:
        _check(candidates)
        return self.order(candidates)[0]


class VisibleTestsDiscriminator:
    """The finished program passing the largest share of the visible tests (the
    environment's ``visible_score``, all candidates graded in one batched sandbox call). Ties,
    common when a prompt shows one example (or none), go to a complete program (one with an
    answer, not cut or broken), then to the one the policy wrote most surely
    (highest mean log-probability per token, the ranking Codex found best among samples),
    then by :class:`ValueDiscriminator`."""

    name = "visible-tests"

    def choose(self, candidates: Sequence[FinishedTrajectory]) -> int:
        _check(candidates)
        env = candidates[0].environment
        if not isinstance(env, TestedEnvironment):
            raise TypeError(f"environment {env.name!r} declares no visible tests "
                            "(TestedEnvironment); use the value discriminator")
        env.prefetch([(c.state, c.task) for c in candidates], visible=True)
        passed = [env.visible_score(c.state, c.task) or 0.0 for c in candidates]
        complete = [final_answer(env, c.state) is not None for c in candidates]
        rank = {i: r for r, i in enumerate(ValueDiscriminator().order(candidates))}
        return max(range(len(candidates)), key=lambda i: (
            passed[i], complete[i], candidates[i].mean_logprob, -rank[i]))


class JudgeDiscriminator:
    """The trajectory a critic (an LLM judge) values most; ties go by :class:`ValueDiscriminator`.

    Every candidate is scored as a finished state (``done=True``) in ONE ``critic.evaluate``
    call. Any :class:`~mcts_agent.contracts.Critic` works: a
    :class:`critics.judge.JudgeCritic` (its ``samples`` averages several answers per
    trajectory), a reward model, or the verifier. Use a critic of its own rather than the
    search's: a cached critic would only repeat the values the search already backed up.
    ``last`` keeps the assessments of the latest call (explanations, for the record).
    """

    def __init__(self, critic: Critic, name: str = "judge") -> None:
        self.critic = critic
        self.name = name
        self.last: list[Assessment] = []

    def scores(self, candidates: Sequence[FinishedTrajectory]) -> list[Assessment]:
        """The critic's assessment of each candidate, in order (one batched call)."""
        self.last = list(self.critic.evaluate([
            CriticInput(c.task, c.environment, c.state, True) for c in candidates]))
        if len(self.last) != len(candidates):
            raise ValueError(f"critic {self.critic.name!r} returned {len(self.last)} "
                             f"assessments for {len(candidates)} trajectories")
        return self.last

    def choose(self, candidates: Sequence[FinishedTrajectory]) -> int:
        _check(candidates)
        values = [a.value for a in self.scores(candidates)]
        rank = {i: r for r, i in enumerate(ValueDiscriminator().order(candidates))}
        return max(range(len(candidates)), key=lambda i: (values[i], -rank[i]))


def build_discriminator(
    spec: str,
    policy: Policy,
    *,
    samples: int = 1,
    temperature: float = 0.7,
    seed: int = 0,
    **judge_options: Any,
) -> Discriminator:
    """The discriminator a spec names: ``value``, ``judge`` (a :class:`critics.judge.JudgeCritic`
    on the search policy) or ``judge=MODEL`` (a model folder, or ``smollm2``; resolved as the
    ``judge`` critic spec resolves it). ``samples``, ``temperature``, ``seed`` and
    ``judge_options`` (e.g. ``template=JudgeTemplate.swe_search()``) go to the judge."""
    name, _, arg = spec.strip().partition("=")
    if name not in NAMES or (name == "value" and arg):
        raise ValueError(f"unknown discriminator {spec!r}; use value, judge or judge=MODEL")
    if name == "value":
        return ValueDiscriminator()
    from ..registry import critics
    from .critic_specs import judge_policy

    judge = critics.create("judge", policy=judge_policy(arg or None, policy), samples=samples,
                           temperature=temperature, seed=seed, **judge_options)
    return JudgeDiscriminator(judge)
