"""The engine against DeepMind's mctx itself: ``mctx.muzero_policy`` and our PUCT on one game.

``test_mctx_rule.py`` checks the engine against mctx's rule written out from its documentation;
this module runs the real library (jax on the CPU) on the same table-driven game: its
``recurrent_fn`` reads the very tables our evaluator reads (through ``jax.pure_callback``), and
the root visit counts and Q values must agree for several seeds, sizes and discounts. mctx
computes in float32 and breaks ties with 1e-7 noise, so Q values agree to float32 precision and
the games here have no exact ties.
"""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="mctx runs on jax: pip install jax mctx (CPU wheels)")
mctx = pytest.importorskip("mctx", reason="pip install mctx to compare with DeepMind's mctx")
jnp = jax.numpy

from test_mctx_rule import MCTX, Table, table_evaluator  # noqa: E402

from mcts_agent.engine import EngineConfig, Forest, search  # noqa: E402


def recurrent_game(tables: list[Table], simulations: int, discount: float):
    """The tables as mctx's (root, recurrent_fn): an embedding is the action path so far."""
    batch, branching = len(tables), tables[0].branching
    depth = simulations + 2

    def evaluate(paths: np.ndarray, lengths: np.ndarray):
        out = [tables[b](tuple(int(a) for a in paths[b, :lengths[b]])) for b in range(batch)]
        return (np.asarray([o[0] for o in out], np.float32),
                np.asarray([o[1] for o in out], np.float32),
                np.asarray([o[2] for o in out], np.float32))

    shapes = (jax.ShapeDtypeStruct((batch, branching), jnp.float32),
              jax.ShapeDtypeStruct((batch,), jnp.float32),
              jax.ShapeDtypeStruct((batch,), jnp.float32))

    def recurrent_fn(params, rng, action, embedding):
        paths, lengths = embedding
        paths = paths.at[jnp.arange(batch), lengths].set(action)
        lengths = lengths + 1
        logits, values, rewards = jax.pure_callback(evaluate, shapes, paths, lengths)
        output = mctx.RecurrentFnOutput(reward=rewards, discount=jnp.full(batch, discount),
                                        prior_logits=logits, value=values)
        return output, (paths, lengths)

    start = (jnp.zeros((batch, depth), jnp.int32), jnp.zeros(batch, jnp.int32))
    logits, values, _ = evaluate(np.zeros((batch, depth), np.int32), np.zeros(batch, np.int32))
    root = mctx.RootFnOutput(prior_logits=jnp.asarray(logits), value=jnp.asarray(values),
                             embedding=start)
    return root, recurrent_fn


def mctx_search(tables: list[Table], simulations: int, discount: float):
    """mctx's ``muzero_policy`` on ``tables`` (no root noise): root visits and Q values."""
    root, recurrent_fn = recurrent_game(tables, simulations, discount)
    out = mctx.muzero_policy(
        params=(), rng_key=jax.random.PRNGKey(0), root=root, recurrent_fn=recurrent_fn,
        num_simulations=simulations, dirichlet_fraction=0.0,
        pb_c_init=MCTX["pb_c_init"], pb_c_base=MCTX["pb_c_base"])
    summary = out.search_tree.summary()
    return np.asarray(summary.visit_counts), np.asarray(summary.qvalues)


def engine_search(tables: list[Table], simulations: int, discount: float):
    config = EngineConfig(rule="puct", discount=discount, **MCTX)
    forest = search(table_evaluator(tables), simulations,
                    forest=Forest(config, len(tables)), leaves_per_call=1, logits=True)
    visits = np.stack([forest.root_visits(t) for t in range(len(tables))])
    q = np.stack([forest.q_values(forest.children(int(root))) for root in forest.roots])
    return visits, q


@pytest.mark.parametrize(("seed", "trees", "branching", "simulations", "discount", "rewards"), [
    (0, 1, 4, 64, 1.0, False),
    (1, 4, 3, 200, 1.0, False),
    (2, 3, 6, 150, 0.97, True),
    (3, 2, 8, 300, 0.5, True),
    (4, 8, 5, 100, 0.0, True),
])
def test_root_visits_and_q_values_match_mctx(seed, trees, branching, simulations, discount,
                                               rewards):
    tables = [Table(seed, t, branching, rewards) for t in range(trees)]
    theirs_visits, theirs_q = mctx_search(tables, simulations, discount)
    ours_visits, ours_q = engine_search(tables, simulations, discount)
    np.testing.assert_array_equal(ours_visits, theirs_visits)
    visited = ours_visits > 0
    np.testing.assert_allclose(ours_q[visited], theirs_q[visited], rtol=1e-4, atol=1e-5)
    # not vacuous: the search preferred some actions over others
    assert (theirs_visits.max(axis=1) > 2 * np.median(theirs_visits, axis=1)).any()
