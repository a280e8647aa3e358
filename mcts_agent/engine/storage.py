"""Structure-of-arrays node storage for a forest of search trees.

All trees of a forest share one pool of nodes; a node is an integer id into every array below.
Children form a singly linked list (``first_child`` → ``next_sibling``) so a node can gain
children at any time (progressive widening) without moving existing nodes: node ids are stable,
which is what lets Python payloads (step text, snapshots …) be keyed by id.

The arrays travel into numba kernels as one :class:`NodeArrays` named tuple; ``size`` and
``widest`` are one-element arrays so kernels can update them in place.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

NO_NODE = -1

# Bits of ``NodeArrays.flags``.
TERMINAL = np.uint8(1)  # never expanded; selection backs up its value instead
CLOSED = np.uint8(2)  # progressive widening may not add children
PENDING = np.uint8(4)  # selected in the current wave, awaiting expansion / release


class NodeArrays(NamedTuple):
    """One field per node statistic; index ``i`` of every array describes node ``i``."""

    parent: np.ndarray  # int32, NO_NODE for roots
    first_child: np.ndarray  # int32
    next_sibling: np.ndarray  # int32
    num_children: np.ndarray  # int32
    action: np.ndarray  # int32, rank among the parent's children (0, 1, …)
    depth: np.ndarray  # int32, 0 at the root
    visits: np.ndarray  # int32, backups through this node
    virtual: np.ndarray  # int32, pending selections through this node (virtual loss count)
    flags: np.ndarray  # uint8, TERMINAL | CLOSED | PENDING
    logit: np.ndarray  # float32, unnormalised log-prior given at expansion
    prior: np.ndarray  # float32, softmax of logit over the current siblings
    reward: np.ndarray  # float32, reward on the edge parent → node
    value_sum: np.ndarray  # float64, sum of backed-up returns seen from this node
    novelty: np.ndarray  # float32, in [0, 1]: how unlike its siblings the node is (set by caller)
    height: np.ndarray  # int32, levels of this node's subtree below it (0 for a leaf)
    size: np.ndarray  # int64[1], number of nodes in use
    widest: np.ndarray  # int64[1], the most children any node has (sizes kernel scratch space)


_FIELDS = {
    "parent": np.int32,
    "first_child": np.int32,
    "next_sibling": np.int32,
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


def allocate(capacity: int) -> NodeArrays:
    """Empty storage with room for ``capacity`` nodes."""
    capacity = max(int(capacity), 1)
    arrays = {name: np.zeros(capacity, dtype) for name, dtype in _FIELDS.items()}
    for name in ("parent", "first_child", "next_sibling"):
        arrays[name].fill(NO_NODE)
    return NodeArrays(**arrays, size=np.zeros(1, np.int64), widest=np.zeros(1, np.int64))


def grow(nodes: NodeArrays, needed: int) -> NodeArrays:
    """Storage holding ``nodes`` with room for ``needed`` nodes (doubling: amortised O(1))."""
    capacity = len(nodes.parent)
    if needed <= capacity:
        return nodes
    bigger = allocate(max(needed, 2 * capacity))
    used = int(nodes.size[0])
    for name in _FIELDS:
        getattr(bigger, name)[:used] = getattr(nodes, name)[:used]
    bigger.size[0] = used
    bigger.widest[0] = nodes.widest[0]
    return bigger


def field_names() -> tuple[str, ...]:
    """Names of the per-node arrays, in storage order."""
    return tuple(_FIELDS)
