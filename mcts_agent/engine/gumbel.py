"""Gumbel MuZero search (Danihelka et al., 2022), as DeepMind's mctx ``gumbel_muzero_policy``.

At the root, Sequential Halving with Gumbel: up to ``max_num_considered_actions`` actions, the
ones with the highest ``gumbel + logit`` (Gumbel-top-k sampling without replacement), share the
simulation budget in rounds, each round halving them by ``gumbel + logit + σ(completed Q)``.
Below the root, the deterministic rule that makes visit frequencies follow the improved policy
``softmax(logits + σ(completed Q))``. The final action maximises the same root score among the
most visited actions; the improved policy is the training target (a policy improvement with few
simulations, which is why it suits LLM search).

``σ(completed Q)`` is mctx's ``qtransform_completed_by_mix_value``: unvisited children get the
mixed value (the node's own value mixed with its visited children's prior-weighted Q), the
completed Q values are rescaled to [0, 1] and multiplied by ``(50 + max child visits) · 0.1``.
``tests/test_gumbel.py`` runs mctx itself on the same game and compares.

Trees are expanded AlphaZero-style (:meth:`Forest.apply`: every action of a leaf at once, from
its prior logits) and searched one simulation per tree per call, as mctx does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from .config import EngineConfig
from .forest import Forest
from .kernels import KernelParams, backup_path, child_id
from .search import Evaluator, _prepare
from .storage import SCATTERED, TERMINAL, WIDEST, NodeArrays

VALUE_SCALE = 0.1  # mctx's qtransform_completed_by_mix_value defaults
MAXVISIT_INIT = 50.0
LOW_LOGIT = -1e9


def considered_visits(max_considered: int, num_simulations: int) -> np.ndarray:
    """mctx's ``get_table_of_considered_visits``: row m is the visit count an action must have
    to be chosen at each simulation when m actions are considered (Sequential Halving)."""
    table = np.zeros((max_considered + 1, max(num_simulations, 1)), np.int64)
    for m in range(max_considered + 1):
        if m <= 1:
            table[m, :num_simulations] = np.arange(num_simulations)
            continue
        log2max = math.ceil(math.log2(m))
        sequence: list[int] = []
        visits = [0] * m
        considered = m
        while len(sequence) < num_simulations:
            extra = max(1, int(num_simulations / (log2max * considered)))
            for _ in range(extra):
                sequence.extend(visits[:considered])
                for i in range(considered):
                    visits[i] += 1
            considered = max(2, considered // 2)
        table[m, :num_simulations] = sequence[:num_simulations]
    return table


@njit(cache=True)
def completed_q(a: NodeArrays, p: KernelParams, node: int, logits: np.ndarray,
                visits: np.ndarray, out: np.ndarray) -> int:
    """σ(completed Q) of ``node``'s children into ``out`` (their logits and visits into the
    other two); returns the number of children."""
    first, scattered = a.first_child[node], (a.flags[node] & SCATTERED) != 0
    # the node's own (raw) value: its value sum less what came up through its children
    raw = a.value_sum[node]
    total = 0.0
    top = -np.inf
    n = a.num_children[node]
    for i in range(n):
        c = child_id(first, i, scattered, a.edges)
        logits[i] = a.logit[c]
        visits[i] = a.visits[c]
        out[i] = a.reward[c] + p.discount * a.value_sum[c] / a.visits[c] if a.visits[c] else 0.0
        raw -= a.visits[c] * a.reward[c] + p.discount * a.value_sum[c]
        total += visits[i]
        top = max(top, logits[i])
    norm = 0.0
    for i in range(n):
        norm += np.exp(logits[i] - top)
    tiny = np.finfo(np.float32).tiny
    mass = 0.0
    weighted = 0.0
    for i in range(n):
        if visits[i] > 0:
            prob = max(tiny, np.exp(logits[i] - top) / norm)
            mass += prob
            weighted += prob * out[i]
    mixed = (raw + total * (weighted / mass if mass > 0 else 0.0)) / (total + 1.0)
    lo, hi, most = np.inf, -np.inf, 0
    for i in range(n):
        if visits[i] == 0:
            out[i] = mixed
        lo = min(lo, out[i])
        hi = max(hi, out[i])
        most = max(most, visits[i])
    scale = (MAXVISIT_INIT + most) * VALUE_SCALE / max(hi - lo, 1e-8)
    for i in range(n):
        out[i] = (out[i] - lo) * scale
    return n


@njit(cache=True)
def score_considered(gumbel: np.ndarray, logits: np.ndarray, visits: np.ndarray,
                     considered: int, n: int, scores: np.ndarray) -> None:
    """mctx's ``score_considered``, in place: ``scores`` holds σ(completed Q) of ``n`` root
    actions and becomes gumbel + logit + σ(completed Q) for the actions with ``considered``
    visits, -inf for the others."""
    top = logits[:n].max()
    for i in range(n):
        score = max(LOW_LOGIT, gumbel[i] + logits[i] - top + scores[i])
        scores[i] = score if visits[i] == considered else -np.inf


@njit(cache=True)
def gumbel_select(a: NodeArrays, params: np.ndarray, roots: np.ndarray, trees: np.ndarray,
                  gumbel: np.ndarray, table: np.ndarray, max_considered: int,
                  out_leaf: np.ndarray) -> int:
    """One descent per tree: Sequential Halving with Gumbel at the root, the improved-policy
    rule below it. A descent that ends on a terminal node backs up its value at once (no leaf);
    returns how many leaves were written."""
    p = params[0]
    width = max(a.meta[WIDEST], 1)
    scores = np.empty(width)
    logits = np.empty(width)
    visits = np.empty(width, np.int64)
    count = 0
    for t in trees:
        node = roots[t]
        while not a.flags[node] & TERMINAL and a.num_children[node] > 0:
            if node == roots[t]:
                n = a.num_children[node]
                simulation = a.visits[node] - 1  # the root's own evaluation is not one
                considered = table[min(max_considered, n), simulation]
                completed_q(a, p, node, logits, visits, scores)
                score_considered(gumbel[t], logits, visits, considered, n, scores)
            else:
                n = completed_q(a, p, node, logits, visits, scores)
                top = -np.inf
                for i in range(n):
                    scores[i] += logits[i]
                    top = max(top, scores[i])
                norm, total = 0.0, 0.0
                for i in range(n):
                    scores[i] = np.exp(scores[i] - top)
                    norm += scores[i]
                    total += visits[i]
                for i in range(n):
                    scores[i] = scores[i] / norm - visits[i] / (1.0 + total)
            first, scattered = a.first_child[node], (a.flags[node] & SCATTERED) != 0
            best, best_score = 0, -np.inf
            for i in range(a.num_children[node]):  # argmax: the first of equal scores
                if scores[i] > best_score:
                    best_score, best = scores[i], i
            node = child_id(first, best, scattered, a.edges)
        if a.flags[node] & TERMINAL:
            value = a.value_sum[node] / a.visits[node] if a.visits[node] > 0 else 0.0
            backup_path(a.parent, a.visits, a.value_sum, a.reward, p.discount, node, value)
        else:
            out_leaf[count] = node
            count += 1
    return count


@dataclass(frozen=True)
class GumbelPolicy:
    """What a Gumbel search recommends for one tree: ``action`` to play and ``weights``, the
    improved policy ``softmax(logits + σ(completed Q))`` over the root's actions."""

    action: int
    weights: np.ndarray


def gumbel_search(
    evaluate: Evaluator,
    num_simulations: int,
    *,
    num_trees: int | None = None,
    forest: Forest | None = None,
    config: EngineConfig | None = None,
    max_num_considered_actions: int = 16,
    gumbel_scale: float = 1.0,
    gumbel: np.ndarray | None = None,
    seed: int | None = 0,
    logits: bool = True,
) -> tuple[Forest, list[GumbelPolicy]]:
    """Gumbel MuZero search of every tree; returns the forest and each tree's policy.

    ``evaluate(forest, leaves, rng)`` is :func:`~mcts_agent.engine.search`'s evaluator
    (priors as logits by default). ``gumbel`` (trees × actions) replaces the noise drawn from
    ``seed`` (e.g. to replay mctx's); ``gumbel_scale=0`` makes the search deterministic.
    ``config.discount`` discounts returns; the PUCT settings are not used.
    """
    forest = _prepare(forest, num_trees, config)
    rng = np.random.default_rng(seed)
    roots = forest.roots
    unevaluated = roots[forest.nodes.visits[roots] == 0]
    if len(unevaluated):
        forest.apply(unevaluated, evaluate(forest, unevaluated, rng), logits=logits)
    width = int(forest.nodes.num_children[roots].max())
    if gumbel is None:
        gumbel = rng.gumbel(size=(forest.num_trees, width))
    gumbel = gumbel_scale * np.asarray(gumbel, np.float64)
    if gumbel.shape != (forest.num_trees, width):
        raise ValueError(f"gumbel must be (trees, actions) = ({forest.num_trees}, {width}), "
                         f"got {gumbel.shape}")
    table = considered_visits(max_num_considered_actions, num_simulations)
    trees = np.arange(forest.num_trees, dtype=np.int64)
    out_leaf = np.empty(forest.num_trees, np.int64)
    for _ in range(num_simulations):
        n = gumbel_select(forest.nodes, forest._params, roots, trees, gumbel, table,
                          max_num_considered_actions, out_leaf)
        if n:
            leaves = out_leaf[:n].copy()
            forest.apply(leaves, evaluate(forest, leaves, rng), logits=logits)
    return forest, [_policy(forest, t, gumbel[t]) for t in range(forest.num_trees)]


def _policy(forest: Forest, tree: int, gumbel: np.ndarray) -> GumbelPolicy:
    root = int(forest.roots[tree])
    width = int(forest.nodes.num_children[root])
    scores, logits = np.empty(width), np.empty(width)
    visits = np.empty(width, np.int64)
    completed_q(forest.nodes, forest._params[0], root, logits, visits, scores)
    search_logits = logits + scores
    weights = np.exp(search_logits - search_logits.max())
    score_considered(gumbel, logits, visits, int(visits.max()), width, scores)
    return GumbelPolicy(int(np.argmax(scores)), weights / weights.sum())
