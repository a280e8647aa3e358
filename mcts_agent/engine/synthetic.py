"""A deterministic synthetic game for tests, benchmarks and demos: no model needed.

Every node's priors, value and terminal flag come from a 64-bit hash of its path (tree seed,
then each action), so any two implementations that walk the same tree see the same numbers.
Each evaluation offers ``branching`` new actions (numbered after the node's existing children,
so progressive widening keeps discovering new ones); nodes at ``max_depth`` are terminal, as is
a hashed ``terminal_prob`` share of the others; a terminal node's value is 1 or 0 (a win or loss),
any other node's value lies in [0, 1].
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from .kernels import GOLDEN, mix
from .search import Evaluator, numba_evaluator
from .storage import NO_NODE


class SyntheticGame(NamedTuple):
    seed: int = 0
    branching: int = 8
    max_depth: int = 20
    terminal_prob: float = 0.0
    logit_scale: float = 2.0


@njit(cache=True, inline="always")
def unit(h: np.uint64) -> float:
    """The top 53 bits of a hash as a float in [0, 1)."""
    return np.float64(h >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True)
def node_hash(parent: np.ndarray, depth: np.ndarray, action: np.ndarray, node: int,
              seed: int) -> np.uint64:
    """Hash of (seed, root id, (depth, action) of every step): walks up, allocates nothing
    (and reads no depth but the first: each step up is one level less)."""
    steps = np.uint64(0)
    level = np.uint64(depth[node])
    while parent[node] != NO_NODE:
        steps += mix((level << np.uint64(32)) + np.uint64(action[node] + 1))
        level -= np.uint64(1)
        node = parent[node]
    return mix(np.uint64(seed) * np.uint64(GOLDEN) + np.uint64(node) + steps)


@njit(cache=True)
def evaluate_kernel(a, leaves, game, priors, values, terminal, rewards):
    """The game as an ``@njit`` evaluator for :func:`~mcts_agent.engine.search_fused` (logits)."""
    parent, depth, action = a.parent, a.depth, a.action
    priors[:, :] = -np.inf
    for i in range(len(leaves)):
        node = leaves[i]
        h = node_hash(parent, depth, action, node, game.seed)
        done = depth[node] >= game.max_depth or unit(mix(h ^ np.uint64(7))) < game.terminal_prob
        if done and parent[node] != NO_NODE:
            terminal[i] = True
            values[i] = 1.0 if unit(h) < 0.5 else 0.0
            continue
        values[i] = unit(h)
        first = a.num_children[node]
        for j in range(game.branching):
            u = unit(mix(h + np.uint64(first + j + 1) * np.uint64(0xD1B54A32D192ED03)))
            priors[i, j] = game.logit_scale * (2.0 * u - 1.0)


def evaluator(game: SyntheticGame) -> Evaluator:
    """The game as a Python ``evaluate(forest, leaves, rng)`` for :func:`~mcts_agent.engine.search`
    (apply with ``logits=True``)."""
    return numba_evaluator(evaluate_kernel, game, game.branching)
