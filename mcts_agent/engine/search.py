"""Model-free search: whole searches from batched numpy callbacks (like mctx's ``recurrent_fn``).

Two entry points with the same tree semantics (they build identical trees):

* :func:`search` calls a Python ``evaluate(forest, leaves, rng) -> Evaluation`` once per wave,
  with up to ``leaves_per_call`` leaves from every tree in flight — how the LLM driver uses the
  engine.
* :func:`search_fused` takes an ``@njit`` evaluator and runs the whole search inside one
  compiled call, each tree to the end of its budget before the next: for cheap simulators, and
  as the engine's speed ceiling. Its trees equal :func:`search`'s tree for tree; node ids
  differ (one tree's nodes are allocated together).

Each root is evaluated once first (not counted as a simulation, as in mctx); then every tree
spends ``num_simulations`` simulations (a leaf evaluation or a terminal revisit).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numba as nb
import numpy as np
from numba.core.registry import CPUDispatcher as Dispatcher

from . import kernels
from .config import EngineConfig
from .forest import Evaluation, Forest, raise_for
from .storage import CLEAN, SIZE, WIDEST

Evaluator = Callable[[Forest, np.ndarray, np.random.Generator], Evaluation]

PRESERVE_NODES = 1 << 20  # nodes reserved up front at most (~53 MB), to skip early regrowth


def _prepare(
    forest: Forest | None, num_trees: int | None, config: EngineConfig | None,
    capacity: int = 1024,
) -> Forest:
    """The forest to search: ``forest``, or a new one of ``num_trees`` roots with room for
    ``capacity`` nodes (one allocation, not a small one grown)."""
    if forest is None:
        if not num_trees or num_trees < 1:
            raise ValueError("give a forest or num_trees >= 1")
        forest = Forest(config, num_trees=num_trees, capacity=capacity)
    elif config is not None and config != forest.config:
        raise ValueError("the forest already has a config; pass one or the other")
    return forest


def _root_noise(
    forest: Forest, roots: np.ndarray, fraction: float, alpha: float, rng: np.random.Generator
) -> None:
    """AlphaZero exploration noise: mix Dirichlet(alpha) into the priors of ``roots``."""
    if fraction <= 0:
        return
    for root in roots:
        kids = forest.children(int(root))
        if len(kids):
            noise = rng.dirichlet(np.full(len(kids), alpha))
            mixed = (1 - fraction) * forest.nodes.prior[kids] + fraction * noise
            forest.nodes.prior[kids] = mixed.astype(np.float32)


def compiled(kernel: Dispatcher, *args: Any) -> Callable:
    """``kernel``'s compiled function for the types of ``args`` (compiled or loaded from the
    cache if need be), for calls whose arguments always have exactly those types: it skips the
    dispatcher's typing of every argument at every call (~3.5 µs a call with the node tuple,
    whose type numba works out in Python each time; a step-wise wave makes two such calls)."""
    return kernel.compile(tuple(nb.typeof(arg) for arg in args))


_evaluator_entries: dict[tuple, Callable] = {}


def numba_evaluator(kernel: Callable, context: Any, num_actions: int) -> Evaluator:
    """Wrap an ``@njit`` evaluator of the :func:`search_fused` kind as a Python ``evaluate``.

    Its compiled function is looked up once per process for each kernel and context type
    (typing the node tuple costs ~0.5 ms: more than a whole wave of a small search)."""
    key = (kernel, nb.typeof(context)) if isinstance(kernel, Dispatcher) else None
    run = kernel if key is None else _evaluator_entries.get(key)

    def evaluate(forest: Forest, leaves: np.ndarray, rng: Any) -> Evaluation:
        nonlocal run
        leaves = np.ascontiguousarray(leaves, np.int64)
        n = len(leaves)
        priors = np.empty((n, num_actions))
        values, terminal, rewards = np.empty(n), np.zeros(n, bool), np.zeros(n)
        args = (forest.nodes, leaves, context, priors, values, terminal, rewards)
        if run is None:  # every forest's node tuple has the same type: typed once
            run = _evaluator_entries.setdefault(key, compiled(kernel, *args))
        run(*args)
        return Evaluation(priors, values, terminal, rewards)

    return evaluate


def search(
    evaluate: Evaluator,
    num_simulations: int,
    *,
    num_trees: int | None = None,
    forest: Forest | None = None,
    config: EngineConfig | None = None,
    leaves_per_call: int = 8,
    logits: bool = False,
    seed: int | None = 0,
    dirichlet_fraction: float = 0.0,
    dirichlet_alpha: float = 0.3,
    on_wave: Callable[[Forest, int], Any] | None = None,
    debug: bool = False,
) -> Forest:
    """Search every tree of ``forest`` (or of a new forest of ``num_trees`` roots).

    ``evaluate(forest, leaves, rng)`` returns an :class:`Evaluation` for the node ids in
    ``leaves`` (leaves of many trees at once): priors over each leaf's new children, its value,
    and optionally terminal flags and edge rewards. A leaf that already has children is being
    widened (progressive widening); its new children's actions start at
    ``forest.nodes.num_children[leaf]``. ``rng`` is seeded from ``seed``: the same seed and
    callback give the same trees. ``dirichlet_fraction`` mixes AlphaZero noise into the priors
    of the roots this call evaluates. ``on_wave(forest, wave)`` runs after every wave.

    Each wave is one compiled call (apply the last evaluation, select the next leaves), which
    checks the evaluation's numbers; ``debug=True`` runs every wave through the public
    :meth:`Forest.select` / :meth:`Forest.apply` instead and checks the forest's invariants
    after each (slow: for finding a bug in an evaluator or in the engine).
    """
    forest = _prepare(forest, num_trees, config)
    rng = np.random.default_rng(seed)
    unevaluated = forest.roots[forest.nodes.visits[forest.roots] == 0]
    if len(unevaluated):
        evaluation = evaluate(forest, unevaluated, rng)
        forest.apply(unevaluated, evaluation, logits=logits)
        # room for every child the search can create, up to a sane cap (growth does the rest)
        width = np.shape(evaluation.priors)[1]
        forest.reserve(min(forest.num_trees * num_simulations * width, PRESERVE_NODES))
    _root_noise(forest, unevaluated, dirichlet_fraction, dirichlet_alpha, rng)
    budget = np.full(forest.num_trees, int(num_simulations), np.int64)
    if debug:
        waves = _debug_waves(forest, evaluate, rng, leaves_per_call, budget, logits)
    else:
        waves = _waves(forest, evaluate, rng, leaves_per_call, budget, logits,
                       pause=on_wave is not None)
    for wave, _ in enumerate(waves, 1):
        if on_wave is not None:
            on_wave(forest, wave)
    return forest


def _waves(forest: Forest, evaluate: Evaluator, rng: np.random.Generator, k: int,
           budget: np.ndarray, logits: bool, pause: bool) -> Iterator[None]:
    """The waves of :func:`search`, one compiled :func:`kernels.step` each (applying a wave's
    evaluation and selecting the next wave's leaves); yields once per wave, after its update.
    With ``pause``, the update and the next selection are two calls, and the yield comes
    between them (no leaf pending: what an ``on_wave`` observer expects)."""
    trees = np.arange(forest.num_trees, dtype=np.int64)
    out_leaf = np.empty(forest.num_trees * k, np.int64)
    out_tree = np.empty_like(out_leaf)
    nothing = (np.empty(0, np.int64), np.empty((0, 0)), logits, np.empty(0),
               np.empty(0, np.bool_), np.empty(0))
    args = nothing
    run = compiled(kernels.step, forest.nodes, forest._params, forest.roots, trees, k, budget,
                   *nothing, True, out_leaf, out_tree)  # every wave's arguments have these types

    def step(args: tuple, select_next: bool) -> int:
        n = run(forest.nodes, forest._params, forest.roots, trees, k, budget, *args,
                select_next, out_leaf, out_tree)
        if n == kernels.NEED_ROOM:  # checked before any change: grow, then do it again
            forest._reserve_for(args[0], args[1].shape[1])
            n = run(forest.nodes, forest._params, forest.roots, trees, k, budget, *args,
                    select_next, out_leaf, out_tree)
        raise_for(n)
        return n

    while True:
        applied = len(args[0]) > 0
        if pause and applied:
            step(args, False)
            yield
            args = nothing
        n = step(args, True)
        if applied and not pause:
            yield
        if n == 0:
            return
        leaves = out_leaf[:n].copy()
        evaluation = evaluate(forest, leaves, rng)
        priors = np.ascontiguousarray(evaluation.priors, np.float64)
        if priors.ndim != 2 or priors.shape[0] != n:
            raise ValueError(f"priors must be ({n}, num_actions), got {priors.shape}")
        args = (leaves, priors, logits, *forest._evaluation_arrays(evaluation, n))


def _debug_waves(forest: Forest, evaluate: Evaluator, rng: np.random.Generator, k: int,
                 budget: np.ndarray, logits: bool) -> Iterator[None]:
    """The same waves through the public, validating methods, with invariants checked."""
    while True:
        leaves = forest.select(k, budget=budget)
        if len(leaves) == 0:
            if not budget.any():
                return
            continue  # every descent of this wave was a terminal revisit
        forest.apply(leaves.nodes, evaluate(forest, leaves.nodes, rng), logits=logits)
        forest.check_invariants()
        yield


def search_fused(
    kernel: Callable,
    context: Any,
    num_actions: int,
    num_simulations: int,
    *,
    num_trees: int | None = None,
    forest: Forest | None = None,
    config: EngineConfig | None = None,
    leaves_per_call: int = 8,
    logits: bool = False,
    parallel: bool = False,
) -> Forest:
    """Like :func:`search`, but with an ``@njit`` evaluator and every wave in compiled code.

    ``kernel(nodes, leaves, context, priors, values, terminal, rewards)`` fills the output
    arrays (``priors`` is ``(len(leaves), num_actions)``; ``terminal`` and ``rewards`` arrive
    as False / 0) from the node arrays ``nodes`` and any numba-compatible ``context`` (e.g. a
    named tuple of settings). ``nodes`` has the fields of
    :class:`~mcts_agent.engine.storage.NodeArrays` as attributes (``nodes.parent`` …): inside
    the fused loop it is a :class:`~mcts_agent.engine.kernels.NodeView` (the same arrays as one
    reference), wrapped by :func:`numba_evaluator` the tuple itself; write the kernel for
    either (read fields, do not unpack or index it). The search loop is compiled
    once per argument types, not per evaluator, and numba's disk cache keeps it: a new process
    starts its first fused search in ~0.03 s, not ~2.5 s.

    ``parallel=True`` searches the trees in numba's threads (``prange``; the evaluator must
    be thread-safe, and ``NUMBA_NUM_THREADS`` sets how many). It builds the same forest, ids
    included. It applies where no node can gain children later (``widen_c`` 0, not
    ``abmcts``); otherwise the trees are searched one after the other. With numba's OpenMP
    layer, set ``OMP_WAIT_POLICY=passive`` (spin-waiting threads made each parallel region cost
    ~16 ms on 2 cores).
    """
    if not isinstance(kernel, Dispatcher):
        raise TypeError(f"search_fused needs an @njit evaluator, got {kernel!r:.80}; "
                        "search() takes a Python one")
    per_tree = (num_simulations + 1) * num_actions  # the most nodes a tree's search adds
    # a new forest's roots and the most their searches add: the reserve below must not grow it
    forest = _prepare(forest, num_trees, config, capacity=(num_trees or 0) * (per_tree + 1))
    trees = np.arange(forest.num_trees, dtype=np.int64)
    budget = np.full(forest.num_trees, int(num_simulations), np.int64)
    forest.reserve(forest.num_trees * per_tree)
    unevaluated = forest.roots[forest.nodes.visits[forest.roots] == 0]
    if len(unevaluated):
        evaluate = numba_evaluator(kernel, context, num_actions)
        forest.apply(unevaluated, evaluate(forest, unevaluated, None), logits=logits)
    k, num_actions = int(leaves_per_call), int(num_actions)
    if parallel and not forest.config.can_widen:
        _fused_parallel(forest, trees, k, budget, kernel, context, num_actions, bool(logits))
        return forest
    codes = np.zeros(len(trees), np.int64)
    while True:  # storage grows by doubling: a NEED_ROOM comes back O(log) times
        forest.reserve(0, _wave_edges(forest, k, num_actions))
        kernels.fused_search(forest.nodes, forest._params, forest.roots, trees, k, budget,
                             kernel, context, num_actions, bool(logits), forest.nodes.meta[None],
                             np.array([0, len(trees)]), codes)
        if not (codes == kernels.NEED_ROOM).any():
            raise_for(int(codes.min()))
            return forest


def _wave_edges(forest: Forest, k: int, num_actions: int) -> int:
    """Edge slots a wave of ``k`` leaves may use: the room the fused loop asks for before each
    wave (else NEED_ROOM)."""
    return k * kernels.edge_slots(int(forest.nodes.meta[WIDEST]) + num_actions, 0)


META_ROW = 16  # int64 slots a thread's counters take: two cache lines, whatever the alignment


def _fused_parallel(forest: Forest, trees: np.ndarray, k: int, budget: np.ndarray,
                    kernel: Callable, context: Any, num_actions: int, logits: bool) -> None:
    """The trees in parallel threads, in one group of consecutive trees per thread, each group
    allocating in its own region (room for its whole budget), then the regions closed up: the
    ids of a search of one tree after the other. (A group's trees follow each other in its
    region, so only the regions after the first move, not every tree after the first one
    that used less than its room: a half of the nodes on 2 threads, not nearly all.)"""
    groups = np.linspace(0, len(trees), min(nb.get_num_threads(), len(trees)) + 1)
    groups = groups.round().astype(np.int64)
    room = np.concatenate([[0], np.cumsum(budget[trees] * num_actions)])[groups]
    bases = forest.num_nodes + room[:-1]
    # no widening: WIDEST cannot grow past the first wave's
    forest.reserve(int(room[-1]), _wave_edges(forest, k, num_actions))
    a = forest.nodes
    # each thread's counters on cache lines of their own: they change at every expansion, and
    # two threads writing one line pass it back and forth
    metas = np.zeros((len(bases), META_ROW), np.int64)
    metas[:, :len(a.meta)] = a.meta
    metas[:, SIZE] = metas[:, CLEAN] = bases
    codes = np.zeros(len(trees), np.int64)
    kernels.fused_search(a, forest._params, forest.roots, trees, k, budget, kernel, context,
                         num_actions, logits, metas, groups, codes, parallel=True)
    kernels.compact(a, metas, bases)
    raise_for(int(codes.min()))
