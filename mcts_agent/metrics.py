"""How good a policy is on held-out tasks: greedy accuracy, pass@k, and B-STaR's measures.

B-STaR (Zeng et al., 2024) tracks two things that decide whether self-improvement keeps going:
*exploration*, whether the policy still produces diverse correct solutions among k samples, and
*exploitation*, whether the selector (here the search's own answer rule: the majority answer,
with no reference) picks a correct one among them when one exists.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from .contracts import Environment, Task
from .llm.base import Policy


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct (Chen et al., 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@dataclass
class PolicyMetrics:
    """Held-out measures of one policy (all rates in [0, 1] except ``distinct_correct``)."""

    tasks: int
    k: int
    greedy_acc: float
    pass_at_1: float
    pass_at_k: float
    distinct_correct: float  # exploration: distinct correct solution texts among k samples
    diversity: float  # exploration: distinct solution texts among k samples, over k
    pick_acc: float  # exploitation: the majority answer of the k samples is correct
    exploitation: float  # pick_acc among the tasks where some sample is correct
    tokens: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def evaluate_policy(
    env: Environment,
    policy: Policy,
    tasks: Sequence[Task],
    *,
    k: int = 8,
    temperature: float = 1.0,
    max_tokens: int = 256,
    seed: int = 0,
) -> PolicyMetrics:
    """Greedy decoding plus ``k`` samples per task, each played through ``env`` and scored."""
    from .search.baselines import sample_solutions  # here: the tiny model imports pass_at_k alone

    if not tasks:
        raise ValueError("no tasks to evaluate on")
    if k < 1:
        raise ValueError("k (samples per task) must be at least 1")
    greedy = sample_solutions(env, policy, tasks, 1, temperature=0.0, max_tokens=max_tokens,
                              seed=seed)
    sampled = sample_solutions(env, policy, tasks, k, temperature=temperature,
                               max_tokens=max_tokens, seed=seed + 1)
    n = len(tasks)
    correct = [sum(s == 1.0 for s in a.scores) for a in sampled]
    solvable = [c > 0 for c in correct]
    picks = [a.majority_correct for a in sampled]
    distinct = [len({t.strip() for t, s in zip(a.texts, a.scores, strict=True) if s == 1.0})
                for a in sampled]
    return PolicyMetrics(
        tasks=n, k=k,
        greedy_acc=sum(g.any_correct for g in greedy) / n,
        pass_at_1=sum(correct) / (n * k),
        pass_at_k=sum(solvable) / n,
        distinct_correct=sum(distinct) / n,
        diversity=sum(len(set(a.texts)) for a in sampled) / (n * k),
        pick_acc=sum(picks) / n,
        exploitation=(sum(p for p, s in zip(picks, solvable, strict=True) if s)
                      / max(sum(solvable), 1)),
        tokens=sum(a.tokens for a in greedy) + sum(a.tokens for a in sampled))

