"""Large made-up trees for measuring the viewer (``bench/viewer.py``, the browser tests).

A :class:`~mcts_agent.trees.TreeRecord` of any size whose shape looks like a search's: wide
near the root, visits concentrated on a few lines, some finished leaves verified right or
wrong, some grafted steps and dead ends. Deterministic for a seed.
"""

from __future__ import annotations

import random

from ..contracts import Task
from ..trees import NodeRecord, TreeRecord, TreeStats


def synthetic_record(nodes: int = 10_000, *, seed: int = 0, task_id: str = "synthetic-0",
                     branching: int = 6, max_depth: int = 14) -> TreeRecord:
    """A finished data-mode tree of exactly ``nodes`` nodes."""
    rng = random.Random(seed)
    parents: list[int | None] = [None]
    depth = [0]
    open_nodes = [0]
    while len(parents) < nodes:
        # favour deep, popular lines like a search does: pick from the newest nodes more often
        at = open_nodes[min(len(open_nodes) - 1, int(rng.expovariate(1 / 40)))] if rng.random(
            ) < 0.7 else rng.choice(open_nodes)
        for _ in range(rng.randint(1, branching)):
            if len(parents) >= nodes:
                break
            parents.append(at)
            depth.append(depth[at] + 1)
            if depth[-1] < max_depth:
                open_nodes.insert(0, len(parents) - 1)
        open_nodes.remove(at)
        if not open_nodes:
            open_nodes = [len(parents) - 1]
    return _record(parents, depth, rng, task_id)


def _record(parents: list[int | None], depth: list[int], rng: random.Random,
            task_id: str) -> TreeRecord:
    n = len(parents)
    has_children = [False] * n
    for p in parents[1:]:
        has_children[p] = True  # type: ignore[index]
    visits, value_sum = [0] * n, [0.0] * n
    leaf_value = {}
    for i in range(n - 1, -1, -1):
        if not has_children[i]:
            leaf_value[i] = rng.choice((0.0, 0.0, 1.0, rng.random()))
            visits[i] += 1
            value_sum[i] += leaf_value[i]
        if parents[i] is not None:
            visits[parents[i]] += visits[i]  # type: ignore[index]
            value_sum[parents[i]] += value_sum[i]  # type: ignore[index]
    records = []
    for i in range(n):
        leaf = not has_children[i]
        terminal = leaf and rng.random() < 0.6
        score = leaf_value[i] if terminal and leaf_value[i] in (0.0, 1.0) else None
        grafted = i > 0 and rng.random() < 0.03
        action = "" if i == 0 else f"Step {depth[i]}: x{i} = {i % 97}+{i % 13}"
        records.append(NodeRecord(
            parent=parents[i], action=action, depth=depth[i], visits=visits[i],
            value=value_sum[i] / visits[i], prior=rng.random(),
            logprob=0.0 if grafted else -rng.random() * 8,
            tokens=0 if grafted else rng.randint(4, 30),
            reward=0.0, terminal=terminal, critic=rng.random(),
            answer=str(i % 50) if score is not None else None, score=score))
    task = Task(task_id, f"A synthetic tree of {n} nodes", reference="7")
    return TreeRecord(task, "data", tuple(records), answer=None, solved=False,
                      stats=TreeStats(nodes=n, expansions=n // 4, tokens=sum(
                          r.tokens for r in records), waves=n // 32))
