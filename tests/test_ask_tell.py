"""The ask/tell API: the engine hands out leaves, the caller's loop tells evaluations back.

Reference: :func:`mcts_agent.engine.search`, the engine's own wave loop. Told in the order asked,
one batch at a time, ask/tell must build its trees node for node; told in any order, from
several threads, every leaf must count exactly once.
"""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest

from mcts_agent.engine import AskTell, EngineConfig, Leaf, SyntheticGame, search
from mcts_agent.engine.synthetic import evaluator

GAME = SyntheticGame(seed=3, branching=4, max_depth=6, terminal_prob=0.2)
CONFIG = EngineConfig(widen_c=1.0, widen_alpha=0.5)


def evaluate_one(search_: AskTell, leaf: Leaf) -> tuple[np.ndarray, float, bool]:
    """The synthetic game's evaluation of one leaf (priors row, value, terminal)."""
    out = evaluator(GAME)(search_.forest, np.array([leaf.node]), None)
    return out.priors[0], float(out.values[0]), bool(out.terminal[0])


def tell(search_: AskTell, leaf: Leaf) -> None:
    priors, value, terminal = evaluate_one(search_, leaf)
    search_.tell(leaf, priors, value, terminal=terminal)


def arrays(forest) -> dict[str, np.ndarray]:
    n = forest.num_nodes
    return {name: getattr(forest.nodes, name)[:n].copy()
            for name in ("parent", "visits", "value_sum", "prior", "flags", "num_children")}


@pytest.mark.parametrize(("trees", "sims", "k"), [(1, 40, 1), (5, 60, 4), (8, 30, 8)])
def test_told_in_order_it_builds_the_engine_search_trees(trees, sims, k):
    want = search(evaluator(GAME), sims, num_trees=trees, config=CONFIG, leaves_per_call=k,
                  logits=True)
    search_ = AskTell(sims, num_trees=trees, config=CONFIG, max_pending=k, logits=True)
    while not search_.done:
        leaves = search_.ask()
        assert leaves, "nothing pending, so an empty ask would mean the search is done"
        for leaf in leaves:
            tell(search_, leaf)
    got = arrays(search_.forest)
    for name, array in arrays(want).items():
        np.testing.assert_array_equal(got[name], array, err_msg=name)


def test_any_order_from_threads_counts_every_leaf_once():
    trees, sims, k = 6, 50, 4
    search_ = AskTell(sims, num_trees=trees, config=CONFIG, max_pending=k, logits=True)
    outstanding: list[Leaf] = []
    lock = threading.Lock()
    rng = random.Random(0)
    handed = 0
    while not search_.done:
        leaves = search_.ask()
        handed += len(leaves)
        counts = np.bincount([leaf.tree for leaf in leaves], minlength=trees)
        assert counts.max(initial=0) <= k  # at most max_pending per tree at once
        outstanding.extend(leaves)
        rng.shuffle(outstanding)
        batch, outstanding[:] = outstanding[: len(outstanding) // 2 + 1], \
            outstanding[len(outstanding) // 2 + 1:]
        workers = [threading.Thread(target=tell, args=(search_, leaf)) for leaf in batch]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        with lock:
            search_.forest.check_invariants(expect_no_pending=False)
    forest = search_.forest
    forest.check_invariants()
    # each tree: its root evaluation plus num_simulations (leaves told + terminal revisits)
    assert forest.nodes.visits[forest.roots].tolist() == [sims + 1] * trees
    assert handed <= trees * (sims + 1)


def test_a_leaf_counts_once():
    search_ = AskTell(10, num_trees=2, config=CONFIG, max_pending=2, logits=True)
    [first, second] = search_.ask()
    tell(search_, first)
    with pytest.raises(ValueError, match="already told, or was never handed out"):
        tell(search_, first)
    with pytest.raises(ValueError, match="counts once"):
        search_.tell(Leaf(99, 0, first.node), np.zeros(GAME.branching), 0.5)
    assert search_.pending == 1
    tell(search_, second)
    assert search_.pending == 0


def test_max_pending_and_max_leaves_bound_what_goes_out():
    search_ = AskTell(20, num_trees=3, config=CONFIG, max_pending=2, logits=True)
    roots = search_.ask(max_leaves=2)
    assert [leaf.tree for leaf in roots] == [0, 1]  # roots first, capped
    roots += search_.ask()
    assert sorted(leaf.node for leaf in roots) == search_.forest.roots.tolist()
    assert search_.ask() == []  # no root evaluated yet: nothing else can go out
    for leaf in roots:
        tell(search_, leaf)
    leaves = search_.ask(max_leaves=3)
    assert len(leaves) == 3
    leaves += search_.ask()
    assert np.bincount([leaf.tree for leaf in leaves]).tolist() == [2, 2, 2]
    assert search_.ask() == []  # every tree has max_pending out
    tell(search_, leaves[0])
    assert [leaf.tree for leaf in search_.ask()] == [leaves[0].tree]


def test_an_empty_ask_with_nothing_out_means_the_search_is_done():
    """ask() may itself spend a tree's last simulations on terminal revisits (no leaf for
    them) and so finish the search: an empty answer with nothing pending is the end, even when
    done was false just before the call (a loop must check done again, not wait)."""
    game = SyntheticGame(seed=0, branching=4, max_depth=8, terminal_prob=0.1)
    evaluate = evaluator(game)
    finished_by_ask = 0
    for seed in range(120):
        rng = random.Random(seed)
        search_ = AskTell(num_simulations=48, num_trees=6, max_pending=4, logits=True)
        out: list[Leaf] = []
        while not search_.done:
            out += search_.ask()
            if not out:
                assert search_.done and search_.pending == 0
                finished_by_ask += 1
                break
            rng.shuffle(out)  # answers arrive in any order, some at a time
            cut = rng.randint(1, len(out))
            for leaf in out[:cut]:
                e = evaluate(search_.forest, np.array([leaf.node]), None)
                search_.tell(leaf, e.priors[0], float(e.values[0]), terminal=bool(e.terminal[0]))
            out = out[cut:]
    assert finished_by_ask > 0  # the case the example once missed does occur
