"""Hand-built tree records for tests: nodes with plain defaults, and edits of frozen records."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from mcts_agent.trees import NodeRecord, TreeRecord


def node(parent: int | None = None, action: str = "", depth: int = 0, *, visits: int = 1,
         value: float | None = 0.5, prior: float = 0.5, logprob: float = -1.0, tokens: int = 5,
         reward: float = 0.0, terminal: bool = False, **optional: Any) -> NodeRecord:
    """A node; ``optional``: critic, feedback, disagreement, answer, score."""
    return NodeRecord(parent, action, depth, visits, value, prior, logprob, tokens, reward,
                      terminal, **optional)


def with_node(record: TreeRecord, i: int, **changes: Any) -> TreeRecord:
    """``record`` with node ``i`` changed."""
    nodes = list(record.nodes)
    nodes[i] = replace(nodes[i], **changes)
    return replace(record, nodes=tuple(nodes))
