"""The numba engine against the plain-Python reference MCTS, on random trees and settings."""

from __future__ import annotations

import math

import numpy as np
import pytest
from forest_compare import assert_equal_trees
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_mcts import ReferenceMCTS

from mcts_agent.engine import EngineConfig, SyntheticGame, kernels, search, search_fused
from mcts_agent.engine.kernels import EXPLORE_TABLE
from mcts_agent.engine.synthetic import evaluate_kernel, evaluator

configs = st.builds(
    EngineConfig,
    rule=st.sampled_from(["puct", "uct"]),
    pb_c_init=st.sampled_from([0.0, 1.0, 1.25, 4.0]),
    pb_c_base=st.sampled_from([1.0, 50.0, 19652.0]),
    uct_c=st.sampled_from([0.0, 0.5, 1.4142]),
    virtual_loss=st.sampled_from([0.0, 0.5, 1.0, 3.0]),
    virtual_value=st.sampled_from([-1.0, 0.0, 0.5]),
    widen_c=st.sampled_from([0.0, 0.0, 0.7, 1.5]),
    widen_alpha=st.sampled_from([0.3, 0.5, 1.0]),
    discount=st.sampled_from([1.0, 0.95, 0.5]),
    max_collisions=st.integers(0, 6),
)
games = st.builds(
    SyntheticGame,
    seed=st.integers(0, 2**31),
    branching=st.integers(1, 6),
    max_depth=st.integers(1, 8),
    terminal_prob=st.sampled_from([0.0, 0.1, 0.4]),
    logit_scale=st.sampled_from([0.0, 1.0, 3.0]),
)


def assert_same_trees(forest, reference, num_trees):
    for t in range(num_trees):
        ours = forest.tree_nodes(t)
        theirs = reference.nodes_breadth_first(t)
        assert len(ours) == len(theirs)
        a = forest.nodes
        assert a.visits[ours].tolist() == [x.visits for x in theirs]
        assert a.value_sum[ours].tolist() == [x.value_sum for x in theirs]
        assert a.prior[ours].tolist() == [x.prior for x in theirs]
        assert forest.is_terminal(ours).tolist() == [x.terminal for x in theirs]


@settings(max_examples=80, deadline=None)
@given(
    config=configs,
    game=games,
    num_trees=st.integers(1, 4),
    simulations=st.integers(0, 90),
    k=st.integers(1, 8),
)
def test_engine_matches_reference(config, game, num_trees, simulations, k):
    def check(forest, wave):
        forest.check_invariants()

    forest = search(evaluator(game), simulations, num_trees=num_trees, config=config,
                    leaves_per_call=k, logits=True, on_wave=check)
    reference = ReferenceMCTS(config, game, num_trees).run(simulations, k)
    assert_same_trees(forest, reference, num_trees)


@settings(max_examples=25, deadline=None)
@given(config=configs, game=games, num_trees=st.integers(1, 3), simulations=st.integers(0, 60),
       k=st.integers(1, 8))
def test_fused_matches_stepwise(config, game, num_trees, simulations, k):
    stepwise = search(evaluator(game), simulations, num_trees=num_trees, config=config,
                      leaves_per_call=k, logits=True)
    fused = search_fused(evaluate_kernel, game, game.branching, simulations,
                         num_trees=num_trees, config=config, leaves_per_call=k, logits=True)
    assert_equal_trees(stepwise, fused)


@settings(max_examples=40, deadline=None)
@given(game=games, num_trees=st.integers(1, 4), simulations=st.integers(1, 80),
       k=st.integers(1, 8), virtual_loss=st.sampled_from([0.0, 1.0, 2.0]))
def test_values_stay_in_bounds_and_budgets_are_exact(game, num_trees, simulations, k,
                                                     virtual_loss):
    forest = search(evaluator(game), simulations, num_trees=num_trees, leaves_per_call=k,
                    logits=True, config=EngineConfig(virtual_loss=virtual_loss))
    means = forest.mean_value(np.arange(forest.num_nodes))
    visited = ~np.isnan(means)
    assert ((means[visited] >= 0) & (means[visited] <= 1)).all()
    # every simulation is one visit at the root, on top of the root's own evaluation
    assert forest.nodes.visits[forest.roots].tolist() == [simulations + 1] * num_trees


def test_the_explore_table_holds_the_formula_bit_for_bit():
    config = EngineConfig(pb_c_init=1.25, pb_c_base=50.0)
    params = config.kernel_params()
    factors = [kernels.explore_factor(float(n), 1.25, 50.0) for n in range(EXPLORE_TABLE)]
    assert params[0]["explore"].tolist() == factors
    assert factors[7] == math.sqrt(7) * (1.25 + math.log((7 + 50.0 + 1.0) / 50.0))


def test_the_reciprocal_table_holds_one_over_n_bit_for_bit():
    """PUCT multiplies by ``RECIPROCAL[n]`` where it divided by n, and by ``1 / n`` past the
    table: both must be the same number, or a node's pick would depend on which path took it."""
    assert kernels.RECIPROCAL[1:].tolist() == [1.0 / n for n in range(1, EXPLORE_TABLE)]


def test_each_forest_gets_its_own_copy_of_a_configs_params():
    """The params are worked out once per config and copied: one forest's array is not
    another's."""
    config = EngineConfig(pb_c_init=1.25, pb_c_base=50.0)
    first, second = config.kernel_params(), config.kernel_params()
    assert first.tobytes() == second.tobytes()
    first[0]["explore"][:] = 0.0
    assert second[0]["explore"][7] > 0.0
    assert config.kernel_params()[0]["explore"][7] > 0.0
    assert EngineConfig(pb_c_init=2.0, pb_c_base=50.0).kernel_params()[0]["explore"][7] > (
        config.kernel_params()[0]["explore"][7])


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize(("k", "virtual_loss"), [(1, 1.0), (3, 1.0), (3, 0.5)])
def test_parents_past_the_explore_table_follow_the_formula(k, virtual_loss, fused):
    """The root's visits pass the tables' end (the id-range scans hand such nodes to the
    general loop: ``kernels.SCAN_VISITS``); with a virtual loss of 0.5 counts are fractional,
    never in the tables."""
    game = SyntheticGame(seed=3, branching=3, max_depth=6, terminal_prob=0.1)
    config = EngineConfig(pb_c_base=50.0, virtual_loss=virtual_loss)
    simulations = EXPLORE_TABLE + 300
    if fused:
        forest = search_fused(evaluate_kernel, game, game.branching, simulations, num_trees=1,
                              config=config, leaves_per_call=k, logits=True)
    else:
        forest = search(evaluator(game), simulations, num_trees=1, config=config,
                        leaves_per_call=k, logits=True)
    reference = ReferenceMCTS(config, game, 1).run(simulations, k)
    assert forest.nodes.visits[forest.roots[0]] > EXPLORE_TABLE
    assert_same_trees(forest, reference, 1)
