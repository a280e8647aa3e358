"""Equality of two forests: array for array (:func:`assert_same_arrays`), or tree for tree
where node ids may differ (:func:`assert_equal_trees`).

:func:`~mcts_agent.engine.search` allocates the nodes of all trees wave by wave, interleaved;
:func:`~mcts_agent.engine.search_fused` allocates each tree's nodes together. The trees are the
same; the ids are not. This compares every tree breadth-first in action order: each node's
statistics bit for bit, and its parent by position.
"""

from __future__ import annotations

import numpy as np

from mcts_agent.engine import Forest
from mcts_agent.engine.storage import CLEAN, EDGES_USED, SCATTERED, field_names

ID_FIELDS = ("parent", "first_child")  # node ids: compared through the tree's shape


def canonical(forest: Forest, tree: int) -> dict[str, np.ndarray]:
    """Tree ``tree``'s fields in breadth-first action order, parents as positions."""
    order = forest.tree_nodes(tree)
    position = {int(node): i for i, node in enumerate(order)}
    a = forest.nodes
    fields = {name: getattr(a, name)[order] for name in field_names() if name not in ID_FIELDS}
    fields["flags"] = fields["flags"] & ~SCATTERED  # how children are listed, not what they are
    fields["parent"] = np.array([position.get(int(p), -1) for p in a.parent[order]])
    return fields


def assert_equal_trees(a: Forest, b: Forest) -> None:
    assert a.num_trees == b.num_trees
    assert a.num_nodes == b.num_nodes
    for tree in range(a.num_trees):
        left, right = canonical(a, tree), canonical(b, tree)
        for name in left:
            np.testing.assert_array_equal(left[name], right[name],
                                          err_msg=f"tree {tree}, field {name}")



def assert_same_arrays(a: Forest, b: Forest) -> None:
    """The same nodes under the same ids: every field, the roots, the counters and the edges."""
    assert a.num_nodes == b.num_nodes
    n = a.num_nodes
    for name in field_names():
        np.testing.assert_array_equal(getattr(a.nodes, name)[:n], getattr(b.nodes, name)[:n],
                                      err_msg=name)
    np.testing.assert_array_equal(a.roots, b.roots)
    # the counters, not how far ahead of use each forest's ids were cleaned
    np.testing.assert_array_equal(a.nodes.meta[:CLEAN], b.nodes.meta[:CLEAN])
    used = a.nodes.meta[EDGES_USED]
    np.testing.assert_array_equal(a.nodes.edges[:used], b.nodes.edges[:used])
