"""Plug-in registries: built-ins by decorator, third-party packages by entry point."""

import sys

import pytest

from mcts_agent.contracts import Assessment, Environment, Step, Task
from mcts_agent.errors import ConfigError, PluginError
from mcts_agent.registry import Registry


class EchoEnvironment:
    name = "echo"
    step_delimiter = "\n"

    def reset(self, task):
        return ""

    def step(self, state, action):
        return Step(state + action, done=action == "stop")

    def prompt(self, state):
        return state

    def score(self, state, task):
        return None


def test_register_and_create():
    registry = Registry("environment", "mcts_agent.test_envs")
    registry.register("echo")(EchoEnvironment)
    env = registry.create("echo")
    assert isinstance(env, Environment)
    assert env.step(env.reset(Task("t", "q")), "stop").done
    assert registry.names() == ["echo"]


def test_unknown_name_suggests_the_closest():
    registry = Registry("environment", "mcts_agent.test_envs")
    registry.register("arith")(EchoEnvironment)
    with pytest.raises(ConfigError, match="Did you mean 'arith'"):
        registry.create("arit")


def test_double_registration_is_an_error():
    registry = Registry("critic", "mcts_agent.test_critics")
    registry.register("x")(EchoEnvironment)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("x")(dict)


def test_third_party_entry_point_is_found(tmp_path, monkeypatch):
    # a real installed-package layout: a module plus its dist-info with entry_points.txt
    (tmp_path / "thirdparty_env.py").write_text(
        "class Maze:\n    name = 'maze'\n    def __init__(self, size=3):\n"
        "        self.size = size\n")
    info = tmp_path / "thirdparty_env-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-env\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[mcts_agent.test_plugins]\nmaze = thirdparty_env:Maze\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry("environment", "mcts_agent.test_plugins")
    assert "maze" in registry.names()
    assert registry.create("maze", size=5).size == 5
    sys.modules.pop("thirdparty_env", None)


def test_broken_entry_point_names_the_plugin(tmp_path, monkeypatch):
    info = tmp_path / "broken_env-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-env\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[mcts_agent.test_broken]\nbad = no_such_module_xyz:Thing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry("environment", "mcts_agent.test_broken")
    assert registry.names() == ["bad"]  # listed without importing it
    with pytest.raises(PluginError, match=r"'bad'.*failed to load"):
        registry.create("bad")


def test_assessment_values_are_bounded():
    assert Assessment(0.5, feedback="fine").value == 0.5
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Assessment(1.5)
