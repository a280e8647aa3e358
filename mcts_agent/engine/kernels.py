"""Compiled MCTS kernels. Every kernel works on many trees (or many leaves) per call.

Conventions shared by all kernels (see ``docs`` in :mod:`mcts_agent.engine`):

* ``visits[i]`` counts backups through node ``i``; ``value_sum[i]`` sums the returns backed up
  through it, seen from ``i``. A backup of value ``v`` at node ``x`` adds ``v`` at ``x`` and
  ``reward[x] + discount * v`` at its parent, and so on to the root (as in mctx).
* ``Q(child) = reward[child] + discount * value_sum[child] / visits[child]`` from the parent's view.
* Virtual loss: every pending selection through a node counts as ``virtual_loss`` extra visits of
  value ``virtual_value`` until it is released, so concurrent selections spread out.
* Ties between children break towards the lowest action (deterministic).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from .storage import CLOSED, NO_NODE, PENDING, TERMINAL, NodeArrays

PUCT = 0
UCT = 1


class KernelParams(NamedTuple):
    """Scalar settings the kernels read; built from :class:`~mcts_agent.engine.EngineConfig`."""

    rule: int
    pb_c_init: float
    pb_c_base: float
    uct_c: float
    virtual_loss: float
    virtual_value: float
    widen_c: float
    widen_alpha: float
    discount: float
    max_collisions: int


# --------------------------------------------------------------------------- node statistics


@njit(cache=True, inline="always")
def effective_visits(a: NodeArrays, p: KernelParams, i: int) -> float:
    return a.visits[i] + p.virtual_loss * a.virtual[i]


@njit(cache=True, inline="always")
def effective_value_sum(a: NodeArrays, p: KernelParams, i: int) -> float:
    return a.value_sum[i] + p.virtual_loss * a.virtual[i] * p.virtual_value


@njit(cache=True, inline="always")
def child_q(a: NodeArrays, p: KernelParams, c: int, n: float) -> float:
    return a.reward[c] + p.discount * effective_value_sum(a, p, c) / n


# --------------------------------------------------------------------------- selection rules


@njit(cache=True, inline="always")
def is_taken(a: NodeArrays, c: int) -> bool:
    """A leaf already selected in this wave: no descent may end there again."""
    return (a.flags[c] & PENDING) != 0 and a.num_children[c] == 0


@njit(cache=True)
def best_child_puct(a: NodeArrays, p: KernelParams, node: int, scratch: np.ndarray) -> int:
    """mctx's ``muzero_action_selection`` with ``qtransform_by_parent_and_siblings``.

    ``scratch`` keeps each child's Q between the min/max pass and the scoring pass (divisions
    dominate the cost of a descent); a node with more children gets a larger buffer.
    """
    q = scratch if a.num_children[node] <= len(scratch) else np.empty(a.num_children[node])
    n_parent = effective_visits(a, p, node)
    parent_value = effective_value_sum(a, p, node) / n_parent if n_parent > 0 else 0.0
    lo = parent_value
    hi = parent_value
    c = a.first_child[node]
    k = 0
    while c != NO_NODE:
        n = effective_visits(a, p, c)
        if n > 0:
            q[k] = child_q(a, p, c, n)
            lo = min(lo, q[k])
            hi = max(hi, q[k])
        c = a.next_sibling[c]
        k += 1
    scale = max(hi - lo, 1e-8)
    pb_c = p.pb_c_init + np.log((n_parent + p.pb_c_base + 1.0) / p.pb_c_base)
    explore = np.sqrt(n_parent) * pb_c
    best = NO_NODE
    best_score = -np.inf
    c = a.first_child[node]
    k = 0
    while c != NO_NODE:
        n = effective_visits(a, p, c)
        score = (q[k] - lo) / scale if n > 0 else 0.0
        score += explore * a.prior[c] / (n + 1.0)
        if score > best_score and not is_taken(a, c):
            best_score = score
            best = c
        c = a.next_sibling[c]
        k += 1
    return best


@njit(cache=True)
def best_child_uct(a: NodeArrays, p: KernelParams, node: int) -> int:
    """UCT (Kocsis & Szepesvári): mean Q + c·sqrt(ln N / n); unvisited children first."""
    log_n = np.log(max(effective_visits(a, p, node), 1.0))
    best = NO_NODE
    best_score = -np.inf
    c = a.first_child[node]
    while c != NO_NODE:
        n = effective_visits(a, p, c)
        score = child_q(a, p, c, n) + p.uct_c * np.sqrt(log_n / n) if n > 0 else np.inf
        if score > best_score and not is_taken(a, c):
            best_score = score
            best = c
        c = a.next_sibling[c]
    return best


@njit(cache=True, inline="always")
def wants_children(a: NodeArrays, p: KernelParams, node: int) -> bool:
    """Progressive widening: an open node may hold ``widen_c · visits^widen_alpha`` children."""
    if p.widen_c <= 0.0 or a.flags[node] & (CLOSED | PENDING):
        return False
    return a.num_children[node] < p.widen_c * a.visits[node] ** p.widen_alpha


@njit(cache=True)
def descend(a: NodeArrays, p: KernelParams, root: int, scratch: np.ndarray) -> int:
    """Follow the selection rule from ``root`` to a terminal node or a node to expand.

    Ends early on a node whose children are all taken (pending leaves): a collision.
    """
    node = root
    while not a.flags[node] & TERMINAL:
        if a.num_children[node] == 0 or wants_children(a, p, node):
            break
        if p.rule == PUCT:
            child = best_child_puct(a, p, node, scratch)
        else:
            child = best_child_uct(a, p, node)
        if child == NO_NODE:
            break
        node = child
    return node


# --------------------------------------------------------------------------- backup


@njit(cache=True)
def add_virtual(a: NodeArrays, node: int, delta: int) -> None:
    while node != NO_NODE:
        a.virtual[node] += delta
        node = a.parent[node]


@njit(cache=True)
def backup_one(a: NodeArrays, p: KernelParams, node: int, value: float) -> None:
    g = value
    while node != NO_NODE:
        a.visits[node] += 1
        a.value_sum[node] += g
        g = a.reward[node] + p.discount * g
        node = a.parent[node]


@njit(cache=True)
def backup(a: NodeArrays, p: KernelParams, nodes: np.ndarray, values: np.ndarray) -> None:
    for i in range(len(nodes)):
        backup_one(a, p, nodes[i], values[i])


@njit(cache=True)
def terminal_value(a: NodeArrays, node: int) -> float:
    """What a revisit of a terminal node backs up: its mean so far (0 if never evaluated)."""
    return a.value_sum[node] / a.visits[node] if a.visits[node] > 0 else 0.0


@njit(cache=True)
def release(a: NodeArrays, nodes: np.ndarray) -> int:
    """Remove the virtual loss of pending leaves; returns how many were pending."""
    released = 0
    for i in range(len(nodes)):
        node = nodes[i]
        if a.flags[node] & PENDING:
            a.flags[node] &= ~PENDING
            add_virtual(a, node, -1)
            released += 1
    return released


# --------------------------------------------------------------------------- select


@njit(cache=True)
def select(
    a: NodeArrays,
    p: KernelParams,
    roots: np.ndarray,
    trees: np.ndarray,
    k: int,
    budget: np.ndarray,
    out_leaf: np.ndarray,
    out_tree: np.ndarray,
) -> int:
    """Select up to ``k`` distinct leaves in each of ``trees``; returns how many were written.

    Each selected leaf is marked PENDING and its path carries one virtual loss until
    :func:`release`; descents skip pending leaves. A descent that ends on a terminal node backs
    up that node's value at once (a simulation that needs no model). Every selected leaf and
    every terminal backup spends one unit of ``budget[tree]``. A descent that finds only pending
    leaves below some node is a collision: that node's path takes a temporary virtual loss
    (removed before returning) so the next descent differs; after ``max_collisions`` collisions
    the tree yields fewer than ``k`` leaves.
    """
    count = 0
    collided = np.empty(max(p.max_collisions, 1), np.int64)
    scratch = np.empty(64)
    for t in trees:
        found = 0
        collisions = 0
        while found < k and budget[t] > 0:
            node = descend(a, p, roots[t], scratch)
            if a.flags[node] & TERMINAL:
                backup_one(a, p, node, terminal_value(a, node))
                budget[t] -= 1
            elif a.flags[node] & PENDING or (
                a.num_children[node] > 0 and not wants_children(a, p, node)
            ):
                if collisions >= p.max_collisions:
                    break
                add_virtual(a, node, 1)
                collided[collisions] = node
                collisions += 1
            else:
                a.flags[node] |= PENDING
                add_virtual(a, node, 1)
                out_leaf[count] = node
                out_tree[count] = t
                count += 1
                found += 1
                budget[t] -= 1
        for j in range(collisions):
            add_virtual(a, collided[j], -1)
    return count


# --------------------------------------------------------------------------- expand


@njit(cache=True)
def normalise_priors(a: NodeArrays, node: int) -> None:
    """prior = softmax(logit) over the node's current children."""
    top = -np.inf
    c = a.first_child[node]
    while c != NO_NODE:
        top = max(top, a.logit[c])
        c = a.next_sibling[c]
    if top == -np.inf:  # every child weighs zero: fall back to uniform priors
        top = 0.0
        c = a.first_child[node]
        while c != NO_NODE:
            a.logit[c] = 0.0
            c = a.next_sibling[c]
    total = 0.0
    c = a.first_child[node]
    while c != NO_NODE:
        total += np.exp(np.float64(a.logit[c]) - top)
        c = a.next_sibling[c]
    c = a.first_child[node]
    while c != NO_NODE:
        a.prior[c] = np.exp(np.float64(a.logit[c]) - top) / total
        c = a.next_sibling[c]


@njit(cache=True)
def last_child(a: NodeArrays, parent: int) -> int:
    c = a.first_child[parent]
    if c != NO_NODE:
        while a.next_sibling[c] != NO_NODE:
            c = a.next_sibling[c]
    return c


@njit(cache=True)
def add_child(
    a: NodeArrays, parent: int, last: int, logit: float, terminal: bool, reward: float
) -> int:
    """Append one child after ``last`` (the parent's current last child); storage must have room."""
    c = a.size[0]
    a.size[0] += 1
    a.parent[c] = parent
    a.first_child[c] = NO_NODE
    a.next_sibling[c] = NO_NODE
    a.num_children[c] = 0
    a.action[c] = a.num_children[parent]
    a.depth[c] = a.depth[parent] + 1
    a.visits[c] = 0
    a.virtual[c] = 0
    a.flags[c] = TERMINAL if terminal else 0
    a.logit[c] = logit
    a.prior[c] = 0.0
    a.reward[c] = reward
    a.value_sum[c] = 0.0
    if last == NO_NODE:
        a.first_child[parent] = c
    else:
        a.next_sibling[last] = c
    a.num_children[parent] += 1
    return c


@njit(cache=True, inline="always")
def as_logit(weight: float, is_logit: bool) -> float:
    if is_logit:
        return weight
    return np.log(weight) if weight > 0 else -np.inf


@njit(cache=True)
def expand(
    a: NodeArrays,
    parents: np.ndarray,
    counts: np.ndarray,
    weights: np.ndarray,
    is_logit: bool,
    terminal: np.ndarray,
    reward: np.ndarray,
    out_child: np.ndarray,
) -> None:
    """Give ``parents[i]`` ``counts[i]`` new children, described by consecutive flat entries.

    ``weights`` are priors (probabilities, or log-probabilities when ``is_logit``); new and old
    children of a parent are renormalised together, so widening keeps priors a distribution.
    """
    j = 0
    for i in range(len(parents)):
        parent = parents[i]
        last = last_child(a, parent)
        for _ in range(counts[i]):
            logit = as_logit(weights[j], is_logit)
            last = add_child(a, parent, last, logit, terminal[j], reward[j])
            out_child[j] = last
            j += 1
        if counts[i] > 0:
            normalise_priors(a, parent)


@njit(cache=True)
def apply_evaluations(
    a: NodeArrays,
    p: KernelParams,
    leaves: np.ndarray,
    priors: np.ndarray,
    is_logit: bool,
    values: np.ndarray,
    terminal: np.ndarray,
    rewards: np.ndarray,
) -> None:
    """AlphaZero-style update of evaluated leaves: store the edge reward, expand a child for
    every valid prior in the leaf's row (non-finite logit / zero probability = invalid action),
    release the leaf's virtual loss and back up its value. A leaf with no valid action is terminal.
    """
    for i in range(len(leaves)):
        leaf = leaves[i]
        a.reward[leaf] = rewards[i]
        if terminal[i]:
            a.flags[leaf] |= TERMINAL
        else:
            last = last_child(a, leaf)
            added = 0
            for j in range(priors.shape[1]):
                logit = as_logit(priors[i, j], is_logit)
                if np.isfinite(logit):
                    last = add_child(a, leaf, last, logit, False, 0.0)
                    added += 1
            if added > 0:
                normalise_priors(a, leaf)
            elif a.num_children[leaf] == 0:
                a.flags[leaf] |= TERMINAL
        if a.flags[leaf] & PENDING:
            a.flags[leaf] &= ~PENDING
            add_virtual(a, leaf, -1)
        backup_one(a, p, leaf, values[i])


# --------------------------------------------------------------------------- whole search


@njit(cache=True)
def fused_search(a, p, roots, trees, k, budget, evaluate, context, num_actions, is_logit):
    """Run select → evaluate → update waves until every tree's budget is spent, all compiled.

    ``evaluate(a, leaves, context, priors, values, terminal, rewards)`` is an ``@njit`` function
    that fills the output arrays for ``leaves``; storage must already hold every node the search
    can create (``len(trees) + budget.sum() * num_actions`` at most). Returns the number of waves.
    """
    rows = len(trees) * k
    leaves = np.empty(rows, np.int64)
    owners = np.empty(rows, np.int64)
    priors = np.empty((rows, num_actions), np.float64)
    values = np.empty(rows, np.float64)
    terminal = np.empty(rows, np.bool_)
    rewards = np.empty(rows, np.float64)
    waves = 0
    while True:
        n = select(a, p, roots, trees, k, budget, leaves, owners)
        if n == 0:  # nothing is pending at a wave's start, so only an empty budget gets here
            break
        terminal[:n] = False
        rewards[:n] = 0.0
        evaluate(a, leaves[:n], context, priors[:n], values[:n], terminal[:n], rewards[:n])
        apply_evaluations(
            a, p, leaves[:n], priors[:n], is_logit, values[:n], terminal[:n], rewards[:n]
        )
        waves += 1
    return waves
