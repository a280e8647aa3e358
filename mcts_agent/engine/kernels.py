"""Compiled MCTS kernels. Every kernel works on many trees (or many leaves) per call.

Conventions shared by all kernels (and by the plain-Python reference in ``tests/``):

* ``visits[i]`` counts backups through node ``i``; ``value_sum[i]`` sums the returns backed up
  through it, seen from ``i``. A backup of value ``v`` at node ``x`` adds ``v`` at ``x`` and
  ``reward[x] + discount * v`` at its parent, and so on to the root (as in mctx).
* ``Q(child) = reward[child] + discount * value_sum[child] / visits[child]`` from the parent's view.
* Virtual loss: every pending selection through a node counts as ``virtual_loss`` extra visits of
  value ``virtual_value`` until it is released, so concurrent selections spread out.
* Ties between children break towards the lowest action (deterministic).
* Optional selection terms (both off at 0): ``depth_weight · height[c]`` and
  ``diversity_weight · novelty[c]`` are added to each child's score; see
  :class:`~mcts_agent.engine.EngineConfig`. ``height`` is kept up to date by :func:`expand`.

Speed note: each kernel unpacks the :class:`NodeArrays` it needs into local variables once and
keeps its per-node loops in its own body. Reading ``nodes.field`` inside a hot loop, or passing
many arrays to a helper per tree level, makes numba count references on every access and was
3–5× slower here; the helpers below take only a few arrays and run once per leaf, not per child.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from .storage import CLOSED, NO_NODE, PENDING, TERMINAL, NodeArrays

PUCT = 0
UCT = 1
ABMCTS = 2
GOLDEN = 0x9E3779B97F4A7C15


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
    depth_weight: float
    diversity_weight: float
    ab_alpha: float
    ab_beta: float
    seed: int


# --------------------------------------------------------------------------- path walks


@njit(cache=True)
def add_virtual(parent: np.ndarray, virtual: np.ndarray, node: int, delta: int) -> None:
    """Add ``delta`` pending selections on the path from ``node`` to its root."""
    while node != NO_NODE:
        virtual[node] += delta
        node = parent[node]


@njit(cache=True)
def backup_path(
    parent: np.ndarray,
    visits: np.ndarray,
    value_sum: np.ndarray,
    reward: np.ndarray,
    discount: float,
    node: int,
    value: float,
) -> None:
    """One visit on every node from ``node`` to its root, carrying the discounted return."""
    g = value
    while node != NO_NODE:
        visits[node] += 1
        value_sum[node] += g
        g = reward[node] + discount * g
        node = parent[node]


@njit(cache=True)
def backup(a: NodeArrays, p: KernelParams, nodes: np.ndarray, values: np.ndarray) -> None:
    for i in range(len(nodes)):
        backup_path(a.parent, a.visits, a.value_sum, a.reward, p.discount, nodes[i], values[i])


@njit(cache=True)
def release(a: NodeArrays, nodes: np.ndarray) -> int:
    """Remove the virtual loss of pending leaves; returns how many were pending."""
    flags, parent, virtual = a.flags, a.parent, a.virtual
    released = 0
    for node in nodes:
        if flags[node] & PENDING:
            flags[node] &= ~PENDING
            add_virtual(parent, virtual, node, -1)
            released += 1
    return released


# --------------------------------------------------------------------------- adaptive branching


@njit(cache=True, inline="always")
def mix(x: np.uint64) -> np.uint64:
    """splitmix64's finaliser: a bijective 64-bit mix."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@njit(cache=True)
def ab_choose(
    first_child: np.ndarray, next_sibling: np.ndarray, num_children: np.ndarray,
    visits: np.ndarray, virtual: np.ndarray, value_sum: np.ndarray, flags: np.ndarray,
    node: int, stream: np.uint64, p: KernelParams,
) -> int:
    """AB-MCTS's choice at ``node`` (Thompson sampling, values in [0, 1]): ``node`` itself to
    generate a new child there (go wider), a child to descend into (go deeper), or NO_NODE when
    neither is possible (every child a pending leaf and ``node`` closed or pending).

    Each child's value is Beta(alpha + n·m, beta + n·(1 - m)) after its n visits of mean m
    (virtual loss included); a new child's is Beta(alpha + Σ m_c, beta + Σ (1 - m_c)) over the
    visited children's means, what this node's generations have been worth so far. One draw
    each; the largest wins (ties: generate, then the lowest action). The draws come from a
    generator seeded by ``stream`` (seed, path and visits of the node), so the same tree gives
    the same choices in any order of arrival.
    """
    vl, vv = p.virtual_loss, p.virtual_value
    np.random.seed(np.uint32(stream & np.uint64(0xFFFFFFFF)))
    gen_a, gen_b = p.ab_alpha, p.ab_beta
    best = NO_NODE
    best_draw = -1.0
    c = first_child[node]
    while c != NO_NODE:
        n = visits[c] + vl * virtual[c]
        m = 0.0
        if n > 0:
            m = min(max((value_sum[c] + vl * virtual[c] * vv) / n, 0.0), 1.0)
            gen_a += m
            gen_b += 1.0 - m
        draw = np.random.beta(p.ab_alpha + n * m, p.ab_beta + n * (1.0 - m))
        if draw > best_draw and (not flags[c] & PENDING or num_children[c] > 0):
            best_draw = draw
            best = c
        c = next_sibling[c]
    if not flags[node] & (CLOSED | PENDING) and np.random.beta(gen_a, gen_b) >= best_draw:
        return node
    return best


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
    """Make up to ``k`` descents in each of ``trees``; returns how many leaves were written.

    A descent follows the rule (PUCT: mctx's ``muzero_action_selection`` with
    ``qtransform_by_parent_and_siblings``; UCT: mean Q + ``uct_c·sqrt(ln N / n)``, unvisited
    first) until a node with no children, a node progressive widening lets grow
    (``num_children < widen_c · visits^widen_alpha``, not CLOSED, not already pending), or a
    terminal node. Pending leaves are skipped. With ``depth_weight`` or ``diversity_weight``
    set, each child's score also gets ``depth_weight · height + diversity_weight · novelty``; with
    both 0 the scores are computed exactly as without them (bit-for-bit).

    Each selected leaf is marked PENDING and its path carries one virtual loss until
    :func:`release`. A descent that ends on a terminal node backs up that node's mean value (0
    if never evaluated) at once: a simulation that needs no model. Every selected leaf and every
    terminal backup is one of the ``k`` descents and spends one unit of ``budget[tree]``. A
    descent that finds only pending leaves below some node is a collision: that node's path
    takes a temporary virtual loss (removed before returning) so the next descent differs;
    after ``max_collisions`` collisions the tree yields fewer than ``k`` leaves.
    """
    parent, first_child, next_sibling = a.parent, a.first_child, a.next_sibling
    num_children, visits, virtual, flags = a.num_children, a.visits, a.virtual, a.flags
    prior, reward, value_sum = a.prior, a.reward, a.value_sum
    height, novelty, action = a.height, a.novelty, a.action
    vl, vv, discount = p.virtual_loss, p.virtual_value, p.discount
    dw, nw = p.depth_weight, p.diversity_weight
    extra = dw != 0.0 or nw != 0.0  # off: the scores below are exactly the plain rule's
    root_stream = mix(np.uint64(p.seed) * np.uint64(GOLDEN) + np.uint64(1))
    q = np.empty(max(a.widest[0], 1))  # each child's Q between PUCT's two passes
    collided = np.empty(max(p.max_collisions, 1), np.int64)
    count = 0
    for t in trees:
        descents = 0  # leaves found + terminal revisits
        collisions = 0
        while descents < k and budget[t] > 0:
            node = roots[t]
            blocked = False
            stream = root_stream  # AB-MCTS: a hash of the path from the root
            while not flags[node] & TERMINAL:
                nc = num_children[node]
                if nc == 0:
                    break
                if p.rule == ABMCTS:  # Thompson sampling decides: wider here, or deeper
                    pick = ab_choose(first_child, next_sibling, num_children, visits, virtual,
                                     value_sum, flags, node,
                                     mix(stream + np.uint64(visits[node] + virtual[node])), p)
                    if pick == node:
                        break
                    if pick == NO_NODE:
                        blocked = True
                        break
                    stream = mix(stream ^ (np.uint64(action[pick] + 1) * np.uint64(GOLDEN)))
                    node = pick
                    continue
                if (p.widen_c > 0.0 and not flags[node] & (CLOSED | PENDING)
                        and nc < p.widen_c * visits[node] ** p.widen_alpha):
                    break
                n_parent = visits[node] + vl * virtual[node]
                best = NO_NODE
                best_score = -np.inf
                if p.rule == PUCT:
                    # min-max normalisation over the parent's value and visited children's Q
                    lo = (value_sum[node] + vl * virtual[node] * vv) / n_parent \
                        if n_parent > 0 else 0.0
                    hi = lo
                    c = first_child[node]
                    j = 0
                    while c != NO_NODE:
                        n = visits[c] + vl * virtual[c]
                        if n > 0:
                            q[j] = reward[c] + discount * (value_sum[c] + vl * virtual[c] * vv) / n
                            lo = min(lo, q[j])
                            hi = max(hi, q[j])
                        c = next_sibling[c]
                        j += 1
                    scale = max(hi - lo, 1e-8)
                    pb_c = p.pb_c_init + np.log((n_parent + p.pb_c_base + 1.0) / p.pb_c_base)
                    explore = np.sqrt(n_parent) * pb_c
                    c = first_child[node]
                    j = 0
                    if not extra:  # two copies of one loop: the test stays out of the hot path
                        while c != NO_NODE:
                            n = visits[c] + vl * virtual[c]
                            score = (q[j] - lo) / scale if n > 0 else 0.0
                            score += explore * prior[c] / (n + 1.0)
                            if score > best_score and (
                                    not flags[c] & PENDING or num_children[c] > 0):
                                best_score = score
                                best = c
                            c = next_sibling[c]
                            j += 1
                    while c != NO_NODE:
                        n = visits[c] + vl * virtual[c]
                        score = (q[j] - lo) / scale if n > 0 else 0.0
                        score += explore * prior[c] / (n + 1.0)
                        score += dw * height[c] + nw * novelty[c]
                        if score > best_score and (not flags[c] & PENDING or num_children[c] > 0):
                            best_score = score
                            best = c
                        c = next_sibling[c]
                        j += 1
                else:
                    log_n = np.log(max(n_parent, 1.0))
                    c = first_child[node]
                    while c != NO_NODE:
                        n = visits[c] + vl * virtual[c]
                        if n > 0:
                            score = reward[c] + discount * (value_sum[c] + vl * virtual[c] * vv) / n
                            score += p.uct_c * np.sqrt(log_n / n)
                        else:
                            score = np.inf
                        if extra:
                            score += dw * height[c] + nw * novelty[c]
                        if score > best_score and (not flags[c] & PENDING or num_children[c] > 0):
                            best_score = score
                            best = c
                        c = next_sibling[c]
                if best == NO_NODE:  # every child is a pending leaf
                    blocked = True
                    break
                node = best

            if flags[node] & TERMINAL:
                value = value_sum[node] / visits[node] if visits[node] > 0 else 0.0
                backup_path(parent, visits, value_sum, reward, discount, node, value)
                budget[t] -= 1
                descents += 1
            elif blocked or flags[node] & PENDING:
                if collisions >= p.max_collisions:
                    break
                add_virtual(parent, virtual, node, 1)
                collided[collisions] = node
                collisions += 1
            else:
                flags[node] |= PENDING
                add_virtual(parent, virtual, node, 1)
                out_leaf[count] = node
                out_tree[count] = t
                count += 1
                descents += 1
                budget[t] -= 1
        for j in range(collisions):
            add_virtual(parent, virtual, collided[j], -1)
    return count


# --------------------------------------------------------------------------- expand


@njit(cache=True)
def expand(
    a: NodeArrays,
    parents: np.ndarray,
    counts: np.ndarray,
    logits: np.ndarray,
    terminal: np.ndarray,
    reward: np.ndarray,
    out_child: np.ndarray,
) -> None:
    """Append ``counts[i]`` children to ``parents[i]``, described by consecutive flat entries.

    ``logits`` are unnormalised log-priors (-inf: weight 0). Each parent's children, old and
    new, are renormalised together (softmax), so widening keeps priors a distribution; if every
    child weighs 0 the priors are uniform. Storage must already have room.
    """
    parent_of, first_child, next_sibling = a.parent, a.first_child, a.next_sibling
    num_children, action, depth, flags = a.num_children, a.action, a.depth, a.flags
    visits, virtual, value_sum, reward_of = a.visits, a.virtual, a.value_sum, a.reward
    logit_of, prior, height = a.logit, a.prior, a.height
    size = a.size[0]
    widest = a.widest[0]
    for i in range(len(parents)):
        widest = max(widest, num_children[parents[i]] + counts[i])
    weights = np.empty(widest)  # softmax scratch
    j = 0
    for i in range(len(parents)):
        node = parents[i]
        last = first_child[node]
        if last != NO_NODE:
            while next_sibling[last] != NO_NODE:
                last = next_sibling[last]
        for _ in range(counts[i]):
            c = size
            size += 1
            parent_of[c] = node
            first_child[c] = NO_NODE
            next_sibling[c] = NO_NODE
            num_children[c] = 0
            action[c] = num_children[node]
            depth[c] = depth[node] + 1
            visits[c] = 0
            virtual[c] = 0
            flags[c] = TERMINAL if terminal[j] else 0
            logit_of[c] = logits[j]
            reward_of[c] = reward[j]
            value_sum[c] = 0.0
            # height and novelty start at 0: storage is zeroed and append-only (saves 2 stores)
            if last == NO_NODE:
                first_child[node] = c
            else:
                next_sibling[last] = c
            last = c
            num_children[node] += 1
            out_child[j] = c
            j += 1
        if counts[i] > 0:
            softmax_priors(first_child, next_sibling, logit_of, prior, node, weights)
            # the new level may raise the ancestors' heights: stop at the first that already
            # reaches it (O(1) per parent unless the tree gets deeper)
            h = 1
            x = node
            while x != NO_NODE and height[x] < h:
                height[x] = h
                h += 1
                x = parent_of[x]
    a.size[0] = size
    a.widest[0] = widest


@njit(cache=True)
def fill_height(a: NodeArrays) -> None:
    """Recompute ``height`` from ``parent`` (for forests saved before it existed).

    One backward pass: a child's id is always larger than its parent's.
    """
    parent, height = a.parent, a.height
    n = a.size[0]
    height[:n] = 0
    for i in range(n - 1, -1, -1):
        up = parent[i]
        if up != NO_NODE and height[up] < height[i] + 1:
            height[up] = height[i] + 1


@njit(cache=True)
def softmax_priors(
    first_child: np.ndarray, next_sibling: np.ndarray, logit: np.ndarray, prior: np.ndarray,
    node: int, weights: np.ndarray,
) -> None:
    """prior = softmax(logit) over the children of ``node``; uniform if all weigh zero."""
    top = -np.inf
    c = first_child[node]
    while c != NO_NODE:
        top = max(top, logit[c])
        c = next_sibling[c]
    if top == -np.inf:
        top = 0.0
        c = first_child[node]
        while c != NO_NODE:
            logit[c] = 0.0
            c = next_sibling[c]
    total = 0.0
    c = first_child[node]
    j = 0
    while c != NO_NODE:
        weights[j] = np.exp(np.float64(logit[c]) - top)
        total += weights[j]
        c = next_sibling[c]
        j += 1
    c = first_child[node]
    j = 0
    while c != NO_NODE:
        prior[c] = weights[j] / total
        c = next_sibling[c]
        j += 1


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
    n, width = priors.shape
    counts = np.zeros(n, np.int64)
    logits = np.empty(n * width)
    j = 0
    for i in range(n):
        leaf = leaves[i]
        a.reward[leaf] = rewards[i]
        if terminal[i]:
            a.flags[leaf] |= TERMINAL
            continue
        for col in range(width):
            w = priors[i, col]
            logit = w if is_logit else (np.log(w) if w > 0 else -np.inf)
            if np.isfinite(logit):
                logits[j] = logit
                counts[i] += 1
                j += 1
        if counts[i] == 0 and a.num_children[leaf] == 0:
            a.flags[leaf] |= TERMINAL
    expand(a, leaves, counts, logits[:j], np.zeros(j, np.bool_), np.zeros(j), np.empty(j, np.int64))
    release(a, leaves)
    backup(a, p, leaves, values)


# --------------------------------------------------------------------------- whole search


@njit  # not cache=True: numba cannot cache a kernel that takes a function argument
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
        if n == 0:
            if budget[trees].sum() == 0:
                break
            continue  # every descent of this wave was a terminal revisit
        terminal[:n] = False
        rewards[:n] = 0.0
        evaluate(a, leaves[:n], context, priors[:n], values[:n], terminal[:n], rewards[:n])
        apply_evaluations(
            a, p, leaves[:n], priors[:n], is_logit, values[:n], terminal[:n], rewards[:n]
        )
        waves += 1
    return waves
