"""Typed tree records → the plain JSON the viewer's page draws.

Everything the page shows is decided here, from :class:`~mcts_agent.trees.TreeRecord` s read
through :class:`~mcts_agent.trees.ResultFile`: which line is the principal variation, which
node is the chosen answer, which steps were grafted from rollouts, which leaves are dead ends,
each value's interval. The JavaScript only lays out and draws what it is given.

Nodes are sent as columns (one list per field), which keeps a 10,000-node tree small and
quick to parse.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from ..data.pairs import wilson_interval
from ..trees import NodeRecord, TreeRecord

if TYPE_CHECKING:
    from ..search.baselines import TaskBaseline

TERMINAL, GRAFTED, DEAD_END, ON_PV, CHOSEN = 1, 2, 4, 8, 16
"""Bits of a node's ``flags`` column (the page reads the same numbers)."""

INTERVAL_Z = 1.64
"""z of a value's Wilson interval (as the pair miner's default: ≈ 90 % one-sided)."""


def is_grafted(node: NodeRecord) -> bool:
    """A step grafted into the tree from a finished rollout: it has no tokens of its own (the
    driver adds it with no prior mass and no log-probability)."""
    return node.parent is not None and node.tokens <= 0


def is_dead_end(node: NodeRecord) -> bool:
    """A closed leaf that ends without an answer and without a verified success: a failed
    episode, or a leaf from which no usable step came back."""
    return node.terminal and node.answer is None and not (node.score or 0) > 0


def principal_variation(record: TreeRecord, children: Sequence[Sequence[int]]) -> list[int]:
    """The most visited line from the root (ties to the higher value, then the older node)."""
    def key(j: int) -> tuple[int, float, int]:
        node = record.nodes[j]
        return node.visits, -1.0 if node.value is None else node.value, -j

    line = [0]
    while children[line[-1]]:
        line.append(max(children[line[-1]], key=key))
    return line


def chosen_node(record: TreeRecord) -> int | None:
    """The node whose answer the tree gave: the discriminator's pick, else (data mode) the
    first verified solution, else the most visited finished node with the tree's answer."""
    if record.stats.chosen_node is not None and 0 <= record.stats.chosen_node < len(
            record.nodes):
        return record.stats.chosen_node
    nodes = record.nodes
    if record.mode == "data":
        verified = next((i for i, n in enumerate(nodes) if n.score == 1.0), None)
        if verified is not None:
            return verified
    if record.answer is None:
        return None
    finished = [i for i, n in enumerate(nodes) if n.terminal and n.answer == record.answer]
    return max(finished, key=lambda i: (nodes[i].visits, -i), default=None)


def _round(value: float | None, digits: int = 4) -> float | None:
    """Rounded for the page; None for a missing or non-finite number (JSON has no inf)."""
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)


def node_columns(record: TreeRecord) -> dict[str, list[Any]]:
    """Every node's fields as columns, plus ``flags`` (the bits above) and the value's
    interval (``lo``, ``hi``)."""
    nodes = record.nodes
    children = record.children()
    pv = set(principal_variation(record, children))
    chosen = chosen_node(record)
    flags = []
    lo, hi = [], []
    for i, n in enumerate(nodes):
        flags.append((TERMINAL if n.terminal else 0) | (GRAFTED if is_grafted(n) else 0)
                     | (DEAD_END if is_dead_end(n) else 0) | (ON_PV if i in pv else 0)
                     | (CHOSEN if i == chosen else 0))
        low, high = (None, None) if n.value is None else wilson_interval(
            n.value, n.visits, INTERVAL_Z)
        lo.append(_round(low, 3))
        hi.append(_round(high, 3))
    return {
        "parent": [n.parent for n in nodes],
        "action": [n.action for n in nodes],
        "visits": [n.visits for n in nodes],
        "value": [_round(n.value) for n in nodes],
        "lo": lo, "hi": hi,
        "prior": [_round(n.prior) for n in nodes],
        "logprob": [_round(n.logprob) for n in nodes],
        "tokens": [n.tokens for n in nodes],
        "reward": [_round(n.reward) for n in nodes],
        "critic": [_round(n.critic) for n in nodes],
        "disagreement": [_round(n.disagreement) for n in nodes],
        "feedback": [n.feedback for n in nodes],
        "explanation": [n.explanation for n in nodes],
        "components": [None if n.components is None else
                       {name: _round(v) for name, v in n.components.items()} for n in nodes],
        "answer": [n.answer for n in nodes],
        "score": [_round(n.score) for n in nodes],
        "flags": flags,
    }


def tree_view(record: TreeRecord, pairs: Iterable[Mapping[str, Any]] = (),
              splices: Iterable[Mapping[str, Any]] = (),
              observations: Mapping[int, str] | None = None,
              baseline: TaskBaseline | None = None) -> dict[str, Any]:
    """One task's tree as the page draws it; ``pairs`` / ``splices``: the run's mined rows
    for this task; ``observations``: what the environment answered after each node (agents);
    ``baseline``: what greedy and best-of-N answered on the task."""
    stats = record.stats
    return {
        "id": record.task.id,
        "problem": record.task.problem,
        "reference": _text(record.task.reference),
        "mode": record.mode,
        "status": record.status,
        "solved": record.solved,
        "answer": record.answer,
        "stats": {"nodes": len(record.nodes), "expansions": stats.expansions,
                  "tokens": stats.tokens, "waves": stats.waves,
                  "seconds": round(stats.seconds, 3), "counts": dict(stats.counts),
                  "first_error": stats.first_error},
        "pv": principal_variation(record, record.children()),
        "chosen": chosen_node(record),
        "nodes": node_columns(record),
        "pairs": [pair_view(row) for row in pairs],
        "splices": [splice_view(row) for row in splices],
        "observations": {str(k): v for k, v in (observations or {}).items()},
        "baseline": None if baseline is None else asdict(baseline),
    }


def pair_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """A preference pair's provenance: the siblings' node ids, margin and confidence."""
    return {"parent": row.get("parent_node"), "chosen": row.get("chosen_node"),
            "rejected": row.get("rejected_node"), "margin": _round(row.get("margin"), 3),
            "confidence": _round(row.get("confidence"), 3), "depth": row.get("depth")}


def splice_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """An Agent-R splice: where the trajectories part, the bad and the good end, the
    revision turn."""
    return {"branch": row.get("branch_node"), "bad": row.get("bad_node"),
            "good": row.get("good_node"), "bad_turns": row.get("bad_turns"),
            "bad_value": _round(row.get("bad_value"), 3),
            "good_value": _round(row.get("good_value"), 3), "revision": row.get("revision")}


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else _short_json(value)


def _short_json(value: Any, limit: int = 4000) -> str:
    import json

    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + " …"
