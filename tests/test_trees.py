"""The record layer: typed tree records, their JSON form (and the old one), and the result
file that skips what it cannot read and survives a crash mid-write."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from records import node

from mcts_agent.contracts import Task
from mcts_agent.errors import UserError
from mcts_agent.trees import SCHEMA, ResultFile, TreeRecord, TreeStats

TASK = Task("t1", "2+3*4", 14, {"source": "test"})


def record(task_id: str = "t1") -> TreeRecord:
    """Root; 1: a step; 2: the verified answer under it; 3: an unvisited step."""
    nodes = (
        node(critic=0.5),
        node(0, "Step 1: 3*4=12", 1, visits=3, value=0.9, critic=0.8, feedback="good"),
        node(1, "Answer: 14", 2, visits=2, value=1.0, terminal=True, answer="14", score=1.0),
        node(0, "Step 1: 2+3=5", 1, visits=0, value=None, disagreement=0.3),
    )
    stats = TreeStats(nodes=4, expansions=2, tokens=30, waves=2, seconds=0.5, chosen_node=2,
                      counts={"empty_steps": 1})
    task = dataclasses.replace(TASK, id=task_id)
    return TreeRecord(task, "data", nodes, "14", True, stats)


def line(data: Any) -> bytes:
    return json.dumps(data).encode() + b"\n"


def with_node_field(i: int, **changes: Any) -> dict[str, Any]:
    """The JSON form of :func:`record` with fields of node ``i`` overwritten."""
    data = record(f"bad-node-{i}").to_json()
    names = data["node_fields"]
    for name, value in changes.items():
        data["nodes"][i][names.index(name)] = value
    return data


def ids(file: ResultFile) -> list[str]:
    return [r.task.id for r in file]


# ----------------------------------------------------------------------------- records


def test_json_round_trip_is_exact():
    original = record()
    again = TreeRecord.from_json(json.loads(json.dumps(original.to_json())))
    assert again == original
    assert again.schema == SCHEMA and again.fingerprint == TASK.fingerprint
    assert again.stats.counts == {"empty_steps": 1} and again.nodes[3].value is None


def test_records_are_frozen_and_know_their_structure():
    tree = record()
    with pytest.raises(dataclasses.FrozenInstanceError):
        tree.nodes[1].visits = 5  # type: ignore[misc]
    assert tree.children() == [[1, 3], [2], [], []]
    assert tree.path_to(2) == [0, 1, 2]
    assert tree.solution_text(2) == "Step 1: 3*4=12\nAnswer: 14\n"
    assert tree.nodes[2].rate == 1.0  # a verified terminal: its score
    assert tree.nodes[1].rate == 0.9  # otherwise the backed-up value


def test_schema_1_lines_are_read_and_upgraded():
    old_node = {"parent": None, "action": "", "depth": 0, "visits": 2, "value": 0.5,
                "prior": 1.0, "logprob": 0.0, "tokens": 0, "reward": 0.0, "terminal": False,
                "critic": None, "feedback": None, "answer": None, "score": None}
    answer = {**old_node, "parent": 0, "action": "Answer: 2", "depth": 1, "visits": 1,
              "value": 1, "terminal": True, "answer": "2", "score": 1}
    del answer["critic"]  # optional fields may be missing
    old = {"task": {"id": "old", "problem": "1+1", "reference": 2, "metadata": {}},
           "mode": "data", "nodes": [old_node, answer], "answer": "2", "solved": True,
           "stats": {"tokens": 5, "environment_errors": 2}}
    tree = TreeRecord.from_json(old)
    assert tree.schema == SCHEMA and tree.status == "finished"
    assert tree.stats.tokens == 5 and tree.stats.counts == {"environment_errors": 2}
    assert tree.nodes[1].score == 1.0 and tree.nodes[1].critic is None
    assert isinstance(tree.nodes[1].value, float)
    assert tree.fingerprint == Task("old", "1+1", 2).fingerprint
    assert TreeRecord.from_json(tree.to_json()) == tree


def test_to_networkx_has_the_nodes_and_edges():
    graph = record().to_networkx()
    assert sorted(graph.nodes) == [0, 1, 2, 3]
    assert set(graph.edges) == {(0, 1), (1, 2), (0, 3)}
    assert graph.nodes[2]["score"] == 1.0 and graph.nodes[1]["action"] == "Step 1: 3*4=12"
    assert graph.graph["task_id"] == "t1"


# ----------------------------------------------------------------------------- the file


def test_bad_lines_are_skipped_by_line_number(tmp_path: Path):
    undecodable = line(record("latin").to_json()).replace(b"2+3*4", b"2+3\xff*4")
    oops = {**record("oops").to_json(), "nodes": "oops"}
    future = {**record("future").to_json(), "schema": SCHEMA + 1}
    lines = [
        line(record("a").to_json()),                 # 1
        undecodable,                                 # 2
        b'{"task": {"id": "b"}, "mode": \n',         # 3
        line(oops),                                  # 4
        line(with_node_field(1, parent=3)),          # 5: its parent comes after it
        line(with_node_field(2, depth=5)),           # 6: its parent is at depth 1
        line(future),                                # 7
        line([1, 2]),                                # 8
        b"\n",                                       # 9: blank lines are no records
        line(record("c").to_json()),                 # 10
    ]
    path = tmp_path / "trees.jsonl"
    path.write_bytes(b"".join(lines))
    file = ResultFile(path)
    assert ids(file) == ["a", "c"]
    reasons = file.skipped
    assert sorted(reasons) == [2, 3, 4, 5, 6, 7, 8]
    for number, text in {2: "UTF-8", 3: "JSON", 4: "nodes", 5: "parent", 6: "depth",
                         7: "schema", 8: "object"}.items():
        assert text in reasons[number], (number, reasons[number])
    assert file.done_ids() == {"a", "c"}


def test_a_valid_last_record_without_its_newline_is_done_and_kept(tmp_path: Path):
    path = tmp_path / "trees.jsonl"
    path.write_bytes(line(record("a").to_json()) + line(record("b").to_json())[:-1])
    file = ResultFile(path)
    assert file.done_ids() == {"a", "b"} and file.skipped == {}
    file.append(record("c"))
    assert ids(file) == ["a", "b", "c"] and file.skipped == {}
    assert len(path.read_bytes().splitlines()) == 3 and path.read_bytes().endswith(b"\n")


def test_a_partial_last_line_is_cut_by_the_next_append(tmp_path: Path):
    path = tmp_path / "trees.jsonl"
    partial = line(record("b").to_json())[:40]
    path.write_bytes(line(record("a").to_json()) + partial)
    file = ResultFile(path)
    assert file.done_ids() == {"a"}
    assert list(file.skipped) == [2] and "unfinished last line" in file.skipped[2]
    file.append(record("c"))
    assert ids(file) == ["a", "c"] and file.skipped == {}
    assert len(path.read_bytes().splitlines()) == 2


def test_append_then_read_returns_equal_records(tmp_path: Path):
    file = ResultFile(tmp_path / "run" / "trees.jsonl")
    file.append(record("a"))
    file.append(record("b"))
    assert file.read() == [record("a"), record("b")]
    assert file.done() == {"a": TASK.fingerprint, "b": TASK.fingerprint}


def test_a_missing_folder_is_not_created(tmp_path: Path):
    file = ResultFile(tmp_path / "nowhere" / "trees.jsonl")
    assert file.read() == [] and file.done_ids() == set() and file.skipped == {}
    assert not (tmp_path / "nowhere").exists()


def test_a_folder_is_not_a_result_file(tmp_path: Path):
    with pytest.raises(UserError, match="folder"):
        ResultFile(tmp_path).read()
