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
  :class:`~mcts_agent.engine.EngineConfig`. ``height`` is kept up to date by :func:`attach`.
* The children of ``x`` are ids ``first_child[x] + i``, or ``edges[first_child[x] + i]`` when
  ``x`` is SCATTERED (see :mod:`~mcts_agent.engine.storage`).

Speed notes. Only the entry points take the :class:`NodeArrays` tuple; the helpers they call
per descent or per leaf take the arrays they need as arguments. Each field read from the tuple
inside a function costs numba an atomic reference count on entry and another on exit (250 ns
per call for select's 13 fields, against 50 ns with the arrays passed in). Nothing is allocated
per simulation. Where no selection is pending below a node (its ``virtual`` is 0), no extra
selection term is on and its children are one id range, :func:`puct_dense` scans them like a
dense row, without the virtual-loss terms.
"""

from __future__ import annotations

from collections.abc import Callable
from types import FunctionType
from typing import Any

import numba as nb
import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba.core import cgutils
from numba.experimental import structref
from numba.extending import intrinsic

from .storage import (
    CLEAN,
    CLOSED,
    EDGES_USED,
    NO_NODE,
    PENDING,
    SCATTERED,
    SIZE,
    TERMINAL,
    WIDEST,
    NodeArrays,
)

PUCT = 0
UCT = 1
ABMCTS = 2
GOLDEN = 0x9E3779B97F4A7C15

# Codes kernels return when an evaluation is invalid (nothing has been changed by then).
BAD_VALUE, BAD_REWARD, NAN_PRIOR, POSINF_LOGIT, BAD_PROBABILITY = -1, -2, -3, -4, -5
NEED_ROOM = -6  # the edges table or scratch space is too small: grow the edges, call again


#: Visit counts 0 .. EXPLORE_TABLE - 1 whose PUCT exploration factor ``params`` carries.
EXPLORE_TABLE = 4096

#: ``RECIPROCAL[n]`` is ``1 / n`` (IEEE division: the bits a division past the table gives;
#: index 0 is never read). PUCT multiplies by it where it divided by a count: its
#: divisions per child (Q in two passes, the prior term) and the one by the scale bounded a
#: descent by the divider's throughput (the dense reference with this change: 42.6 → 37.4 ms
#: a 64 × 1,024 search, the same picks).
RECIPROCAL = np.concatenate(([np.inf], 1.0 / np.arange(1, EXPLORE_TABLE, dtype=np.float64)))

#: The id-range scans (:func:`puct_dense`, :func:`puct_pending`) serve nodes whose count
#: (virtual loss included) is below this: a child's count is at most its parent's
#: (``Forest.check_invariants``), so every count and count + 1 they look up is in
#: :data:`RECIPROCAL` and the explore table, and they read them with no test. Busier nodes
#: take :func:`select_tree`'s general loop (the same arithmetic).
SCAN_VISITS = EXPLORE_TABLE - 1

#: The settings the kernels read, as a numpy record (built by
#: :meth:`~mcts_agent.engine.EngineConfig.kernel_params`: a one-element array). Entry points
#: take the array (``params``; one array enters a compiled call in ~1 µs, a named tuple of 15
#: numbers took ~5.5) and hand its element ``p = params[0]`` to the helpers (``p.pb_c_init`` …).
#: ``explore[n]`` is :func:`explore_factor` of n visits (filled by :func:`fill_explore`): a
#: descent reads it instead of calling ``sqrt`` and ``log`` at every level (a tenth of a search).
PARAMS = np.dtype([
    ("rule", np.int64), ("pb_c_init", np.float64), ("pb_c_base", np.float64),
    ("uct_c", np.float64), ("virtual_loss", np.float64), ("virtual_value", np.float64),
    ("widen_c", np.float64), ("widen_alpha", np.float64), ("discount", np.float64),
    ("max_collisions", np.int64), ("depth_weight", np.float64),
    ("diversity_weight", np.float64), ("ab_alpha", np.float64), ("ab_beta", np.float64),
    ("seed", np.int64), ("explore", np.float64, (EXPLORE_TABLE,)),
], align=True)
KernelParams = np.void  # one element of a PARAMS array, as the helpers receive it


@njit(cache=True, error_model="numpy")
def explore_factor(n_parent: float, pb_c_init: float, pb_c_base: float) -> float:
    """PUCT's ``sqrt(N) · pb_c`` with ``pb_c = pb_c_init + log((N + pb_c_base + 1) / pb_c_base)``
    for a parent of ``n_parent`` visits (virtual loss included)."""
    return np.sqrt(n_parent) * (pb_c_init + np.log((n_parent + pb_c_base + 1.0) / pb_c_base))


@njit(cache=True, error_model="numpy")
def fill_explore(params: np.ndarray) -> None:
    """``params[0].explore[n]`` = :func:`explore_factor` of ``n`` visits, for every ``n``."""
    p = params[0]
    for n in range(EXPLORE_TABLE):
        p.explore[n] = explore_factor(np.float64(n), p.pb_c_init, p.pb_c_base)


@njit(cache=True, error_model="numpy", inline="always")
def explore_of(n_parent: float, p: KernelParams) -> float:
    """:func:`explore_factor` from the table where ``n_parent`` (never negative) is a whole
    number in it."""
    if n_parent < EXPLORE_TABLE:
        n = np.uint64(np.int64(n_parent))
        if n == n_parent:
            return p.explore[n]
    return explore_factor(n_parent, p.pb_c_init, p.pb_c_base)


@njit(cache=True, error_model="numpy", inline="always")
def pending_reciprocal(count: int, pending: int, n: float) -> float:
    """``1 / n`` for ``n = count + virtual_loss · pending > 0``: :data:`RECIPROCAL`'s where
    nothing is pending and the count is in it (the same bits either way)."""
    if pending or count >= EXPLORE_TABLE:
        return 1.0 / n
    return RECIPROCAL[np.uint64(count)]


@njit(cache=True, error_model="numpy", inline="always")
def scan_reciprocal(n: int) -> float:
    """``1 / n`` from :data:`RECIPROCAL` for a count below its end (see :data:`SCAN_VISITS`), no
    test: :func:`puct_dense` looks up three a child, and their tests made it too big for LLVM
    to inline into its callers (the fused search 8 % slower than with none). The mask keeps
    the read inside the table even for a forest that breaks the invariant."""
    return RECIPROCAL[np.uint64(n) & np.uint64(EXPLORE_TABLE - 1)]


@intrinsic
def prefetch(typingctx: Any, array: nb.types.Array, index: nb.types.Integer) -> tuple:
    """Start loading the cache line of ``array[index]`` (LLVM's ``llvm.prefetch``: a hint, no
    fault, no result; ``index`` must not be negative)."""
    def codegen(context: Any, builder: ir.IRBuilder, signature: Any, args: list) -> Any:
        arraytype = signature.args[0]
        view = context.make_array(arraytype)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, arraytype, view, [args[1]],
                                           wraparound=False)
        byte, word = ir.IntType(8).as_pointer(), ir.IntType(32)
        hint = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte, word, word, word]),
            "llvm.prefetch.p0")
        # a read, kept in every cache level, of data (not instructions)
        builder.call(hint, [builder.bitcast(pointer, byte), word(0), word(3), word(1)])
        return context.get_dummy_value()
    return nb.types.void(array, index), codegen


@intrinsic
def memmove_items(typingctx: Any, array: nb.types.Array, to: nb.types.Integer,
                  start: nb.types.Integer, count: nb.types.Integer) -> tuple:
    """Copy items ``start .. start + count - 1`` of a contiguous ``array`` to ``to ..`` (LLVM's
    ``llvm.memmove``: the ranges may overlap; no bounds checked)."""
    def codegen(context: Any, builder: ir.IRBuilder, signature: Any, args: list) -> Any:
        arraytype = signature.args[0]
        view = context.make_array(arraytype)(context, builder, args[0])
        target, source = (cgutils.get_item_pointer(context, builder, arraytype, view, [index],
                                                   wraparound=False)
                          for index in (args[1], args[2]))
        itemsize = context.get_abi_sizeof(context.get_data_type(arraytype.dtype))
        cgutils.raw_memmove(builder, target, source, args[3],
                            context.get_constant(nb.types.intp, itemsize), align=1)
        return context.get_dummy_value()
    return nb.types.void(array, to, start, count), codegen


@njit(cache=True, inline="always")
def prefetch_children(first_child: np.ndarray, num_children: np.ndarray, flags: np.ndarray,
                      first: int) -> None:
    """Load the fields a descent reads at the next level for children ``first ..`` while it
    scores them: the line holding the chosen child's ``first_child`` then arrives with the
    children's statistics, not after them (one wait for memory per level, not two, when the
    tree is out of cache: many trees searched a wave at a time)."""
    prefetch(first_child, first)
    prefetch(num_children, first)
    prefetch(flags, first)


# --------------------------------------------------------------------------- path walks


@njit(cache=True, error_model="numpy")
def add_virtual(parent: np.ndarray, virtual: np.ndarray, node: int, delta: int) -> None:
    """Add ``delta`` pending selections on the path from ``node`` to its root."""
    while node != NO_NODE:
        virtual[node] += delta
        node = parent[node]


@njit(cache=True, error_model="numpy")
def add_virtual_trail(path: np.ndarray, length: int, virtual: np.ndarray) -> None:
    """:func:`add_virtual` of one along a descent's recorded ``path[:length]`` (root to the
    node): no walk up ``parent`` links, a load out of cache at each level."""
    for j in range(length):
        virtual[path[j]] += 1


@njit(cache=True, error_model="numpy")
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


@njit(cache=True, error_model="numpy", inline="always")
def backup_trail(path: np.ndarray, length: int, parent: np.ndarray, visits: np.ndarray,
                 value_sum: np.ndarray, reward: np.ndarray, discount: float,
                 value: float) -> None:
    """:func:`backup_path` for a node whose path from its root, ``path[:length]``, the
    descent recorded: the ids come from that array, not from a walk up ``parent`` (a chain of
    dependent loads, each a likely cache miss, since selection reads no node's parent)."""
    g = value
    for d in range(length - 1, -1, -1):
        x = path[d]
        visits[x] += 1
        value_sum[x] += g
        g = reward[x] + discount * g
    backup_path(parent, visits, value_sum, reward, discount, parent[path[0]], g)


@njit(cache=True, error_model="numpy")
def backup(a: NodeArrays, params: np.ndarray, nodes: np.ndarray, values: np.ndarray) -> None:
    p = params[0]
    for i in range(len(nodes)):
        backup_path(a.parent, a.visits, a.value_sum, a.reward, p.discount, nodes[i], values[i])


@njit(cache=True, error_model="numpy")
def release_leaf(flags: np.ndarray, parent: np.ndarray, virtual: np.ndarray, leaf: int) -> bool:
    """Remove the virtual loss of ``leaf`` if it is pending; returns whether it was."""
    if not flags[leaf] & PENDING:
        return False
    flags[leaf] &= ~PENDING
    add_virtual(parent, virtual, leaf, -1)
    return True


@njit(cache=True, error_model="numpy")
def release(a: NodeArrays, nodes: np.ndarray) -> int:
    """Remove the virtual loss of pending leaves; returns how many were pending."""
    released = 0
    for node in nodes:
        released += release_leaf(a.flags, a.parent, a.virtual, node)
    return released


@njit(cache=True, inline="always")
def child_id(first: int, i: int, scattered: bool, edges: np.ndarray) -> int:
    """The id of a node's ``i``-th child (``first`` is its ``first_child``)."""
    return edges[first + i] if scattered else first + i


# --------------------------------------------------------------------------- adaptive branching


@njit(cache=True, inline="always")
def mix(x: np.uint64) -> np.uint64:
    """splitmix64's finaliser: a bijective 64-bit mix."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@njit(cache=True, error_model="numpy")
def ab_choose(
    first_child: np.ndarray, edges: np.ndarray, num_children: np.ndarray,
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
    first, scattered = first_child[node], (flags[node] & SCATTERED) != 0
    for i in range(num_children[node]):
        c = child_id(first, i, scattered, edges)
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
    if not flags[node] & (CLOSED | PENDING) and np.random.beta(gen_a, gen_b) >= best_draw:
        return node
    return best


# --------------------------------------------------------------------------- select


@njit(cache=True, error_model="numpy")
def select_tree(
    parent: np.ndarray, first_child: np.ndarray, edges: np.ndarray, num_children: np.ndarray,
    visits: np.ndarray, virtual: np.ndarray, flags: np.ndarray, prior: np.ndarray,
    reward: np.ndarray, value_sum: np.ndarray, height: np.ndarray, novelty: np.ndarray,
    action: np.ndarray, p: KernelParams, root: int, tree: int, k: int, budget: np.ndarray,
    mark: bool, collided: np.ndarray, path: np.ndarray, out_leaf: np.ndarray,
    out_tree: np.ndarray, count: int, ahead: int = NO_NODE, ahead_length: int = 0,
) -> int:
    """Up to ``k`` descents in one tree (see :func:`select`), leaves written from
    ``out_leaf[count]`` on; returns the new count. With ``mark`` False the leaves get no
    PENDING flag and no virtual loss: only for a caller that updates the (single) leaf before
    the tree's next descent. ``ahead``: where the first descent's dense part already stopped
    (:func:`descend_apart`), its path in ``path[:ahead_length]``."""
    vl, vv, discount = p.virtual_loss, p.virtual_value, p.discount
    dw, nw = p.depth_weight, p.diversity_weight
    extra = dw != 0.0 or nw != 0.0  # off: the scores below are exactly the plain rule's
    plain = is_plain(p)
    whole = vl == np.floor(vl)  # counts with virtual loss stay whole: puct_pending's
    root_stream = mix(np.uint64(p.seed) * np.uint64(GOLDEN) + np.uint64(1))
    descents = 0  # leaves found + terminal revisits
    collisions = 0
    while descents < k and budget[tree] > 0:
        node = root
        path[0] = root
        length = 1
        blocked = False
        stream = root_stream  # AB-MCTS: a hash of the path from the root
        if ahead != NO_NODE:
            node, length = ahead, ahead_length
            ahead = NO_NODE
        elif plain and virtual[root] == 0:  # nothing pending in the tree: the dense rule
            node, length = descend_dense(first_child, num_children, flags, visits, value_sum,
                                         reward, prior, root, p, path)
        while not flags[node] & TERMINAL:
            nc = num_children[node]
            if nc == 0:
                break
            first, scattered = first_child[node], (flags[node] & SCATTERED) != 0
            if p.rule == ABMCTS:  # Thompson sampling decides: wider here, or deeper
                pick = ab_choose(first_child, edges, num_children, visits, virtual, value_sum,
                                 flags, node,
                                 mix(stream + np.uint64(visits[node] + virtual[node])), p)
                if pick == node:
                    break
                if pick == NO_NODE:
                    blocked = True
                    break
                stream = mix(stream ^ (np.uint64(action[pick] + 1) * np.uint64(GOLDEN)))
                node = pick
                path[length] = node
                length += 1
                continue
            if (p.widen_c > 0.0 and not flags[node] & (CLOSED | PENDING)
                    and nc < p.widen_c * visits[node] ** p.widen_alpha):
                break
            pending = virtual[node] != 0  # else no child has virtual loss or is pending
            n_parent = visits[node] + vl * virtual[node]
            if (p.rule == PUCT and not (scattered or extra) and (whole or not pending)
                    and n_parent < SCAN_VISITS):
                if pending:
                    pick = puct_pending(visits, virtual, value_sum, reward, prior, flags,
                                        num_children, node, first, nc, p)
                    if pick == NO_NODE:  # every child is a pending leaf
                        blocked = True
                        break
                    node = pick
                elif plain:  # nothing pending below: the dense rule all the way down
                    node, length = descend_dense(first_child, num_children, flags, visits,
                                                 value_sum, reward, prior, node, p, path, length)
                    continue
                else:
                    node = puct_dense(visits, value_sum, reward, prior, node, first, nc, p)
                path[length] = node
                length += 1
                continue
            best = NO_NODE
            best_score = -np.inf
            if p.rule == PUCT:
                # min-max normalisation over the parent's value and visited children's Q
                lo = (value_sum[node] + vl * virtual[node] * vv) / n_parent \
                    if n_parent > 0 else 0.0
                hi = lo
                for i in range(nc):
                    c = child_id(first, i, scattered, edges)
                    n = visits[c] + vl * virtual[c]
                    if n > 0:
                        q = reward[c] + discount * (value_sum[c] + vl * virtual[c] * vv) \
                            * pending_reciprocal(visits[c], virtual[c], n)
                        lo = min(lo, q)
                        hi = max(hi, q)
                inverse = 1.0 / max(hi - lo, 1e-8)
                explore = explore_of(n_parent, p)
                for i in range(nc):
                    c = child_id(first, i, scattered, edges)
                    n = visits[c] + vl * virtual[c]
                    score = 0.0
                    if n > 0:
                        q = reward[c] + discount * (value_sum[c] + vl * virtual[c] * vv) \
                            * pending_reciprocal(visits[c], virtual[c], n)
                        score = (q - lo) * inverse
                    score += explore * prior[c] * pending_reciprocal(visits[c] + 1, virtual[c],
                                                                     n + 1.0)
                    if extra:
                        score += dw * height[c] + nw * novelty[c]
                    if score > best_score and (not flags[c] & PENDING or num_children[c] > 0):
                        best_score = score
                        best = c
            else:
                log_n = np.log(max(n_parent, 1.0))
                for i in range(nc):
                    c = child_id(first, i, scattered, edges)
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
            if best == NO_NODE:  # every child is a pending leaf
                blocked = True
                break
            node = best
            path[length] = node
            length += 1

        if flags[node] & TERMINAL:
            value = value_sum[node] / visits[node] if visits[node] > 0 else 0.0
            backup_trail(path, length, parent, visits, value_sum, reward, discount, value)
            budget[tree] -= 1
            descents += 1
        elif blocked or flags[node] & PENDING:
            if collisions >= p.max_collisions:
                break
            add_virtual_trail(path, length, virtual)
            collided[collisions] = node
            collisions += 1
        else:
            if mark:
                flags[node] |= PENDING
                add_virtual_trail(path, length, virtual)
            out_leaf[count] = node
            out_tree[count] = tree
            count += 1
            descents += 1
            budget[tree] -= 1
    for j in range(collisions):
        add_virtual(parent, virtual, collided[j], -1)
    return count


@njit(cache=True, inline="always")
def is_plain(p: KernelParams) -> bool:
    """Whether descents may take the dense rule (:func:`descend_dense`) where nothing is
    pending: PUCT with no extra selection term and no widening."""
    return (p.rule == PUCT and p.depth_weight == 0.0 and p.diversity_weight == 0.0
            and p.widen_c <= 0.0)


PREFETCH_DISTANCE = 8  # trees between a tree's prefetch and its step down in descend_apart


@njit(cache=True, error_model="numpy")
def descend_apart(first_child: np.ndarray, num_children: np.ndarray, flags: np.ndarray,
                  visits: np.ndarray, value_sum: np.ndarray, reward: np.ndarray,
                  prior: np.ndarray, virtual: np.ndarray, roots: np.ndarray, trees: np.ndarray,
                  budget: np.ndarray, p: KernelParams, paths: np.ndarray, ahead: np.ndarray,
                  lengths: np.ndarray, parent: np.ndarray, action: np.ndarray,
                  depth: np.ndarray, height: np.ndarray, state: np.ndarray) -> None:
    """:func:`descend_dense` from the root of every tree of ``trees`` that has budget and
    nothing pending, the trees side by side: each round takes every tree one level down, the
    statistics of a tree's next children prefetched :data:`PREFETCH_DISTANCE` trees ahead of
    its step. A wave of many trees finds each tree out of cache, and one descent alone waits
    for memory at every level; side by side those waits overlap (prefetching every tree's
    children before any step overlapped fewer of them: more lines asked for at once than the
    core keeps in flight). Tree ``trees[i]`` stops at ``ahead[i]`` (NO_NODE: not descended)
    with its path in ``paths[i, :lengths[i]]`` (the picks :func:`descend_dense` makes).

    Where a descent stops, the leaf's ``parent``, ``action``, ``depth``, ``height`` and
    ``state`` and its parent's ``height`` and ``state`` are prefetched: what the evaluator and
    the leaf's expansion read next, each a line out of cache in a wave of many trees."""
    walking = np.zeros(len(trees), np.bool_)
    for i in range(len(trees)):
        root = roots[trees[i]]
        ahead[i] = NO_NODE
        if budget[trees[i]] > 0 and virtual[root] == 0:
            ahead[i], paths[i, 0], lengths[i], walking[i] = root, root, 1, True
    left = walking.sum()
    while left:
        for i in range(len(trees) + PREFETCH_DISTANCE):
            if i < len(trees) and walking[i] and num_children[ahead[i]]:  # fetch tree i's
                first = np.uint64(first_child[ahead[i]])  # next children (a hint: harmless
                last = first + np.uint64(num_children[ahead[i]] - 1)  # where it stops there)
                prefetch(visits, first)  # the range may straddle two lines: first and last
                prefetch(visits, last)
                prefetch(value_sum, first)
                prefetch(value_sum, last)
                prefetch(reward, first)
                prefetch(reward, last)
                prefetch(prior, first)
                prefetch(prior, last)
            i -= PREFETCH_DISTANCE
            if i >= 0 and walking[i]:  # tree i one level down, or stopped
                x = dense_child(first_child, num_children, flags, visits, value_sum, reward,
                                prior, ahead[i], p)
                if x == NO_NODE:
                    walking[i] = False
                    left -= 1
                    prefetch_leaf(parent, action, depth, height, state, ahead[i],
                                  paths[i, lengths[i] - 2] if lengths[i] > 1 else ahead[i])
                else:
                    paths[i, lengths[i]] = x
                    lengths[i] += 1
                    ahead[i] = x


@njit(cache=True, inline="always")
def prefetch_leaf(parent: np.ndarray, action: np.ndarray, depth: np.ndarray,
                  height: np.ndarray, state: np.ndarray, leaf: int, up: int) -> None:
    """Start loading what a selected ``leaf``'s evaluation and expansion read (see
    :func:`descend_apart`); ``up`` is its parent."""
    x = np.uint64(leaf)
    prefetch(parent, x)
    prefetch(action, x)
    prefetch(depth, x)
    prefetch(height, x)
    prefetch(height, np.uint64(up))
    if len(state):
        prefetch(state, x)
        prefetch(state, np.uint64(up))


@njit(cache=True, error_model="numpy")
def descend_dense(first_child: np.ndarray, num_children: np.ndarray, flags: np.ndarray,
                  visits: np.ndarray, value_sum: np.ndarray, reward: np.ndarray,
                  prior: np.ndarray, node: int, p: KernelParams, path: np.ndarray,
                  length: int = 1) -> tuple[int, int]:
    """PUCT's descent from ``node`` (``path[length - 1]``) through contiguous child ranges
    while nothing is pending (:func:`puct_dense` at each level); returns the node where it
    stops, a leaf, a terminal node or a SCATTERED one (for :func:`select_tree`'s general loop
    to go on from), and the path's new length."""
    while True:
        child = dense_child(first_child, num_children, flags, visits, value_sum, reward, prior,
                            node, p)
        if child == NO_NODE:
            return node, length
        node = child
        path[length] = node
        length += 1


@njit(cache=True, error_model="numpy")
def dense_child(first_child: np.ndarray, num_children: np.ndarray, flags: np.ndarray,
                visits: np.ndarray, value_sum: np.ndarray, reward: np.ndarray,
                prior: np.ndarray, node: int, p: KernelParams) -> int:
    """One level of a dense descent: the child of ``node`` :func:`puct_dense` picks (the next
    level's node fields prefetched), or NO_NODE where the descent stops: a leaf, a terminal
    node, a SCATTERED one or one of :data:`SCAN_VISITS` visits or more."""
    nc = num_children[node]
    if nc == 0 or flags[node] & (TERMINAL | SCATTERED) or visits[node] >= SCAN_VISITS:
        return NO_NODE
    first = first_child[node]
    prefetch_children(first_child, num_children, flags, np.uint64(first))
    return puct_dense(visits, value_sum, reward, prior, node, first, nc, p)


@njit(cache=True, error_model="numpy")
def puct_dense(visits: np.ndarray, value_sum: np.ndarray, reward: np.ndarray,
               prior: np.ndarray, node: int, first: int, nc: int, p: KernelParams) -> int:
    """PUCT's pick among children ``first .. first + nc - 1`` of ``node`` when nothing is
    pending below it, no extra term is on, the children are one range and ``node`` has
    fewer than :data:`SCAN_VISITS` visits: the common case,
    scanned like a dense row (the arithmetic of :func:`select_tree`'s loop with no virtual
    loss, so the same picks)."""
    discount = p.discount
    n_parent = np.float64(visits[node])
    lo = value_sum[node] / n_parent if n_parent > 0 else 0.0
    hi = lo
    start = np.uint64(first)  # unsigned ids: numba then skips the negative-index wraparound
    end = start + np.uint64(nc)
    for c in range(start, end):
        if visits[c] > 0:
            q = reward[c] + discount * value_sum[c] * scan_reciprocal(visits[c])
            lo = min(lo, q)
            hi = max(hi, q)
    inverse = 1.0 / max(hi - lo, 1e-8)
    explore = p.explore[np.uint64(visits[node])]  # explore_of's, with no test (SCAN_VISITS)
    best, best_score = start, -np.inf
    for c in range(start, end):
        n = visits[c]
        score = (reward[c] + discount * value_sum[c] * scan_reciprocal(n) - lo) * inverse \
            if n > 0 else 0.0
        score += explore * prior[c] * scan_reciprocal(n + 1)
        if score > best_score:
            best, best_score = c, score
    return np.int64(best)


@njit(cache=True, error_model="numpy")
def puct_pending(visits: np.ndarray, virtual: np.ndarray, value_sum: np.ndarray,
                 reward: np.ndarray, prior: np.ndarray, flags: np.ndarray,
                 num_children: np.ndarray, node: int, first: int, nc: int,
                 p: KernelParams) -> int:
    """:func:`puct_dense` where selections are pending below ``node``: each count carries its
    virtual loss (the arithmetic of :func:`select_tree`'s general loop, so the same picks) and
    a pending leaf is skipped; NO_NODE when every child is one. For a whole virtual loss and
    a count with it below :data:`SCAN_VISITS` at ``node``: every count is then a whole number
    in the tables. A twin of that loop on purpose: one function for both, its per-child branch
    between an id range and a listed node's edges, made 64 x 1,024 searches at K = 8 17 %
    slower (63.9 against 54.7 ms)."""
    vl, vv, discount = p.virtual_loss, p.virtual_value, p.discount
    loss = np.int64(vl)
    n_parent = visits[node] + loss * virtual[node]
    lo = (value_sum[node] + vl * virtual[node] * vv) / n_parent if n_parent > 0 else 0.0
    hi = lo
    start = np.uint64(first)
    end = start + np.uint64(nc)
    for c in range(start, end):
        n = visits[c] + loss * virtual[c]
        if n > 0:
            q = reward[c] + discount * (value_sum[c] + vl * virtual[c] * vv) * scan_reciprocal(n)
            lo = min(lo, q)
            hi = max(hi, q)
    inverse = 1.0 / max(hi - lo, 1e-8)
    explore = p.explore[np.uint64(n_parent)]
    best, best_score = NO_NODE, -np.inf
    for c in range(start, end):
        n = visits[c] + loss * virtual[c]
        score = 0.0
        if n > 0:
            q = reward[c] + discount * (value_sum[c] + vl * virtual[c] * vv) * scan_reciprocal(n)
            score = (q - lo) * inverse
        score += explore * prior[c] * scan_reciprocal(n + 1)
        if score > best_score and (not flags[c] & PENDING or num_children[c] > 0):
            best, best_score = np.int64(c), score
    return best


@njit(cache=True, error_model="numpy")
def max_height(height: np.ndarray, roots: np.ndarray, trees: np.ndarray) -> int:
    """The most levels below the root of any of ``trees``: a descent's path is one longer."""
    tallest = 0
    for t in trees:
        tallest = max(tallest, height[roots[t]])
    return tallest


@njit(cache=True, error_model="numpy")
def select(
    a: NodeArrays,
    params: np.ndarray,
    roots: np.ndarray,
    trees: np.ndarray,
    k: int,
    budget: np.ndarray,
    out_leaf: np.ndarray,
    out_tree: np.ndarray,
    mark: bool = True,
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

    ``mark=False`` (only with ``k == 1``, for a caller that updates every leaf before it selects
    again, as :func:`step` does) leaves no mark: nothing to walk up and release.
    """
    p = params[0]
    collided = np.empty(max(p.max_collisions, 1), np.int64)
    paths = np.empty((len(trees), max_height(a.height, roots, trees) + 2), np.int64)
    # the fields read once, not per tree: each read from the tuple is two atomic reference counts
    parent, first_child, edges, num_children, visits, virtual, flags, prior, reward, \
        value_sum, height, novelty, action = a.parent, a.first_child, a.edges, \
        a.num_children, a.visits, a.virtual, a.flags, a.prior, a.reward, a.value_sum, \
        a.height, a.novelty, a.action
    ahead, lengths = np.full(len(trees), NO_NODE, np.int64), np.zeros(len(trees), np.int64)
    if is_plain(p):  # every tree's first descent, side by side
        descend_apart(first_child, num_children, flags, visits, value_sum, reward, prior,
                      virtual, roots, trees, budget, p, paths, ahead, lengths, parent, action,
                      a.depth, height, a.state)
    count = 0
    for i in range(len(trees)):
        t = trees[i]
        count = select_tree(parent, first_child, edges, num_children, visits, virtual, flags,
                            prior, reward, value_sum, height, novelty, action, p, roots[t], t,
                            k, budget, mark, collided, paths[i], out_leaf, out_tree, count,
                            ahead[i], lengths[i])
    return count


# --------------------------------------------------------------------------- expand


CLEAN_AHEAD = 2048  # ids :func:`clean` readies at a time: ~130 kB, still in cache when used


@njit(cache=True, inline="always")
def is_clean(meta: np.ndarray, need: int) -> bool:
    """Whether the ``need`` ids from ``meta[SIZE]`` on are clean (see :func:`clean`)."""
    return meta[CLEAN] >= meta[SIZE] + need


@njit(cache=True, error_model="numpy")
def clean(a: NodeArrays, meta: np.ndarray, need: int, limit: int) -> None:
    """Make sure the ``need`` ids from ``meta[SIZE]`` on hold a new node's initial values
    (``parent`` and ``first_child`` NO_NODE, the rest 0; see :mod:`~mcts_agent.engine.storage`).
    When they do not, :data:`CLEAN_AHEAD` ids (or ``need``) past ``meta[CLEAN]`` are cleaned,
    but none at or past ``limit`` (nor past storage): ids a caller may not touch, such as
    another thread's region."""
    if is_clean(meta, need):
        return
    lo = max(meta[CLEAN], meta[SIZE])  # (never below SIZE: ids in use are never cleaned)
    hi = min(lo + max(CLEAN_AHEAD, need), limit, len(a.parent))
    a.parent[lo:hi] = NO_NODE
    a.first_child[lo:hi] = NO_NODE
    for ints in (a.num_children, a.action, a.depth, a.visits, a.virtual, a.height):
        ints[lo:hi] = 0
    for floats in (a.logit, a.prior, a.reward, a.novelty):
        floats[lo:hi] = 0.0
    a.flags[lo:hi] = 0
    a.value_sum[lo:hi] = 0.0
    if len(a.state):
        a.state[lo:hi] = 0
    meta[CLEAN] = hi


@njit(cache=True, error_model="numpy")
def attach(parent: np.ndarray, first_child: np.ndarray, num_children: np.ndarray,
           flags: np.ndarray, height: np.ndarray, edges: np.ndarray, meta: np.ndarray,
           node: int, count: int) -> int:
    """Give ``node`` ``count`` new child ids (``meta[SIZE]`` onwards, clean: see :func:`clean`);
    returns the first. The ids extend the node's contiguous range when they directly follow
    it, else the node's children are listed in an edges block (the caller made room)."""
    new = meta[SIZE]
    nc = num_children[node]
    first = first_child[node]
    if nc == 0:
        first_child[node] = new
    elif flags[node] & SCATTERED:
        if nc + count > edges[first - 1]:  # block full: move it to one twice the size
            offset = new_block(edges, meta, block_capacity(nc + count))
            edges[offset:offset + nc] = edges[first:first + nc]
            first = first_child[node] = offset
        for i in range(count):
            edges[first + nc + i] = new + i
    elif first + nc != new:  # the range cannot grow in place: list the children instead
        offset = new_block(edges, meta, block_capacity(nc + count))
        for i in range(nc):
            edges[offset + i] = first + i
        for i in range(count):
            edges[offset + nc + i] = new + i
        first_child[node] = offset
        flags[node] |= SCATTERED
    num_children[node] = nc + count
    meta[SIZE] = new + count
    meta[WIDEST] = max(meta[WIDEST], nc + count)
    raise_heights(parent, height, node)
    return new


@njit(cache=True, error_model="numpy", inline="always")
def raise_heights(parent: np.ndarray, height: np.ndarray, node: int) -> None:
    """``node`` just gained its first level of children: raise its ancestors' heights, up to
    the first that already reaches the new one (O(1) per expansion unless the tree deepens)."""
    h, x = 1, node
    while x != NO_NODE and height[x] < h:
        height[x] = h
        h += 1
        x = parent[x]


@njit(cache=True, error_model="numpy")
def new_block(edges: np.ndarray, meta: np.ndarray, capacity: int) -> int:
    """Offset of a new edges block of ``capacity`` slots (its capacity stored just before)."""
    offset = meta[EDGES_USED] + 1
    edges[offset - 1] = capacity
    meta[EDGES_USED] = offset + capacity
    return offset


@njit(cache=True, inline="always")
def block_capacity(children: int) -> int:
    """Slots of a new edges block for ``children`` children: room to double."""
    return 2 * children


@njit(cache=True)
def edge_slots(num_children: int, count: int) -> int:
    """Edge slots that giving a node with ``num_children`` children ``count`` more may use
    (a new block and its capacity slot; none for a first expansion)."""
    return block_capacity(num_children + count) + 1 if num_children else 0


@njit(cache=True)
def edges_needed(num_children: np.ndarray, counts: np.ndarray) -> int:
    """:func:`edge_slots` summed over nodes with ``num_children`` and ``counts`` (aligned)."""
    total = 0
    for i in range(len(num_children)):
        total += edge_slots(num_children[i], counts[i])
    return total


@njit(cache=True, error_model="numpy")
def init_children(parent: np.ndarray, action: np.ndarray, depth: np.ndarray, node: int,
                  first: int, count: int, start: int) -> None:
    """Parent, action (from ``start``) and depth of new children ``first ..`` of ``node``.

    Every other field of a new node already holds its initial value (0, or NO_NODE for
    ``first_child``): the caller cleaned the ids (:func:`clean`) and nodes are only ever
    appended. Not writing them halves the stores of an expansion."""
    level = depth[node] + 1
    for i in range(count):
        parent[first + i] = node
        action[first + i] = start + i
        depth[first + i] = level


@njit(cache=True, error_model="numpy")
def softmax_priors(first_child: np.ndarray, num_children: np.ndarray, flags: np.ndarray,
                   edges: np.ndarray, logit: np.ndarray, prior: np.ndarray, node: int,
                   weights: np.ndarray) -> None:
    """prior = softmax(logit) over the children of ``node``; uniform if all weigh zero."""
    first, scattered = first_child[node], (flags[node] & SCATTERED) != 0
    nc = num_children[node]
    top = -np.inf
    for i in range(nc):
        top = max(top, logit[child_id(first, i, scattered, edges)])
    if top == -np.inf:
        top = 0.0
        for i in range(nc):
            logit[child_id(first, i, scattered, edges)] = 0.0
    total = 0.0
    for i in range(nc):
        weights[i] = np.exp(np.float64(logit[child_id(first, i, scattered, edges)]) - top)
        total += weights[i]
    for i in range(nc):
        prior[child_id(first, i, scattered, edges)] = weights[i] / total


@njit(cache=True, error_model="numpy")
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
    clean(a, a.meta, counts.sum(), len(a.parent))
    parent, first_child, num_children, flags = a.parent, a.first_child, a.num_children, a.flags
    widest = a.meta[WIDEST]
    for i in range(len(parents)):
        widest = max(widest, num_children[parents[i]] + counts[i])
    scratch = np.empty(widest)
    j = 0
    for i in range(len(parents)):
        node, count = parents[i], counts[i]
        if count == 0:
            continue
        first = attach(parent, first_child, num_children, flags, a.height, a.edges, a.meta,
                       node, count)
        init_children(parent, a.action, a.depth, node, first, count, num_children[node] - count)
        for m in range(count):
            if terminal[j + m]:
                flags[first + m] = TERMINAL
            a.logit[first + m] = logits[j + m]
            a.reward[first + m] = reward[j + m]
            out_child[j + m] = first + m
        softmax_priors(first_child, num_children, flags, a.edges, a.logit, a.prior, node,
                       scratch)
        j += count


@njit(cache=True, error_model="numpy")
def fill_height(a: NodeArrays) -> None:
    """Recompute ``height`` from ``parent`` (for forests saved before it existed).

    One backward pass: a child's id is always larger than its parent's.
    """
    parent, height = a.parent, a.height
    n = a.meta[SIZE]
    height[:n] = 0
    for i in range(n - 1, -1, -1):
        up = parent[i]
        if up != NO_NODE and height[up] < height[i] + 1:
            height[up] = height[i] + 1


@njit(cache=True, error_model="numpy")
def link_children(a: NodeArrays) -> None:
    """Rebuild every node's child list from ``parent`` and ``action`` (for forests saved with
    linked sibling lists): contiguous ranges where the ids allow, edges blocks elsewhere."""
    n = a.meta[SIZE]
    parent, action, first_child, num_children, flags = (a.parent, a.action, a.first_child,
                                                        a.num_children, a.flags)
    num_children[:n] = 0
    first_child[:n] = NO_NODE
    flags[:n] &= ~SCATTERED
    a.meta[EDGES_USED] = 0
    for c in range(n):  # pass 1: counts, and whether each child sits at first + action
        up = parent[c]
        if up == NO_NODE:
            continue
        if num_children[up] == 0:
            first_child[up] = c - action[c]
        elif first_child[up] + action[c] != c:
            flags[up] |= SCATTERED
        num_children[up] += 1
    for x in range(n):  # pass 2: an edges block for every scattered node
        if flags[x] & SCATTERED:
            first_child[x] = new_block(a.edges, a.meta, num_children[x])
    for c in range(n):
        up = parent[c]
        if up != NO_NODE and flags[up] & SCATTERED:
            a.edges[first_child[up] + action[c]] = c
    a.meta[WIDEST] = num_children[:n].max() if n else 0


# --------------------------------------------------------------------------- evaluations


@njit(cache=True, error_model="numpy")
def check_evaluations(priors: np.ndarray, is_logit: bool, values: np.ndarray,
                      rewards: np.ndarray) -> int:
    """0, or the code of the first problem with an evaluation (see BAD_VALUE …)."""
    for i in range(len(values)):
        if not np.isfinite(values[i]):
            return BAD_VALUE
        if not np.isfinite(rewards[i]):
            return BAD_REWARD
        for j in range(priors.shape[1]):
            w = priors[i, j]
            if np.isnan(w):
                return NAN_PRIOR
            if is_logit and w == np.inf:
                return POSINF_LOGIT
            if not is_logit and not (w >= 0.0 and w < np.inf):
                return BAD_PROBABILITY
    return 0


@njit(cache=True, error_model="numpy")
def first_children(
    parent: np.ndarray, first_child: np.ndarray, num_children: np.ndarray, action: np.ndarray,
    depth: np.ndarray, flags: np.ndarray, logit: np.ndarray, prior: np.ndarray,
    height: np.ndarray, edges: np.ndarray, meta: np.ndarray, leaf: int, priors: np.ndarray,
    row: int, is_logit: bool, weights: np.ndarray,
) -> bool:
    """:func:`expand_leaf`'s common case, a childless leaf's first expansion, in one pass over
    ``priors[row]``: each valid log-prior is rounded to float32 as stored and kept in
    ``weights``, so the softmax (the arithmetic of :func:`softmax_priors`, so the same priors)
    reads no node back. A leaf with no valid action becomes terminal. Returns False, having
    attached nothing, when every stored log-prior is -inf (float32 underflow): the general path
    then makes the priors uniform."""
    new = meta[SIZE]
    count = 0
    top = -np.inf
    for j in range(priors.shape[1]):
        w = priors[row, j]
        if (w > -np.inf) if is_logit else (w > 0.0):
            logit[new + count] = w if is_logit else np.log(w)
            weights[count] = logit[new + count]
            top = max(top, weights[count])
            count += 1
    if count == 0:
        flags[leaf] |= TERMINAL
        return True
    if top == -np.inf:
        return False
    first_child[leaf] = new  # attach's first-expansion case written out: a call costs ~3 %
    num_children[leaf] = count
    meta[SIZE] = new + count
    meta[WIDEST] = max(meta[WIDEST], count)
    raise_heights(parent, height, leaf)
    total = 0.0
    for i in range(count):
        weights[i] = np.exp(weights[i] - top)
        total += weights[i]
    level = depth[leaf] + 1
    for i in range(count):
        prior[new + i] = weights[i] / total
        parent[new + i] = leaf
        action[new + i] = i
        depth[new + i] = level
    return True


@njit(cache=True, error_model="numpy")
def expand_leaf(
    parent: np.ndarray, first_child: np.ndarray, num_children: np.ndarray, action: np.ndarray,
    depth: np.ndarray, flags: np.ndarray, logit: np.ndarray, prior: np.ndarray,
    reward: np.ndarray, height: np.ndarray, edges: np.ndarray, meta: np.ndarray, leaf: int,
    priors: np.ndarray, row: int, is_logit: bool, terminal: bool, edge_reward: float,
    scratch: np.ndarray,
) -> None:
    """AlphaZero-style expansion of one evaluated leaf: store the edge reward and give it a
    child for every valid prior in ``priors[row]`` (non-finite logit / zero probability = no
    such action); the caller backs up its value. A leaf with no valid action, or ``terminal``,
    becomes terminal. Storage must have room (and the edges table, when the leaf already has
    children).

    Complete for any leaf, but callers try :func:`first_children` first on a childless,
    non-terminal one (the same numbers in one shorter call) and come here when it declines."""
    reward[leaf] = edge_reward
    if terminal:
        flags[leaf] |= TERMINAL
    else:
        count = 0
        for j in range(priors.shape[1]):
            w = priors[row, j]
            if (w > -np.inf) if is_logit else (w > 0.0):
                count += 1
        if count == 0 and num_children[leaf] == 0:
            flags[leaf] |= TERMINAL
        elif count:
            first = attach(parent, first_child, num_children, flags, height, edges, meta, leaf,
                           count)
            init_children(parent, action, depth, leaf, first, count, num_children[leaf] - count)
            c = first
            for j in range(priors.shape[1]):
                w = priors[row, j]
                if (w > -np.inf) if is_logit else (w > 0.0):
                    logit[c] = w if is_logit else np.log(w)
                    c += 1
            softmax_priors(first_child, num_children, flags, edges, logit, prior, leaf, scratch)


@njit(cache=True, error_model="numpy")
def apply_evaluations(
    a: NodeArrays,
    params: np.ndarray,
    leaves: np.ndarray,
    priors: np.ndarray,
    is_logit: bool,
    values: np.ndarray,
    terminal: np.ndarray,
    rewards: np.ndarray,
    apart: bool = False,
) -> int:
    """AlphaZero-style update of evaluated leaves (:func:`expand_leaf`), releasing each leaf's
    virtual loss first. Returns 0, or an error code (and changes nothing) when the evaluation
    is invalid. ``apart``: no two leaves are in the same tree (a wave of one leaf per tree),
    so the backups go in lockstep (:func:`backup_apart`); the same numbers."""
    code = check_evaluations(priors, is_logit, values, rewards)
    if code:
        return code
    p = params[0]
    clean(a, a.meta, len(leaves) * priors.shape[1], len(a.parent))
    scratch = np.empty(max(a.meta[WIDEST], 1) + priors.shape[1])
    # the fields read once, not per leaf (see select)
    parent, first_child, num_children, action, depth, flags, logit, prior, reward, height, \
        edges, meta, visits, value_sum, virtual = a.parent, a.first_child, a.num_children, \
        a.action, a.depth, a.flags, a.logit, a.prior, a.reward, a.height, a.edges, a.meta, \
        a.visits, a.value_sum, a.virtual
    for i in range(len(leaves)):
        leaf = leaves[i]
        release_leaf(flags, parent, virtual, leaf)
        if not terminal[i] and num_children[leaf] == 0 and first_children(
                parent, first_child, num_children, action, depth, flags, logit, prior, height,
                edges, meta, leaf, priors, i, is_logit, scratch):
            reward[leaf] = rewards[i]  # expand_leaf's common case, a shorter call
        else:
            expand_leaf(parent, first_child, num_children, action, depth, flags, logit, prior,
                        reward, height, edges, meta, leaf, priors, i, is_logit, terminal[i],
                        rewards[i], scratch)
        if not apart:
            backup_path(parent, visits, value_sum, reward, p.discount, leaf, values[i])
    if apart:
        backup_apart(parent, visits, value_sum, reward, p.discount, leaves, values)
    return 0


@njit(cache=True, error_model="numpy")
def backup_apart(parent: np.ndarray, visits: np.ndarray, value_sum: np.ndarray,
                 reward: np.ndarray, discount: float, leaves: np.ndarray,
                 values: np.ndarray) -> None:
    """:func:`backup_path` of every leaf, where no two leaves share a node: one level of every
    path per round. A path alone is a chain of dependent loads (each ``parent`` a likely cache
    miss when many trees are searched a wave at a time); taking the paths side by side lets
    those waits overlap. Each node gets at most one addition, so the order changes no bit."""
    node, g = leaves.copy(), values.copy()
    climbing = len(leaves)
    while climbing:
        climbing = 0
        for i in range(len(node)):
            x = node[i]
            if x != NO_NODE:
                visits[x] += 1
                value_sum[x] += g[i]
                g[i] = reward[x] + discount * g[i]
                node[i] = parent[x]
                climbing += 1


@njit(cache=True, error_model="numpy")
def has_room(num_children: np.ndarray, meta: np.ndarray, capacity: int, edge_capacity: int,
             leaves: np.ndarray, width: int) -> bool:
    """Whether storage can take up to ``width`` new children of every leaf."""
    edges = 0
    for leaf in leaves:
        edges += edge_slots(num_children[leaf], width)
    return (meta[SIZE] + len(leaves) * width <= capacity
            and meta[EDGES_USED] + edges <= edge_capacity)


@njit(cache=True, error_model="numpy")
def step(
    a: NodeArrays, params: np.ndarray, roots: np.ndarray, trees: np.ndarray, k: int,
    budget: np.ndarray, leaves: np.ndarray, priors: np.ndarray, is_logit: bool,
    values: np.ndarray, terminal: np.ndarray, rewards: np.ndarray, select_next: bool,
    out_leaf: np.ndarray, out_tree: np.ndarray,
) -> int:
    """One wave of a step-wise search in one call: apply the evaluation of the last wave's
    ``leaves``, then (``select_next``) select the next; waves that only revisit terminals are
    repeated until a leaf is found or the budget is spent. Returns the number of leaves, or an
    error code (NEED_ROOM before changing anything: grow storage and call again)."""
    if len(leaves):
        if not has_room(a.num_children, a.meta, len(a.parent), len(a.edges), leaves,
                        priors.shape[1]):
            return NEED_ROOM
        code = apply_evaluations(a, params, leaves, priors, is_logit, values, terminal, rewards,
                                 k == 1)
        if code:
            return code
    if not select_next:
        return 0
    while True:
        n = select(a, params, roots, trees, k, budget, out_leaf, out_tree, k > 1)
        if n or budget[trees].sum() == 0:
            return n


# --------------------------------------------------------------------------- whole search


@njit(cache=True, error_model="numpy")
def search_tree(a: NodeArrays, view: NodeView, p: KernelParams, root: int, tree: int, k: int,
                budget: np.ndarray, evaluate: Callable, context: Any, num_actions: int,
                is_logit: bool, meta: np.ndarray) -> int:
    """Run tree ``tree`` (root ``root``) to the end of its budget, allocating through the
    counters ``meta``: select → evaluate (``evaluate(view, ...)``) → update, wave after wave.
    Returns 0, NEED_ROOM (grow the edges table and call again: the tree resumes where it
    stopped) or an evaluation error code.

    With one leaf per wave under the dense rule (:func:`is_plain`) a simulation goes the short
    way: :func:`descend_dense` called here, a call with fewer arguments than
    :func:`select_tree` takes (numba passes each array as seven words; pushing them was most of
    this loop's own time). Anything else (a terminal revisit, a listed node) goes on through
    :func:`select_tree` from where the descent stopped. A leaf's first expansion is
    :func:`first_children`'s, called here for the same reason, whatever the rule (K = 8: 5 %)."""
    parent, first_child, num_children, action, depth = (a.parent, a.first_child,
                                                        a.num_children, a.action, a.depth)
    visits, virtual, flags, logit, prior = a.visits, a.virtual, a.flags, a.logit, a.prior
    reward, value_sum, novelty, height, edges = a.reward, a.value_sum, a.novelty, a.height, a.edges
    mark = k > 1
    dense = not mark and is_plain(p)  # one leaf per wave, the dense rule: the short way
    leaves, owners = np.empty(k, np.int64), np.empty(k, np.int64)
    priors, values = np.empty((k, num_actions)), np.empty(k)
    terminal, rewards = np.empty(k, np.bool_), np.empty(k)
    collided = np.empty(max(p.max_collisions, 1), np.int64)
    scratch = np.empty(2 * (meta[WIDEST] + num_actions) + 8)
    path = np.empty(height[root] + budget[tree] + 2, np.int64)
    while budget[tree] > 0:
        widest = meta[WIDEST] + num_actions  # at most, after this wave
        if meta[EDGES_USED] + k * edge_slots(widest, 0) > len(edges) or len(scratch) < widest:
            return NEED_ROOM
        if not is_clean(meta, k * num_actions):  # tested here: passing clean the node tuple
            # costs more than the test. The limit: the ids this tree may still use (a thread's
            # region ends there), num_actions a simulation
            clean(a, meta, k * num_actions, meta[SIZE] + budget[tree] * num_actions)
        ahead, length = NO_NODE, 0
        if dense:
            path[0] = root
            ahead, length = descend_dense(first_child, num_children, flags, visits, value_sum,
                                          reward, prior, root, p, path)
        if dense and num_children[ahead] == 0 and not flags[ahead] & TERMINAL:
            leaves[0] = ahead  # a leaf: what select_tree would find from here
            budget[tree] -= 1
            n = 1
        else:  # a terminal revisit or a listed (widened) node: the general rule from here
            n = select_tree(parent, first_child, edges, num_children, visits, virtual, flags,
                            prior, reward, value_sum, height, novelty, action, p, root, tree, k,
                            budget, mark, collided, path, leaves, owners, 0, ahead, length)
        if n == 0:
            continue  # every descent was a terminal revisit
        terminal[:] = False
        rewards[:] = 0.0
        if n == k:  # whole buffers: no views to make (each costs reference counts)
            evaluate(view, leaves, context, priors, values, terminal, rewards)
            code = check_evaluations(priors, is_logit, values, rewards)
        else:
            evaluate(view, leaves[:n], context, priors[:n], values[:n], terminal[:n],
                     rewards[:n])
            code = check_evaluations(priors[:n], is_logit, values[:n], rewards[:n])
        if code:
            return code
        for j in range(n):
            leaf = leaves[j]
            if mark:
                release_leaf(flags, parent, virtual, leaf)
            if not terminal[j] and num_children[leaf] == 0 and first_children(
                    parent, first_child, num_children, action, depth, flags, logit, prior,
                    height, edges, meta, leaf, priors, j, is_logit, scratch):
                reward[leaf] = rewards[j]  # expand_leaf's common case, a shorter call
            else:
                expand_leaf(parent, first_child, num_children, action, depth, flags, logit,
                            prior, reward, height, edges, meta, leaf, priors, j, is_logit,
                            terminal[j], rewards[j], scratch)
            if mark:
                backup_path(parent, visits, value_sum, reward, p.discount, leaf, values[j])
            else:  # the one leaf of this wave: its path is the last descent's
                backup_trail(path, depth[leaf] - depth[root] + 1, parent, visits, value_sum,
                             reward, p.discount, values[j])
    return 0


def _fused_search(a, params, roots, trees, k, budget, evaluate, context, num_actions, is_logit,
                  metas, groups, codes):
    """Run every tree of ``trees`` to the end of its budget (:func:`search_tree`), all
    compiled (see :func:`fused_search`).

    The trees come in groups, ``trees[groups[g]:groups[g + 1]]`` one after the other in group
    ``g``, which allocates through the counters ``metas[g]`` (see ``NodeArrays.meta``): one
    group sharing ``a.meta`` (serial), or one per thread, each in its own region of the pool
    (parallel). ``codes[i]`` gets :func:`search_tree`'s code for ``trees[i]``."""
    view = NodeView(*a)  # what the evaluator gets: one reference, not 17 arrays a call
    for g in prange(len(metas)):
        p = params[0]  # taken in the loop: parfors cannot pass a record into their body
        for i in range(groups[g], groups[g + 1]):
            codes[i] = search_tree(a, view, p, roots[trees[i]], trees[i], k, budget, evaluate,
                                   context, num_actions, is_logit, metas[g])


def _renamed(function: Callable, name: str) -> Callable:
    """A copy of ``function`` under another name. numba's disk cache files a function's
    compiled versions by its name and argument types, not by its compile options, so the
    serial and the parallel loop need names of their own."""
    copy = FunctionType(function.__code__, function.__globals__, name, function.__defaults__,
                        function.__closure__)
    copy.__qualname__ = name
    return copy


_LOOPS = {False: _fused_search, True: _renamed(_fused_search, "_fused_search_parallel")}
_compiled_loops: dict[tuple, Callable] = {}


@structref.register
class NodeViewType(nb.types.StructRef):
    """The numba type of :class:`NodeView`: one field per :class:`NodeArrays` field."""

    def preprocess_fields(self, fields: Any) -> tuple:
        return tuple((name, nb.types.unliteral(kind)) for name, kind in fields)


class NodeView(structref.StructRefProxy):
    """The node arrays as one reference, with :class:`NodeArrays`'s fields as attributes: what
    a fused evaluator gets as ``nodes``. A call through a first-class function passes a tuple
    of arrays word by word (7 words an array: 32 ns a call for the 17 arrays, against 8 for
    this reference)."""


structref.define_proxy(NodeView, NodeViewType, list(NodeArrays._fields))


def evaluator_type(nodes: nb.types.Type, context: nb.types.Type) -> nb.types.FunctionType:
    """The numba type of a fused evaluator ``kernel(nodes, leaves, context, priors, values,
    terminal, rewards)`` for a forest whose :class:`NodeArrays` have type ``nodes`` (the
    kernel gets them as a :class:`NodeView`) and a context of type ``context``: a first-class
    function."""
    view = NodeViewType(list(zip(NodeArrays._fields, nodes.types, strict=True)))
    floats, flags = nb.types.float64[::1], nb.types.boolean[::1]
    return nb.types.FunctionType(nb.types.none(view, nb.types.int64[::1], context,
                                               nb.types.float64[:, ::1], floats, flags, floats))


def fused_search(a: NodeArrays, params: np.ndarray, roots: np.ndarray, trees: np.ndarray,
                 k: int, budget: np.ndarray, evaluate: Callable, context: Any,
                 num_actions: int, is_logit: bool, metas: np.ndarray, groups: np.ndarray,
                 codes: np.ndarray, parallel: bool = False) -> None:
    """Run :func:`_fused_search` (``parallel``: its groups of trees in numba's threads, each
    allocating in its own region of the pool, which :func:`compact` then closes up; only for
    searches that cannot widen a node, so no edges blocks).

    The loop is compiled with the evaluator as an argument of a first-class function type (an
    address, typed by its signature), not as a constant of its code: one compiled loop then
    serves every evaluator of the same argument types, and numba's disk cache keeps it. A new
    process loads it in ~0.03 s instead of compiling it for ~2.5 s; the price is a call that
    is not inlined (~8 ns, the node arrays passed as one :class:`NodeView`)."""
    args = (a, params, roots, trees, k, budget, evaluate, context, num_actions, is_logit,
            metas, groups, codes)
    # The engine passes the same types every call but the context's; typing the node tuple
    # in Python costs ~0.2 ms, so the full signature is worked out once per context type.
    key = (nb.typeof(context), parallel)
    loop = _compiled_loops.get(key)
    if loop is None:
        types = [nb.typeof(arg) for arg in args]
        types[6] = evaluator_type(types[0], types[7])
        loop = njit(nb.types.none(*types), cache=True, error_model="numpy", parallel=parallel)(
            _LOOPS[parallel])
        _compiled_loops[key] = loop
    loop(*args)


@njit(cache=True, error_model="numpy", parallel=True)
def compact(a: NodeArrays, metas: np.ndarray, bases: np.ndarray) -> None:
    """Close the gaps a parallel search left between its regions: region ``i`` used ids
    ``bases[i] .. metas[i, SIZE]``; they move down to follow the previous region's, so the ids
    are those a search of one tree after the other would have given. (No node gained children
    twice, so a node's first child is the one with action 0.)

    The fields move in numba's threads, one field per task (they are independent: moving
    memory is most of the work), then each region's ids are shifted, one region per task."""
    regions = len(bases)
    to = np.empty(regions, np.int64)  # where each region's nodes go
    size = a.meta[SIZE]
    for i in range(regions):
        to[i] = size
        size += metas[i, SIZE] - bases[i]
        a.meta[WIDEST] = max(a.meta[WIDEST], metas[i, WIDEST])
    a.meta[SIZE] = a.meta[CLEAN] = size  # the ids past it hold moved nodes' old copies
    ends = metas[:, SIZE].copy()
    for field in prange(15):  # the arrays of NodeArrays but edges and meta, by number
        if field < 8:
            ints = (a.parent, a.first_child, a.num_children, a.action, a.depth, a.visits,
                    a.virtual, a.height)
            move_regions(ints[field], bases, ends, to)
        elif field < 12:
            floats = (a.logit, a.prior, a.reward, a.novelty)
            move_regions(floats[field - 8], bases, ends, to)
        elif field == 12:
            move_regions(a.flags, bases, ends, to)
        elif field == 13:
            move_regions(a.value_sum, bases, ends, to)
        elif field == 14 and len(a.state):
            move_regions(a.state, bases, ends, to)
    for i in prange(regions):
        shift = bases[i] - to[i]
        if shift:
            shift_ids(a.parent, a.action, a.first_child, a.num_children, to[i],
                      ends[i] - bases[i], bases[i], shift)


@njit(cache=True, error_model="numpy")
def move_regions(array: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                 to: np.ndarray) -> None:
    """:func:`move` of every region ``starts[i] .. ends[i]`` to ``to[i]``, in order (each
    ``to[i] <= starts[i]``, and the regions in ascending order)."""
    for i in range(len(starts)):
        if to[i] != starts[i]:
            move(array, starts[i], ends[i], to[i])


@njit(cache=True, error_model="numpy")
def shift_ids(parent: np.ndarray, action: np.ndarray, first_child: np.ndarray,
              num_children: np.ndarray, at: int, count: int, old_start: int, shift: int) -> None:
    """The ids held by the ``count`` nodes now at ``at`` (moved down by ``shift`` from
    ``old_start``): parents inside the region, and first children, move with them."""
    for c in range(at, at + count):
        up = parent[c]
        if up >= old_start:
            parent[c] = up - shift
        elif action[c] == 0:  # the first child of a node from before the search
            first_child[up] -= shift
        if num_children[c]:
            first_child[c] -= shift


@njit(cache=True, error_model="numpy")
def move(array: np.ndarray, start: int, end: int, to: int) -> None:
    """``array[to:to + end - start] = array[start:end]`` (overlap-safe): one ``memmove``. A
    loop of item copies ran at an item a nanosecond (LLVM does not vectorise a copy onto an
    overlapping range), 8 times slower for int32 fields."""
    if end > start:
        memmove_items(array, np.int64(to), np.int64(start), np.int64(end - start))
