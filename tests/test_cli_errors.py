"""The command line at its boundaries: every mistake is one line (what, where, how to fix)
with a non-zero exit code; a bug is reported as a bug; bad lines of a run file are skipped
and counted, never fatal."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pytest
from test_run_folder import Solver
from typer.testing import CliRunner

from environments.math.arith_env import ArithEnvironment
from mcts_agent import cli
from mcts_agent.cli import app
from mcts_agent.registry import PluginSpec
from mcts_agent.search import SearchConfig
from mcts_agent.search.critic_specs import build_critic
from mcts_agent.search.run import run_search

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def one_line_error(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture
def run(tmp_path):
    """A finished run folder of two arith trees (scripted policy)."""
    env, policy = ArithEnvironment(max_operand=9), Solver()
    config = SearchConfig(simulations=8, expand_n=2)
    run_search(env, tasks=env.tasks(2), env_spec=PluginSpec("arith", {"max_operand": 9}),
               policy=policy, config=config, critic=build_critic(["verifier"], policy, config),
               out_dir=tmp_path / "run", baselines=False, cache=False)
    return tmp_path / "run"


def test_show_takes_the_run_folder(run):
    result = invoke("show", str(run))
    assert result.exit_code == 0, result.stderr
    assert "N=" in result.stdout


def test_show_of_a_missing_file_creates_nothing(tmp_path):
    result = invoke("show", str(tmp_path / "nosuch" / "trees.jsonl"))
    assert result.exit_code == 2
    assert "no trees at" in one_line_error(result)
    assert not (tmp_path / "nosuch").exists()


def test_a_non_utf8_byte_in_trees_is_a_counted_skip(run):
    trees = run / "trees.jsonl"
    first, second = trees.read_bytes().splitlines(keepends=True)
    trees.write_bytes(first + b"\xff garbage\n" + second)
    shown = invoke("show", str(run))
    assert shown.exit_code == 0 and "skipped 1 unreadable line" in shown.stdout
    mined = invoke("pairs", str(run), "--kind", "sft")
    assert mined.exit_code == 0, mined.stderr
    assert "from 2 trees" in mined.stdout  # the pairs command rebuilt arith(max_operand=9)


def test_a_record_of_the_wrong_shape_is_a_counted_skip(run):
    trees = run / "trees.jsonl"
    record = json.loads(trees.read_text().splitlines()[0])
    broken = [dict(record, nodes="oops"), dict(record, nodes=[[None] * 15, [5] * 15])]
    with trees.open("a") as f:
        f.writelines(json.dumps(b) + "\n" for b in broken)
    shown = invoke("show", str(trees))
    assert shown.exit_code == 0 and "skipped 2 unreadable line" in shown.stdout


def test_settings_yaml_true_is_not_a_number(tmp_path):
    config = tmp_path / "search.yaml"
    config.write_text("search:\n  simulations: true\n")
    result = invoke("search", "--config", str(config), "--out", str(tmp_path / "r"))
    assert result.exit_code == 2
    assert "simulations must be a number, got true" in one_line_error(result)


def test_env_args_that_yaml_misreads_stay_text(tmp_path):
    data = tmp_path / "qa.jsonl"
    data.write_text('{"question": "1+1", "answer": "2"}\n')
    spec = cli._env_spec("jsonl", [f"path={data}", "prompt_template=Problem: {problem}\n"])
    assert spec.args["prompt_template"] == "Problem: {problem}\n"
    assert cli._env_spec("arith", ["operators=%%"]).args["operators"] == "%%"
    result = invoke("search", "--env-arg", "operators=%%", "--out", str(tmp_path / "r"))
    assert result.exit_code == 2
    assert "environment 'arith': invalid arguments (operators" in one_line_error(result)


def test_an_unknown_split_is_refused(tmp_path):
    result = invoke("search", "--split", "Test", "--out", str(tmp_path / "r"))
    assert "environment 'arith' has no split 'Test'" in one_line_error(result)


def test_a_fully_resumed_run_reports_no_speed(run, monkeypatch):
    monkeypatch.setattr(cli, "load_policy", lambda *a, **k: Solver())
    result = invoke("search", "--tasks", "2", "--env-arg", "max_operand=9", "--simulations",
                    "8", "--expand-n", "2", "--critic", "verifier", "--no-baselines",
                    "--no-cache", "--out", str(run))
    assert result.exit_code == 0, result.stderr
    assert "all 2 trees were done before; nothing searched now" in result.stdout
    assert "tokens/s" not in result.stdout


def test_an_unwritable_run_folder_is_one_line(tmp_path, monkeypatch):
    if os.geteuid() == 0:  # root writes anywhere: fail the write the way a full disk does
        def full(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(os, "fsync", full)
    else:
        (tmp_path / "ro").mkdir()
        (tmp_path / "ro").chmod(0o500)
    monkeypatch.setattr(cli, "load_policy", lambda *a, **k: Solver())
    result = invoke("search", "--tasks", "1", "--critic", "verifier", "--no-baselines",
                    "--no-cache", "--out", str(tmp_path / "ro"))
    assert result.exit_code == 2
    line = one_line_error(result)
    assert "No space left on device" in line or "Permission denied" in line


def test_a_bug_is_reported_as_a_bug(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise TypeError("unsupported operand")

    monkeypatch.setattr(cli, "run_search", broken)
    monkeypatch.setattr(cli, "load_policy", lambda *a, **k: Solver())
    result = invoke("search", "--tasks", "1", "--critic", "verifier", "--out",
                    str(tmp_path / "r"))
    assert result.exit_code == 1
    line = one_line_error(result)
    assert line.startswith("error: internal error") and "TypeError: unsupported operand" in line
    assert "-v for the traceback" in line


def test_the_data_and_contract_layers_import_no_model_library():
    code = ("import sys, mcts_agent.data, mcts_agent.contracts, mcts_agent.trees; "
            "print([m for m in ('torch', 'transformers', 'vllm', 'numba') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_training_rows_of_the_wrong_type_are_refused_before_trl(tmp_path):
    rows = tmp_path / "pairs.jsonl"
    rows.write_text(json.dumps({"prompt": "Q: 1+1=?\n", "chosen": "Answer: 2\n",
                                "rejected": 5}) + "\n")
    result = invoke("train", str(rows), "--out", str(tmp_path / "model"), "--method", "dpo")
    assert result.exit_code == 2
    assert "dpo row 0: 'rejected' must be text or a list of chat messages, got int" in (
        one_line_error(result))


def test_pairs_rebuild_a_jsonl_run_with_its_arguments(tmp_path, monkeypatch):
    """Before: pairs rebuilt the environment from its display name ('jsonl:qa.jsonl') and
    failed; now config.yaml records the registered name and every --env-arg."""
    data = tmp_path / "qa.jsonl"
    data.write_text('{"question": "2+3=?", "answer": "5"}\n{"question": "4*2=?", "answer": "8"}\n')
    monkeypatch.setattr(cli, "load_policy", lambda *a, **k: Solver())
    out = tmp_path / "run"
    searched = invoke("search", "--env", "jsonl", "--env-arg", f"path={data}", "--tasks", "2",
                      "--simulations", "8", "--expand-n", "2", "--critic", "verifier",
                      "--no-baselines", "--no-cache", "--out", str(out))
    assert searched.exit_code == 0, searched.stderr
    mined = invoke("pairs", str(out), "--kind", "sft")
    assert mined.exit_code == 0, mined.stderr
    rows = [json.loads(line) for line in (out / "data" / "sft.jsonl").read_text().splitlines()]
    assert sorted(row["prompt"] for row in rows) == ["Q: 2+3=?\n", "Q: 4*2=?\n"]
