"""Finished trees as typed records: what ``search`` writes and everything else reads.

A :class:`TreeRecord` is one task's finished tree: its :class:`NodeRecord` s (parents before
children), the answer, the verdict, :class:`TreeStats` and how the search ended
(``status``). Records are frozen and versioned (``schema``); :meth:`TreeRecord.from_json`
validates a stored record, so a bad line of ``trees.jsonl`` is a counted skip with its line
number, never a ``KeyError`` three modules later. :class:`ResultFile` is the append-only
JSONL file of a run; :class:`ReplayedTree` replays a record's states in an environment (what
``pairs``, ``splice``, labels and critic evaluation share).

Pure Python (networkx is imported by :meth:`TreeRecord.to_networkx` only).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .contracts import Environment, Prompt, Task
from .errors import RecordError, UserError

if TYPE_CHECKING:
    import networkx as nx

log = logging.getLogger(__name__)

SCHEMA = 2
"""Version of the record layout. 1: the first wave's plain dicts (read and upgraded)."""

Mode = Literal["data", "inference"]
Status = Literal["finished", "context_overflow", "environment_error"]
STATUSES: tuple[str, ...] = ("finished", "context_overflow", "environment_error")
"""finished: the search ran to a budget, a solution or convergence; context_overflow: the
root's prompt does not fit the model's context; environment_error: every step raised."""


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """One node of a finished tree.

    ``parent`` (None for the root), ``action`` (the step text), ``depth``, ``visits``,
    ``value`` (mean backed-up value; None if never visited), ``prior``, ``logprob`` (summed
    over the step's tokens), ``tokens``, ``reward`` (on the edge into it), ``terminal``,
    ``critic`` (the critic's value), ``feedback`` (its text), ``disagreement`` (a hybrid
    critic's spread), ``answer`` (of a finished state), ``score`` (the verifier's, data
    mode), ``explanation`` (a judge's reasoning) and ``components`` (a hybrid critic's value
    from each of its critics, by name)."""

    parent: int | None
    action: str
    depth: int
    visits: int
    value: float | None
    prior: float
    logprob: float
    tokens: int
    reward: float
    terminal: bool
    critic: float | None = None
    feedback: str | None = None
    disagreement: float | None = None
    answer: str | None = None
    score: float | None = None
    explanation: str | None = None
    components: dict[str, float] | None = None

    @property
    def rate(self) -> float | None:
        """What the node is worth: a verified terminal's score, else its backed-up value."""
        return self.score if self.terminal and self.score is not None else self.value


@dataclass(frozen=True)
class TreeStats:
    """What a tree cost and how the search went. ``counts``: events by name
    (``empty_steps``, ``duplicate_steps``, ``environment_errors``, ``invalid_actions``,
    ``grafted_steps``, ``context_overflow`` …); ``chosen_node``: the finished node a
    discriminator picked (inference mode)."""

    nodes: int = 0
    expansions: int = 0
    tokens: int = 0
    waves: int = 0
    seconds: float = 0.0
    chosen_node: int | None = None
    counts: Mapping[str, int] = field(default_factory=dict)
    first_error: str | None = None  # the first exception the environment raised on a step


@dataclass(frozen=True)
class TreeRecord:
    """One task's finished tree (see the module docstring).

    ``solved`` is ground truth: data mode, a verified-correct solution is in the tree;
    inference mode, the chosen ``answer`` is correct (checked after the search, when the task
    has a reference); None when it cannot be judged."""

    task: Task
    mode: Mode
    nodes: tuple[NodeRecord, ...]
    answer: str | None
    solved: bool | None
    stats: TreeStats = field(default_factory=TreeStats)
    status: Status = "finished"
    fingerprint: str = ""  # the task's content hash when searched (set from the task if empty)
    schema: int = SCHEMA

    def __post_init__(self) -> None:
        if not self.fingerprint:
            object.__setattr__(self, "fingerprint", self.task.fingerprint)

    # ------------------------------------------------------------------ structure

    def children(self) -> list[list[int]]:
        """Child ids of every node, in creation order."""
        out: list[list[int]] = [[] for _ in self.nodes]
        for i, node in enumerate(self.nodes):
            if node.parent is not None:
                out[node.parent].append(i)
        return out

    def path_to(self, node: int) -> list[int]:
        """Node ids from the root to ``node``."""
        path = [node]
        while (parent := self.nodes[path[-1]].parent) is not None:
            path.append(parent)
        return path[::-1]

    def solution_text(self, node: int) -> str:
        """The steps from the root to ``node``, one per line."""
        return "".join(self.nodes[i].action + "\n" for i in self.path_to(node)[1:])

    def to_networkx(self) -> nx.DiGraph:
        import networkx as nx

        graph = nx.DiGraph(task_id=self.task.id, mode=self.mode, status=self.status)
        for i, node in enumerate(self.nodes):
            graph.add_node(i, **asdict(node))
            if node.parent is not None:
                graph.add_edge(node.parent, i)
        return graph

    # ------------------------------------------------------------------ storage

    def to_json(self) -> dict[str, Any]:
        task = self.task
        return {
            "schema": self.schema, "status": self.status,
            "task": {"id": task.id, "problem": task.problem, "reference": task.reference,
                     "metadata": dict(task.metadata), "fingerprint": self.fingerprint},
            "mode": self.mode, "answer": self.answer, "solved": self.solved,
            "stats": {**asdict(self.stats), "counts": dict(self.stats.counts)},
            "nodes": [[getattr(n, f) for f in NODE_FIELDS] for n in self.nodes],
            "node_fields": list(NODE_FIELDS),
        }

    @classmethod
    def from_json(cls, data: Any) -> TreeRecord:
        """A record from its JSON form (any schema this version reads); :class:`RecordError`
        says what is wrong with a record that is not one."""
        if not isinstance(data, dict):
            raise RecordError(f"a tree record is a JSON object, got {type(data).__name__}")
        schema = data.get("schema", 1)
        if schema not in (1, SCHEMA):
            raise RecordError(f"record schema {schema!r} is not one this version reads "
                              f"(1–{SCHEMA}); upgrade mcts-agent")
        task_data = _field(data, "task", dict)
        task = Task(_field(task_data, "id", str), _field(task_data, "problem", str),
                    task_data.get("reference"), _field(task_data, "metadata", dict, {}))
        mode = _field(data, "mode", str)
        if mode not in ("data", "inference"):
            raise RecordError(f"mode must be data or inference, got {mode!r}")
        status = data.get("status", "finished")
        if status not in STATUSES:
            raise RecordError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
        nodes = _nodes(data, schema)
        solved = data.get("solved")
        if solved is not None and not isinstance(solved, bool):
            raise RecordError(f"solved must be true, false or null, got {solved!r}")
        answer = data.get("answer")
        if answer is not None and not isinstance(answer, str):
            answer = str(answer)
        return cls(task, mode, nodes, answer, solved,  # type: ignore[arg-type]
                   _stats(data.get("stats", {})), status,
                   str(task_data.get("fingerprint") or ""), SCHEMA)


NODE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(NodeRecord))
_NODE_TYPES: dict[str, tuple[type, ...]] = {
    "parent": (int, type(None)), "action": (str,), "depth": (int,), "visits": (int,),
    "value": (float, int, type(None)), "prior": (float, int), "logprob": (float, int),
    "tokens": (int,), "reward": (float, int), "terminal": (bool,),
    "critic": (float, int, type(None)), "feedback": (str, type(None)),
    "disagreement": (float, int, type(None)), "answer": (str, type(None)),
    "score": (float, int, type(None)), "explanation": (str, type(None)),
    "components": (dict, type(None)),
}
_OPTIONAL_NODE_FIELDS = {"critic", "feedback", "disagreement", "answer", "score", "explanation",
                         "components"}
_FLOATS = {"value", "prior", "logprob", "reward", "critic", "disagreement", "score"}


def _field(data: dict, key: str, kind: type, default: Any = ...) -> Any:
    if key not in data:
        if default is not ...:
            return default
        raise RecordError(f"missing field {key!r}")
    value = data[key]
    if not isinstance(value, kind):
        raise RecordError(f"{key!r} must be a {kind.__name__}, got {type(value).__name__}")
    return value


def _nodes(data: dict, schema: int) -> tuple[NodeRecord, ...]:
    raw = _field(data, "nodes", list)
    if not raw:
        raise RecordError("a tree has at least its root node")
    names = data.get("node_fields", NODE_FIELDS) if schema >= 2 else None
    nodes: list[NodeRecord] = []
    for i, item in enumerate(raw):
        if names is not None and isinstance(item, list):
            if len(item) != len(names):
                raise RecordError(f"node {i} has {len(item)} values for {len(names)} fields")
            item = dict(zip(names, item, strict=True))
        if not isinstance(item, dict):
            raise RecordError(f"node {i} must be an object, got {type(item).__name__}")
        nodes.append(_node(i, item, nodes))
    return tuple(nodes)


def _node(i: int, item: dict, earlier: list[NodeRecord]) -> NodeRecord:
    values: dict[str, Any] = {}
    for name, kinds in _NODE_TYPES.items():
        if name not in item:
            if name in _OPTIONAL_NODE_FIELDS:
                values[name] = None
                continue
            raise RecordError(f"node {i} has no {name!r}")
        value = item[name]
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            raise RecordError(f"node {i}: {name!r} has the wrong type ({value!r})")
        if name in _FLOATS and value is not None:
            value = float(value)
            if math.isnan(value):
                value = None if name in _OPTIONAL_NODE_FIELDS | {"value"} else value
        values[name] = value
    parent = values["parent"]
    if (i == 0) != (parent is None) or (parent is not None and not 0 <= parent < i):
        raise RecordError(f"node {i} has parent {parent!r}; the root (node 0) has none and "
                          "every other node's parent comes before it")
    if values["components"] is not None and not all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
            for k, v in values["components"].items()):
        raise RecordError(f"node {i}: 'components' maps critic names to numbers")
    if parent is not None and values["depth"] != earlier[parent].depth + 1:
        raise RecordError(f"node {i} has depth {values['depth']}, its parent "
                          f"{earlier[parent].depth}")
    return NodeRecord(**values)


def _stats(data: Any) -> TreeStats:
    if not isinstance(data, dict):
        raise RecordError(f"stats must be an object, got {type(data).__name__}")
    known = {f.name for f in fields(TreeStats)} - {"counts"}
    counts = dict(data.get("counts") or {})
    counts.update({k: v for k, v in data.items() if k not in known and k != "counts"})
    try:
        return TreeStats(**{k: data[k] for k in known if k in data},
                         counts={str(k): int(v) for k, v in counts.items()})
    except (TypeError, ValueError) as err:
        raise RecordError(f"bad stats: {err}") from None


# ----------------------------------------------------------------------------- the file


class ResultFile:
    """Append-only JSONL of finished trees: each record is flushed and fsynced as its tree
    finishes, so an interrupted run loses only the trees in flight and resumes where it
    stopped. Reading skips (and counts in :attr:`skipped`, by line number) any line that is
    not a valid record: undecodable bytes, bad JSON, a record of the wrong shape."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.skipped: dict[int, str] = {}

    def __iter__(self) -> Iterator[TreeRecord]:
        self.skipped = {}
        if not self.path.exists():
            return
        if self.path.is_dir():
            raise UserError(f"{self.path} is a folder; pass a trees.jsonl file or its run folder")
        with self.path.open("rb") as f:
            for number, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    record = TreeRecord.from_json(json.loads(raw.decode("utf-8")))
                except (UnicodeDecodeError, json.JSONDecodeError, RecordError) as err:
                    reason = _reason(err)
                    if not raw.endswith(b"\n"):
                        reason = f"unfinished last line ({reason})"
                    self.skipped[number] = reason
                    log.warning("%s:%d: skipping a line that is not a tree record: %s",
                                self.path, number, reason)
                    continue
                yield record

    def read(self) -> list[TreeRecord]:
        """Every valid record (see :attr:`skipped` afterwards)."""
        return list(self)

    def done(self) -> dict[str, str]:
        """Task id → task fingerprint of every tree in the file."""
        return {record.task.id: record.fingerprint for record in self}

    def done_ids(self) -> set[str]:
        return set(self.done())

    def append(self, record: TreeRecord) -> None:
        """Write ``record`` as one line, on disk before this returns."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._end_last_line()
        line = json.dumps(record.to_json(), default=jsonable, ensure_ascii=False) + "\n"
        with self.path.open("a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def _end_last_line(self) -> None:
        """A crash mid-write leaves a last line without its newline: a valid record there (the
        newline was all that was lost) gets its newline; anything else is cut, so the file
        agrees with what reading counted done."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with self.path.open("rb+") as f:
            end = f.seek(0, os.SEEK_END)
            f.seek(end - 1)
            if f.read(1) == b"\n":
                return
            start, tail = _last_line(f, end)
            try:
                TreeRecord.from_json(json.loads(tail.decode("utf-8")))
            except (UnicodeDecodeError, json.JSONDecodeError, RecordError):
                f.truncate(start)
            else:
                f.seek(end)
                f.write(b"\n")


def _last_line(f: Any, end: int, chunk: int = 1 << 20) -> tuple[int, bytes]:
    """Where the last line of an open binary file starts, and its bytes (read backwards in
    chunks: a long run file is not read whole)."""
    tail, position = b"", end
    while position > 0:
        position = max(0, position - chunk)
        f.seek(position)
        tail = f.read(min(chunk, end - position)) + tail
        newline = tail.rfind(b"\n")
        if newline >= 0:
            return position + newline + 1, tail[newline + 1:]
    return 0, tail


def _reason(err: Exception) -> str:
    if isinstance(err, UnicodeDecodeError):
        return f"not UTF-8 (byte {err.object[err.start]:#04x} at column {err.start + 1})"
    if isinstance(err, json.JSONDecodeError):
        return f"not JSON ({err.msg} at column {err.colno})"
    return str(err)


def jsonable(value: Any) -> Any:
    """``json.dumps``'s fallback: numpy scalars and arrays as plain Python, else text."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


# ----------------------------------------------------------------------------- replay


class ReplayError(RuntimeError):
    """The environment failed to replay a tree's actions."""


class ReplayedTree:
    """One finished tree with its states replayed on demand (each node once) in ``env``."""

    def __init__(self, record: TreeRecord, env: Environment) -> None:
        self.record, self.env, self.nodes = record, env, record.nodes
        self.task_id = record.task.id
        self.delimiter = env.step_delimiter
        self.children = record.children()
        self._states: dict[int, Any] = {0: self._call(env.reset, record.task)}
        self.root_prompt: Prompt = self.prompt(0)

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as err:  # a plug-in may raise anything; the tree is skipped, not the run
            raise ReplayError(f"{type(err).__name__}: {err}") from err

    def state(self, i: int) -> Any:
        missing = []
        while i not in self._states:
            missing.append(i)
            i = self.nodes[i].parent  # type: ignore[assignment]
        for j in reversed(missing):
            parent = self._states[self.nodes[j].parent]  # type: ignore[index]
            self._states[j] = self._call(self.env.step, parent, self.nodes[j].action).state
        return self._states[missing[0] if missing else i]

    def prompt(self, i: int) -> Prompt:
        return self._call(self.env.prompt, self.state(i))

    def action(self, i: int) -> str:
        """The step without its delimiter."""
        return self.nodes[i].action.removesuffix(self.delimiter)

    def step_text(self, i: int) -> str:
        """The step as the policy generated it, delimiter included."""
        return self.action(i) + self.delimiter

    def path(self, i: int) -> list[int]:
        """Node ids from the first step to ``i`` (the root excluded)."""
        return self.record.path_to(i)[1:]

    def text(self, ids: Iterable[int]) -> str:
        return "".join(self.step_text(i) for i in ids)

    def best_child(self, i: int) -> int | None:
        """Most visited child, ties to the higher value, then the older node."""
        def key(j: int) -> tuple[int, float, int]:
            value = self.nodes[j].value
            return self.nodes[j].visits, -1.0 if value is None else value, -j

        return max(self.children[i], key=key, default=None)

    def continuation(self, i: int) -> list[int]:
        """``i`` and the best line under it, down to a terminal node or a leaf."""
        line = [i]
        while not self.nodes[line[-1]].terminal:
            child = self.best_child(line[-1])
            if child is None:
                break
            line.append(child)
        return line


def replay_trees(records: Iterable[TreeRecord], env: Environment,
                 counts: Counter | None = None) -> Iterator[ReplayedTree]:
    """The replayable trees of ``records``; the others are skipped, logged and counted
    (``replay_error``); ``trees`` counts them all."""
    counts = Counter() if counts is None else counts
    for record in records:
        counts["trees"] += 1
        try:
            tree = ReplayedTree(record, env)
        except ReplayError as err:
            replay_failed(record.task.id, err, counts)
            continue
        yield tree


def replay_failed(task_id: str, err: ReplayError, counts: Counter) -> None:
    """Log and count a tree that failed to replay."""
    log.warning("task %s: skipping its tree, the environment failed to replay it (%s)",
                task_id, err)
    counts["replay_error"] += 1


def with_stats(record: TreeRecord, **changes: Any) -> TreeRecord:
    """``record`` with some of its stats replaced."""
    return replace(record, stats=replace(record.stats, **changes))
