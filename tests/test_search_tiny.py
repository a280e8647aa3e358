"""End to end with real parts: the shipped tiny reasoner, the arith environment, rollouts."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mcts_agent.cli import app
from mcts_agent.search import ResultFile, SearchConfig
from mcts_agent.search.run import run_search

runner = CliRunner(env={"COLUMNS": "240"})  # error boxes on one line
SMALL = ["--simulations", "4", "--expand-n", "2", "--rollouts", "2"]


@pytest.mark.parametrize("mode", ["data", "inference"])
def test_run_search_writes_trees_config_and_summary(policy, tmp_path, mode):
    config = SearchConfig(mode=mode, simulations=6, expand_n=3, max_depth=6, max_step_tokens=20)
    summary, results = run_search("arith", tasks=4, policy=policy, config=config, rollouts=2,
                                  out_dir=tmp_path)
    assert summary.tasks == 4 and len(results) == 4
    assert summary.greedy_solved is not None and summary.best_of_n_solved is not None
    assert summary.tokens > 0 and summary.nodes > 4
    assert {p.name for p in tmp_path.iterdir()} == {"trees.jsonl", "config.yaml", "summary.json",
                                                   "baselines.jsonl", "responses.sqlite"}
    assert json.loads((tmp_path / "summary.json").read_text())["mcts_solved"] == summary.mcts_solved
    for result in results:
        assert result.nodes[0].parent is None and result.nodes[0].visits >= 1
        for i, node in enumerate(result.nodes[1:], 1):
            assert node.parent < i and node.action  # parents first, no empty steps
        if mode == "data" and result.solved:
            verified = next(i for i, n in enumerate(result.nodes) if n.score == 1.0)
            assert result.solution_text(verified).endswith(f"Answer: {result.task.reference}\n")
        if mode == "inference":
            assert all(n.score is None for n in result.nodes)


def test_cli_search_resumes_and_show_prints_a_tree(tmp_path):
    out = tmp_path / "run"
    first = runner.invoke(app, ["search", "--tasks", "2", *SMALL, "--out", str(out)])
    assert first.exit_code == 0, first.output
    assert "MCTS" in first.output and "greedy" in first.output
    ids = [r.task.id for r in ResultFile(out / "trees.jsonl")]
    assert len(ids) == 2
    second = runner.invoke(app, ["search", "--tasks", "3", *SMALL, "--out", str(out),
                                 "--no-baselines"])
    assert second.exit_code == 0, second.output
    again = [r.task.id for r in ResultFile(out / "trees.jsonl")]
    assert again[:2] == ids and len(again) == len(set(again)) == 3  # nothing redone or lost
    shown = runner.invoke(app, ["show", str(out / "trees.jsonl"), "--task", ids[0]])
    assert shown.exit_code == 0, shown.output
    assert "(root)" in shown.output and "N=" in shown.output


def test_clear_errors_for_unknown_names(tmp_path):
    result = runner.invoke(app, ["search", "--env", "arithm", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "Did you mean 'arith'" in result.output
    result = runner.invoke(app, ["search", "--model", str(tmp_path / "nope"),
                                 "--out", str(tmp_path)])
    assert result.exit_code != 0 and "does not exist" in result.output
    result = runner.invoke(app, ["search", "--simulations", "0", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "simulations" in result.output
