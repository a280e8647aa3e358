"""A plug-in author's view: a third-party package (environment + critic, installed with a real
dist-info) works from the CLI like a built-in, and each mistake its author can make is one
readable line naming the plug-in, before any model loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from plugin_package import install_plugin

NO_MODEL = "/nonexistent/model"  # loading it would fail: an error about the plug-in came first


def cli(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "mcts_agent", *args], capture_output=True,
                          text=True, env=env, timeout=600)


def error_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines, result.stdout
    assert len(lines) == 1, result.stderr  # one line, no traceback
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def plugin_run(tmp_path_factory):
    """`search --env toy --critic toy-critic=level=0.7` on the shipped tiny reasoner."""
    site = install_plugin(tmp_path_factory.mktemp("site"))
    out = tmp_path_factory.mktemp("run")
    result = cli(site, "search", "--env", "toy", "--env-arg", "offset=2", "--critic",
                 "toy-critic=level=0.7", "--tasks", "3", "--simulations", "8",
                 "--no-baselines", "--out", str(out))
    assert result.returncode == 0, result.stderr
    return site, out


def test_envs_lists_the_plugins(plugin_run):
    site, _ = plugin_run
    result = cli(site, "envs")
    assert "toy" in result.stdout and "toy-critic" in result.stdout


def test_search_with_plugin_environment_and_critic(plugin_run):
    _, out = plugin_run
    trees = [json.loads(line) for line in (out / "trees.jsonl").read_text().splitlines()]
    problems = {t["task"]["id"]: t["task"]["problem"] for t in trees}
    assert problems == {"toy-0": "10+2", "toy-1": "11+3", "toy-2": "12+4"}  # offset=2 arrived
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["environment"] == {"name": "toy", "args": {"offset": 2}}
    # what scored is recorded: the verifier in front, the plug-in critic behind it
    assert "toy-critic" in json.dumps(config["critic"])


def test_pairs_and_show_rebuild_the_plugin_environment(plugin_run):
    site, out = plugin_run
    shown = cli(site, "show", str(out), "--task", "toy-0")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("toy-0: 10+2")
    mined = cli(site, "pairs", str(out), "--kind", "stepwise")
    assert mined.returncode == 0, mined.stderr
    rows = [json.loads(line) for line in (out / "data" / "stepwise.jsonl").read_text()
            .splitlines()]
    assert rows and all(row["prompt"].startswith("Q: 1") for row in rows)


@pytest.mark.parametrize(("variant", "expected"), [
    ("no-prompt", "environment 'toy' has no prompt()"),
    ("dict-tasks", "tasks() item 0 is a dict, not a mcts_agent.contracts.Task"),
    ("bad-score", "environment 'toy': score() returned 7.0"),
    ("no-evaluate", "critic 'toy-critic'"),
])
def test_each_mistake_is_one_line_before_the_model_loads(tmp_path, variant, expected):
    site = install_plugin(tmp_path / "site", variant)
    result = cli(site, "search", "--env", "toy", "--critic", "toy-critic", "--tasks", "2",
                 "--model", NO_MODEL, "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert expected in error_line(result)


def test_unknown_critic_names_the_installed_ones(tmp_path):
    site = install_plugin(tmp_path / "site")
    result = cli(site, "search", "--env", "toy", "--critic", "toy-critc", "--model", NO_MODEL,
                 "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    line = error_line(result)
    assert "unknown critic 'toy-critc'" in line and "Did you mean 'toy-critic'" in line


def test_an_environment_whose_every_step_raises_fails_the_run(tmp_path):
    site = install_plugin(tmp_path / "site", "crashing-step")
    result = cli(site, "search", "--env", "toy", "--tasks", "2", "--simulations", "2",
                 "--no-baselines", "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    line = error_line(result)
    assert "raised on every step of all 2 trees" in line
    assert "RuntimeError: simulator fell over" in line
    statuses = [json.loads(x)["status"] for x in (tmp_path / "run" / "trees.jsonl").read_text()
                .splitlines()]
    assert statuses == ["environment_error"] * 2  # recorded as such, not as finished
