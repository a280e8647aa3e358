"""BabyAI (minigrid) levels as a :class:`~environments.agent.base.TextGame`, described in words.

A task is one (level, seed) pair, e.g. ``("BabyAI-GoToLocal-v0", 12)``; its problem is the
level's mission ("go to the red ball"). The agent sees its 7x7 egocentric view as sentences —
what is visible and where relative to it ("a red ball 2 steps ahead and 1 to your left"), the
nearest wall straight ahead and to each side, what it carries — and acts with words ("turn
left", "go forward", "pick up" …), which are also the valid actions. minigrid environments are
plain Python objects, so simulators are cloned with :func:`copy.deepcopy` (``can_copy=True``).

A level is won when it pays a reward (minigrid gives ``1 - 0.9 * steps / max_steps`` on success,
which is the transition's reward); it ends when won or out of steps. ``walkthrough`` is the
demonstration of minigrid's BabyAI bot, in words.
"""

from __future__ import annotations

import contextlib
import copy
import io
import random
from collections.abc import Sequence
from typing import Any

from mcts_agent.contracts import Task

from .base import DEV_ALIASES, SPLITS, AgentEnvironment, Transition, canonical_split, require

ACTIONS = ("turn left", "turn right", "go forward", "pick up", "drop", "toggle", "done")
"""The words for minigrid's actions 0..6 (left, right, forward, pickup, drop, toggle, done)."""

LEVELS = ("BabyAI-GoToRedBall-v0", "BabyAI-GoToLocal-v0", "BabyAI-PickupLoc-v0",
          "BabyAI-OpenDoor-v0", "BabyAI-GoToObj-v0", "BabyAI-PutNextLocal-v0")
"""Levels checked to reset, describe, copy and be solved by the bot."""

_SPLIT_OFFSETS = {"train": 1_000_000, "dev": 2_000_000, "test": 0}


def _steps(n: int) -> str:
    return f"{n} step{'s' if n != 1 else ''}"


def _where(ahead: int, right: int) -> str:
    side = f"{abs(right)} to your {'right' if right > 0 else 'left'}"
    if ahead and right:
        return f"{_steps(ahead)} ahead and {side}"
    if ahead:
        return f"{_steps(ahead)} ahead"
    return f"{_steps(abs(right))} to your {'right' if right > 0 else 'left'}"


def _name(obj: Any) -> str:
    if obj.type == "door":
        state = "locked" if obj.is_locked else "open" if obj.is_open else "closed"
        return f"a {state} {obj.color} door"
    if obj.type in ("goal", "lava"):
        return f"the {obj.type}" if obj.type == "goal" else "lava"
    article = "an" if obj.color[0] in "aeiou" else "a"
    return f"{article} {obj.color} {obj.type}"


def describe(env: Any) -> str:
    """The agent's view in words: visible objects by distance, the nearest walls straight ahead
    and to each side, and what it carries."""
    grid, visible = env.gen_obs_grid()
    size = grid.width
    mid, back = size // 2, size - 1  # the agent stands at (mid, back), facing up the view
    things: list[tuple[int, str]] = []
    for i in range(size):
        for j in range(size):
            obj = grid.get(i, j)
            ahead, right = back - j, i - mid
            if obj is None or not visible[i, j] or (ahead == 0 and right == 0):
                continue
            if obj.type in ("wall", "floor"):
                continue
            things.append((ahead + abs(right), f"{_name(obj)} {_where(ahead, right)}"))
    walls = []
    for label, cells in (("ahead", [(mid, back - k, k) for k in range(1, size)]),
                         ("left", [(mid - k, back, k) for k in range(1, mid + 1)]),
                         ("right", [(mid + k, back, k) for k in range(1, mid + 1)])):
        for i, j, distance in cells:
            obj = grid.get(i, j)
            if not visible[i, j]:
                break
            if obj is not None and obj.type == "wall":
                where = f"{_steps(distance)} ahead" if label == "ahead" else \
                    f"{_steps(distance)} to your {label}"
                walls.append((distance, f"a wall {where}"))
                break
            if obj is not None and not obj.can_overlap():
                break  # something else blocks the line
    seen = [text for _, text in sorted(things)] + [text for _, text in walls]
    lines = ["You see:", *(f"- {text}" for text in seen)] if seen else ["You see nothing."]
    carrying = env.carrying
    lines.append(f"You are carrying {_name(carrying)}." if carrying is not None
                 else "You are carrying nothing.")
    return "\n".join(lines)


class BabyAISimulator:
    """One minigrid episode (the unwrapped environment)."""

    def __init__(self, env: Any) -> None:
        self.env = env
        self.ended = False

    def step(self, action: str) -> Transition:
        if self.ended:
            raise RuntimeError("the BabyAI episode has ended")
        command = " ".join(action.lower().split())
        if command not in ACTIONS:
            return Transition(f"Unknown action {action!r}. Valid actions: {', '.join(ACTIONS)}.",
                              valid_actions=ACTIONS)
        env = self.env
        before = (tuple(env.agent_pos), env.agent_dir, describe(env))
        _, reward, terminated, truncated, _ = env.step(ACTIONS.index(command))
        text = describe(env)
        won = bool(reward > 0)
        self.ended = bool(terminated or truncated or won)
        if won:
            text = f"{text}\nYou completed the mission!"
        elif self.ended:
            text = f"{text}\nThe episode is over: {'out of steps' if truncated else 'failed'}."
        elif (tuple(env.agent_pos), env.agent_dir, text) == before:
            text = f"Nothing happens.\n{text}"
        return Transition(text, float(reward), self.ended, won,
                          None if self.ended else ACTIONS)

    def copy(self) -> BabyAISimulator:
        return copy.deepcopy(self)


class BabyAIGame:
    """BabyAI levels behind the TextGame contract.

    Args:
        levels: the levels :meth:`tasks` draws from, in turn (see :data:`LEVELS`).
    """

    name = "babyai"
    can_copy = True
    splits = (*SPLITS, *DEV_ALIASES)

    def __init__(self, levels: Sequence[str] | str = ("BabyAI-GoToRedBall-v0",
                                                      "BabyAI-GoToLocal-v0")) -> None:
        require("minigrid", "the BabyAI game")  # registers the BabyAI levels
        self.gym = require("gymnasium", "the BabyAI game")
        self.levels = [levels] if isinstance(levels, str) else list(levels)
        if not self.levels:
            raise ValueError("give at least one BabyAI level")

    def start(self, task: Task) -> tuple[BabyAISimulator, Transition]:
        env = self._reset(*self._parse(task))
        return BabyAISimulator(env), Transition(describe(env), valid_actions=ACTIONS)

    def tasks(self, n: int, split: str = "test", seed: int | None = None) -> list[Task]:
        """``n`` tasks cycling through ``levels`` with distinct seeds from a range that belongs
        to ``split``."""
        split = canonical_split(self.name, split)
        seeds = random.Random(f"babyai:{split}:{seed}").sample(range(1_000_000), n)
        return [self.task(self.levels[i % len(self.levels)], _SPLIT_OFFSETS[split] + s, split)
                for i, s in enumerate(seeds)]

    def task(self, level: str, seed: int, split: str | None = None) -> Task:
        """The :class:`Task` for one level and seed; the problem is its mission."""
        env = self._reset(level, seed)
        return Task(f"{level}:{seed}", env.mission, None,
                    {"level": level, "seed": seed, "split": split})

    def walkthrough(self, task: Task, max_steps: int = 500) -> list[str]:
        """The BabyAI bot's actions from the start, in words, up to the win."""
        from minigrid.utils.baby_ai_bot import BabyAIBot

        env = self._reset(*self._parse(task))
        bot = BabyAIBot(env)
        actions: list[str] = []
        for _ in range(max_steps):
            action = int(bot.replan())
            if action == ACTIONS.index("done"):
                break
            actions.append(ACTIONS[action])
            _, reward, terminated, truncated, _ = env.step(action)
            if reward > 0 or terminated or truncated:
                break
        return actions

    def _reset(self, level: str, seed: int) -> Any:
        env = self.gym.make(level).unwrapped
        with contextlib.redirect_stdout(io.StringIO()):  # "Sampling rejected: ..." notes
            env.reset(seed=seed)
        return env

    def _parse(self, task: Task) -> tuple[str, int]:
        meta = task.metadata or {}
        if "level" in meta and "seed" in meta:
            return str(meta["level"]), int(meta["seed"])
        level, _, seed = task.id.rpartition(":")
        if not level or not seed.isdigit():
            raise ValueError(f"task {task.id!r}: expected metadata level/seed or an id "
                             "'<level>:<seed>'")
        return level, int(seed)


def babyai(**knobs: Any) -> AgentEnvironment:
    """Entry point: BabyAI levels as a search environment (``levels`` plus
    :class:`AgentEnvironment`'s knobs)."""
    game = BabyAIGame(**{k: knobs.pop(k) for k in ("levels",) if k in knobs})
    return AgentEnvironment(game, **knobs)
