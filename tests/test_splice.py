"""Agent-R splicing on real TextWorld trees: validated dialogues, rejected corruptions,
training rows, and the CLI."""

from __future__ import annotations

import json
from collections import Counter

import pytest

pytest.importorskip("textworld")

from states import ValidActionPolicy

from environments.agent import AgentEnvironment
from environments.agent.textworld_game import TextWorldGame
from mcts_agent.data import PairConfig, mine_pairs
from mcts_agent.data.splice import (
    SpliceConfig,
    splice_rows,
    splice_trees,
)
from mcts_agent.react import parse_action
from mcts_agent.search import SearchConfig
from mcts_agent.search.run import run_search

PATHS: dict = {}  # the searched run's folder and its game cache


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    cache = tmp_path_factory.mktemp("tw")
    run = tmp_path_factory.mktemp("run")
    env = AgentEnvironment(TextWorldGame(cache_dir=cache))
    tasks = env.tasks(3, split="train")
    config = SearchConfig(simulations=24, expand_n=3, leaves_per_tree=2, max_depth=8,
                          stop_when_solved=False)
    _, results = run_search(env, tasks=tasks, policy=ValidActionPolicy(), config=config,
                            rollouts=2, out_dir=run, baselines=False)
    PATHS.update(run=run, cache=cache)
    return env, tasks, results


def test_splices_are_won_dialogues_that_replay_cleanly(searched):
    env, tasks, results = searched
    counts = Counter()
    splices = splice_trees(results, env, SpliceConfig(), counts=counts)
    assert splices, counts
    by_id = {t.id: t for t in tasks}
    for splice in splices:
        task = by_id[splice.task_id]
        assert splice.state.won
        assert 0 < splice.trained_from < len(splice.replies)
        assert splice.replies[splice.trained_from].startswith("Thought: ")  # the revision
        assert splice.good_value - splice.bad_value >= 0.3 - 1e-9
        # the whole dialogue happens in a fresh game, turn for turn
        assert env.verify_dialogue(task, env.messages(splice.state))
        replayed = env.replay(task, splice.state.commands)
        assert [t.observation for t in replayed[1:]] == [
            turn.observation for turn in splice.state.turns if turn.action is not None]


def test_corrupted_dialogues_are_rejected(searched):
    env, tasks, results = searched
    splice = splice_trees(results, env, SpliceConfig())[0]
    task = next(t for t in tasks if t.id == splice.task_id)
    messages = env.messages(splice.state)
    assert env.verify_dialogue(task, messages)
    observation = next(i for i, m in enumerate(messages) if m["role"] == "user" and i > 1)
    tampered = [dict(m) for m in messages]
    tampered[observation]["content"] = "You see a golden key."
    assert not env.verify_dialogue(task, tampered)
    reordered = [dict(m) for m in messages]
    replies = [i for i, m in enumerate(reordered) if m["role"] == "assistant"]
    a, b = replies[0], replies[-1]
    reordered[a]["content"], reordered[b]["content"] = (reordered[b]["content"],
                                                       reordered[a]["content"])
    assert not env.verify_dialogue(task, reordered)


def test_rows_train_on_the_revision_and_the_good_part_only(searched):
    env, _, results = searched
    dialogues, turns, counts = splice_rows(results, env, SpliceConfig())
    assert dialogues and counts["spliced"] == len(dialogues)
    row = dialogues[0]
    assert row["prompt"][-1]["role"] == "user" and row["completion"][0]["role"] == "assistant"
    assert row["completion"][0]["content"] == row["revision"] or row["revision"] in row[
        "completion"][0]["content"]
    assert sum(m["role"] == "assistant" for m in row["prompt"]) == row["bad_turns"]
    kinds = Counter(r["kind"] for r in turns)
    assert kinds["splice"] == counts["splice_turns"] > 0 and kinds["success"] > 0
    for r in turns:  # every trained turn is a valid command in its own prompt's game state
        assert r["completion"][0]["role"] == "assistant"
        assert parse_action(r["completion"][0]["content"]).action is not None
    json.dumps(dialogues)  # rows are JSON-able


def test_thresholds_are_numbers_and_gate_pairs(searched):
    env, _, results = searched
    counts = Counter()
    assert splice_trees(results, env, SpliceConfig(alpha=1.0, beta=1.0), counts=counts) == [
        ] or all(s.bad_value == 0.0 for s in splice_trees(results, env,
                                                            SpliceConfig(alpha=1.0, beta=1.0)))
    with pytest.raises(ValueError, match="needs a critic"):
        splice_trees(results, env, SpliceConfig(first_bad="critic"))


def test_agent_pairs_are_one_turn_each(searched):
    env, _, results = searched
    rows, counts = mine_pairs(results, env, PairConfig(min_margin=0.1, z=0.0))
    assert rows, counts
    for row in rows:
        assert isinstance(row["prompt"], list) and row["prompt"][-1]["role"] == "user"
        assert [m["role"] for m in row["chosen"]] == ["assistant"]
        assert row["chosen"][0]["content"] != row["rejected"][0]["content"]
        assert row["chosen_terminal"] is False and row["rejected_terminal"] is False
    with pytest.raises(ValueError, match="one-turn pairs"):
        mine_pairs(results, env, PairConfig(strategy="outcome"))


def test_splice_command_writes_both_datasets(searched, tmp_path):
    from typer.testing import CliRunner

    from mcts_agent.cli import app
    from mcts_agent.data import read_rows

    games = f"cache_dir={PATHS['cache']}"
    result = CliRunner().invoke(app, ["splice", str(PATHS["run"]), "--out", str(tmp_path),
                                      "--env-arg", games])
    assert result.exit_code == 0, result.output
    dialogues, turns = read_rows(tmp_path / "spliced.jsonl"), read_rows(
        tmp_path / "splice_turns.jsonl")
    assert dialogues and turns and (tmp_path / "README.md").exists()
    bad = CliRunner().invoke(app, ["splice", str(PATHS["run"]), "--first-bad", "critic",
                                   "--env-arg", games])
    assert bad.exit_code != 0 and "needs a critic" in bad.output


def test_math_trees_cannot_be_spliced():
    from environments.math.arith_env import ArithEnvironment

    with pytest.raises(ValueError, match="not an agent environment"):
        splice_trees([], ArithEnvironment())
