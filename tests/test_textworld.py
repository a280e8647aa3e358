"""TextWorld games behind the agent contract: generation and cache, cleaned observations,
copy-restore against replay, winning, invalid replies, branch isolation, demonstrations."""

import random
import sys

import pytest

pytest.importorskip("textworld")

from environments.agent import AgentEnvironment, transitions_match
from environments.agent.base import require
from environments.agent.textworld_game import (
    TextWorldGame,
    clean_objective,
    clean_observation,
    default_cache_dir,
)
from mcts_agent.react import render_turn


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private game cache, named by $MCTS_AGENT_CACHE as users would."""
    root = tmp_path_factory.mktemp("mcts-agent-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MCTS_AGENT_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def game(cache):
    return TextWorldGame()


@pytest.fixture(scope="module")
def task(game):
    return game.tasks(1, split="test")[0]


@pytest.fixture
def env(game):
    env = AgentEnvironment(game, instructions=None, max_history=2)
    yield env
    env.close()


def test_generated_into_the_cache_atomically_and_deterministically(cache, game, task):
    assert default_cache_dir() == cache / "textworld"
    assert game.folder.parent == cache / "textworld"
    assert task.id == "textworld-test-0000"
    folder = game.game_dir("test", 0, 0)
    assert task.metadata["game_file"] == str(folder / "game.z8")
    assert {p.name for p in folder.iterdir()} >= {"game.z8", "game.json", "meta.json"}
    assert not [p for p in game.folder.iterdir() if p.name.startswith(".tmp")]
    assert task.metadata["walkthrough"] == game.walkthrough(task)
    assert 1 <= len(game.walkthrough(task)) <= 6
    # the objective is cleaned: no welcome banner nor sign-off
    assert "TextWorld" not in task.problem and task.problem.endswith(".")
    # a second game object reads the same game from the cache without regenerating it
    mtime = (folder / "game.z8").stat().st_mtime_ns
    again = TextWorldGame().tasks(1, split="test")[0]
    assert again == task and (folder / "game.z8").stat().st_mtime_ns == mtime


def test_splits_use_disjoint_seeds():
    train = {TextWorldGame.textworld_seed("train", i, s) for i in range(200) for s in range(3)}
    test = {TextWorldGame.textworld_seed("test", i, s) for i in range(200) for s in range(3)}
    assert len(train) == len(test) == 600 and not train & test
    with pytest.raises(ValueError, match="split"):
        TextWorldGame().tasks(1, split="dev")


def test_cleaning():
    raw = ("\n\n  ____  \n |    \\ \n\nWelcome to TextWorld! Here is your task for today. "
           "First off, go east. Then, take the apple. Got that? Good!\n\n-= Kitchen =-\n"
           "You are in a kitchen.\n\n>      -= Kitchen =-0/1")
    objective = raw[raw.index("Welcome"):raw.index("Good!") + 5]
    assert clean_objective(objective) == "First off, go east. Then, take the apple."
    assert clean_observation(raw, objective) == "-= Kitchen =- You are in a kitchen."
    end = ("\nYou eat the apple.\n\n*** The End ***\n\nWould you like to RESTART, RESTORE a "
           "saved game, QUIT or UNDO the last command?\n>    -= Kitchen =-1/3")
    assert clean_observation(end) == "You eat the apple. *** The End ***"


def test_first_observation_is_clean(game, task):
    sim, first = game.start(task)
    sim.close()
    assert first.observation.startswith("-= ")
    assert "TextWorld" not in first.observation and "$$" not in first.observation
    assert not first.observation.endswith(">") and "=-0/" not in first.observation
    assert "  " not in first.observation and "\n" not in first.observation
    assert first.valid_actions == tuple(sorted(first.valid_actions))
    assert not first.done and first.reward == 0


def _random_path(env, task, rng, length=6):
    state = env.reset(task)
    commands = []
    while len(commands) < length and not state.done:
        command = rng.choice(state.current.valid_actions)
        commands.append(command)
        state = env.step(state, render_turn(command)).state
    return commands


@pytest.mark.parametrize("path", ["walkthrough", "random"])
def test_copies_match_replay_from_reset(game, task, env, path):
    commands = (game.walkthrough(task) if path == "walkthrough"
                else _random_path(env, task, random.Random(3)))
    replayed = env.replay(task, commands)
    sim, first = game.start(task)
    assert transitions_match(first, replayed[0])
    snapshots = [sim]
    for i, command in enumerate(commands):
        branch = snapshots[-1].copy()  # a copy of a snapshot that is never stepped itself
        snapshots.append(branch)
        assert transitions_match(branch.step(command), replayed[i + 1]), command
    for snapshot in snapshots:
        snapshot.close()


def test_walkthrough_wins_with_score_one(game, task, env):
    state = env.play(task, [render_turn(c) for c in game.walkthrough(task)])
    assert state.done and state.won
    assert env.score(state, task) == 1.0
    assert state.score == pytest.approx(1.0)
    assert "RESTART" not in state.current.observation and state.current.valid_actions == ()
    with pytest.raises(ValueError, match="ended"):
        env.step(state, render_turn("look"))


def test_invalid_reply_is_rejected_with_the_valid_actions(task, env):
    state = env.reset(task)
    step = env.step(state, "Thought: why not. Action: fly to the moon")
    assert step.info == {"invalid_action": True} and step.reward == 0 and not step.done
    child = step.state
    assert child.invalid == 1 and child.commands == ()
    shown = child.turns[-1].observation
    assert '"fly to the moon" is not a valid action here.' in shown
    assert "Valid actions: " + ", ".join(state.current.valid_actions) in shown
    assert env.step(child, "no action here\nat all").state.invalid == 2


def test_branches_do_not_leak_state(game, task, env):
    state = env.reset(task)
    first_command = game.walkthrough(task)[0]
    detour = next(a for a in state.current.valid_actions
                  if a != first_command and not a.startswith(("examine", "look", "inventory")))
    a = env.step(state, render_turn(first_command)).state
    b = env.step(state, render_turn(detour)).state
    assert a.current.observation != b.current.observation
    env._outcomes.clear()  # force a real simulation from the snapshot at `state`
    again = env.step(state, render_turn(first_command)).state
    assert transitions_match(again.current, a.current)
    # and deeper: the two branches continue independently
    b_next = b.current.valid_actions[0]
    after_b = env.step(b, render_turn(b_next)).state
    after_a = env.step(a, render_turn(game.walkthrough(task)[1])).state
    assert transitions_match(after_b.current, env.replay(task, [detour, b_next])[-1])
    assert transitions_match(after_a.current,
                             env.replay(task, game.walkthrough(task)[:2])[-1])


def test_simulator_copies_are_independent(game, task):
    sim, _ = game.start(task)
    one, two = sim.copy(), sim.copy()
    step = game.walkthrough(task)[0]
    moved = one.step(step)
    two.step("look")
    three = sim.copy()
    assert transitions_match(three.step(step), moved)
    assert transitions_match(sim.step(step), moved)
    for s in (sim, one, two, three):
        s.close()


def test_demonstrations(game, task):
    assert game.demonstration(task, 0.0, random.Random(0)) == game.walkthrough(task)
    noisy = game.labelled_demonstration(task, 0.5, random.Random(1))
    assert noisy == game.labelled_demonstration(task, 0.5, random.Random(1))
    commands = [c for c, _ in noisy]
    limit = 3 * len(game.walkthrough(task)) + 6
    assert len(commands) <= limit
    outcome = AgentEnvironment(game).replay(task, commands)[-1]
    assert outcome.won or outcome.done or len(commands) == limit
    # the label is the game's next command from the state reached, not the walkthrough's
    assert all(expert for _, expert in noisy)


def test_missing_textworld_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "textworld", None)
    with pytest.raises(ImportError, match="pip install textworld"):
        require("textworld", "TextWorld games")
