"""Behaviour of the engine's public Python API: the wave, terminals, widening, reading trees,
persistence, storage growth, seeding, fused search and input validation."""

from __future__ import annotations

import gc
import itertools
import math
import mmap

import networkx as nx
import numba
import numpy as np
import pytest
from forest_compare import assert_equal_trees, assert_same_arrays
from pydantic import ValidationError

from mcts_agent.engine import (
    BYTES_PER_NODE,
    EngineConfig,
    Evaluation,
    Forest,
    SyntheticGame,
    kernels,
    search,
    search_fused,
    storage,
)
from mcts_agent.engine.storage import (
    EDGES_USED,
    HUGE_PAGE_BYTES,
    NO_NODE,
    PENDING,
    SCATTERED,
    Recycler,
    field_names,
)
from mcts_agent.engine.synthetic import evaluate_kernel, evaluator


def arrays_differ(a: Forest, b: Forest) -> bool:
    if a.num_nodes != b.num_nodes:
        return True
    n = a.num_nodes
    return any(not np.array_equal(getattr(a.nodes, name)[:n], getattr(b.nodes, name)[:n])
               for name in field_names())


def random_logprobs(rng: np.random.Generator, counts: np.ndarray) -> np.ndarray:
    """Flat log-probabilities, one distribution per parent (like summed token log-probs)."""
    parts = [np.log(rng.dirichlet(np.ones(c))) for c in counts.tolist() if c]
    return np.concatenate(parts) if parts else np.zeros(0)


def run_wave(forest: Forest, rng: np.random.Generator, k: int, max_children: int = 4,
             terminal_prob: float = 0.0) -> tuple:
    """One LLM-style wave, checking what must hold between select and release."""
    sel = forest.select(k)
    nodes = forest.nodes
    # k distinct leaves per tree, each in the tree reported, each pending, none terminal
    assert len(set(sel.nodes.tolist())) == len(sel)
    for tree in range(forest.num_trees):
        assert (sel.trees == tree).sum() <= k
    for leaf, tree in zip(sel.nodes.tolist(), sel.trees.tolist(), strict=True):
        assert forest.tree_of(leaf) == tree
        assert forest.path(leaf)[0] == forest.roots[tree]
        assert nodes.flags[leaf] & PENDING
        assert not forest.is_terminal(leaf)
    # virtual loss: exactly one per pending selection through each node
    expected = np.zeros(forest.num_nodes, np.int64)
    for leaf in sel.nodes.tolist():
        expected[forest.path(leaf)] += 1
    np.testing.assert_array_equal(nodes.virtual[: forest.num_nodes], expected)
    forest.check_invariants(expect_no_pending=False)

    counts = rng.integers(1, max_children + 1, len(sel))
    terminal = rng.random(int(counts.sum())) < terminal_prob
    kids = forest.expand(sel.nodes, counts, random_logprobs(rng, counts), logits=True,
                         terminal=terminal)
    assert (forest.nodes.parent[kids] == np.repeat(sel.nodes, counts)).all()
    values = rng.random(len(kids))
    forest.backup(kids, values)
    assert forest.nodes.virtual[: forest.num_nodes].any() or len(sel) == 0
    forest.release(sel.nodes)
    forest.check_invariants()
    assert not forest.nodes.virtual[: forest.num_nodes].any()
    assert not (forest.nodes.flags[: forest.num_nodes] & PENDING).any()
    return sel, kids, values


# ----------------------------------------------------------------------------- the wave


@pytest.mark.parametrize("k", [1, 3, 8])
def test_llm_style_waves(k):
    rng = np.random.default_rng(k)
    forest = Forest(num_trees=4)
    backed_up = np.zeros(forest.num_trees, np.int64)
    for wave in range(40):
        sel, kids, _ = run_wave(forest, rng, k)
        if wave == 0:  # fresh roots: one leaf each, the root itself
            assert sel.nodes.tolist() == forest.roots.tolist()
        assert len(sel) > 0
        np.add.at(backed_up, [forest.tree_of(int(c)) for c in kids], 1)
        # one visit per evaluated child, counted up to its root
        assert forest.nodes.visits[forest.roots].tolist() == backed_up.tolist()
    assert forest.nodes.depth[: forest.num_nodes].max() >= 3
    # leaves are spread out by virtual loss: with k > 1, waves find several leaves per tree
    if k > 1:
        assert len(forest.select(k)) > forest.num_trees
        forest.release(np.flatnonzero(forest.nodes.flags[: forest.num_nodes] & PENDING))
        forest.check_invariants()


def test_select_some_trees_only():
    rng = np.random.default_rng(0)
    forest = Forest(num_trees=3)
    for _ in range(5):
        run_wave(forest, rng, 2)
    sel = forest.select(2, trees=[2, 0])
    assert set(sel.trees.tolist()) <= {0, 2}
    assert sel.trees.tolist() == sorted(sel.trees.tolist(), key=[2, 0].index)
    forest.release(sel.nodes)
    forest.check_invariants()


def test_budget_caps_selections_and_is_spent_in_place():
    rng = np.random.default_rng(1)
    forest = Forest(num_trees=3)
    for _ in range(6):
        run_wave(forest, rng, 4)
    budget = np.array([0, 2, 5], np.int64)
    sel = forest.select(4, budget=budget)
    per_tree = np.bincount(sel.trees, minlength=3)
    assert per_tree[0] == 0 and per_tree[1] == 2 and per_tree[2] == 4
    assert budget.tolist() == [0, 0, 1]
    forest.release(sel.nodes)
    forest.check_invariants()


def test_release_twice_and_release_of_unselected_nodes_are_harmless():
    rng = np.random.default_rng(2)
    forest = Forest(num_trees=2)
    for _ in range(3):
        run_wave(forest, rng, 2)
    sel = forest.select(3)
    forest.release(sel.nodes)
    forest.release(sel.nodes)
    forest.release(forest.roots)
    forest.check_invariants()


def test_apply_wave_alphazero_style():
    forest = Forest(num_trees=2)
    forest.apply(forest.roots, Evaluation(np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]]),
                                          np.array([0.1, 0.9])))
    # a zero probability means "no such action"
    assert forest.nodes.num_children[forest.roots].tolist() == [2, 3]
    sel = forest.select(2)
    forest.apply(sel.nodes, Evaluation(np.zeros((len(sel), 2)), np.full(len(sel), 0.5)))
    # no valid action: the leaves become terminal, their virtual loss is gone
    assert forest.is_terminal(sel.nodes).all()
    forest.check_invariants()


# ----------------------------------------------------------------------------- collisions


@pytest.mark.parametrize("max_collisions", [0, 1, 8, 50])
def test_without_virtual_loss_pending_leaves_are_skipped(max_collisions):
    config = EngineConfig(virtual_loss=0.0, max_collisions=max_collisions)
    forest = Forest(config, num_trees=2)
    for root in forest.roots:
        kids = forest.expand([root], [3], [0.2, 0.3, 0.5])
        forest.backup(kids, [0.1, 0.2, 0.3])
    budget = np.full(2, 10, np.int64)
    sel = forest.select(5, budget=budget)
    # each descent skips the leaves already taken: the three children per tree, then the root
    # is blocked (a collision); no duplicates, no endless loop
    assert sel.trees.tolist() == [0, 0, 0, 1, 1, 1]
    assert len(set(sel.nodes.tolist())) == 6
    assert budget.tolist() == [7, 7]  # collisions spend no budget
    # the collisions' temporary virtual loss is gone; the selected paths keep theirs
    expected = np.zeros(forest.num_nodes, np.int64)
    for leaf in sel.nodes.tolist():
        expected[forest.path(leaf)] += 1
    np.testing.assert_array_equal(forest.nodes.virtual[: forest.num_nodes], expected)
    forest.release(sel.nodes)
    forest.check_invariants()


@pytest.mark.parametrize(("max_collisions", "leaves"), [(0, 2), (1, 2), (100, 3)])
def test_max_collisions_bounds_the_retries(max_collisions, leaves):
    # root → A (prior 0.9, children a1, a2) and B (0.1, an unexpanded leaf). Two descents
    # take a1 and a2; the third is blocked at A (a collision) and only a retry, with A's path
    # carrying a temporary virtual loss, can reach B.
    config = EngineConfig(virtual_value=0.5, max_collisions=max_collisions)  # Q unmoved
    forest = Forest(config, 1)
    a, b = forest.expand([0], [2], [0.9, 0.1])
    a1, a2 = forest.expand([a], [2])
    forest.backup([a1, a2, b], [0.5, 0.5, 0.5])
    sel = forest.select(3)
    assert sel.nodes.tolist() == [a1, a2, b][:leaves]
    assert forest.nodes.virtual[0] == leaves  # temporary collision loss removed
    forest.release(sel.nodes)
    forest.check_invariants()


# ----------------------------------------------------------------------------- terminals


def test_terminal_child_is_backed_up_not_selected():
    forest = Forest(num_trees=1)
    kids = forest.expand([0], [2], [0.9, 0.1], terminal=[True, False])
    forest.backup(kids, [1.0, 0.0])
    with pytest.raises(ValueError, match="terminal"):
        forest.expand([kids[0]], [1])
    budget = np.array([6], np.int64)
    sel = forest.select(3, budget=budget)
    terminal_backups = int(forest.nodes.visits[kids[0]]) - 1
    assert kids[0] not in sel.nodes
    assert terminal_backups > 0
    assert 6 - budget[0] == len(sel) + terminal_backups  # both spend budget
    assert forest.mean_value(kids[0]) == 1.0  # a revisit backs up the terminal's value
    assert forest.nodes.visits[0] == 2 + terminal_backups
    forest.release(sel.nodes)
    forest.check_invariants()


def test_only_terminal_children_spend_the_budget_without_leaves():
    forest = Forest(num_trees=2)
    kids = forest.expand(forest.roots, [1, 1], terminal=[True, True])
    forest.backup(kids[:1], [0.75])  # the second terminal was never evaluated: it counts as 0
    budget = np.array([5, 3], np.int64)
    sel = forest.select(4, budget=budget)  # at most 4 descents per tree and call
    assert len(sel) == 0 and budget.tolist() == [1, 0]
    assert forest.nodes.visits[kids].tolist() == [5, 3]
    sel = forest.select(4, budget=budget)
    assert len(sel) == 0 and budget.tolist() == [0, 0]
    assert forest.nodes.visits[kids].tolist() == [6, 3]
    assert forest.mean_value(kids).tolist() == [0.75, 0.0]
    assert forest.nodes.visits[forest.roots].tolist() == [6, 3]
    forest.check_invariants()


def test_random_waves_with_terminals():
    rng = np.random.default_rng(3)
    forest = Forest(num_trees=3)
    total_revisits = 0
    for _ in range(40):
        visits_before = forest.nodes.visits[: forest.num_nodes].copy()
        terminal_before = forest.is_terminal(np.arange(forest.num_nodes))
        budget = np.full(3, 4, np.int64)
        sel = forest.select(4, budget=budget)
        assert not forest.is_terminal(sel.nodes).any()
        # budget spent = selected leaves + terminal revisits
        revisits = (forest.nodes.visits[: len(visits_before)] - visits_before)[terminal_before]
        assert (12 - budget.sum()) == len(sel) + revisits.sum()
        total_revisits += revisits.sum()
        counts = rng.integers(1, 4, len(sel))
        kids = forest.expand(sel.nodes, counts, random_logprobs(rng, counts), logits=True,
                             terminal=rng.random(int(counts.sum())) < 0.3)
        forest.backup(kids, rng.random(len(kids)))
        forest.release(sel.nodes)
        forest.check_invariants()
    assert forest.is_terminal(np.arange(forest.num_nodes)).sum() >= 3
    assert total_revisits > 0


def test_search_with_terminal_games_never_expands_terminals():
    game = SyntheticGame(seed=4, branching=3, max_depth=4, terminal_prob=0.3)
    forest = search(evaluator(game), 120, num_trees=3, leaves_per_call=4, logits=True,
                    on_wave=lambda f, _: f.check_invariants())
    terminal = forest.is_terminal(np.arange(forest.num_nodes))
    assert terminal.any()
    assert (forest.nodes.num_children[: forest.num_nodes][terminal] == 0).all()
    assert forest.nodes.visits[forest.roots].tolist() == [121] * 3


# ----------------------------------------------------------------------------- widening


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x.astype(np.float64) - x.max())
    return e / e.sum()


def test_progressive_widening_reselects_root_and_keeps_ids():
    rng = np.random.default_rng(5)
    forest = Forest(EngineConfig(widen_c=1.0, widen_alpha=0.5), num_trees=1)
    root = int(forest.roots[0])
    previous: list[int] = []
    reselected = 0
    for wave in range(80):
        root_visits = int(forest.nodes.visits[root])
        sel = forest.select(1)
        leaf = int(sel.nodes[0])
        if leaf == root and wave > 0:
            reselected += 1
            assert forest.nodes.num_children[root] < math.sqrt(root_visits)
        kids = forest.expand([leaf], [1], [rng.normal()], logits=True)
        forest.payload[int(kids[0])] = f"step {wave}"
        forest.backup(kids, rng.random(1))
        forest.release(sel.nodes)
        forest.check_invariants()
        children = forest.children(root).tolist()
        assert children[: len(previous)] == previous  # old children keep their ids and order
        assert forest.nodes.action[children].tolist() == list(range(len(children)))
        previous = children
        if root_visits >= 1:  # widen_c · N^alpha children at the N the descent saw
            assert len(children) == math.ceil(math.sqrt(root_visits))
    assert reselected >= 5
    for node in range(forest.num_nodes):
        kids = forest.children(node)
        if len(kids):
            priors = forest.nodes.prior[kids]
            assert priors.sum() == pytest.approx(1.0, abs=1e-6)
            np.testing.assert_allclose(priors, softmax(forest.nodes.logit[kids]), rtol=1e-6)
    assert all(forest.payload[c] == f"step {w}" for c, w in
               zip(sorted(forest.payload), range(80), strict=True))

    # closing the root stops its widening: it is never a leaf again
    forest.close([root])
    width = int(forest.nodes.num_children[root])
    for _ in range(40):
        sel = forest.select(2)
        assert root not in sel.nodes
        counts = np.ones(len(sel), np.int64)
        forest.backup(forest.expand(sel.nodes, counts), rng.random(len(sel)))
        forest.release(sel.nodes)
    assert forest.nodes.num_children[root] == width
    forest.check_invariants()


def test_widening_renormalises_old_and_new_children():
    forest = Forest(EngineConfig(widen_c=2.0), num_trees=1)
    first = forest.expand([0], [2], [0.25, 0.25])
    forest.backup(first, [0.5, 0.5])
    more = forest.expand([0], [1], [0.5])
    assert forest.children(0).tolist() == [*first.tolist(), *more.tolist()]
    np.testing.assert_allclose(forest.nodes.prior[forest.children(0)], [0.25, 0.25, 0.5],
                               rtol=1e-6)


def test_search_with_widening_and_close():
    game = SyntheticGame(seed=6, branching=2, max_depth=30, terminal_prob=0.0)
    config = EngineConfig(widen_c=1.0, widen_alpha=0.5)
    forest = search(evaluator(game), 100, num_trees=2, config=config, leaves_per_call=3,
                    logits=True, on_wave=lambda f, _: f.check_invariants())
    # the roots kept widening past the first two children the evaluator offered
    assert (forest.nodes.num_children[forest.roots] > 2).all()
    width = forest.nodes.num_children[forest.roots].copy()
    forest.close(forest.roots)
    search(evaluator(game), 100, forest=forest, leaves_per_call=3, logits=True)
    assert forest.nodes.num_children[forest.roots].tolist() == width.tolist()
    assert forest.nodes.visits[forest.roots].tolist() == [201, 201]


# ----------------------------------------------------------------------------- priors and values


def test_probabilities_and_logits_give_the_same_priors():
    probs = np.array([0.1, 0.2, 0.3, 0.4])
    variants = [
        (probs, False),
        (probs * 7.0, False),  # unnormalised weights
        (np.log(probs), True),
        (np.log(probs) + 5.0, True),  # unnormalised log-probabilities
    ]
    for weights, logits in variants:
        forest = Forest(num_trees=1)
        kids = forest.expand([0], [4], weights, logits=logits)
        np.testing.assert_allclose(forest.nodes.prior[kids], probs, rtol=1e-6)
        assert forest.nodes.prior[kids].dtype == np.float32
    forest = Forest(num_trees=2)
    kids = forest.expand(forest.roots, [4, 3])
    assert forest.nodes.prior[kids].tolist() == [0.25] * 4 + [np.float32(1 / 3)] * 3


def test_zero_probability_child_gets_zero_prior():
    forest = Forest(num_trees=1)
    kids = forest.expand([0], [3], [0.0, 0.5, 0.5])
    assert forest.nodes.prior[kids].tolist() == [0.0, 0.5, 0.5]


@pytest.mark.parametrize(("weights", "logits"), [
    ([0.1, 0.0, 0.3, 0.6], False), ([1e-300, 2e-300, 0.5, 5e-324], False),
    ([-1.5, -np.inf, 0.25, 3.0], True), ([-1e30, 0.0, -np.inf, 1e-7], True),
])
def test_a_first_expansion_by_apply_gives_the_priors_expand_gives(weights, logits):
    """apply's fast first expansion and expand's general path: the same stored numbers."""
    weights = np.array(weights)
    valid = weights > -np.inf if logits else weights > 0
    general = Forest(num_trees=1)
    kids = general.expand([0], [int(valid.sum())], weights[valid], logits=logits)
    fast = Forest(num_trees=1)
    fast.apply([0], Evaluation(weights[None], np.array([0.5])), logits=logits)
    assert fast.children(0).tolist() == kids.tolist()
    for name in ("prior", "logit", "parent", "action", "depth"):
        stored = getattr(fast.nodes, name)[kids], getattr(general.nodes, name)[kids]
        assert stored[0].tobytes() == stored[1].tobytes(), name


def test_log_priors_below_the_float32_range_become_uniform():
    forest = Forest(num_trees=1)
    forest.apply([0], Evaluation(np.array([[-1e300, -1e300, -np.inf, -1e39]]), np.array([0.5])),
                 logits=True)
    assert forest.nodes.prior[forest.children(0)].tolist() == [np.float32(1 / 3)] * 3


@pytest.mark.parametrize("virtual_loss", [0.0, 1.0, 3.0])
def test_values_in_unit_interval_keep_means_in_unit_interval(virtual_loss):
    rng = np.random.default_rng(7)
    forest = Forest(EngineConfig(virtual_loss=virtual_loss, virtual_value=0.0), num_trees=3)
    for _ in range(30):
        sel = forest.select(4)
        counts = rng.integers(1, 4, len(sel))
        kids = forest.expand(sel.nodes, counts)
        values = rng.choice([0.0, 1.0, rng.random()], len(kids))
        forest.backup(kids, values)
        forest.release(sel.nodes)
        means = forest.mean_value(np.arange(forest.num_nodes))
        visited = ~np.isnan(means)
        assert ((means[visited] >= 0.0) & (means[visited] <= 1.0)).all()
    unvisited = forest.expand([0], [1])
    assert np.isnan(forest.mean_value(unvisited)).all() and np.isnan(forest.q_values(unvisited))


# ----------------------------------------------------------------------------- reading results


@pytest.fixture
def small_tree() -> tuple[Forest, np.ndarray, np.ndarray]:
    """Root children visited 3, 5, 1, 0 times with values 0.2, 0.1, 0.9; child 1 has children
    visited 1 and 3 times (included in its 5)."""
    forest = Forest(num_trees=2)
    kids = forest.expand([0], [4], [0.4, 0.3, 0.2, 0.1])
    grand = forest.expand([kids[1]], [2], [0.5, 0.5])
    forest.backup([kids[0]] * 3, [0.2] * 3)
    forest.backup([kids[1]], [0.1])
    forest.backup([grand[0]], [0.1])
    forest.backup([grand[1]] * 3, [0.1] * 3)
    forest.backup([kids[2]], [0.9])
    other = forest.expand([forest.roots[1]], [2], [0.5, 0.5])
    forest.backup(other, [0.3, 0.6])
    forest.check_invariants()
    return forest, kids, grand


def test_choose_visits_and_value(small_tree):
    forest, kids, _ = small_tree
    assert forest.root_visits(0).tolist() == [3, 5, 1, 0]
    assert forest.choose([0]).tolist() == [kids[1]]
    assert forest.choose([0], method="value").tolist() == [kids[2]]
    both = forest.choose(method="visits")
    assert len(both) == 2 and forest.nodes.action[both[1]] == 0  # a tie: the lower action
    assert forest.nodes.parent[forest.choose([1], method="value")[0]] == forest.roots[1]
    assert forest.q_values(forest.choose([1], method="value"))[0] == pytest.approx(0.6)


def test_choose_sample_is_reproducible_and_picks_visited_children(small_tree):
    forest, kids, _ = small_tree
    draws = [int(forest.choose([0], method="sample", seed=s)[0]) for s in range(200)]
    again = [int(forest.choose([0], method="sample", seed=s)[0]) for s in range(200)]
    assert draws == again
    assert set(draws) == set(kids[:3].tolist())  # never the unvisited child
    rng = np.random.default_rng(9)
    assert set(forest.choose([0], method="sample", temperature=0.0, seed=rng).tolist()) == {
        kids[1]}


def test_root_policy(small_tree):
    forest, _, _ = small_tree
    np.testing.assert_allclose(forest.root_policy(0), np.array([3, 5, 1, 0]) / 9)
    np.testing.assert_allclose(forest.root_policy(0, temperature=0.5),
                               np.array([9, 25, 1, 0]) / 35)
    assert forest.root_policy(0, temperature=0).tolist() == [0, 1, 0, 0]
    assert forest.root_policy(1, temperature=0).tolist() == [0.5, 0.5]  # ties share
    for t in (0, 1):
        for temperature in (0.0, 0.3, 1.0, 4.0):
            assert forest.root_policy(t, temperature).sum() == pytest.approx(1.0)


def test_principal_variation(small_tree):
    forest, kids, grand = small_tree
    assert forest.principal_variation(0) == [0, int(kids[1]), int(grand[1])]
    forest.expand([grand[1]], [3])  # unvisited children do not extend it
    assert forest.principal_variation(0) == [0, int(kids[1]), int(grand[1])]
    assert forest.principal_variation(1)[0] == forest.roots[1]
    fresh = Forest(num_trees=1)
    assert fresh.principal_variation(0) == [0]


def test_principal_variation_follows_most_visited_after_search():
    game = SyntheticGame(seed=8, branching=4, max_depth=12, terminal_prob=0.05)
    forest = search(evaluator(game), 150, num_trees=2, logits=True)
    for tree in range(2):
        pv = forest.principal_variation(tree)
        assert pv[0] == forest.roots[tree]
        assert pv[1] == forest.choose([tree])[0]
        for parent, child in itertools.pairwise(pv):
            assert forest.nodes.parent[child] == parent
            assert forest.nodes.visits[child] == forest.nodes.visits[forest.children(parent)].max()


# ----------------------------------------------------------------------------- persistence


def searched_forest() -> tuple[Forest, SyntheticGame]:
    game = SyntheticGame(seed=3, branching=4, max_depth=6, terminal_prob=0.1)
    config = EngineConfig(widen_c=1.5, widen_alpha=0.5, discount=0.95, virtual_loss=2.0,
                          max_collisions=3)
    forest = search(evaluator(game), 40, num_trees=3, config=config, leaves_per_call=4,
                    logits=True)
    for node in range(0, forest.num_nodes, 3):
        forest.payload[node] = {"step": f"step text {node} ✓", "score": node / 7}
    return forest, game


def test_save_load_round_trip(tmp_path):
    forest, game = searched_forest()
    path = tmp_path / "forest.npz"
    forest.save(path)
    loaded = Forest.load(path)
    assert_same_arrays(forest, loaded)
    assert loaded.config == forest.config
    assert loaded.payload == forest.payload
    assert loaded.roots.dtype == np.int64
    loaded.check_invariants()
    # continuing the search gives the same trees
    search(evaluator(game), 30, forest=forest, leaves_per_call=4, logits=True)
    search(evaluator(game), 30, forest=loaded, leaves_per_call=4, logits=True)
    assert_same_arrays(forest, loaded)
    assert loaded.payload == forest.payload


def scattered_forest() -> Forest:
    """Two roots whose children interleave: root 0's later children cannot follow its first."""
    forest = Forest(num_trees=2)
    forest.expand([0], [2], [0.5, 0.5])  # ids 2, 3
    forest.expand([1], [2], [0.5, 0.5])  # ids 4, 5
    forest.expand([1], [1], [1.0])  # id 6 follows 4, 5: root 1's range grows in place
    forest.expand([0], [3], [1.0, 1.0, 1.0])  # ids 7, 8, 9: root 0's children get listed
    return forest


def test_children_stay_in_action_order_when_they_cannot_be_one_range():
    forest = scattered_forest()
    assert forest.children(1).tolist() == [4, 5, 6]
    assert not forest.nodes.flags[1] & SCATTERED
    assert forest.children(0).tolist() == [2, 3, 7, 8, 9]
    assert forest.nodes.flags[0] & SCATTERED
    assert forest.nodes.action[forest.children(0)].tolist() == [0, 1, 2, 3, 4]
    # a full block moves to a bigger one; the children and their priors come along
    forest.expand([0], [7], np.ones(7))
    kids = forest.children(0)
    assert kids.tolist() == [2, 3, 7, 8, 9, *range(10, 17)]
    assert forest.nodes.action[kids].tolist() == list(range(12))
    assert forest.nodes.prior[kids].sum() == pytest.approx(1.0, abs=1e-6)
    assert forest.nodes.prior[kids][-1] == pytest.approx(forest.nodes.prior[kids][2])
    forest.check_invariants()


def test_search_selects_among_listed_children_like_among_a_range():
    game = SyntheticGame(seed=4, branching=3, max_depth=6)
    config = EngineConfig(widen_c=1.0, widen_alpha=0.5)
    forest = search(evaluator(game), 60, num_trees=4, config=config, leaves_per_call=3,
                    logits=True)
    scattered = np.flatnonzero(forest.nodes.flags[:forest.num_nodes] & SCATTERED)
    assert len(scattered) > 0  # interleaved trees widen: some children are listed
    fused = search_fused(evaluate_kernel, game, game.branching, 60, num_trees=4,
                         config=config, leaves_per_call=3, logits=True)
    assert_equal_trees(forest, fused)  # fused allocates tree by tree: other layouts


def test_forests_saved_with_sibling_lists_still_load(tmp_path):
    forest = scattered_forest()
    forest.save(tmp_path / "v2.npz")
    with np.load(tmp_path / "v2.npz") as data:
        arrays = {name: data[name] for name in data.files if name != "edges"}
    # format 1 kept children as a linked list: first_child -> next_sibling
    n = forest.num_nodes
    first, following = np.full(n, NO_NODE, np.int32), np.full(n, NO_NODE, np.int32)
    for node in range(n):
        kids = forest.children(node)
        if len(kids):
            first[node] = kids[0]
            following[kids[:-1]] = kids[1:]
    arrays.update(first_child=first, next_sibling=following,
                  flags=arrays["flags"] & ~SCATTERED,
                  meta=np.frombuffer(arrays["meta"].tobytes().replace(b'"format": 2',
                                                                       b'"format": 1'), np.uint8))
    np.savez(tmp_path / "v1.npz", **arrays)
    loaded = Forest.load(tmp_path / "v1.npz")
    for node in range(n):
        assert loaded.children(node).tolist() == forest.children(node).tolist()
    assert loaded.nodes.meta[EDGES_USED] == 6  # root 0's five children listed, no room spare
    loaded.expand([0], [1], [1.0])
    assert loaded.children(0).tolist() == [2, 3, 7, 8, 9, 10]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("k", [1, 4])
def test_parallel_fused_search_gives_the_serial_forest_ids_included(k, threads):
    # 5 trees in one group per thread: on 2 threads the second group's region moves down
    # past trees that ended terminal (used less than their room)
    game = SyntheticGame(seed=8, branching=4, max_depth=7, terminal_prob=0.1)
    serial = search_fused(evaluate_kernel, game, game.branching, 80, num_trees=5,
                          leaves_per_call=k, logits=True)
    was = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        parallel = search_fused(evaluate_kernel, game, game.branching, 80, num_trees=5,
                                leaves_per_call=k, logits=True, parallel=True)
    finally:
        numba.set_num_threads(was)
    assert_same_arrays(serial, parallel)
    parallel.check_invariants()


def test_parallel_fused_search_of_a_widening_config_runs_tree_by_tree():
    game = SyntheticGame(seed=8, branching=4, max_depth=7)
    config = EngineConfig(widen_c=1.0)
    serial, parallel = (search_fused(evaluate_kernel, game, game.branching, 50, num_trees=3,
                                     config=config, leaves_per_call=2, logits=True,
                                     parallel=flag) for flag in (False, True))
    assert_same_arrays(serial, parallel)


def test_debug_search_checks_every_wave_and_builds_the_same_trees():
    game = SyntheticGame(seed=2, branching=5, max_depth=6, terminal_prob=0.1)
    waves = []
    fast = search(evaluator(game), 40, num_trees=3, leaves_per_call=3, logits=True,
                  on_wave=lambda f, w: waves.append(w))
    checked = search(evaluator(game), 40, num_trees=3, leaves_per_call=3, logits=True,
                     debug=True)
    assert_same_arrays(fast, checked)
    assert waves == list(range(1, len(waves) + 1)) and len(waves) >= 10


@pytest.mark.parametrize("debug", [False, True])
def test_search_rejects_a_nan_value_from_the_evaluator(debug):
    def evaluate(forest, leaves, rng):
        values = np.full(len(leaves), np.nan if forest.num_nodes > 20 else 0.5)
        return Evaluation(np.ones((len(leaves), 3)), values)

    with pytest.raises(ValueError, match="values must be finite"):
        search(evaluate, 30, num_trees=2, leaves_per_call=2, debug=debug)


def test_load_rejects_other_format_versions(tmp_path):
    forest, _ = searched_forest()
    forest.save(tmp_path / "f.npz")
    with np.load(tmp_path / "f.npz") as data:
        arrays = dict(data)
    arrays["meta"] = np.frombuffer(b'{"format": 999, "config": {}}', np.uint8)
    np.savez(tmp_path / "g.npz", **arrays)
    with pytest.raises(ValueError, match="format"):
        Forest.load(tmp_path / "g.npz")


def test_to_networkx():
    forest, _ = searched_forest()
    a = forest.nodes
    for tree in range(forest.num_trees):
        graph = forest.to_networkx(tree)
        nodes = forest.tree_nodes(tree)
        assert isinstance(graph, nx.DiGraph)
        assert graph.number_of_nodes() == len(nodes)
        assert set(graph.nodes) == set(nodes.tolist())
        assert graph.graph["root"] == forest.roots[tree]
        assert nx.is_arborescence(graph)
        edges = {(int(a.parent[x]), int(x)) for x in nodes.tolist() if a.parent[x] != NO_NODE}
        assert set(graph.edges) == edges
        for node in nodes.tolist():
            attrs = graph.nodes[node]
            assert attrs["visits"] == a.visits[node]
            assert attrs["depth"] == a.depth[node]
            assert attrs["action"] == a.action[node]
            assert attrs["prior"] == pytest.approx(float(a.prior[node]))
            assert attrs["terminal"] == bool(forest.is_terminal(node))
            assert attrs["payload"] == forest.payload.get(node)
            if a.visits[node]:
                assert attrs["value"] == pytest.approx(a.value_sum[node] / a.visits[node])
            else:
                assert math.isnan(attrs["value"])
    assert any(graph.nodes[n]["payload"] is not None for n in graph.nodes)


# ----------------------------------------------------------------------------- storage


def test_storage_grows_from_capacity_one():
    assert BYTES_PER_NODE <= 64
    game = SyntheticGame(seed=9, branching=5, max_depth=10, terminal_prob=0.05)
    config = EngineConfig(widen_c=1.0)
    tiny = Forest(config, num_trees=3, capacity=1)
    big = Forest(config, num_trees=3, capacity=100_000)
    assert len(tiny.nodes.parent) == 3  # add_trees made room
    for forest in (tiny, big):
        search(evaluator(game), 60, forest=forest, leaves_per_call=5, logits=True)
    assert_same_arrays(tiny, big)
    assert len(tiny.nodes.parent) >= tiny.num_nodes
    assert tiny.nbytes == tiny.num_nodes * BYTES_PER_NODE + 4 * tiny.nodes.meta[EDGES_USED]
    # the wave API grows storage too
    forests = [Forest(num_trees=2, capacity=1), Forest(num_trees=2, capacity=4096)]
    for forest in forests:
        rng = np.random.default_rng(10)
        for _ in range(15):
            run_wave(forest, rng, 3)
    assert_same_arrays(*forests)
    fused = [search_fused(evaluate_kernel, game, game.branching, 40,
                          forest=Forest(num_trees=2, capacity=c), logits=True) for c in (1, 9999)]
    assert_same_arrays(*fused)


def test_a_short_edges_table_grows_alone():
    forest = Forest(num_trees=1, capacity=100)
    fields = forest.nodes.parent
    forest.nodes.edges[:1] = 7
    forest.nodes.meta[EDGES_USED] = 1
    forest.reserve(0, 50)
    assert forest.nodes.parent is fields  # the node fields were not copied
    assert len(forest.nodes.edges) >= 51 and forest.nodes.edges[0] == 7
    forest.reserve(500)
    assert len(forest.nodes.parent) >= 501 and forest.nodes.edges[0] == 7


def test_a_freed_node_pool_is_handed_out_again_as_it_was():
    recycler = Recycler(limit_bytes=64 << 20)
    nbytes = 4 * HUGE_PAGE_BYTES
    first = recycler_memory(recycler, nbytes)
    address = first.ctypes.data
    view = first[10:20]
    view[:] = 255
    del first
    gc.collect()
    assert recycler.take(nbytes) is None  # a view still uses it
    del view
    gc.collect()
    second = recycler_memory(recycler, nbytes)
    assert second.ctypes.data == address and (second[10:20] == 255).all()  # not zeroed
    del second
    gc.collect()
    assert recycler_memory(recycler, nbytes + 1).ctypes.data != address  # too small: fresh


def test_the_recycler_keeps_no_more_than_its_limit():
    recycler = Recycler(limit_bytes=3 * HUGE_PAGE_BYTES)
    buffers = [recycler_memory(recycler, 2 * HUGE_PAGE_BYTES) for _ in range(3)]
    del buffers
    gc.collect()
    assert recycler.take(1) is not None and recycler.take(1) is None


def recycler_memory(recycler: Recycler, nbytes: int) -> np.ndarray:
    """storage.pool_memory drawing on ``recycler`` instead of the process-wide one."""
    saved = storage.RECYCLED
    storage.RECYCLED = recycler
    try:
        return storage.pool_memory(nbytes)
    finally:
        storage.RECYCLED = saved


BIG = 60_000  # nodes: a pool this big comes from the recycler (HUGE_PAGE_BYTES and more)
DIRTY = SyntheticGame(seed=3, branching=8, max_depth=12, terminal_prob=0.02)


def dirty_fused(parallel: bool = False, **config) -> Forest:
    forest = Forest(EngineConfig(**config), num_trees=4, capacity=BIG)
    return search_fused(evaluate_kernel, DIRTY, DIRTY.branching, 1000, forest=forest,
                        leaves_per_call=3, logits=True, parallel=parallel)


def dirty_expansions() -> Forest:
    forest = Forest(num_trees=1, capacity=BIG)
    wide = kernels.CLEAN_AHEAD + 100
    forest.expand([0], [wide], np.linspace(0.0, 1.0, wide))
    forest.add_trees(2)
    forest.expand([wide + 2, 2], [2, 1], [0.5, 0.5, 1.0])
    forest.expand([wide + 2], [1], [3.0])  # a widened node: its children listed
    return forest


BUILDS = {
    "step-wise": lambda: search(evaluator(DIRTY), 1000, forest=Forest(num_trees=4, capacity=BIG),
                                leaves_per_call=1, logits=True),
    "step-wise, widening": lambda: search(
        evaluator(DIRTY), 1000, forest=Forest(EngineConfig(widen_c=1.0), num_trees=4,
                                             capacity=BIG), leaves_per_call=4, logits=True),
    "grown from one node": lambda: search(evaluator(DIRTY), 4000, num_trees=4, logits=True,
                                          forest=Forest(num_trees=4, capacity=1)),
    "fused": lambda: dirty_fused(node_state=True),
    "fused, widening": lambda: dirty_fused(widen_c=1.0),
    "fused, parallel": lambda: dirty_fused(parallel=True),
    "expand and add_trees": dirty_expansions,
}


@pytest.fixture
def old_nodes_in_every_pool(monkeypatch):
    """A recycler full of big buffers with 0x7F in every byte, as pools freed by earlier
    searches hold old nodes: whatever a build reads before writing it is garbage."""
    monkeypatch.setattr(storage, "RECYCLED", dirty_recycler(4, 4, 8, 8, 16, 16, 32, 32))


def dirty_recycler(*megabytes: int) -> Recycler:
    """A recycler holding buffers of these sizes with 0x7F in every byte."""
    recycler = Recycler(limit_bytes=1 << 30)
    for size in megabytes:
        memory = mmap.mmap(-1, size << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        memory.write(b"\x7f" * len(memory))
        recycler.give(memory)
    return recycler


@pytest.mark.parametrize("build", BUILDS, ids=list(BUILDS))
def test_old_nodes_in_a_recycled_pool_change_nothing(build, monkeypatch, request):
    monkeypatch.setattr(storage, "RECYCLED", Recycler(limit_bytes=1 << 30))
    fresh = BUILDS[build]()  # fresh maps: zero pages
    request.getfixturevalue("old_nodes_in_every_pool")
    dirty = BUILDS[build]()
    assert dirty.num_nodes > kernels.CLEAN_AHEAD  # past the ids the first roots' call cleans
    assert_same_arrays(fresh, dirty)
    dirty.check_invariants()


def test_a_forest_loaded_into_a_recycled_pool_is_the_saved_one(tmp_path, monkeypatch):
    saved = dirty_fused(node_state=True)
    leaf = int(np.flatnonzero(saved.nodes.num_children[:saved.num_nodes] == 0)[0])
    saved.expand([leaf], [BIG], np.zeros(BIG))  # a file big enough for a recycled pool
    saved.save(tmp_path / "f.npz")
    with np.load(tmp_path / "f.npz") as data:  # as saved before novelty and height existed
        older = {name: data[name] for name in data.files if name not in ("novelty", "height")}
    np.savez(tmp_path / "older.npz", **older)
    for name in ("older.npz", "f.npz"):
        monkeypatch.setattr(storage, "RECYCLED", dirty_recycler(64))
        assert_same_arrays(saved, Forest.load(tmp_path / name))


def test_bytes_per_node_is_the_sum_of_field_sizes():
    forest = Forest(capacity=10)
    sizes = [getattr(forest.nodes, name).itemsize for name in field_names()]
    assert sum(sizes) == BYTES_PER_NODE


# ----------------------------------------------------------------------------- seeds


def random_evaluate(forest: Forest, leaves: np.ndarray, rng: np.random.Generator) -> Evaluation:
    n = len(leaves)
    return Evaluation(rng.random((n, 3)) + 0.01, rng.random(n))


def test_same_seed_same_tree_different_seed_different_tree():
    kwargs = {"num_trees": 2, "leaves_per_call": 3, "dirichlet_fraction": 0.25}
    a = search(random_evaluate, 50, seed=5, **kwargs)
    b = search(random_evaluate, 50, seed=5, **kwargs)
    c = search(random_evaluate, 50, seed=6, **kwargs)
    assert_same_arrays(a, b)
    assert arrays_differ(a, c)
    for forest in (a, b, c):
        for root in forest.roots:
            assert forest.nodes.prior[forest.children(int(root))].sum() == pytest.approx(1.0,
                                                                                        abs=1e-6)


def test_dirichlet_noise_uses_the_seed():
    game = SyntheticGame(seed=1, branching=6, max_depth=5, terminal_prob=0.0)
    plain = search(evaluator(game), 0, num_trees=1, logits=True)
    noisy = [search(evaluator(game), 0, num_trees=1, logits=True, seed=s,
                    dirichlet_fraction=0.5) for s in (1, 1, 2)]
    kids = plain.children(0)
    assert not np.array_equal(plain.nodes.prior[kids], noisy[0].nodes.prior[kids])
    assert np.array_equal(noisy[0].nodes.prior[kids], noisy[1].nodes.prior[kids])
    assert not np.array_equal(noisy[0].nodes.prior[kids], noisy[2].nodes.prior[kids])


# ----------------------------------------------------------------------------- fused search

def test_trees_with_different_ids_compare_equal_and_a_change_is_seen():
    game = SyntheticGame(seed=3, branching=4, max_depth=6)
    stepwise = search(evaluator(game), 30, num_trees=3, leaves_per_call=2, logits=True)
    fused = search_fused(evaluate_kernel, game, game.branching, 30, num_trees=3,
                         leaves_per_call=2, logits=True)
    assert not np.array_equal(stepwise.nodes.parent[:stepwise.num_nodes],
                              fused.nodes.parent[:fused.num_nodes])  # ids do differ
    assert_equal_trees(stepwise, fused)
    fused.nodes.visits[fused.tree_nodes(2)[-1]] += 1
    try:
        assert_equal_trees(stepwise, fused)
    except AssertionError as error:
        assert "tree 2, field visits" in str(error)
    else:
        raise AssertionError("a changed visit count went unnoticed")



@pytest.mark.parametrize("config", [
    EngineConfig(),
    EngineConfig(rule="uct", virtual_loss=2.0),
    EngineConfig(widen_c=1.2, widen_alpha=0.4, discount=0.9),
    EngineConfig(virtual_loss=0.0, max_collisions=2),
])
@pytest.mark.parametrize("k", [1, 6])
def test_search_and_search_fused_build_identical_trees(config, k):
    game = SyntheticGame(seed=12, branching=5, max_depth=8, terminal_prob=0.1)
    stepwise = search(evaluator(game), 70, num_trees=3, config=config, leaves_per_call=k,
                      logits=True)
    fused = search_fused(evaluate_kernel, game, game.branching, 70, num_trees=3, config=config,
                         leaves_per_call=k, logits=True)
    assert_equal_trees(stepwise, fused)
    assert stepwise.nodes.visits[stepwise.roots].tolist() == [71] * 3


def test_a_wrapped_njit_evaluator_takes_leaves_of_any_integer_type():
    """numba_evaluator types its kernel's arguments once and then calls the compiled function
    directly, so it must hand the kernel the same types at every call."""
    game = SyntheticGame(seed=6, branching=3, max_depth=5)
    evaluate = evaluator(game)
    forest = search(evaluate, 12, num_trees=2, leaves_per_call=2, logits=True)
    leaves = forest.tree_nodes(1)[1:5]
    first = evaluate(forest, leaves, None)
    for same in (leaves.astype(np.int32), leaves.tolist(), leaves[::-1][::-1]):
        again = evaluate(forest, same, None)
        np.testing.assert_array_equal(again.priors, first.priors)
        np.testing.assert_array_equal(again.values, first.values)


def test_a_fused_search_hands_listed_children_to_the_general_rule():
    """Forest.expand lists a node's children when it gives it more later, widening config or
    not: the fused search's short way (one leaf per wave, the dense rule) must then go on
    like the step-wise search."""
    game = SyntheticGame(seed=5, branching=3, max_depth=6, terminal_prob=0.1)

    def grown() -> Forest:
        forest = search(evaluator(game), 4, num_trees=2, leaves_per_call=1, logits=True)
        forest.expand(forest.roots, [2, 2])  # the roots' ranges cannot grow in place
        return forest

    stepwise, fused = grown(), grown()
    assert (stepwise.nodes.flags[stepwise.roots] & SCATTERED).all()
    search(evaluator(game), 40, forest=stepwise, leaves_per_call=1, logits=True)
    search_fused(evaluate_kernel, game, game.branching, 40, forest=fused, leaves_per_call=1,
                 logits=True)
    assert_equal_trees(stepwise, fused)
    assert stepwise.nodes.visits[stepwise.children(0)[-2:]].all()  # the listed ones searched


# ----------------------------------------------------------------------------- bad input


@pytest.fixture
def forest() -> Forest:
    forest = Forest(num_trees=2)
    kids = forest.expand(forest.roots, [2, 2])
    forest.backup(kids, [0.5] * 4)
    return forest


def test_bad_budget(forest):
    for budget in (np.ones(2, np.int32), np.ones(2), np.ones(3, np.int64),
                   np.ones((2, 1), np.int64)):
        with pytest.raises(ValueError, match="budget"):
            forest.select(2, budget=budget)
    with pytest.raises(IndexError):
        forest.select(1, trees=[2])
    with pytest.raises(IndexError):
        forest.select(1, trees=[-1])
    forest.check_invariants()  # nothing was selected


def test_bad_expand(forest):
    n = forest.num_nodes
    with pytest.raises(ValueError, match="counts"):
        forest.expand([0, 1], [1])
    with pytest.raises(ValueError, match="counts"):
        forest.expand([0], [-1])
    with pytest.raises(ValueError, match="priors"):
        forest.expand([0, 1], [2, 1], [0.5, 0.5])
    with pytest.raises(ValueError, match="terminal"):
        forest.expand([0], [2], terminal=[True])
    with pytest.raises(ValueError, match="reward"):
        forest.expand([0], [2], reward=[0.0, 0.0, 0.0])
    for bad in (n, -1, 10**6):
        with pytest.raises(IndexError):
            forest.expand([bad], [1])
    with pytest.raises(TypeError):
        forest.expand([0.0], [1])
    assert forest.num_nodes == n  # nothing was added


def test_bad_backup_release_close_apply(forest):
    n = forest.num_nodes
    visits = forest.nodes.visits[:n].copy()
    with pytest.raises(ValueError):
        forest.backup([1, 2], [0.5])
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(ValueError, match="finite"):
            forest.backup([1], [bad])
    for method in (forest.backup, forest.release, forest.close):
        for node in (n, -1):
            with pytest.raises(IndexError):
                method(*([[node], [0.5]] if method == forest.backup else [[node]]))
    with pytest.raises(IndexError):
        forest.apply(np.array([n]), Evaluation(np.ones((1, 2)), np.array([0.5])))
    with pytest.raises(ValueError, match="priors"):
        forest.apply(np.array([1]), Evaluation(np.ones(2), np.array([0.5])))
    with pytest.raises(ValueError):
        forest.apply(np.array([1]), Evaluation(np.ones((1, 2)), np.array([0.5, 0.5])))
    with pytest.raises(ValueError, match="finite"):
        forest.apply(np.array([1]), Evaluation(np.ones((1, 2)), np.array([np.nan])))
    with pytest.raises(TypeError):
        forest.release(np.array([[1]]))
    assert forest.num_nodes == n
    np.testing.assert_array_equal(forest.nodes.visits[:n], visits)


@pytest.mark.parametrize("bad", [
    {"rule": "ucb"},
    {"pb_c_base": 0.0},
    {"pb_c_init": -1.0},
    {"discount": 1.5},
    {"discount": -0.1},
    {"widen_alpha": 2.0},
    {"widen_c": -1.0},
    {"virtual_loss": -1.0},
    {"max_collisions": -1},
    {"max_collisions": 1.5},
    {"no_such_setting": 1},
])
def test_bad_config(bad):
    with pytest.raises(ValidationError):
        EngineConfig(**bad)


def test_config_is_frozen_and_loads_from_a_mapping():
    config = EngineConfig(**{"rule": "uct", "uct_c": 1.0, "discount": 0.9})
    with pytest.raises(ValidationError):
        config.discount = 0.5  # type: ignore[misc]
    assert EngineConfig(**config.model_dump()) == config


def test_bad_choose_and_search_calls(forest):
    with pytest.raises(ValueError, match="unknown method"):
        forest.choose(method="best")  # type: ignore[arg-type]
    with pytest.raises(IndexError):
        forest.choose([5])
    fresh = Forest(num_trees=1)
    with pytest.raises(ValueError, match="search"):
        fresh.choose()
    with pytest.raises(ValueError, match="search"):
        fresh.root_policy(0)
    with pytest.raises(ValueError):
        search(random_evaluate, 5)  # neither forest nor num_trees
    with pytest.raises(ValueError, match="config"):
        search(random_evaluate, 5, forest=forest, config=EngineConfig(discount=0.5))


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("weights", "logits"), [
    ([np.nan, 1.0], True), ([np.inf, 0.0], True), ([np.nan, 0.5], False),
])
def test_expand_rejects_non_finite_priors(weights, logits):
    forest = Forest(num_trees=1)
    with pytest.raises(ValueError):
        forest.expand([0], [2], weights, logits=logits)


@pytest.mark.parametrize(("weights", "logits"), [
    ([0.0, 0.0, 0.0], False), ([-np.inf, -np.inf, -np.inf], True), ([np.nan, 1.0, 1.0], True),
])
def test_degenerate_priors_are_rejected_or_harmless(weights, logits):
    forest = Forest(num_trees=1)
    try:
        kids = forest.expand([0], [3], weights, logits=logits)
    except ValueError:
        return
    forest.backup(kids, [0.5, 0.5, 0.5])
    sel = forest.select(1)
    assert (sel.nodes >= 0).all() and (sel.nodes < forest.num_nodes).all()


def test_expand_rejects_non_finite_rewards():
    forest = Forest(num_trees=1)
    with pytest.raises(ValueError):
        forest.expand([0], [2], reward=[np.nan, 0.0])


def test_apply_rejects_non_finite_rewards():
    forest = Forest(num_trees=1)
    forest.apply(np.array([0]), Evaluation(np.ones((1, 2)), np.array([0.5])))
    leaf = forest.select(1).nodes
    with pytest.raises(ValueError):
        forest.apply(leaf, Evaluation(np.ones((1, 2)), np.array([0.5]),
                                      rewards=np.array([np.nan])))


@pytest.mark.parametrize("method", ["children", "mean_value", "q_values", "path", "tree_of"])
def test_reading_methods_reject_out_of_range_ids(forest, method):
    for bad in (-1, forest.num_nodes):
        with pytest.raises(IndexError):
            getattr(forest, method)(bad)


def test_budget_as_list_gets_a_clear_error(forest):
    with pytest.raises(ValueError, match="budget"):
        forest.select(1, budget=[1, 1])  # type: ignore[arg-type]


def test_the_fields_of_a_pool_are_aligned_views_of_one_buffer():
    forest = Forest(capacity=100_000)
    arrays = [getattr(forest.nodes, name) for name in field_names()]
    owners = {id(a.base.base if a.base is not None and a.base.base is not None else a.base)
              for a in arrays}
    assert len(owners) == 1  # one allocation: big pools get huge pages for every field
    for a in arrays:
        assert len(a) == 100_000 and a.flags.c_contiguous and a.ctypes.data % 16 == 0
    assert forest.num_nodes == 0
