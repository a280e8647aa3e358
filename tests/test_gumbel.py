"""Gumbel MuZero search against DeepMind's mctx ``gumbel_muzero_policy`` itself.

mctx draws the root's Gumbel noise from its key; the test draws the same noise from the same
key and hands it to our search, and both search the same table-driven game (mctx reads it
through ``jax.pure_callback``). Root visit counts, the recommended action and the improved
policy must agree.
"""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="mctx runs on jax: pip install jax mctx (CPU wheels)")
mctx = pytest.importorskip("mctx", reason="pip install mctx to compare with DeepMind's mctx")
jnp = jax.numpy

from test_mctx_itself import recurrent_game  # noqa: E402
from test_mctx_rule import Table, table_evaluator  # noqa: E402

from mcts_agent.engine import EngineConfig, gumbel_search  # noqa: E402
from mcts_agent.engine.gumbel import considered_visits  # noqa: E402


def mctx_gumbel(tables, simulations, discount, considered, key):
    root, recurrent_fn = recurrent_game(tables, simulations, discount)
    out = mctx.gumbel_muzero_policy(params=(), rng_key=key, root=root,
                                    recurrent_fn=recurrent_fn, num_simulations=simulations,
                                    max_num_considered_actions=considered)
    _, gumbel_key = jax.random.split(key)  # as gumbel_muzero_policy draws its noise
    gumbel = jax.random.gumbel(gumbel_key, shape=root.prior_logits.shape, dtype=jnp.float32)
    summary = out.search_tree.summary()
    return (np.asarray(summary.visit_counts), np.asarray(out.action),
            np.asarray(out.action_weights), np.asarray(gumbel))


@pytest.mark.parametrize(("seed", "trees", "branching", "simulations", "discount", "considered"), [
    (0, 1, 4, 16, 1.0, 16),
    (1, 4, 8, 32, 1.0, 4),
    (2, 3, 6, 50, 0.97, 16),
    (3, 2, 16, 64, 0.9, 8),
    (4, 5, 3, 20, 1.0, 2),
])
def test_gumbel_search_matches_mctx(seed, trees, branching, simulations, discount, considered):
    tables = [Table(seed, t, branching, rewards=discount < 1) for t in range(trees)]
    visits, action, weights, gumbel = mctx_gumbel(tables, simulations, discount, considered,
                                                  jax.random.PRNGKey(seed))
    forest, policies = gumbel_search(
        table_evaluator(tables), simulations, num_trees=trees,
        config=EngineConfig(discount=discount), max_num_considered_actions=considered,
        gumbel=gumbel)
    ours = np.stack([forest.root_visits(t) for t in range(trees)])
    np.testing.assert_array_equal(ours, visits)
    assert [p.action for p in policies] == action.tolist()
    np.testing.assert_allclose(np.stack([p.weights for p in policies]), weights, atol=1e-5)


def test_sequential_halving_table_is_mctxs():
    from mctx._src import seq_halving

    for m, n in [(16, 50), (4, 7), (2, 64), (1, 5), (8, 1)]:
        assert considered_visits(m, n).tolist() == [
            list(row) for row in seq_halving.get_table_of_considered_visits(m, n)]


def test_few_simulations_spread_over_the_considered_actions():
    tables = [Table(9, 0, 8, rewards=False)]
    forest, [policy] = gumbel_search(table_evaluator(tables), 4, num_trees=1,
                                     max_num_considered_actions=4, seed=1)
    assert sorted(forest.root_visits(0).tolist()) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert forest.root_visits(0)[policy.action] == 1
    assert policy.weights.sum() == pytest.approx(1.0)
