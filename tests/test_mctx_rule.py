"""PUCT in the engine against DeepMind mctx's ``muzero_policy`` rule, written out independently.

The reference below follows mctx's documented semantics (``muzero_action_selection`` with
``qtransform_by_parent_and_siblings``, the running-mean backup of ``search.backward``) on a
table-driven tree in plain Python: no engine kernels, no mctx code. mctx breaks ties with 1e-7
noise; the reference (like the engine) breaks them towards the lowest action instead.

Storage widths of the engine are mimicked where they change numbers: logits, priors and edge
rewards are float32 in the node pool, values float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest

from mcts_agent.engine import EngineConfig, Evaluation, Forest, search

MCTX = {"pb_c_init": 1.25, "pb_c_base": 19652.0}


def f32(x: float) -> float:
    return float(np.float32(x))


# ----------------------------------------------------------------------------- the tree


class Table:
    """A deterministic tree without terminals: action path -> (prior logits, value, reward).

    Entries are drawn lazily from a generator seeded by (seed, tree, depth, path), memoised in a
    dict, so the engine's evaluator and the reference read exactly the same numbers.
    """

    def __init__(self, seed: int, tree: int, branching: int, rewards: bool,
                 logit_scale: float = 1.5):
        self.key = [seed, tree]
        self.branching = branching
        self.rewards = rewards
        self.logit_scale = logit_scale
        self.entries: dict[tuple[int, ...], tuple[list[float], float, float]] = {}

    def __call__(self, path: tuple[int, ...]) -> tuple[list[float], float, float]:
        if path not in self.entries:
            # depth in the key: SeedSequence pads short entropy with zeros, so (0,) ~ (0, 0)
            rng = np.random.default_rng([*self.key, len(path), *path])
            logits = (self.logit_scale * rng.standard_normal(self.branching)).tolist()
            value = float(rng.uniform(-1.0, 1.0))
            reward = float(rng.uniform(-1.0, 1.0)) if self.rewards and path else 0.0
            self.entries[path] = (logits, value, reward)
        return self.entries[path]


# ----------------------------------------------------------------------------- mctx's rule


@dataclass(eq=False)
class MctxNode:
    prior: list[float]  # softmax of the node's prior logits (one per action)
    value: float  # running mean of the returns backed up into the node (mctx's node_values)
    reward: float  # reward on the edge from the parent
    visits: int = 1  # a new node counts its own evaluation
    children: dict[int, MctxNode] = field(default_factory=dict)


def softmax_as_stored(logits: list[float]) -> list[float]:
    """softmax over float32 logits, computed in float64, stored as float32 (as the engine)."""
    stored = [f32(x) for x in logits]
    top = max(stored)
    weights = [math.exp(x - top) for x in stored]
    total = sum(weights)
    return [f32(w / total) for w in weights]


def make_node(table: Table, path: tuple[int, ...]) -> MctxNode:
    logits, value, reward = table(path)
    return MctxNode(prior=softmax_as_stored(logits), value=value, reward=f32(reward))


def mctx_select(node: MctxNode, discount: float, pb_c_init: float, pb_c_base: float) -> int:
    """``muzero_action_selection`` + ``qtransform_by_parent_and_siblings`` at ``node``."""
    n_parent = node.visits
    qs = {a: ch.reward + discount * ch.value for a, ch in node.children.items() if ch.visits}
    # unvisited children count at the parent's value for min / max only
    lo = min([node.value, *qs.values()])
    hi = max([node.value, *qs.values()])
    scale = max(hi - lo, 1e-8)
    pb_c = pb_c_init + math.log((n_parent + pb_c_base + 1.0) / pb_c_base)
    best, best_score = -1, -math.inf
    for a, prior in enumerate(node.prior):
        n = node.children[a].visits if a in node.children else 0
        value_score = (qs[a] - lo) / scale if n > 0 else 0.0
        score = value_score + math.sqrt(n_parent) * pb_c * prior / (n + 1.0)
        if score > best_score:  # strict: ties go to the lowest action
            best, best_score = a, score
    return best


def mctx_search(table: Table, num_simulations: int, discount: float = 1.0,
                pb_c_init: float = MCTX["pb_c_init"],
                pb_c_base: float = MCTX["pb_c_base"]) -> MctxNode:
    root = make_node(table, ())  # the root is evaluated first: one visit, its own value
    for _ in range(num_simulations):
        node, trail, actions = root, [root], []
        while True:
            action = mctx_select(node, discount, pb_c_init, pb_c_base)
            actions.append(action)
            if action not in node.children:
                node.children[action] = make_node(table, tuple(actions))
                trail.append(node.children[action])
                break
            node = node.children[action]
            trail.append(node)
        leaf_value = trail[-1].value
        for child, parent in zip(trail[:0:-1], trail[-2::-1], strict=True):
            leaf_value = child.reward + discount * leaf_value
            parent.value = (parent.value * parent.visits + leaf_value) / (parent.visits + 1.0)
            parent.visits += 1
    return root


def reference_visits(root: MctxNode, branching: int) -> list[int]:
    return [root.children[a].visits if a in root.children else 0 for a in range(branching)]


def reference_tree(root: MctxNode) -> dict[tuple[int, ...], tuple[int, float]]:
    out, stack = {}, [((), root)]
    while stack:
        path, node = stack.pop()
        out[path] = (node.visits, node.value)
        stack.extend(((*path, a), ch) for a, ch in node.children.items())
    return out


# ----------------------------------------------------------------------------- the engine


def action_path(forest: Forest, node: int) -> tuple[int, ...]:
    return tuple(int(forest.nodes.action[x]) for x in forest.path(node)[1:])


def table_evaluator(tables: list[Table]):
    """The tables as an ``evaluate(forest, leaves, rng)`` for :func:`search` (logits)."""

    def evaluate(forest: Forest, leaves: np.ndarray, rng: np.random.Generator) -> Evaluation:
        branching = tables[0].branching
        priors = np.empty((len(leaves), branching))
        values, rewards = np.empty(len(leaves)), np.empty(len(leaves))
        for i, leaf in enumerate(leaves.tolist()):
            assert forest.nodes.num_children[leaf] == 0, "no widening: leaves are fresh"
            logits, values[i], rewards[i] = tables[forest.tree_of(leaf)](action_path(forest, leaf))
            priors[i] = logits
        return Evaluation(priors, values, rewards=rewards)

    return evaluate


def engine_tree(forest: Forest, tree: int) -> dict[tuple[int, ...], tuple[int, float]]:
    nodes = forest.tree_nodes(tree)
    visits = forest.nodes.visits[nodes].tolist()
    values = forest.mean_value(nodes).tolist()
    return {action_path(forest, x): (n, v)
            for x, n, v in zip(nodes.tolist(), visits, values, strict=True) if n > 0}


def run_both(seed, branching, simulations, num_trees=3, discount=1.0, rewards=False,
             logit_scale=1.5, **puct):
    puct = {**MCTX, **puct}
    tables = [Table(seed, t, branching, rewards, logit_scale) for t in range(num_trees)]
    config = EngineConfig(rule="puct", discount=discount, **puct)
    forest = search(table_evaluator(tables), simulations, forest=Forest(config, num_trees),
                    leaves_per_call=1, logits=True)
    roots = [mctx_search(tables[t], simulations, discount, **puct) for t in range(num_trees)]
    return forest, roots


def assert_same(forest, roots, branching):
    for t, root in enumerate(roots):
        assert forest.root_visits(t).tolist() == reference_visits(root, branching), f"tree {t}"
        # the whole tree agrees too: same nodes, same visits, same values (up to rounding:
        # the engine keeps sums, mctx running means)
        ours, theirs = engine_tree(forest, t), reference_tree(root)
        assert ours.keys() == theirs.keys()
        for path, (n, v) in theirs.items():
            assert ours[path][0] == n, path
            assert ours[path][1] == pytest.approx(v, rel=1e-9, abs=1e-12), path


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("branching", [2, 3, 5, 8])
@pytest.mark.parametrize("simulations", [0, 1, 2, 7, 60, 300])
@pytest.mark.parametrize("seed", [0, 1])
def test_root_visits_match_mctx_rule(seed, branching, simulations):
    forest, roots = run_both(seed, branching, simulations)
    for t in range(forest.num_trees):
        assert forest.nodes.visits[forest.roots[t]] == simulations + 1
        assert sum(forest.root_visits(t)) == simulations
    assert_same(forest, roots, branching)


@pytest.mark.parametrize("discount", [0.97, 0.5, 0.0])
@pytest.mark.parametrize("branching", [2, 4, 7])
@pytest.mark.parametrize("simulations", [1, 25, 200])
def test_discount_and_edge_rewards_match_mctx_rule(discount, branching, simulations):
    forest, roots = run_both(11, branching, simulations, discount=discount, rewards=True)
    # the rewards did reach the tree (Evaluation.rewards: the edge into the evaluated leaf)
    if simulations > 1:
        visited = forest.tree_nodes(0)[forest.nodes.visits[forest.tree_nodes(0)] > 0]
        assert np.abs(forest.nodes.reward[visited[1:]]).min() > 0
    assert_same(forest, roots, branching)


@pytest.mark.parametrize(("pb_c_init", "pb_c_base"), [(0.5, 3.0), (2.0, 40.0), (0.0, 1.0)])
def test_pb_c_formula_beyond_mctx_constants(pb_c_init, pb_c_base):
    # a small pb_c_base makes the log((N + base + 1) / base) growth of pb_c matter
    forest, roots = run_both(5, 4, 150, discount=0.9, rewards=True, pb_c_init=pb_c_init,
                             pb_c_base=pb_c_base)
    assert_same(forest, roots, 4)


def test_reference_rule_is_not_trivially_uniform():
    # guard against a vacuous comparison: priors and values shape the visit counts
    forest, roots = run_both(3, 6, 300, num_trees=1)
    visits = forest.root_visits(0)
    assert visits.max() > 2 * np.sort(visits)[-2] or len(set(visits.tolist())) > 2
    assert forest.nodes.depth[forest.tree_nodes(0)].max() >= 4
    assert_same(forest, roots, 6)


@pytest.mark.parametrize("branching", [2, 3, 8])
def test_equal_priors_tie_break_towards_the_lowest_action(branching):
    # all logits 0: every unvisited child scores the same, so ties decide the order
    forest, roots = run_both(7, branching, 120, logit_scale=0.0)
    assert_same(forest, roots, branching)
    # one simulation: the first action wins the tie
    forest, roots = run_both(7, branching, 1, logit_scale=0.0)
    assert forest.root_visits(0).tolist() == [1] + [0] * (branching - 1)
    assert_same(forest, roots, branching)


@pytest.mark.parametrize("branching", [64, 65, 150])
def test_wide_nodes(branching):
    # around and past the size of the engine's per-descent buffer of children's Q values
    forest, roots = run_both(13, branching, 200, num_trees=2, discount=0.95, rewards=True)
    assert_same(forest, roots, branching)
