"""Bring your own model loop: the engine hands out leaves, your loop tells evaluations back.

    python examples/ask_tell.py

Here the "model" is an asyncio service that answers each leaf after a random delay (a server
under load), and each answer is told to the engine the moment it arrives, in whatever order.
Each tree keeps up to ``max_pending`` leaves out at once (virtual loss keeps them apart);
every leaf counts once. The evaluation itself comes from the synthetic game that ships with the
engine: swap in your own policy/value network.
"""

from __future__ import annotations

import asyncio
import random

import numpy as np

from mcts_agent.engine import AskTell, Leaf, SyntheticGame
from mcts_agent.engine.synthetic import evaluator

GAME = SyntheticGame(seed=0, branching=4, max_depth=8, terminal_prob=0.1)
evaluate = evaluator(GAME)


async def model(search: AskTell, leaf: Leaf, rng: random.Random):
    """Your model: priors over the leaf's next actions (log-probabilities), its value."""
    await asyncio.sleep(rng.uniform(0.0, 0.005))  # the server's latency
    out = evaluate(search.forest, np.array([leaf.node]), None)
    return leaf, out.priors[0], float(out.values[0]), bool(out.terminal[0])


async def main() -> None:
    search = AskTell(num_simulations=48, num_trees=6, max_pending=4, logits=True)
    rng = random.Random(0)
    running: set[asyncio.Task] = set()
    told = 0
    while not search.done:
        running |= {asyncio.create_task(model(search, leaf, rng)) for leaf in search.ask()}
        if not running:  # ask() itself spent the last budget on terminal revisits: done
            continue
        finished, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
        for task in finished:  # in order of arrival, not of asking
            leaf, priors, value, terminal = task.result()
            search.tell(leaf, priors, value, terminal=terminal)
            told += 1
    forest = search.forest
    forest.check_invariants()
    print(f"{told} evaluations told back in order of arrival; {forest.num_nodes} nodes")
    for tree in range(forest.num_trees):
        visits = forest.root_visits(tree)
        path = forest.principal_variation(tree)
        print(f"tree {tree}: root visits {int(forest.nodes.visits[forest.roots[tree]])}, "
              f"per action {visits.tolist()}, principal variation depth {len(path) - 1}")


if __name__ == "__main__":
    asyncio.run(main())
