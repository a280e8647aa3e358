"""A plain dense-row numba PUCT: the yardstick ``bench/engine.py`` times the engine against.

Written the way a fast single-purpose search is written elsewhere, independent of the engine's
kernels: one row per expanded state holding its children's edges as ``[row, action]`` arrays
(child row, prior, visits, value sum), each tree run to completion before the next, nothing
allocated per simulation. It plays :class:`~mcts_agent.engine.SyntheticGame` (rewards 0,
discount 1) under the engine's PUCT rule with the engine's storage widths (logits and priors
float32), so both build the same trees; the bench asserts equal root visits.

Two drivers:

* :func:`fused` — the whole search of every tree in one compiled call.
* :func:`stepwise` — one leaf per tree per wave; each wave is one compiled call (apply the last
  evaluation, select the next leaves) plus one compiled evaluator called from Python, as an
  LLM driver would run it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from mcts_agent.engine import SyntheticGame
from mcts_agent.engine.kernels import GOLDEN, mix
from mcts_agent.engine.synthetic import unit

LEAF = -1  # an edge whose state was never evaluated
END = -2  # an edge into a terminal state
PRIOR_SALT = np.uint64(0xD1B54A32D192ED03)


@njit(cache=True)
def _state(game, root: int, steps: np.uint64) -> np.uint64:
    return mix(np.uint64(game.seed) * np.uint64(GOLDEN) + np.uint64(root) + steps)


@njit(cache=True)
def _logits(h, game, out):
    for a in range(game.branching):
        u = unit(mix(h + np.uint64(a + 1) * PRIOR_SALT))
        out[a] = game.logit_scale * (2.0 * u - 1.0)


@njit(cache=True)
def _set_priors(prior, row, logits, scratch):
    """Softmax of the logits rounded to float32 first, as the engine stores them."""
    top = -np.inf
    for a in range(len(scratch)):
        scratch[a] = np.float64(np.float32(logits[a]))
        top = max(top, scratch[a])
    total = 0.0
    for a in range(len(scratch)):
        scratch[a] = np.exp(scratch[a] - top)
        total += scratch[a]
    for a in range(len(scratch)):
        prior[row, a] = scratch[a] / total


@njit(cache=True)
def _pick(row, n_parent, w_parent, child_n, child_w, prior, branching):
    """PUCT: min-max normalised Q over the parent and its visited children, mctx's pb_c."""
    lo = w_parent / n_parent
    hi = lo
    for a in range(branching):
        if child_n[row, a] > 0:
            q = child_w[row, a] / child_n[row, a]
            lo = min(lo, q)
            hi = max(hi, q)
    scale = max(hi - lo, 1e-8)
    explore = np.sqrt(n_parent) * (1.25 + np.log((n_parent + 19652.0 + 1.0) / 19652.0))
    best, best_score = 0, -np.inf
    for a in range(branching):
        n = child_n[row, a]
        score = (child_w[row, a] / n - lo) / scale if n > 0 else 0.0
        score += explore * prior[row, a] / (n + 1.0)
        if score > best_score:
            best, best_score = a, score
    return best


@njit(cache=True)
def _tree(game, root, sims, child, prior, child_n, child_w, steps, row_n, row_w, path_r,
          path_a, logits, scratch, out):
    """Search one tree to completion in rows [0, sims]; root visits into ``out``."""
    b = game.branching
    steps[0] = np.uint64(0)
    h = _state(game, root, steps[0])
    _logits(h, game, logits)
    _set_priors(prior, 0, logits, scratch)
    child[0, :] = LEAF
    child_n[0, :] = 0
    child_w[0, :] = 0.0
    row_n[0], row_w[0] = 1, unit(h)
    rows = 1
    for _ in range(sims):
        row, depth = 0, 0
        while True:  # descend until an unevaluated or terminal edge
            a = _pick(row, row_n[row], row_w[row], child_n, child_w, prior, b)
            path_r[depth], path_a[depth] = row, a
            depth += 1
            if child[row, a] < 0:
                break
            row = child[row, a]
        if child[row, a] == END:
            value = child_w[row, a] / child_n[row, a]
        else:
            s = steps[row] + mix((np.uint64(depth) << np.uint64(32)) + np.uint64(a + 1))
            h = _state(game, root, s)
            if depth >= game.max_depth:
                child[row, a] = END
                value = 1.0 if unit(h) < 0.5 else 0.0
            else:
                new = rows
                rows += 1
                child[row, a] = new
                steps[new] = s
                _logits(h, game, logits)
                _set_priors(prior, new, logits, scratch)
                child[new, :] = LEAF
                child_n[new, :] = 0
                child_w[new, :] = 0.0
                value = unit(h)
                row_n[new], row_w[new] = 1, value
        for d in range(depth - 1, -1, -1):  # backup (rewards 0, discount 1)
            r, a = path_r[d], path_a[d]
            child_n[r, a] += 1
            child_w[r, a] += value
            row_n[r] += 1
            row_w[r] += value
    out[:] = child_n[0, :]


@njit(cache=True)
def _fused(game, num_trees, sims, out):
    rows, b = sims + 1, game.branching
    child = np.empty((rows, b), np.int32)
    prior = np.empty((rows, b), np.float32)
    child_n = np.empty((rows, b), np.int32)
    child_w = np.empty((rows, b), np.float64)
    steps = np.empty(rows, np.uint64)
    row_n = np.empty(rows, np.int32)
    row_w = np.empty(rows, np.float64)
    path_r = np.empty(game.max_depth + 1, np.int64)
    path_a = np.empty(game.max_depth + 1, np.int64)
    logits, scratch = np.empty(b), np.empty(b)
    for t in range(num_trees):
        _tree(game, t, sims, child, prior, child_n, child_w, steps, row_n, row_w, path_r,
              path_a, logits, scratch, out[t])


def fused(game: SyntheticGame, num_trees: int, sims: int) -> np.ndarray:
    """Root visit counts ``(num_trees, branching)`` of a whole search in one compiled call."""
    out = np.zeros((num_trees, game.branching), np.int32)
    _fused(game, num_trees, sims, out)
    return out


# --------------------------------------------------------------------------- step-wise


@njit(cache=True)
def _evaluate(game, roots, steps, depth, values, logits, terminal):
    """The game's evaluation of a batch of states (compiled, called from Python per wave)."""
    for i in range(len(steps)):
        h = _state(game, roots[i], steps[i])
        terminal[i] = depth[i] >= game.max_depth
        if terminal[i]:
            values[i] = 1.0 if unit(h) < 0.5 else 0.0
            continue
        values[i] = unit(h)
        _logits(h, game, logits[i])


@njit(cache=True)
def _wave(s, game, n_in, values, logits, terminal, out_steps, out_depth):
    """Apply the evaluations of the previous wave's leaves, then select one leaf per tree.

    Returns the number of leaves selected (their states in ``out_steps``/``out_depth``)."""
    child, prior, child_n, child_w, steps, row_n, row_w, path_r, path_a, paths, meta, \
        budget, scratch = s
    b = game.branching
    for i in range(n_in):  # apply: expand, back up
        t = meta[1 + i]
        depth = paths[t, 0]
        row, a = path_r[t, depth - 1], path_a[t, depth - 1]
        value = values[i]
        if terminal[i]:
            child[row, a] = END
        else:
            new = meta[0]
            meta[0] += 1
            child[row, a] = new
            steps[new] = out_steps[i]
            _set_priors(prior, new, logits[i], scratch)
            child[new, :] = LEAF
            child_n[new, :] = 0
            child_w[new, :] = 0.0
            row_n[new], row_w[new] = 1, value
        _backup(path_r[t], path_a[t], depth, value, child_n, child_w, row_n, row_w)
    n = 0
    for t in range(len(budget)):  # select: one descent per tree
        while budget[t] > 0:
            budget[t] -= 1
            row, depth = t, 0
            while True:
                a = _pick(row, row_n[row], row_w[row], child_n, child_w, prior, b)
                path_r[t, depth], path_a[t, depth] = row, a
                depth += 1
                if child[row, a] < 0:
                    break
                row = child[row, a]
            if child[row, a] == END:  # terminal revisit: no model needed
                _backup(path_r[t], path_a[t], depth, child_w[row, a] / child_n[row, a],
                        child_n, child_w, row_n, row_w)
                continue
            paths[t, 0] = depth
            meta[1 + n] = t
            out_steps[n] = steps[row] + mix((np.uint64(depth) << np.uint64(32))
                                            + np.uint64(a + 1))
            out_depth[n] = depth
            n += 1
            break
    return n


@njit(cache=True)
def _backup(path_r, path_a, depth, value, child_n, child_w, row_n, row_w):
    for d in range(depth - 1, -1, -1):
        r, a = path_r[d], path_a[d]
        child_n[r, a] += 1
        child_w[r, a] += value
        row_n[r] += 1
        row_w[r] += value


def stepwise(game: SyntheticGame, num_trees: int, sims: int) -> np.ndarray:
    """Root visit counts of a search run one wave (one leaf per tree) at a time from Python."""
    b, rows, deep = game.branching, num_trees * (sims + 1), game.max_depth + 1
    state = (np.full((rows, b), LEAF, np.int32), np.zeros((rows, b), np.float32),
             np.zeros((rows, b), np.int32), np.zeros((rows, b)), np.zeros(rows, np.uint64),
             np.zeros(rows, np.int32), np.zeros(rows), np.zeros((num_trees, deep), np.int64),
             np.zeros((num_trees, deep), np.int64), np.zeros((num_trees, 1), np.int64),
             np.zeros(1 + num_trees, np.int64), np.full(num_trees, sims, np.int64),
             np.zeros(b))
    roots = np.arange(num_trees, dtype=np.int64)
    out_steps = np.zeros(num_trees, np.uint64)
    out_depth = np.zeros(num_trees, np.int64)
    values, logits = np.zeros(num_trees), np.zeros((num_trees, b))
    terminal = np.zeros(num_trees, np.bool_)
    # the roots: rows 0 .. num_trees - 1, evaluated once (not a simulation)
    _evaluate(game, roots, out_steps, out_depth, values, logits, terminal)
    _roots(state, game, values, logits)
    n = _wave(state, game, 0, values, logits, terminal, out_steps, out_depth)
    meta = state[10]
    while n:
        _evaluate(game, meta[1:1 + n], out_steps[:n], out_depth[:n], values, logits, terminal)
        n = _wave(state, game, n, values, logits, terminal, out_steps, out_depth)
    return state[2][:num_trees].copy()


@njit(cache=True)
def _roots(s, game, values, logits):
    prior, row_n, row_w, meta, scratch = s[1], s[5], s[6], s[10], s[12]
    for t in range(len(values)):
        _set_priors(prior, t, logits[t], scratch)
        row_n[t], row_w[t] = 1, values[t]
    meta[0] = len(values)
