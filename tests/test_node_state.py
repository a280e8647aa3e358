"""A forest's evaluator state word per node (``EngineConfig(node_state=True)``), and the
step-wise wave's side-by-side walks (descents and backups of many trees at once).

The synthetic game's evaluator hashes a leaf from its parent's word when the forest keeps one,
and walks up the path when it does not: both must build the same trees, and the words must be
each node's path key, checked against a plain-Python hash written here from the game's
definition."""

from __future__ import annotations

import numpy as np
import pytest
from forest_compare import assert_equal_trees, assert_same_arrays

from mcts_agent.engine import EngineConfig, Forest, SyntheticGame, kernels, search, search_fused
from mcts_agent.engine.storage import BYTES_PER_NODE, NO_NODE, STATE_BYTES
from mcts_agent.engine.synthetic import evaluate_kernel, evaluator

MASK = (1 << 64) - 1
GAME = SyntheticGame(seed=3, branching=4, max_depth=6, terminal_prob=0.1)


def mix(x: int) -> int:
    """splitmix64's finaliser on Python integers."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def path_key(forest: Forest, node: int) -> int:
    """The game's key of a node: its root's id plus, mod 2**64, ``mix(depth << 32 | action + 1)``
    of every step on the path."""
    a, key = forest.nodes, 0
    while a.parent[node] != NO_NODE:
        key += mix((int(a.depth[node]) << 32) + int(a.action[node]) + 1)
        node = int(a.parent[node])
    return (key + node) & MASK


def assert_words_are_path_keys(forest: Forest) -> None:
    evaluated = np.flatnonzero(forest.nodes.visits[:forest.num_nodes] > 0)
    assert len(evaluated) > 20
    for node in evaluated.tolist():
        assert int(forest.nodes.state[node]) == path_key(forest, node), node
    unevaluated = forest.nodes.visits[:forest.num_nodes] == 0
    assert not forest.nodes.state[:forest.num_nodes][unevaluated].any()


def searched(state: bool, how: str, sims: int = 60, trees: int = 5,
             forest: Forest | None = None) -> Forest:
    config = None if forest else EngineConfig(node_state=state)
    kind, k = how.split("-")
    if kind == "stepwise":
        return search(evaluator(GAME), sims, num_trees=None if forest else trees, forest=forest,
                      config=config, leaves_per_call=int(k), logits=True)
    return search_fused(evaluate_kernel, GAME, GAME.branching, sims,
                        num_trees=None if forest else trees, forest=forest, config=config,
                        leaves_per_call=int(k), logits=True, parallel=kind == "parallel")


def test_a_forest_keeps_no_state_word_unless_asked():
    plain, kept = Forest(capacity=10), Forest(EngineConfig(node_state=True), capacity=10)
    assert len(plain.nodes.state) == 0 and plain.nodes.state.dtype == np.uint64
    assert len(kept.nodes.state) == 10
    plain.add_trees(3)
    kept.add_trees(3)
    assert not kept.nodes.state[:3].any()  # a new node's word is 0
    assert plain.nbytes == 3 * BYTES_PER_NODE
    assert kept.nbytes == 3 * (BYTES_PER_NODE + STATE_BYTES)


@pytest.mark.parametrize("how", ["stepwise-1", "stepwise-3", "fused-1", "fused-4",
                                 "parallel-1", "parallel-3"])
def test_the_game_builds_the_same_trees_with_its_state_words(how):
    walked, carried = searched(False, how), searched(True, how)
    assert_same_arrays(walked, carried)
    assert_words_are_path_keys(carried)


def test_state_words_move_with_their_nodes_through_growth_and_save_load(tmp_path):
    tiny = Forest(EngineConfig(node_state=True), num_trees=3, capacity=1)
    searched(True, "stepwise-2", forest=tiny)
    assert_words_are_path_keys(tiny)
    tiny.save(tmp_path / "forest.npz")
    loaded = Forest.load(tmp_path / "forest.npz")
    assert loaded.config.node_state
    np.testing.assert_array_equal(loaded.nodes.state[:loaded.num_nodes],
                                  tiny.nodes.state[:tiny.num_nodes])
    assert_equal_trees(loaded, tiny)


def test_a_word_never_written_means_walk_the_path():
    walked, carried = searched(False, "stepwise-1", sims=20), searched(True, "stepwise-1", sims=20)
    carried.nodes.state[:] = 0  # e.g. a forest another evaluator grew
    for forest in (walked, carried):
        searched(False, "stepwise-1", sims=30, forest=forest)
    assert_same_arrays(walked, carried)
    leaves = np.flatnonzero((carried.nodes.visits[:carried.num_nodes] > 0)
                            & (carried.nodes.state[:carried.num_nodes] != 0))
    assert len(leaves) > 20  # written again as the search went on
    for node in leaves.tolist():
        assert int(carried.nodes.state[node]) == path_key(carried, node)


# ------------------------------------------------------------- side-by-side walks of a wave


def test_side_by_side_descents_end_where_each_descent_ends_alone():
    """Trees in every state a wave meets: searched ones, one with a pending selection (not
    descended: it needs the general rule), one with no budget left (not descended)."""
    game = SyntheticGame(seed=3, branching=4, max_depth=12)
    forest = search(evaluator(game), 40, num_trees=6, leaves_per_call=1, logits=True)
    pending = forest.select(2, trees=[1])
    assert len(pending)
    a, params, trees = forest.nodes, forest._params, np.arange(6)
    budget = np.ones(6, np.int64)
    budget[4] = 0
    width = kernels.max_height(a.height, forest.roots, trees) + 2
    paths = np.full((6, width), -7, np.int64)
    ahead, lengths = np.empty(6, np.int64), np.empty(6, np.int64)
    kernels.descend_apart(a.first_child, a.num_children, a.flags, a.visits, a.value_sum,
                          a.reward, a.prior, a.virtual, forest.roots, trees, budget, params[0],
                          paths, ahead, lengths, a.parent, a.action, a.depth, a.height,
                          a.state)
    for t in trees.tolist():
        if t in (1, 4):
            assert ahead[t] == NO_NODE
            continue
        path = np.empty(width, np.int64)
        path[0] = forest.roots[t]
        node, length = kernels.descend_dense(a.first_child, a.num_children, a.flags, a.visits,
                                             a.value_sum, a.reward, a.prior, forest.roots[t],
                                             params[0], path)
        assert (ahead[t], lengths[t]) == (node, length) and length > 2
        np.testing.assert_array_equal(paths[t, :length], path[:length])


def test_side_by_side_backups_add_what_one_backup_at_a_time_adds():
    forest = search(evaluator(GAME), 40, num_trees=6, leaves_per_call=1, logits=True)
    a = forest.nodes
    leaves = np.array([forest.tree_nodes(t)[-1] for t in range(6)], np.int64)
    values = np.linspace(0.1, 0.9, 6)
    one_by_one = [array.copy() for array in (a.visits, a.value_sum)]
    for leaf, value in zip(leaves.tolist(), values.tolist(), strict=True):
        kernels.backup_path(a.parent, one_by_one[0], one_by_one[1], a.reward, 0.9, leaf, value)
    kernels.backup_apart(a.parent, a.visits, a.value_sum, a.reward, 0.9, leaves, values)
    np.testing.assert_array_equal(a.visits, one_by_one[0])
    np.testing.assert_array_equal(a.value_sum, one_by_one[1])  # bit for bit
