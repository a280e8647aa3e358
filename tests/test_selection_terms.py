"""The engine's optional selection terms (SWE-Search style): depth and diversity.

Both are off by default and must then leave every search exactly as it was: the golden root
visit counts below were recorded with the engine before these terms existed.
"""

from __future__ import annotations

import numpy as np
import pytest
from forest_compare import assert_equal_trees
from pydantic import ValidationError

from mcts_agent.engine import EngineConfig, Forest, SyntheticGame, search, search_fused
from mcts_agent.engine.storage import NO_NODE, field_names
from mcts_agent.engine.synthetic import evaluate_kernel, evaluator

RULES = ("puct", "uct")


def two_branches(config: EngineConfig, deep_first: bool) -> tuple[Forest, int, int]:
    """A root with two children of equal prior, visits and value; one branch is expanded two
    levels below its child, the other one level. Returns (forest, deep child, shallow child)."""
    forest = Forest(config, num_trees=1)
    first, second = forest.expand([forest.roots[0]], [2]).tolist()
    deep, shallow = (first, second) if deep_first else (second, first)
    [mid] = forest.expand([deep], [1]).tolist()
    [deep_leaf] = forest.expand([mid], [1]).tolist()
    [shallow_leaf] = forest.expand([shallow], [1]).tolist()
    forest.backup([deep_leaf, shallow_leaf], [0.5, 0.5])
    return forest, deep, shallow


def first_step(forest: Forest) -> int:
    """The root child that one descent goes through (its virtual loss is released again)."""
    leaves = forest.select(k=1)
    assert len(leaves) == 1
    forest.release(leaves.nodes)
    return forest.path(int(leaves.nodes[0]))[1]


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize(("deep_first", "weight", "picks"), [
    # deep branch second: a tie goes to the first (lower action), so only a bonus picks it
    (False, 0.0, "shallow"), (False, 0.1, "deep"), (False, -0.1, "shallow"),
    # deep branch first: the tie picks it; only a penalty turns the search away
    (True, 0.0, "deep"), (True, 0.1, "deep"), (True, -0.1, "shallow"),
])
def test_depth_weight_prefers_the_deeper_branch_and_penalises_it_when_negative(
        rule, deep_first, weight, picks):
    forest, deep, shallow = two_branches(EngineConfig(rule=rule, depth_weight=weight),
                                         deep_first)
    assert first_step(forest) == {"deep": deep, "shallow": shallow}[picks]


def test_height_tracks_the_levels_below_every_node():
    game = SyntheticGame(seed=4, branching=4, max_depth=9, terminal_prob=0.1)
    forest = search(evaluator(game), 150, num_trees=3, config=EngineConfig(widen_c=1.0),
                    leaves_per_call=4, logits=True)
    a, n = forest.nodes, forest.num_nodes
    deepest = a.depth[:n].copy()  # depth of the deepest node of each subtree
    for node in range(n - 1, -1, -1):  # a child's id is larger than its parent's
        if a.parent[node] != NO_NODE:
            deepest[a.parent[node]] = max(deepest[a.parent[node]], deepest[node])
    np.testing.assert_array_equal(a.height[:n], deepest - a.depth[:n])
    assert (a.height[:n][a.num_children[:n] == 0] == 0).all()


@pytest.mark.parametrize("rule", RULES)
def test_diversity_weight_picks_the_novel_child_over_an_equally_valued_one(rule):
    def build(weight: float) -> tuple[Forest, np.ndarray]:
        forest = Forest(EngineConfig(rule=rule, diversity_weight=weight), num_trees=1)
        kids = forest.expand([forest.roots[0]], [3])
        forest.backup(kids, [0.4, 0.4, 0.4])
        forest.set_novelty(kids, [0.2, 0.2, 1.0])
        return forest, kids

    forest, kids = build(0.0)
    assert first_step(forest) == kids[0]  # novelty is stored but ignored at weight 0
    forest, kids = build(0.05)
    assert first_step(forest) == kids[2]
    forest, kids = build(-0.05)  # a negative weight prefers the familiar
    assert first_step(forest) == kids[0]


def test_diversity_can_outweigh_a_small_q_gap_only_in_proportion():
    # PUCT: three children; Q is normalised over the parent's value and the children's Q
    for weight, expected in ((0.1, 2), (0.01, 0)):
        forest = Forest(EngineConfig(diversity_weight=weight), num_trees=1)
        kids = forest.expand([forest.roots[0]], [3])
        forest.backup(kids, [0.50, 0.0, 0.48])  # normalised: 1.0, 0.0, 0.96
        forest.set_novelty(kids, [0.0, 0.0, 1.0])
        assert first_step(forest) == kids[expected], weight


# Root visit counts recorded with the engine before depth / diversity existed (same game,
# same sizes): with both weights 0 they must not move.
GOLDEN_GAME = SyntheticGame(seed=3, branching=5, max_depth=8, terminal_prob=0.1)
GOLDEN = {
    "puct": [[0, 168, 27, 1, 4], [0, 11, 1, 1, 187], [3, 7, 184, 6, 0], [12, 2, 184, 0, 2]],
    "uct": [[53, 45, 44, 33, 25], [85, 27, 48, 8, 32], [34, 48, 33, 37, 48],
            [47, 57, 55, 23, 18]],
}


@pytest.mark.parametrize("rule", RULES)
def test_zero_weights_leave_searches_exactly_as_before(rule):
    plain = search(evaluator(GOLDEN_GAME), 200, num_trees=4, config=EngineConfig(rule=rule),
                   leaves_per_call=4, logits=True)
    assert [plain.root_visits(t).tolist() for t in range(4)] == GOLDEN[rule]

    # explicit zeros, and novelty set on every node as it is created: the same trees
    rng = np.random.default_rng(0)
    inner = evaluator(GOLDEN_GAME)

    def evaluate(forest, leaves, rng_):
        forest.set_novelty(np.arange(forest.num_nodes), rng.random(forest.num_nodes))
        return inner(forest, leaves, rng_)

    zeros = EngineConfig(rule=rule, depth_weight=0.0, diversity_weight=0.0)
    noisy = search(evaluate, 200, num_trees=4, config=zeros, leaves_per_call=4, logits=True)
    for name in field_names():
        if name != "novelty":
            np.testing.assert_array_equal(getattr(plain.nodes, name)[:plain.num_nodes],
                                          getattr(noisy.nodes, name)[:noisy.num_nodes], name)


@pytest.mark.parametrize("weights", [{"depth_weight": 0.3}, {"depth_weight": -0.3},
                                     {"diversity_weight": 0.5}])
def test_searches_with_the_terms_stay_consistent(weights):
    game = SyntheticGame(seed=5, branching=6, max_depth=12, terminal_prob=0.05)
    config = EngineConfig(**weights)
    stepwise = search(evaluator(game), 120, num_trees=3, config=config, leaves_per_call=4,
                      logits=True)
    fused = search_fused(evaluate_kernel, game, game.branching, 120, num_trees=3,
                         config=config, leaves_per_call=4, logits=True)
    for forest in (stepwise, fused):
        forest.check_invariants()
        assert forest.nodes.visits[forest.roots].tolist() == [121] * 3
    assert_equal_trees(stepwise, fused)


def test_depth_weight_changes_how_deep_the_search_goes():
    game = SyntheticGame(seed=6, branching=6, max_depth=30)

    def mean_depth(weight: float) -> float:
        forest = search(evaluator(game), 200, num_trees=8, leaves_per_call=4, logits=True,
                        config=EngineConfig(depth_weight=weight))
        n = forest.num_nodes
        visited = forest.nodes.visits[:n] > 0
        return float(forest.nodes.depth[:n][visited].mean())

    assert mean_depth(-0.5) < mean_depth(0.0) < mean_depth(0.5)


def test_novelty_is_validated_grown_saved_and_loaded(tmp_path):
    forest = Forest(EngineConfig(depth_weight=0.1, diversity_weight=0.2), num_trees=1,
                    capacity=1)
    kids = forest.expand([forest.roots[0]], [3])
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        forest.set_novelty(kids, [0.5, 1.5, 0.0])
    with pytest.raises(ValueError, match="finite"):
        forest.set_novelty(kids, [0.5, np.nan, 0.0])
    with pytest.raises(ValueError, match="one value per node"):
        forest.set_novelty(kids, [0.5])
    with pytest.raises(IndexError):
        forest.set_novelty([99], [0.5])
    forest.set_novelty(kids, [0.25, 0.5, 1.0])
    forest.reserve(1000)  # storage regrowth keeps the values
    grand = forest.expand(kids[:1], [2])
    np.testing.assert_array_equal(forest.nodes.novelty[kids], np.float32([0.25, 0.5, 1.0]))
    assert forest.nodes.novelty[grand].tolist() == [0.0, 0.0]  # new nodes start at 0
    assert forest.to_networkx(0).nodes[int(kids[2])]["novelty"] == 1.0

    path = tmp_path / "forest.npz"
    forest.save(path)
    loaded = Forest.load(path)
    assert loaded.config == forest.config
    for name in field_names():
        np.testing.assert_array_equal(getattr(loaded.nodes, name)[:loaded.num_nodes],
                                      getattr(forest.nodes, name)[:forest.num_nodes], name)

    # a file from before novelty / height existed loads with novelty 0 and height rebuilt
    with np.load(path) as data:
        old = {k: data[k] for k in data.files if k not in ("novelty", "height")}
    np.savez_compressed(tmp_path / "old.npz", **old)
    older = Forest.load(tmp_path / "old.npz")
    n = older.num_nodes
    assert not older.nodes.novelty[:n].any()
    np.testing.assert_array_equal(older.nodes.height[:n], forest.nodes.height[:n])


def test_weights_must_be_finite():
    with pytest.raises(ValidationError):
        EngineConfig(depth_weight=float("inf"))
    with pytest.raises(ValidationError):
        EngineConfig(diversity_weight=float("nan"))
