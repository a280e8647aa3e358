"""The self-improvement loop and the `pairs` / `train` / `iterate` commands, end to end on the
shipped tiny reasoner with budgets small enough for CI."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

from mcts_agent.cli import app
from mcts_agent.data import PairConfig, read_rows
from mcts_agent.errors import RunMismatchError
from mcts_agent.search import SearchConfig
from mcts_agent.train import TrainConfig
from mcts_agent.train.iterate import IterateConfig, iterate

runner = CliRunner(env={"COLUMNS": "240"})


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)  # tiny batches: avoid OpenMP contention with pytest's process


def small(**changes) -> IterateConfig:
    return IterateConfig(**{
        "rounds": 2, "tasks_per_round": 6, "eval_tasks": 6, "eval_k": 2, "rollouts": 2,
        "search": SearchConfig(simulations=4, expand_n=3, stop_when_solved=False,
                               max_step_tokens=20, max_depth=5),
        "pairs": PairConfig(min_margin=0.1),
        "train": TrainConfig(epochs=1, batch_size=4, learning_rate=1e-4, threads=1),
        **changes})


def test_iterate_runs_rounds_and_resumes_after_any_step(tmp_path):
    lines: list[str] = []
    rows = iterate(small(), tmp_path, report=lines.append)
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert all(0 <= r["greedy_acc"] <= 1 and 0 <= r["pass_at_k"] <= 1 for r in rows)
    for r in rows[1:]:
        assert r["rows"] > 0 and r["search_tokens"] > 0 and r["train_loss"] is not None
    assert rows[2]["model"] == str(tmp_path / "round_2" / "model")
    pairs = read_rows(tmp_path / "round_1" / "data" / "pairs.jsonl")
    assert {"prompt", "chosen", "rejected", "chosen_terminal", "confidence"} <= set(pairs[0])
    for name in ("rounds.json", "rounds.md", "rounds.png", "iterate.yaml"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "rounds.png").read_bytes()[:4] == b"\x89PNG"
    assert "greedy_acc" in (tmp_path / "rounds.md").read_text()

    # interrupted in round 2 after the search: the model and the evaluation are redone,
    # the search is not
    search_file = tmp_path / "round_2" / "search" / "trees.jsonl"
    searched = search_file.stat().st_mtime_ns
    (tmp_path / "round_2" / "eval.json").write_text("")  # garbage: redone, not fatal
    (tmp_path / "round_2" / "model" / "training.json").unlink()
    lines.clear()
    again = iterate(small(), tmp_path, report=lines.append)
    assert search_file.stat().st_mtime_ns == searched
    assert any("search done before" in line for line in lines)
    assert any("training" in line for line in lines)
    assert [r["round"] for r in again] == [0, 1, 2]
    assert again[1] == rows[1]

    # one more round extends the run; other settings are refused
    assert len(iterate(small(rounds=3), tmp_path, report=lines.append)) == 4
    faster = TrainConfig(epochs=1, batch_size=4, learning_rate=1e-4, threads=2)
    assert len(iterate(small(rounds=3, train=faster), tmp_path)) == 4  # threads: speed only
    with pytest.raises(RunMismatchError, match="other settings"):
        iterate(small(eval_tasks=5), tmp_path)


def test_sft_rounds_train_on_verified_paths(tmp_path):
    rows = iterate(small(rounds=1, train=TrainConfig(method="sft", epochs=1, batch_size=4,
                                                     threads=1)), tmp_path)
    sft = read_rows(tmp_path / "round_1" / "data" / "sft.jsonl")
    assert rows[1]["rows"] == len(sft) > 0
    assert all(r["completion"].endswith("\n") and "Answer:" in r["completion"] for r in sft)


def test_pairs_and_train_commands(tmp_path):
    run = tmp_path / "run"
    result = runner.invoke(app, ["search", "--tasks", "4", "--simulations", "4", "--expand-n",
                                 "3", "--rollouts", "2", "--no-baselines", "--out", str(run)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["pairs", str(run), "--strategy", "sibling"])
    assert result.exit_code == 0, result.output
    assert (run / "data" / "pairs.jsonl").exists() and (run / "data" / "README.md").exists()
    for kind in ("sft", "stepwise"):
        assert runner.invoke(app, ["pairs", str(run), "--kind", kind]).exit_code == 0
    settings = tmp_path / "train.yaml"
    settings.write_text(yaml.safe_dump({"train": {"epochs": 1, "batch_size": 4, "threads": 1}}))
    rows = read_rows(run / "data" / "pairs.jsonl")
    if rows:  # a handful of tiny trees may hold no confident pair; sft rows then
        result = runner.invoke(app, ["train", str(run / "data" / "pairs.jsonl"), "--out",
                                     str(tmp_path / "m"), "--config", str(settings)])
    else:
        result = runner.invoke(app, ["train", str(run / "data" / "sft.jsonl"), "--method",
                                     "sft", "--out", str(tmp_path / "m"), "--config",
                                     str(settings)])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "m" / "training.json").read_text())["report"]["rows"] > 0


def test_commands_explain_bad_input(tmp_path):
    result = runner.invoke(app, ["pairs", str(tmp_path)])
    assert result.exit_code != 0 and "mcts-agent search" in result.output
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    result = runner.invoke(app, ["train", str(tmp_path / "bad.jsonl"), "--out",
                                 str(tmp_path / "m")])
    assert result.exit_code != 0 and "no dpo rows" in result.output
    result = runner.invoke(app, ["iterate", "--out", str(tmp_path / "i"), "--method", "ppo"])
    assert result.exit_code != 0 and "method" in result.output


def test_iterate_command_from_a_yaml_file(tmp_path):
    settings = small(rounds=1, tasks_per_round=3, eval_tasks=3).model_dump(mode="json")
    settings["search"]["driver"] = "async"  # speed only: the same trees as the wave driver
    config = tmp_path / "iterate.yaml"
    config.write_text(yaml.safe_dump({"iterate": settings}))
    result = runner.invoke(app, ["iterate", "--config", str(config), "--out",
                                 str(tmp_path / "run"), "--method", "sft"])
    assert result.exit_code == 0, result.output
    assert "greedy_acc" in result.output and "round 1" in result.output
    saved = yaml.safe_load((tmp_path / "run" / "iterate.yaml").read_text())
    assert saved["train"]["method"] == "sft" and saved["tasks_per_round"] == 3
    assert saved["search"]["driver"] == "async"
    settings["search"]["driver"] = "wave"  # a resumed run may use the other driver
    config.write_text(yaml.safe_dump({"iterate": settings}))
    again = runner.invoke(app, ["iterate", "--config", str(config), "--out",
                                str(tmp_path / "run"), "--method", "sft"])
    assert again.exit_code == 0, again.output


def test_iterate_trains_an_agent_on_splices(tmp_path):
    """search → splice → SFT → evaluate with the shipped tiny agent on generated games."""
    pytest.importorskip("textworld")
    from mcts_agent.models.tiny_agent import TINY_AGENT_DIR

    torch.set_num_threads(1)
    config = IterateConfig(
        env="textworld-tiny", env_args={"cache_dir": str(tmp_path / "games")},
        model=str(TINY_AGENT_DIR), rounds=1, tasks_per_round=3, eval_tasks=2, eval_k=2,
        rollouts=1, sft_data="splice",
        search=SearchConfig(simulations=6, expand_n=3, leaves_per_tree=3, max_depth=8,
                            max_step_tokens=48, stop_when_solved=False),
        train=TrainConfig(method="sft", epochs=1, batch_size=8, threads=1))
    rows = iterate(config, tmp_path / "run")
    assert [row["round"] for row in rows] == [0, 1]
    stats = json.loads((tmp_path / "run" / "round_1" / "data" / "splice.stats.json").read_text())
    assert stats["trees"] == 3 and stats["success_turns"] + stats["splice_turns"] == stats["rows"]
    if stats["rows"]:
        assert (tmp_path / "run" / "round_1" / "model" / "training.json").exists()
        assert rows[1]["model"].endswith("model")
    assert 0.0 <= rows[1]["greedy_acc"] <= 1.0



def test_iterate_trains_the_tiny_code_model_on_code_trees(tmp_path):
    """search → step-level pairs → DPO → evaluate on generated code tasks (sandboxed tests)."""
    from mcts_agent.models.tiny_code import TINY_CODE_DIR

    config = IterateConfig(
        env="code-gen", model=str(TINY_CODE_DIR), rounds=1, tasks_per_round=4, eval_tasks=3,
        eval_k=2, rollouts=2,
        search=SearchConfig(simulations=6, expand_n=3, stop_when_solved=False,
                            max_step_tokens=40, max_depth=8),
        pairs=PairConfig(min_margin=0.1),
        train=TrainConfig(epochs=1, batch_size=4, learning_rate=1e-4, threads=1))
    rows = iterate(config, tmp_path / "run")
    assert [row["round"] for row in rows] == [0, 1]
    pairs = read_rows(tmp_path / "run" / "round_1" / "data" / "pairs.jsonl")
    assert pairs, "a code tree with a solved and a failed branch gives step pairs"
    for row in pairs:  # both sides are code: a line, or a finished program ending in a return
        assert all(not side.strip().startswith(("Step", "Answer"))
                   for side in (row["chosen"], row["rejected"]))
    assert (tmp_path / "run" / "round_1" / "model" / "training.json").exists()
    assert 0.0 <= rows[1]["greedy_acc"] <= 1.0
