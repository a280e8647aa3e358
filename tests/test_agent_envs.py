"""The offline agent games (ScienceWorld, textarena, BabyAI, the gymnasium adapter) behind
AgentEnvironment: they reset and step, their walkthroughs win, and a state restored any way —
snapshot copy, replay from the start, replay after the pool evicted it, another JVM — shows the
agent exactly the same thing. Each game's tests skip when its package is missing."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import pytest

from environments.agent.base import AgentEnvironment, AgentState, transitions_match
from mcts_agent.contracts import Task
from mcts_agent.react import normalise

ROOT = Path(__file__).parents[1]


# ---------------------------------------------------------------------------- shared checks


def play_path(env: AgentEnvironment, task: Task, commands: list[str]) -> list[AgentState]:
    """The states along ``commands`` (stopping when the episode ends)."""
    states = [env.reset(task)]
    for command in commands:
        if states[-1].done:
            break
        step = env.step(states[-1], f"Thought: next. Action: {command}")
        assert not step.info.get("invalid_action"), (command, step.state.turns[-1].observation)
        states.append(step.state)
    return states


def check_restores(game, task: Task, commands: list[str], branch: str) -> list[AgentState]:
    """Every way of reaching a state along ``commands`` gives the same transitions.

    ``branch`` is a command accepted everywhere, stepped off the path to evict its states."""
    env = AgentEnvironment(game)
    states = play_path(env, task, commands)
    sent = list(states[-1].commands)
    assert sent == [normalise(c) for c in commands[:len(sent)]]
    # replay from the start, bypassing every cache
    replayed = env.replay(task, sent)
    assert replayed[0] == states[0].first
    for state, transition in zip(states[1:], replayed[1:], strict=True):
        assert transitions_match(state.current, transition)
    # a one-simulator pool: each path step finds its parent evicted by a branch (so it is
    # restored from the start), and each branch starts from the fresh snapshot (copied, when
    # the game can copy); the big pool's branch from the same state must agree
    small = AgentEnvironment(game, pool_size=1)
    for i in range(len(sent)):
        again = small.step(states[i], f"Action: {sent[i]}").state
        assert transitions_match(again.current, states[i + 1].current)
        if not again.done:
            off = small.step(again, f"Action: {branch}").state
            expected = env.step(states[i + 1], f"Action: {branch}").state
            assert transitions_match(off.current, expected.current)
    assert small.pool.replayed_steps > 0
    if game.can_copy:
        assert small.pool.copies > 0
    for used in (small, env):
        used.close()
    return states


def check_walkthrough_wins(game, task: Task) -> None:
    env = AgentEnvironment(game)
    walkthrough = game.walkthrough(task)
    assert walkthrough
    state = env.play(task, [f"Action: {a}" for a in walkthrough])
    assert state.done and state.won, state.turns[-1].observation
    assert env.score(state, task) == 1.0
    env.close()


# ---------------------------------------------------------------------------- ScienceWorld


@pytest.fixture(scope="module")
def sw_game():
    pytest.importorskip("scienceworld")
    from environments.agent.scienceworld_game import DEFAULT_JAVA_OPTS, ScienceWorldGame

    # C1 only: a short run compiles less (~30% faster here)
    game = ScienceWorldGame(max_jvms=2, java_opts=(*DEFAULT_JAVA_OPTS, "-XX:TieredStopAtLevel=1"))
    yield game
    game.close()


@pytest.fixture(scope="module")
def sw_task(sw_game):
    return sw_game.task("find-living-thing", 3)


def test_scienceworld_task_and_first_observation(sw_game, sw_task):
    assert sw_task.id == "find-living-thing-3"
    assert sw_task.problem.startswith("Your task is to find")
    assert sw_task.metadata["split"] == "train"
    env = AgentEnvironment(sw_game)
    state = env.reset(sw_task)
    assert " is called the " in state.first.observation
    assert "\t" not in state.first.observation
    assert state.first.valid_actions is None
    step = env.step(state, "Action: xyzzy")  # no valid-action list: the game answers
    assert "No known action" in step.state.turns[-1].observation and not step.done
    env.close()


def test_scienceworld_walkthrough_and_restores(sw_game, sw_task):
    walkthrough = sw_game.walkthrough(sw_task)
    assert 3 <= len(walkthrough) <= 20
    check_walkthrough_wins(sw_game, sw_task)
    # a short path (each restore reloads the task in a JVM): the start of the walkthrough with
    # a detour that includes a command the game does not know
    commands = [*walkthrough[:2], "inventory", "xyzzy", *walkthrough[2:4]]
    states = check_restores(sw_game, sw_task, commands, branch="look around")
    assert any(t.reward > 0 for t in states[-1].turns)


def test_scienceworld_same_text_on_every_jvm(sw_game, sw_task):
    """Two simulators alive at once run on two JVMs; a third takes an idle one over, and the
    displaced simulator replays on its next step. All show the same text."""
    commands = sw_game.walkthrough(sw_task)[:4]
    sims = [sw_game.start(sw_task) for _ in range(3)]
    firsts = {first.observation for _, first in sims}
    assert len(firsts) == 1
    outputs: list[list[str]] = [[], [], []]
    replayed = sw_game.replayed_steps
    for command in commands:
        for k, (sim, _) in enumerate(sims):
            outputs[k].append(sim.step(command).observation)
    assert outputs[0] == outputs[1] == outputs[2]
    assert len(sw_game._jvms) <= 2 and sw_game.replayed_steps > replayed
    for sim, _ in sims:
        sim.close()


def test_scienceworld_splits_and_tasks(sw_game):
    from environments.agent.scienceworld_game import ScienceWorldGame, split_variations

    jvm = sw_game._acquire(None)  # the formula agrees with the JVM's own lists
    try:
        jvm.load("boil", 0, "")
        assert list(jvm.server.getVariationsTrain()) == list(split_variations(30, "train"))
        assert list(jvm.server.getVariationsDev()) == list(split_variations(30, "dev"))
        assert list(jvm.server.getVariationsTest()) == list(split_variations(30, "test"))
    finally:
        sw_game._free(jvm)
    tasks = sw_game.tasks(3, split="test", seed=0)
    assert len({t.metadata["task"] for t in tasks}) == 3  # spread over task names
    for task in tasks:
        n = sw_game.n_variations(task.metadata["task"])
        assert task.metadata["variation"] in split_variations(n, "test")
        assert task.problem.startswith("Your task is")
    assert tasks == sw_game.tasks(3, split="test", seed=0)
    with pytest.raises(ValueError, match="unknown ScienceWorld tasks"):
        ScienceWorldGame(task_names=["nope"])


# ---------------------------------------------------------------------------- textarena


@pytest.fixture(scope="module")
def textarena_module():
    pytest.importorskip("textarena")
    from environments.agent import textarena_game

    return textarena_game


def test_textarena_brackets(textarena_module):
    bracketed = textarena_module.bracketed
    assert bracketed("a c") == "[a c]"
    assert bracketed("[a c]") == "[a c]"
    assert bracketed("a c] [b c") == "[a c] [b c]"


def test_textarena_hanoi_walkthrough_and_restores(textarena_module):
    game = textarena_module.TextArenaGame("TowerOfHanoi-v0")
    task = game.tasks(1, split="test", seed=0)[0]
    assert "Tower of Hanoi" in task.problem and "A: [3, 2, 1]" in AgentEnvironment(
        game).reset(task).first.observation
    check_walkthrough_wins(game, task)
    rng = random.Random(1)
    commands = [f"{rng.choice('ABC')} {rng.choice('ABC')}" for _ in range(8)]
    check_restores(game, task, commands, branch="A B")


@pytest.mark.parametrize("env_id", ["2048-v0", "Minesweeper-v0-small"])
def test_textarena_random_games_copy_their_randomness(textarena_module, env_id):
    """2048 draws a tile and Minesweeper its mines from the global ``random`` while playing:
    copies and replays must still agree, whatever else uses ``random`` in between."""
    game = textarena_module.TextArenaGame(env_id)
    task = game.tasks(1, split="test", seed=4 if env_id.startswith("2048") else 3)[0]
    rng = random.Random(0)
    moves = (["up", "left", "down", "right"] if env_id.startswith("2048")
             else [f"{r} {c}" for r in range(5) for c in range(5)])
    commands = [rng.choice(moves) for _ in range(10)]
    states = check_restores(game, task, commands, branch=moves[0])
    assert len(states) >= 4
    sim, _ = game.start(task)
    for command in states[-1].commands[:2]:
        sim.step(command)
    twin = sim.copy()
    random.random()  # someone else draws from the global generator
    rest = states[-1].commands[2:]
    assert [sim.step(c) for c in rest] == [twin.step(c) for c in rest]


def test_textarena_entry_point_and_tasks(textarena_module):
    env = textarena_module.textarena(env_ids=["GuessTheNumber-v0", "TowerOfHanoi-v0"],
                                     max_history=4)
    tasks = env.tasks(4, split="train", seed=0)
    assert [t.metadata["env_id"] for t in tasks] == ["GuessTheNumber-v0", "TowerOfHanoi-v0"] * 2
    assert all(t.metadata["seed"] >= 1_000_000 for t in tasks)
    assert {t.id for t in tasks}.isdisjoint({t.id for t in env.tasks(4, split="test", seed=0)})
    check_walkthrough_wins(env.game, tasks[0])


# ---------------------------------------------------------------------------- BabyAI


@pytest.fixture(scope="module")
def babyai_module():
    pytest.importorskip("minigrid")
    from environments.agent import babyai_game

    return babyai_game


@pytest.mark.parametrize("level", ["BabyAI-GoToLocal-v0", "BabyAI-PickupLoc-v0"])
def test_babyai_walkthrough_and_restores(babyai_module, level):
    game = babyai_module.BabyAIGame(level)
    task = game.tasks(1, split="test", seed=0)[0]
    assert task.problem.startswith(("go to", "pick up"))
    state = AgentEnvironment(game).reset(task)
    assert state.first.observation.startswith("You see")
    assert state.first.valid_actions == babyai_module.ACTIONS
    check_walkthrough_wins(game, task)
    rng = random.Random(0)
    commands = [rng.choice(babyai_module.ACTIONS[:6]) for _ in range(12)]
    check_restores(game, task, commands, branch="turn left")


def test_babyai_describes_the_view(babyai_module):
    game = babyai_module.BabyAIGame("BabyAI-GoToRedBall-v0")
    task = game.task("BabyAI-GoToRedBall-v0", 5)
    env = AgentEnvironment(game)
    state = env.play(task, [f"Action: {a}" for a in game.walkthrough(task)])
    last = state.turns[-1].observation
    assert "a red ball 1 step ahead" in last and "You completed the mission!" in last
    assert env.step(env.reset(task), "Action: jump").info["invalid_action"]


# ---------------------------------------------------------------------------- gymnasium


@pytest.fixture(scope="module")
def keydoor():
    pytest.importorskip("gymnasium")
    spec = importlib.util.spec_from_file_location("agent_gymnasium",
                                                  ROOT / "examples" / "agent_gymnasium.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.KeyDoorEnv


@pytest.mark.parametrize("copyable", [True, False])
def test_gymnasium_adapter_restores(keydoor, copyable):
    from environments.agent.gymnasium_game import GymnasiumGame

    game = GymnasiumGame(keydoor, name="keydoor", action_names=keydoor.ACTIONS,
                         copyable=copyable)
    task = game.tasks(1, split="test", seed=0)[0]
    assert task.problem == "Open the garden door. You need a key."
    rng = random.Random(0)
    commands = [rng.choice(keydoor.ACTIONS) for _ in range(10)]
    check_restores(game, task, commands, branch="look")
    probe = keydoor()
    probe.reset(seed=task.metadata["seed"])
    key_room = probe.key_room
    env = AgentEnvironment(game)
    state = env.play(task, [f"go to {key_room}", "take key", "go to hall", "open door"])
    assert state.won and env.score(state, task) == 1.0


def test_gymnasium_adapter_by_id_with_converters():
    """A registered non-text environment (slippery FrozenLake: random moves from its own
    np_random) through obs_to_text and text_to_action."""
    pytest.importorskip("gymnasium")
    from environments.agent.gymnasium_game import GymnasiumGame, gymnasium_env

    moves = ("left", "down", "right", "up")
    game = GymnasiumGame("FrozenLake-v1", name="frozenlake", make_kwargs={"is_slippery": True},
                         obs_to_text=lambda obs, info: f"You stand on cell {obs}.",
                         text_to_action=lambda text: moves.index(text) if text in moves
                         else None)
    task = game.task(7)
    state = AgentEnvironment(game).reset(task)
    assert state.first.observation == "You stand on cell 0." and state.first.valid_actions is None
    rng = random.Random(3)
    check_restores(game, task, [rng.choice(moves) for _ in range(12)], branch="left")
    sim, _ = game.start(task)
    assert "Unknown action" in sim.step("fly").observation
    env = gymnasium_env(make="FrozenLake-v1", obs_to_text=lambda o, i: str(o), max_history=2)
    assert env.max_history == 2 and env.game.name == "gymnasium"
