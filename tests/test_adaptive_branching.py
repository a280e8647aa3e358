"""AB-MCTS (``EngineConfig(rule="abmcts")``): Thompson sampling decides wider or deeper.

Reference: the decision's exact probabilities, integrated numerically from the Beta posteriors
the rule names (scipy). On hand-built trees, the engine's choices over thousands of seeds must
match them; the choices must be reproducible and must not depend on other trees in the forest.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from mcts_agent.engine import EngineConfig, Forest, SyntheticGame, search
from mcts_agent.engine.synthetic import evaluator

stats = pytest.importorskip("scipy.stats", reason="the reference integrates Beta densities")

CHILDREN = [(4, 0.8), (2, 0.3)]  # (visits, mean value) of the root's two children


def hand_built(seed: int, children=CHILDREN, other_tree_first: bool = False,
               prior=(1.0, 1.0)) -> Forest:
    """A root whose children have the given visits and mean values (no grandchildren)."""
    forest = Forest(EngineConfig(rule="abmcts", seed=seed, ab_prior=prior))
    if other_tree_first:  # another tree's nodes take the first ids
        [other] = forest.add_trees(1)
        forest.expand([forest.roots[other]], [3])
    [tree] = forest.add_trees(1)
    root = int(forest.roots[tree])
    forest.backup([root], [0.5])
    kids = forest.expand([root], [len(children)])
    for kid, (visits, mean) in zip(kids.tolist(), children, strict=True):
        forest.backup([kid] * visits, [mean] * visits)
    return forest


def choice(forest: Forest) -> int:
    """-1 to generate at the root, else the action of the child descended into."""
    tree = forest.num_trees - 1
    leaf = int(forest.select(1, trees=[tree]).nodes[0])
    return -1 if leaf == forest.roots[tree] else int(forest.nodes.action[leaf])


def exact_probabilities(children=CHILDREN, prior=(1.0, 1.0)) -> list[float]:
    """P(generate), then P(child j), from the rule's posteriors (ties have measure 0)."""
    a, b = prior
    dists = [stats.beta(a + sum(m for _, m in children), b + sum(1 - m for _, m in children))]
    dists += [stats.beta(a + n * m, b + n * (1 - m)) for n, m in children]
    # P(i wins) = ∫ Π_{j≠i} F_j dF_i, as sums over a fine grid (CDF steps: exact for the
    # singular densities of parameters below 1)
    x = np.linspace(0, 1, 200_001)
    mid = (x[1:] + x[:-1]) / 2
    out = []
    for i, dist in enumerate(dists):
        others = np.prod([d.cdf(mid) for j, d in enumerate(dists) if j != i], axis=0)
        out.append(float(np.sum(np.diff(dist.cdf(x)) * others)))
    return out


@pytest.mark.parametrize(("children", "prior"), [
    (CHILDREN, (1.0, 1.0)),
    ([(30, 0.1), (30, 0.12), (10, 0.05)], (1.0, 1.0)),  # poor children: go wider
    ([(30, 0.9), (20, 0.85)], (1.0, 1.0)),  # good children: go deeper
    ([(3, 0.6), (1, 0.2)], (0.5, 2.0)),
])
def test_choices_follow_the_thompson_probabilities(children, prior):
    runs = 3000
    counts = np.zeros(len(children) + 1)
    for seed in range(runs):
        counts[choice(hand_built(seed, children, prior=prior)) + 1] += 1
    exact = np.array(exact_probabilities(children, prior))
    assert exact.sum() == pytest.approx(1.0, abs=1e-6)
    spread = np.sqrt(exact * (1 - exact) / runs)
    assert np.all(np.abs(counts / runs - exact) <= 4 * spread + 1e-3), (counts / runs, exact)


def test_poor_children_make_the_search_wider_than_good_ones():
    poor = exact_probabilities([(30, 0.1), (30, 0.12), (10, 0.05)])[0]
    good = exact_probabilities([(30, 0.9), (20, 0.85)])[0]
    assert poor > 0.5 > good  # the guard against a vacuous match: the rule does decide


def test_choices_are_reproducible_and_local_to_their_tree():
    alone = [choice(hand_built(seed)) for seed in range(200)]
    assert alone == [choice(hand_built(seed)) for seed in range(200)]
    assert alone == [choice(hand_built(seed, other_tree_first=True)) for seed in range(200)]
    assert len(set(alone)) == 3  # every option happens


def test_a_closed_node_only_goes_deeper():
    for seed in range(200):
        forest = hand_built(seed)
        forest.close(forest.roots[-1:])
        assert choice(forest) in (0, 1)


def test_a_whole_search_widens_where_it_pays():
    game = SyntheticGame(seed=2, branching=2, max_depth=8)
    config = EngineConfig(rule="abmcts", seed=0)
    forest = search(evaluator(game), 300, num_trees=4, config=config, leaves_per_call=4,
                    logits=True)
    forest.check_invariants()
    assert forest.nodes.visits[forest.roots].tolist() == [301] * 4
    widths = forest.nodes.num_children[forest.tree_nodes(0)]
    assert widths.max() > game.branching  # some nodes were widened by a Thompson draw
    assert forest.nodes.depth[forest.tree_nodes(0)].max() >= 3  # others were deepened


def test_the_llm_driver_searches_with_adaptive_branching():
    """A selection option of the LLM driver: Thompson draws widen nodes (new samples from the
    policy) or deepen them, and the wave and async drivers still grow the same trees."""
    from test_async_search import Jittery
    from test_search_driver import Flat, ScriptedPolicy

    from environments.math.arith_env import ArithEnvironment
    from mcts_agent.search import SearchConfig, TreeSearch

    class Sampling(ScriptedPolicy):  # other wrong steps on every call: widening finds new ones
        def _candidates(self, request):
            out = super()._candidates(request)
            return [c if j == 0 else replace(c, text=f"{c.text}{request.seed % 89}")
                    for j, c in enumerate(out)]

    env = ArithEnvironment(max_operand=9)
    tasks = env.tasks(4)
    config = dict(simulations=20, expand_n=2, leaves_per_tree=2, stop_when_solved=False,
                  engine=EngineConfig(rule="abmcts", seed=3))

    def grow(policy, driver):
        search = TreeSearch(env, policy, Flat(), SearchConfig(driver=driver, **config))
        return {r.task.id: r.nodes for r in search.run(tasks)}

    wave = grow(Sampling(wide=True), "wave")
    assert grow(Jittery(Sampling(wide=True)), "async") == wave
    widest = max(sum(n.parent == i for n in nodes) for nodes in wave.values()
                 for i in range(len(nodes)))
    assert widest > config["expand_n"]  # a node went wider after its first expansion
