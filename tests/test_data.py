"""Mining training data from hand-built trees on the real `arith` environment."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import pytest
from pydantic import ValidationError
from records import node

from environments.math.arith_env import ArithEnvironment
from mcts_agent.contracts import Task
from mcts_agent.data import (
    PairConfig,
    levenshtein,
    mine_pairs,
    read_rows,
    sft_rows,
    stepwise_rows,
    wilson_interval,
    write_rows,
)
from mcts_agent.trees import NodeRecord, TreeRecord

ENV = ArithEnvironment()
TASK = Task("t1", "3+9*3", 30)
ROOT = "Q: 3+9*3=?\n"
S1, S1_BAD = "Step 1: 9*3=27", "Step 1: 3+9=12"
S2, S2_ALT = "Step 2: 3+27=30", "Step 2: 27+3=30"
PREFIX3 = ROOT + S1 + "\n" + S2 + "\n"  # the prompt at node 3


def tree(*spec: tuple, task: Task = TASK, mode: str = "data") -> TreeRecord:
    """Nodes 1.. from ``(parent, action, visits, value[, score])``; a score marks a terminal
    node. Node 0 is the root."""
    nodes: list[NodeRecord] = [node(critic=0.5)]
    for parent, action, visits, value, *score in spec:
        nodes.append(_step(parent, action, nodes[parent].depth + 1, visits, value, *score))
    return TreeRecord(task, mode, tuple(nodes), None, None)  # type: ignore[arg-type]


def _step(parent: int, action: str, depth: int, visits: int, value: float,
          score: float | None = None) -> NodeRecord:
    """A step; with a score, a finished one (arith answers only a correct final line)."""
    answer = action.removeprefix("Answer: ") if score else None
    return node(parent, action, depth, visits=visits, value=value, critic=value,
                terminal=score is not None, answer=answer, score=score)


def example() -> TreeRecord:
    """Root: a confident pair (1 > 2); under 1: a big margin on 2 visits each (3 > 4, not
    confident); under 3: verified answers (5 right, 7 wrong: exact)."""
    return tree(
        (0, S1, 20, 0.8),            # 1
        (0, S1_BAD, 20, 0.2),        # 2
        (1, S2, 2, 1.0),             # 3
        (1, S2_ALT, 2, 0.0),         # 4
        (3, "Answer: 30", 2, 1.0, 1.0),  # 5
        (4, "Answer: 31", 2, 0.0, 0.0),  # 6
        (3, "Answer: 31", 1, 0.0, 0.0),  # 7
    )


def by_parent(rows: list[dict]) -> dict[int, dict]:
    return {row["parent_node"]: row for row in rows}


# ----------------------------------------------------------------------------- statistics


def test_wilson_interval_and_levenshtein():
    lo, hi = wilson_interval(0.8, 20, 1.64)
    assert 0.6 < lo < 0.8 < hi < 0.95
    assert wilson_interval(0.5, 0, 1.64) == (0.0, 1.0)
    assert wilson_interval(0.3, 10, 0.0) == pytest.approx((0.3, 0.3))
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3
    assert levenshtein("abcdef", "uvwxyz", limit=2) == 2


# ----------------------------------------------------------------------------- sibling


def test_sibling_pairs_texts_and_provenance():
    rows, counts = mine_pairs([example()], ENV)
    assert set(by_parent(rows)) == {0, 3}
    root, answer = by_parent(rows)[0], by_parent(rows)[3]
    assert (root["prompt"], root["chosen"], root["rejected"]) == (
        ROOT, S1 + "\n", S1_BAD + "\n")
    assert root["chosen_terminal"] is root["rejected_terminal"] is False
    assert (root["task_id"], root["chosen_node"], root["rejected_node"], root["depth"]) == (
        "t1", 1, 2, 1)
    assert (root["chosen_visits"], root["rejected_visits"]) == (20, 20)
    assert root["margin"] == pytest.approx(0.6)
    assert 0.99 < root["confidence"] <= 1.0 and root["strategy"] == "sibling"
    assert (answer["prompt"], answer["chosen"], answer["rejected"]) == (
        PREFIX3, "Answer: 30\n", "Answer: 31\n")
    # the model stops writing after a right answer; arith cuts a wrong one (no answer), so
    # no end-of-sequence is taught after it
    assert answer["chosen_terminal"] and not answer["rejected_terminal"]
    assert answer["confidence"] == 1.0 and answer["depth"] == 3
    assert counts["trees"] == 1 and counts["pairs"] == 2


def test_large_margin_on_few_visits_is_not_confident():
    rows, counts = mine_pairs([example()], ENV)
    assert 1 not in by_parent(rows)  # 1.0 vs 0.0 on 2 visits each
    assert counts["not_confident"] == 1
    rows, _ = mine_pairs([example()], ENV, PairConfig(z=0))
    assert by_parent(rows)[1]["chosen"] == S2 + "\n"


def test_margin_and_visit_gates():
    rows, counts = mine_pairs([example()], ENV, PairConfig(min_margin=0.7))
    assert set(by_parent(rows)) == {3} and counts["small_margin"] == 1
    rows, counts = mine_pairs([example()], ENV, PairConfig(min_visits=3, z=0))
    assert set(by_parent(rows)) == {0, 3}  # verified answers count whatever their visits
    assert counts["low_visits"] == 1


def test_edit_distance_gate():
    rows, counts = mine_pairs([example()], ENV, PairConfig(min_edit_distance=5))
    assert set(by_parent(rows)) == {0}  # "Answer: 30" vs "Answer: 31" is 1 edit
    assert counts["edit_distance"] == 1


def fan() -> TreeRecord:
    """Four confident root steps: 6 pairs at depth 1."""
    return tree(*((0, f"Step 1: {a}*3={3 * a}", 50, v)
                  for a, v in ((9, 0.9), (8, 0.6), (7, 0.3), (6, 0.0))))


def test_caps_per_depth_and_tree_keep_the_most_confident():
    rows, counts = mine_pairs([fan()], ENV)
    assert len(rows) == 4 and counts["cap_depth"] == 2
    kept = {(r["chosen_node"], r["rejected_node"]) for r in rows}
    assert {(1, 4), (1, 3), (2, 4)} <= kept and (2, 3) not in kept
    rows, counts = mine_pairs([fan()], ENV, PairConfig(max_per_depth=None, max_per_tree=3))
    assert {(r["chosen_node"], r["rejected_node"]) for r in rows} == {(1, 4), (1, 3), (2, 4)}
    assert counts["cap_tree"] == 3
    again, _ = mine_pairs([fan()], ENV, PairConfig(max_per_depth=None, max_per_tree=3))
    assert again == rows


def test_identical_texts_and_repeated_pairs():
    result = tree(
        (0, S1, 20, 0.8),        # 1
        (0, S1, 20, 0.8),        # 2: same step sampled twice
        (0, S1_BAD, 20, 0.1),    # 3
    )
    rows, counts = mine_pairs([result], ENV)
    assert len(rows) == 1 and rows[0]["chosen_node"] in (1, 2)
    assert counts["same_text"] == 1 and counts["duplicate"] == 1


# ----------------------------------------------------------------------------- other rules


def branched() -> TreeRecord:
    """The example plus a confident pair under node 2, off the most visited path."""
    base = example()
    extra = tree((0, "", 1, 0.0), (1, "Step 2: 12*3=36", 10, 0.3),
                 (1, "Step 2: 12*3=35", 1, 0.0, 0.0)).nodes[2:]
    return replace(base, nodes=base.nodes + tuple(replace(n, parent=2) for n in extra))


def test_path_strategy_follows_the_most_visited_path():
    sibling, _ = mine_pairs([branched()], ENV)
    assert 2 in by_parent(sibling)
    rows, _ = mine_pairs([branched()], ENV, PairConfig(strategy="path"))
    assert set(by_parent(rows)) == {0, 1, 3}  # no Wilson gate on this rule
    assert by_parent(rows)[1]["chosen"] == S2 + "\n"
    assert all(r["strategy"] == "path" for r in rows)


def test_outcome_pairs_whole_solutions():
    rows, counts = mine_pairs([example()], ENV, PairConfig(strategy="outcome"))
    assert len(rows) == 2 and counts["pairs"] == 2
    assert {r["rejected_node"] for r in rows} == {6, 7}
    row = rows[0]
    assert row["prompt"] == ROOT
    assert row["chosen"] == f"{S1}\n{S2}\nAnswer: 30\n"
    assert row["rejected"] in (f"{S1}\n{S2_ALT}\nAnswer: 31\n", f"{S1}\n{S2}\nAnswer: 31\n")
    assert row["chosen_terminal"] and not row["rejected_terminal"] and row["margin"] == 1.0
    unsolved = tree((0, S1, 3, 0.5), (1, "Answer: 31", 1, 0.0, 0.0))
    rows, counts = mine_pairs([unsolved], ENV, PairConfig(strategy="outcome"))
    assert rows == [] and counts["no_correct"] == 1


def test_continuation_texts_and_terminal_flags():
    rows, _ = mine_pairs([branched()], ENV, PairConfig(completion="continuation"))
    root = by_parent(rows)[0]
    assert root["chosen"] == f"{S1}\n{S2}\nAnswer: 30\n" and root["chosen_terminal"]
    assert root["rejected"] == f"{S1_BAD}\nStep 2: 12*3=36\n"
    assert root["rejected_terminal"] is False


def test_conversational_rows():
    rows, _ = mine_pairs([example()], ENV, PairConfig(conversational=True))
    answer = by_parent(rows)[3]
    assert answer["prompt"] == [{"role": "user", "content": ROOT}]
    assert answer["chosen"] == [{"role": "assistant", "content": f"{S1}\n{S2}\nAnswer: 30\n"}]
    assert answer["rejected"] == [{"role": "assistant", "content": f"{S1}\n{S2}\nAnswer: 31\n"}]


def test_replay_error_skips_the_tree():
    broken = tree((0, "Step 1: 9*3=27\nStep 2: 3+27=30", 40, 0.5),  # two lines: step raises
                  (1, S2, 20, 0.9), (1, S2_ALT, 20, 0.1), task=Task("bad", "3+9*3", 30))
    rows, counts = mine_pairs([broken, example()], ENV)
    assert counts["replay_error"] == 1 and counts["trees"] == 2
    assert {r["task_id"] for r in rows} == {"t1"}
    assert [r["task_id"] for r in sft_rows([broken, example()], ENV)] == ["t1"]


def test_config_is_strict():
    with pytest.raises(ValidationError):
        PairConfig(strategy="best")
    with pytest.raises(ValidationError):
        PairConfig(min_margn=0.3)


# ----------------------------------------------------------------------------- SFT, stepwise


def test_sft_rows():
    result = tree((0, S1, 10, 0.9), (1, S2, 5, 1.0), (1, S2_ALT, 5, 1.0),
                  (3, "Answer: 30", 1, 1.0, 1.0), (2, "Answer: 30", 1, 1.0, 1.0),
                  (2, "Answer: 31", 1, 0.0, 0.0))
    (row,) = sft_rows([result], ENV)
    assert row == {"prompt": ROOT, "completion": f"{S1}\n{S2_ALT}\nAnswer: 30\n",
                   "task_id": "t1", "node": 4, "value": 1.0, "depth": 3}
    rows = sft_rows([result], ENV, max_per_tree=5, conversational=True)
    assert [r["node"] for r in rows] == [4, 5]
    assert rows[0]["prompt"] == [{"role": "user", "content": ROOT}]
    assert rows[1]["completion"] == [{"role": "assistant",
                                      "content": f"{S1}\n{S2}\nAnswer: 30\n"}]


def test_stepwise_rows():
    rows = stepwise_rows([example()], ENV)
    assert len(rows) == 3
    right = next(r for r in rows if r["completions"][-1] == "Answer: 30")
    assert right == {"prompt": ROOT, "completions": [S1, S2, "Answer: 30"],
                     "labels": [True, True, True], "values": [0.8, 1.0, 1.0], "task_id": "t1"}
    wrong = next(r for r in rows if r["completions"][1] == S2_ALT)
    assert wrong["labels"] == [True, False, False]


# ----------------------------------------------------------------------------- files


def test_write_and_read_round_trip(tmp_path):
    pairs, counts = mine_pairs([example(), branched()], ENV)
    chat, _ = mine_pairs([example()], ENV, PairConfig(conversational=True))
    sft = sft_rows([example()], ENV)
    paths = write_rows(pairs, tmp_path, "pairs", stats=counts, description="from a test")
    write_rows(sft, tmp_path, "sft", stats={"trees": 1, "rows": len(sft)})
    write_rows(chat, tmp_path, "chat")
    assert read_rows(paths["jsonl"]) == pairs
    assert read_rows(paths["parquet"]) == pairs
    assert read_rows(tmp_path / "chat.parquet") == chat
    assert json.loads((tmp_path / "pairs.stats.json").read_text())["pairs"] == len(pairs)
    card = (tmp_path / "README.md").read_text()
    for text in ("config_name: pairs", "path: pairs.parquet", "## pairs", "## sft", "## chat",
                 f"- rows: {len(pairs)}", "from a test", "by strategy: sibling:",
                 "mean confidence:", "| not_confident |"):
        assert text in card
    with pytest.raises(ValueError, match="several datasets"):
        read_rows(tmp_path)


def test_empty_rows_and_malformed_lines(tmp_path, caplog):
    paths = write_rows([], tmp_path, "pairs", stats={"trees": 0})
    assert "parquet" not in paths and paths["jsonl"].read_text() == ""
    assert "- rows: 0" in paths["card"].read_text()
    assert read_rows(tmp_path) == []
    rows = [{"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": "d"}]
    paths = write_rows(rows, tmp_path / "one", "sft")
    with paths["jsonl"].open("a") as f:
        f.write('{"prompt": "cut off\n[1, 2]\n')
    with caplog.at_level(logging.WARNING):
        assert read_rows(tmp_path / "one") == rows
    assert "skipped 2 malformed" in caplog.text


def test_load_dataset_reads_the_parquet(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows, _ = mine_pairs([branched()], ENV)
    paths = write_rows(rows, tmp_path / "data", "pairs")
    loaded = datasets.load_dataset("parquet", data_files=str(paths["parquet"]), split="train",
                                   cache_dir=str(tmp_path / "cache"))
    assert loaded.to_list() == rows
    by_card = datasets.load_dataset(str(tmp_path / "data"), "pairs", split="train",
                                    cache_dir=str(tmp_path / "cache"))
    assert by_card.num_rows == len(rows)
