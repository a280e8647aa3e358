"""Structure-of-arrays node storage for a forest of search trees.

All trees of a forest share one pool of nodes; a node is an integer id into every array below.
Node ids are stable (nodes never move), which is what lets Python payloads (step text,
snapshots …) be keyed by id.

Children are a contiguous range of ids: the children of ``x`` are ``first_child[x] + i`` for
``i < num_children[x]``, so selection scans them like a dense row. A node that gains children
later (progressive widening) keeps its range while the new ids directly follow it; otherwise it
becomes SCATTERED: its child ids move to a block of the ``edges`` table (``first_child`` is then
the block's offset; ``edges[offset - 1]`` holds the block's capacity, doubled when full).

A forest may also keep one 64-bit word per node for its evaluator (``state``, see
:class:`~mcts_agent.engine.EngineConfig`'s ``node_state``): like mctx's embeddings, what the
evaluator derived for a node, so a child's evaluation starts from its parent's instead of
recomputing the path. The engine never reads it; it keeps it with its node (growth,
compaction, save / load). Unless asked for it is empty and costs nothing.

The arrays travel into numba kernels as one :class:`NodeArrays` named tuple; ``meta`` holds the
counters kernels update in place (``meta[SIZE]`` nodes in use, ``meta[WIDEST]`` the most children
of any node, ``meta[EDGES_USED]`` slots of ``edges`` in use, ``meta[CLEAN]`` see below).

Storage is not zeroed when it is handed out. Ids ``meta[SIZE]`` up to ``meta[CLEAN]`` hold a new
node's initial values (``parent`` and ``first_child`` NO_NODE, every other field 0); ids past
``meta[CLEAN]`` may hold anything (a recycled pool's old nodes). Whatever appends nodes first
cleans a chunk of ids just ahead of them (``kernels.clean``): zeroing a whole pool up front wrote
every line out to memory and read it back at its first use, a tenth of a fused search's time;
a chunk cleaned just ahead is still in cache when its nodes are written.
"""

from __future__ import annotations

import mmap
import threading
import weakref
from typing import NamedTuple

import numpy as np

NO_NODE = -1

# Bits of ``NodeArrays.flags``.
TERMINAL = np.uint8(1)  # never expanded; selection backs up its value instead
CLOSED = np.uint8(2)  # progressive widening may not add children
PENDING = np.uint8(4)  # selected in the current wave, awaiting expansion / release
SCATTERED = np.uint8(8)  # children listed in the edges table instead of a contiguous id range

HUGE_PAGE_BYTES = 2 << 20  # buffers from this size on are mapped with huge pages advised

# Slots of ``NodeArrays.meta``.
SIZE, WIDEST, EDGES_USED, CLEAN = 0, 1, 2, 3


class NodeArrays(NamedTuple):
    """One field per node statistic; index ``i`` of every array describes node ``i``."""

    parent: np.ndarray  # int32, NO_NODE for roots
    first_child: np.ndarray  # int32, first child id (SCATTERED: offset into edges)
    num_children: np.ndarray  # int32
    action: np.ndarray  # int32, rank among the parent's children (0, 1, …)
    depth: np.ndarray  # int32, 0 at the root
    visits: np.ndarray  # int32, backups through this node
    virtual: np.ndarray  # int32, pending selections through this node (virtual loss count)
    flags: np.ndarray  # uint8, TERMINAL | CLOSED | PENDING | SCATTERED
    logit: np.ndarray  # float32, unnormalised log-prior given at expansion
    prior: np.ndarray  # float32, softmax of logit over the current siblings
    reward: np.ndarray  # float32, reward on the edge parent → node
    value_sum: np.ndarray  # float64, sum of backed-up returns seen from this node
    novelty: np.ndarray  # float32, in [0, 1]: how unlike its siblings the node is (set by caller)
    height: np.ndarray  # int32, levels of this node's subtree below it (0 for a leaf)
    state: np.ndarray  # uint64, the evaluator's own word per node (empty unless asked for)
    edges: np.ndarray  # int32, child-id blocks of SCATTERED nodes
    meta: np.ndarray  # int64[4]: SIZE, WIDEST, EDGES_USED, CLEAN


_FIELDS = {
    "parent": np.int32,
    "first_child": np.int32,
    "num_children": np.int32,
    "action": np.int32,
    "depth": np.int32,
    "visits": np.int32,
    "virtual": np.int32,
    "flags": np.uint8,
    "logit": np.float32,
    "prior": np.float32,
    "reward": np.float32,
    "value_sum": np.float64,
    "novelty": np.float32,
    "height": np.int32,
}

#: Memory one node costs in the pool (the sum of the per-node field sizes).
BYTES_PER_NODE: int = sum(np.dtype(t).itemsize for t in _FIELDS.values())

#: What a node's evaluator ``state`` adds to that, where a forest keeps one.
STATE_BYTES: int = np.dtype(np.uint64).itemsize


def allocate(capacity: int, edge_capacity: int = 0, state: bool = False) -> NodeArrays:
    """Storage with room for ``capacity`` nodes, none of them clean yet (see the module's
    docstring), and ``edge_capacity`` edge slots, with an evaluator ``state`` word per node if
    asked for (else an empty one).

    The fields are views of one buffer (:func:`pool_memory`): a big pool gets huge pages, so it
    takes a page fault per 2 MB, not per 4 kB of every field."""
    capacity = max(int(capacity), 1)
    width = -(-capacity // 16) * 16  # each field starts 64-byte aligned
    buffer = pool_memory(width * BYTES_PER_NODE + 64)
    start = -buffer.ctypes.data % 64
    arrays = {}
    for name, dtype in _FIELDS.items():
        size = width * np.dtype(dtype).itemsize
        arrays[name] = buffer[start:start + size].view(dtype)[:capacity]
        start += size
    words = pool_memory(capacity * STATE_BYTES if state else 0).view(np.uint64)
    return NodeArrays(**arrays, state=words, edges=np.zeros(max(int(edge_capacity), 1), np.int32),
                      meta=np.zeros(4, np.int64))


def pool_memory(nbytes: int) -> np.ndarray:
    """``nbytes`` bytes, not initialised. Big buffers are anonymous memory mapped with huge
    pages advised: through malloc, whether a big block is fresh (huge pages) or reused heap
    (small pages) depends on what the process freed before, and that moved a fused search's
    speed by a third.

    A big buffer whose arrays have all been freed is kept (:data:`RECYCLED`) and handed out
    again as it is: the kernel zeroes a fresh page at its first touch, and on a virtual machine
    that also makes the host back it, which cost a fused search a sixth of its time
    (``bench/profile_engine.py``: ``clear_page_erms``)."""
    if nbytes < HUGE_PAGE_BYTES or not hasattr(mmap, "MADV_HUGEPAGE"):
        return np.empty(nbytes, np.uint8)
    memory = RECYCLED.take(nbytes)
    if memory is None:
        memory = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        memory.madvise(mmap.MADV_HUGEPAGE)
    buffer = np.frombuffer(memory, np.uint8)
    weakref.finalize(buffer, RECYCLED.give, memory)
    return buffer[:nbytes]


class Recycler:
    """Big mapped buffers whose arrays are gone, kept for the next allocation (most recent
    first, at most ``limit_bytes`` in all; a buffer that does not fit is let go, and unmapped
    once the dying array releases it). The lock is re-entrant: the garbage collector may run
    :meth:`give` inside :meth:`take` on the same thread."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self._kept: list[mmap.mmap] = []
        self._lock = threading.RLock()

    def take(self, nbytes: int) -> mmap.mmap | None:
        """The smallest kept buffer of at least ``nbytes``, or None."""
        with self._lock:
            fits = [m for m in self._kept if len(m) >= nbytes]
            if not fits:
                return None
            memory = min(fits, key=len)
            self._kept.remove(memory)
            return memory

    def give(self, memory: mmap.mmap) -> None:
        with self._lock:
            self._kept.insert(0, memory)
            while sum(len(m) for m in self._kept) > self.limit_bytes:
                self._kept.pop()

    def clear(self) -> None:
        """Let every kept buffer go (each is unmapped with its last reference)."""
        with self._lock:
            self._kept.clear()


#: Freed node pools kept for reuse (see :func:`pool_memory`); ``RECYCLED.clear()`` returns them.
RECYCLED = Recycler(limit_bytes=512 << 20)


def grow(nodes: NodeArrays, needed: int, edges_needed: int = 0) -> NodeArrays:
    """Storage holding ``nodes`` with room for ``needed`` nodes and ``edges_needed`` edge slots
    in all (doubling: amortised O(1)); ``nodes`` itself when it already has the room. The node
    fields and the edges table grow apart: a short edges table alone does not copy the nodes."""
    capacity, edge_capacity = len(nodes.parent), len(nodes.edges)
    if needed > capacity:
        bigger = allocate(max(needed, 2 * capacity), edge_capacity, len(nodes.state) > 0)
        used = int(nodes.meta[SIZE])
        for name in stored_fields(nodes):
            getattr(bigger, name)[:used] = getattr(nodes, name)[:used]
        bigger.edges[:] = nodes.edges
        bigger.meta[:] = nodes.meta
        bigger.meta[CLEAN] = used  # the ids past the copied ones are not
        nodes = bigger
    if edges_needed > edge_capacity:
        edges = np.zeros(max(edges_needed, 2 * edge_capacity), np.int32)
        used = int(nodes.meta[EDGES_USED])
        edges[:used] = nodes.edges[:used]
        nodes = nodes._replace(edges=edges)
    return nodes


def field_names() -> tuple[str, ...]:
    """Names of the per-node arrays every forest keeps, in storage order."""
    return tuple(_FIELDS)


def stored_fields(nodes: NodeArrays) -> tuple[str, ...]:
    """Names of the per-node arrays ``nodes`` keeps: :func:`field_names`, and ``state`` where
    it has one."""
    return (*_FIELDS, "state") if len(nodes.state) else tuple(_FIELDS)
