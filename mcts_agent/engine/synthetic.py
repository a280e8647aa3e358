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


@njit(cache=True, inline="always")
def step_key(level: np.uint64, action: int) -> np.uint64:
    """What one step of a path (its depth and action) adds to the path's key."""
    return mix((level << np.uint64(32)) + np.uint64(action + 1))


@njit(cache=True)
def path_key(parent: np.ndarray, depth: np.ndarray, action: np.ndarray, node: int) -> np.uint64:
    """Root id + the sum (mod 2**64) of :func:`step_key` over the path to ``node``: walks up,
    allocates nothing (and reads no depth but the first: each step up is one level less)."""
    steps = np.uint64(0)
    level = np.uint64(depth[node])
    while parent[node] != NO_NODE:
        steps += step_key(level, action[node])
        level -= np.uint64(1)
        node = parent[node]
    return np.uint64(node) + steps


@njit(cache=True, inline="always")
def key_hash(key: np.uint64, seed: int) -> np.uint64:
    """A node's hash from its path's key and the game's seed."""
    return mix(np.uint64(seed) * np.uint64(GOLDEN) + key)


@njit(cache=True)
def evaluate_kernel(a, leaves, game, priors, values, terminal, rewards):
    """The game as an ``@njit`` evaluator for :func:`~mcts_agent.engine.search_fused` (logits).

    Where the forest keeps a state word per node (``EngineConfig(node_state=True)``), a leaf's
    path key is its parent's word plus one step, and is written to the leaf's word: no walk
    up the path. A parent's word of 0 (never written; or, once in 2**64, a key of 0) means
    walk: the same numbers either way."""
    parent, depth, action, state = a.parent, a.depth, a.action, a.state
    carried = len(state) > 0
    priors[:, :] = -np.inf
    for i in range(len(leaves)):
        node = leaves[i]
        up = parent[node]
        key = state[up] if carried and up != NO_NODE else np.uint64(0)
        if key:
            key += step_key(np.uint64(depth[node]), action[node])
        else:
            key = path_key(parent, depth, action, node)
        if carried:
            state[node] = key
        h = key_hash(key, game.seed)
        done = depth[node] >= game.max_depth or unit(mix(h ^ np.uint64(7))) < game.terminal_prob
        if done and up != NO_NODE:
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
