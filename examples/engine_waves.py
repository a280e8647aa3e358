"""Drive the tree engine a wave at a time, the way the LLM search driver does.

Each wave selects up to K leaves in every tree (virtual loss keeps them apart), "generates"
n candidate steps per leaf in one batch, scores every new child in one batch, then expands,
backs up and releases. Here the "model" is a toy: a step adds 1, 2 or 3 to a running total
and the goal is to reach exactly 10; a critic scores a state by how close it is.

    python examples/engine_waves.py
"""

from __future__ import annotations

import numpy as np

from mcts_agent.engine import EngineConfig, Forest

TARGET, STEPS = 10, (1, 2, 3)


def main(num_trees: int = 4, waves: int = 30, k: int = 4, seed: int = 0) -> Forest:
    rng = np.random.default_rng(seed)
    forest = Forest(EngineConfig(rule="puct", virtual_loss=1.0), num_trees=num_trees)
    for root in forest.roots:
        forest.payload[int(root)] = {"total": 0, "text": ""}
    forest.backup(forest.roots, np.full(num_trees, 0.5))  # the critic's view of each start

    for _ in range(waves):
        leaves = forest.select(k)
        if len(leaves) == 0:
            break
        # one batched "policy call": every leaf proposes the three steps with noisy log-probs
        logprobs = rng.normal(size=(len(leaves), len(STEPS)))
        # environment step for every candidate, then one batched "critic call"
        parents = [forest.payload[int(leaf)] for leaf in leaves.nodes]
        states = [{"total": s["total"] + step, "text": f"{s['text']}+{step}"}
                  for s in parents for step in STEPS]
        totals = np.array([s["total"] for s in states])
        values = np.where(totals == TARGET, 1.0, np.maximum(0, 1 - abs(TARGET - totals) / TARGET))
        children = forest.expand(leaves.nodes, np.full(len(leaves), len(STEPS)),
                                 logprobs.ravel(), logits=True, terminal=totals >= TARGET)
        forest.payload.update(zip(children.tolist(), states, strict=True))
        forest.backup(children, values)
        forest.release(leaves.nodes)
        forest.check_invariants()

    for tree in range(num_trees):
        line = forest.principal_variation(tree)
        state = forest.payload[line[-1]]
        print(f"tree {tree}: {len(forest.tree_nodes(tree))} nodes, most visited line "
              f"{state['text'] or '(root)'} = {state['total']}, root visits "
              f"{forest.root_visits(tree).tolist()}")
    return forest


if __name__ == "__main__":
    main()
