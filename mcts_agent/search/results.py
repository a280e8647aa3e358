"""Finished trees: the `SearchResult` record and the JSONL file a run appends them to."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx

from ..contracts import Task

log = logging.getLogger(__name__)


@dataclass
class SearchResult:
    """One task's finished tree with every node's payload and statistics.

    ``nodes[i]`` describes local node ``i`` (0 = root; parents come before children) with keys
    ``parent``, ``action`` (the step text), ``depth``, ``visits``, ``value`` (mean backed-up
    value), ``prior``, ``logprob``, ``tokens``, ``reward``, ``terminal``, ``critic`` (the
    critic's value), ``feedback``, ``disagreement`` (a hybrid critic's spread), ``answer``
    and ``score`` (the verifier's, data mode only).
    ``solved`` is ground truth: data mode, a verified-correct solution is in the tree;
    inference mode, the chosen ``answer`` is correct (checked after the search, when the task
    has a reference).
    """

    task: Task
    mode: str
    nodes: list[dict[str, Any]]
    answer: str | None
    solved: bool | None
    stats: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["task"] = {**asdict(self.task), "metadata": dict(self.task.metadata)}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchResult:
        return cls(Task(**data["task"]), data["mode"], data["nodes"], data.get("answer"),
                   data.get("solved"), data.get("stats", {}))

    def path_to(self, node: int) -> list[int]:
        """Local node ids from the root to ``node``."""
        path = [node]
        while self.nodes[path[-1]]["parent"] is not None:
            path.append(self.nodes[path[-1]]["parent"])
        return path[::-1]

    def solution_text(self, node: int) -> str:
        """The steps from the root to ``node``, one per line."""
        return "".join(self.nodes[i]["action"] + "\n" for i in self.path_to(node)[1:])

    def to_networkx(self) -> nx.DiGraph:
        graph = nx.DiGraph(task_id=self.task.id, mode=self.mode)
        for i, node in enumerate(self.nodes):
            graph.add_node(i, **node)
            if node["parent"] is not None:
                graph.add_edge(node["parent"], i)
        return graph


class ResultFile:
    """Append-only JSONL of finished trees: each record is flushed to disk as the tree finishes,
    so an interrupted run loses only the trees in flight and resumes where it stopped."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def __iter__(self) -> Iterator[SearchResult]:
        if not self.path.exists():
            return
        with self.path.open() as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield SearchResult.from_dict(json.loads(line))
                except (json.JSONDecodeError, KeyError, TypeError) as err:
                    # typically the last line of a run killed mid-write: that tree is redone
                    log.warning("%s:%d: skipping an unreadable record (%s)", self.path, number, err)

    def done_ids(self) -> set[str]:
        return {result.task.id for result in self}

    def append(self, result: SearchResult) -> None:
        self._drop_partial_last_line()
        with self.path.open("a") as f:
            f.write(json.dumps(result.to_dict(), default=jsonable) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _drop_partial_last_line(self) -> None:
        """A crash mid-write leaves a line without its newline; cut it so the file stays valid."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with self.path.open("rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) == b"\n":
                return
            f.seek(0)
            data = f.read()
            f.truncate(data.rfind(b"\n") + 1)


def jsonable(value: Any) -> Any:
    """``json.dumps``'s fallback for values it cannot write: numpy scalars and arrays as plain
    Python, anything else as its text."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
