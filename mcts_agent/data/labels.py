"""Nodes of finished trees labelled by verified outcomes: the ground truth critics are
measured (``mcts-agent eval-critic``) and hybrid weights fitted (``fit-hybrid``) against.

A finished node's label is the verifier's verdict (the task's reference answer). An unfinished
node's label is whether a verified-correct finished node lies below it in the tree — Math-
Shepherd's "hard" estimate with the tree's own continuations as the samples; a node with no
finished node below it has no evidence and is left out (counted as ``unlabelled``).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from ..contracts import CriticInput, Environment, checked_score, final_answer
from ..trees import ReplayedTree, ReplayError, TreeRecord, replay_failed, replay_trees


@dataclass(frozen=True)
class LabelledNode:
    """One node as a critic would see it, its verified label, and what the search said of
    it (``value``: the backed-up mean; ``critic``: the search critic's own value)."""

    input: CriticInput
    label: bool
    task_id: str
    node: int
    depth: int
    terminal: bool
    value: float | None
    critic: float | None

    @property
    def failed(self) -> bool:
        """A finished episode without an answer: decided without any reference."""
        return self.terminal and final_answer(self.input.environment, self.input.state) is None


def labelled_nodes(
    results: Iterable[TreeRecord],
    env: Environment,
    *,
    max_per_tree: int | None = None,
    seed: int = 0,
    counts: Counter | None = None,
) -> list[LabelledNode]:
    """Every labelled non-root node of ``results`` (at most ``max_per_tree`` per tree, drawn
    at random with ``seed``), in tree order. Trees of tasks without a reference are skipped
    and counted (``no_reference``)."""
    counts = Counter() if counts is None else counts
    rng = random.Random(seed)
    out: list[LabelledNode] = []
    for tree in replay_trees(results, env, counts):
        task = tree.record.task
        if task.reference is None:
            counts["no_reference"] += 1
            continue
        try:
            correct = _verified_below(tree, env)
        except ReplayError as err:  # a step that replayed once but not twice: skip the tree
            replay_failed(task.id, err, counts)
            continue
        ids = [i for i in range(1, len(tree.nodes)) if correct[i] is not None]
        counts["unlabelled"] += len(tree.nodes) - 1 - len(ids)
        if max_per_tree is not None and len(ids) > max_per_tree:
            ids = sorted(rng.sample(ids, max_per_tree))
        for i in ids:
            node = tree.nodes[i]
            out.append(LabelledNode(
                CriticInput(task, env, tree.state(i), node.terminal), bool(correct[i]),
                task.id, i, node.depth, node.terminal, node.value, node.critic))
        counts["nodes"] += len(ids)
    return out


def _verified_below(tree: ReplayedTree, env: Environment) -> list[bool | None]:
    """Per node: True if a verified-correct finished node is at or below it, False if
    finished nodes are below it but none is correct, None if none is finished."""
    nodes = tree.nodes
    label: list[bool | None] = [None] * len(nodes)
    for i in range(len(nodes) - 1, 0, -1):  # parents come before children
        if nodes[i].terminal:
            score = checked_score(env, tree.state(i), tree.record.task)
            label[i] = score == 1.0 or bool(label[i])
        parent = nodes[i].parent
        if label[i] is not None and parent is not None:
            label[parent] = bool(label[parent]) or label[i]
    return label
