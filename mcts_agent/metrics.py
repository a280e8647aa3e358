"""How good a policy is on held-out tasks (greedy accuracy, pass@k, B-STaR's measures), and how
good a critic's values are against verified outcomes (AUROC, Brier score, calibration).

B-STaR (Zeng et al., 2024) tracks two things that decide whether self-improvement keeps going:
*exploration*, whether the policy still produces diverse correct solutions among k samples, and
*exploitation*, whether the selector (here the search's own answer rule with no reference: the
majority answer; for code the program passing most visible tests) picks a correct one among them
when one exists.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from .contracts import Environment, Task, has_answers
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
    pick_acc: float  # exploitation: the pick among the k samples (majority, tests) is correct
    exploitation: float  # pick_acc among the tasks where some sample is correct
    tokens: int
    greedy_per_task: list[int] = field(default_factory=list)  # 1 = solved greedily, task order

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
    max_turns: int | None = None,
    max_step_tokens: int | None = None,
) -> PolicyMetrics:
    """Greedy decoding plus ``k`` samples per task, each played through ``env`` and scored
    (an agent turn by turn: ``max_turns`` of ``max_step_tokens``)."""
    from .search.baselines import sample_solutions  # here: the tiny model imports pass_at_k alone

    if not tasks:
        raise ValueError("no tasks to evaluate on")
    if k < 1:
        raise ValueError("k (samples per task) must be at least 1")
    turns = dict(max_turns=max_turns, max_step_tokens=max_step_tokens)
    greedy = sample_solutions(env, policy, tasks, 1, temperature=0.0, max_tokens=max_tokens,
                              seed=seed, **turns)
    sampled = sample_solutions(env, policy, tasks, k, temperature=temperature,
                               max_tokens=max_tokens, seed=seed + 1, **turns)
    n = len(tasks)
    correct = [sum(s == 1.0 for s in a.scores) for a in sampled]
    solvable = [c > 0 for c in correct]
    # without answers to pick among (votes, visible tests), the game's own verdict picks
    picks = [a.picked_correct(env) if has_answers(env) else a.any_correct for a in sampled]
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
        tokens=sum(a.tokens for a in greedy) + sum(a.tokens for a in sampled),
        greedy_per_task=[int(g.any_correct) for g in greedy])


def paired_difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Mean of ``a[i] - b[i]`` over the same tasks, and its standard error (paired: the
    per-task differences' sample standard deviation over √n; NaN from a single task)."""
    if len(a) != len(b) or not len(a):
        raise ValueError(f"need two equally long, non-empty score lists, got {len(a)} and "
                         f"{len(b)} scores")
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    return float(d.mean()), _standard_error(d)


def _standard_error(d: np.ndarray) -> float:
    return float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.nan


def paired_ratio_difference(num_a: Sequence[float], den_a: Sequence[float],
                            num_b: Sequence[float], den_b: Sequence[float]) -> tuple[float, float]:
    """``Σnum_a/Σden_a − Σnum_b/Σden_b`` over paired units (tasks, games), and its standard
    error by linearising each ratio: unit g contributes ``(num_g − R·den_g) / mean(den)``."""
    def linear(num: Sequence[float], den: Sequence[float]) -> tuple[float, np.ndarray]:
        num_, den_ = np.asarray(num, float), np.asarray(den, float)
        if den_.sum() == 0:
            return 0.0, np.zeros_like(num_)
        ratio = num_.sum() / den_.sum()
        return float(ratio), (num_ - ratio * den_) / den_.mean()

    ra, la = linear(num_a, den_a)
    rb, lb = linear(num_b, den_b)
    return ra - rb, _standard_error(la - lb)


def balance_score(queries: Sequence[tuple[int, int, int]], n_star: int) -> float:
    """B-STaR's balance score (Zeng et al., 2024, eq. 5) of one configuration: per query
    ``(distinct correct selected, correct selected, selected)``, the mean of
    ``min(distinct / n_star, 1) · correct / selected`` (0 where nothing was selected). The first
    factor rewards exploration (enough distinct correct outputs), the second exploitation (the
    selection keeps few wrong ones)."""
    if n_star < 1:
        raise ValueError("n_star must be at least 1")
    if not queries:
        return 0.0
    return sum(min(distinct / n_star, 1.0) * correct / selected
               for distinct, correct, selected in queries if selected) / len(queries)



# ---------------------------------------------------------------------- critic quality


def auroc(values: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve: the chance a random positive outranks a random negative
    (ties count half). NaN when one class is missing."""
    v = np.asarray(values, float)
    y = np.asarray(labels, bool)
    positives, negatives = int(y.sum()), int((~y).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(v, kind="mergesort")
    ranks = np.empty(len(v))
    sorted_v = v[order]
    # average ranks over ties (Mann–Whitney U)
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_v)) + 1]
    ends = np.r_[starts[1:], len(v)]
    for a, b in zip(starts, ends, strict=True):
        ranks[order[a:b]] = (a + b + 1) / 2
    u = ranks[y].sum() - positives * (positives + 1) / 2
    return float(u / (positives * negatives))


def brier(values: Sequence[float], labels: Sequence[bool]) -> float:
    """Mean squared error of the values as probabilities of the label (0 = perfect)."""
    v = np.asarray(values, float)
    return float(np.mean((v - np.asarray(labels, float)) ** 2)) if len(v) else float("nan")


@dataclass
class Calibration:
    """Reliability bins: per bin the mean predicted value, the observed rate and the count;
    ``ece`` is the count-weighted mean gap between the two."""

    edges: list[float]
    predicted: list[float]
    observed: list[float]
    counts: list[int]
    ece: float


def calibration(values: Sequence[float], labels: Sequence[bool], bins: int = 10) -> Calibration:
    """Equal-width reliability bins over [0, 1] (empty bins are left out)."""
    v = np.asarray(values, float)
    y = np.asarray(labels, float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(v, edges[1:-1]), 0, bins - 1)
    predicted, observed, counts, gap = [], [], [], 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            predicted.append(float(v[mask].mean()))
            observed.append(float(y[mask].mean()))
            counts.append(int(mask.sum()))
            gap += abs(predicted[-1] - observed[-1]) * counts[-1]
    return Calibration(edges.tolist(), predicted, observed, counts,
                       gap / len(v) if len(v) else float("nan"))
