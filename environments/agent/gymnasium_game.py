"""Any gymnasium text environment as a :class:`~environments.agent.base.TextGame`.

A user who already has a ``gymnasium.Env`` plugs it into the search in a few lines::

    game = GymnasiumGame(MyEnv, action_names=MyEnv.ACTIONS)      # Discrete actions by name
    env = AgentEnvironment(game)                                 # a search environment
    tasks = env.tasks(10, split="test")                          # one task per reset seed

What the adapter needs from the environment:

* **Text observations.** Either the observation is a string, or ``obs_to_text(obs, info)``
  turns it into one.
* **Text actions.** ``action_names`` (the names of a ``Discrete`` space's actions, index =
  action; they are also the valid actions), or ``text_to_action(text)`` (return the action, or
  None when the text means nothing), or a ``Text`` action space (the command is passed as is).
  Valid actions may also come per step from ``info["valid_actions"]``.
* **Determinism.** ``reset(seed=...)`` must fix the episode: a task is a seed.

Simulators are cloned with :func:`copy.deepcopy` (``copyable=True``, the default: right for
environments that are plain Python objects, including their ``np_random``); with
``copyable=False`` states are restored by replaying commands from the reset instead (for an
environment holding a process or a socket).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Sequence
from typing import Any

from mcts_agent.contracts import Task

from .base import DEV_ALIASES, SPLITS, AgentEnvironment, Transition, canonical_split, require

_SPLIT_OFFSETS = {"train": 1_000_000, "dev": 2_000_000, "test": 0}


class GymnasiumSimulator:
    """One episode of a gymnasium environment."""

    def __init__(self, game: GymnasiumGame, env: Any, valid: tuple[str, ...] | None) -> None:
        self.game, self.env, self.valid = game, env, valid
        self.ended = False

    def step(self, action: str) -> Transition:
        if self.ended:
            raise RuntimeError("the episode has ended")
        act = self.game.to_action(action)
        if act is None:
            shown = f" Valid actions: {', '.join(self.valid)}." if self.valid else ""
            return Transition(f"Unknown action {action!r}.{shown}", valid_actions=self.valid)
        obs, reward, terminated, truncated, info = self.env.step(act)
        self.ended = bool(terminated or truncated)
        won = self.game.is_won(float(reward), bool(terminated), info)
        self.valid = None if self.ended else self.game.valid_actions(info)
        return Transition(self.game.to_text(obs, info), float(reward), self.ended, won,
                          self.valid)

    def copy(self) -> GymnasiumSimulator:
        if not self.game.can_copy:
            raise TypeError(f"game {self.game.name!r} was built with copyable=False")
        clone = copy.copy(self)
        clone.env = copy.deepcopy(self.env)
        return clone

    def close(self) -> None:
        close = getattr(self.env, "close", None)
        if close is not None:
            close()


class GymnasiumGame:
    """A gymnasium environment with text observations and actions, as a TextGame.

    Args:
        make: a zero-argument factory of a fresh environment (a class works), or a registered
            gymnasium id (made with ``make_kwargs``).
        name: the game's name (logs, task ids).
        action_names: for a ``Discrete`` action space, the text of each action by index.
        text_to_action: maps a command to the environment's action (None: not understood).
        obs_to_text: maps ``(observation, info)`` to the text shown (default: the observation
            itself, which must then be a string).
        problem: the task's problem from ``(observation, info)`` at reset (default: the
            environment's ``mission`` attribute or ``info["goal"]``, else "" and the first
            observation says it all).
        won: whether an episode is won from ``(reward, terminated, info)`` (default:
            ``info["won"]`` when present, else terminated with a positive reward).
        copyable: clone simulators with deepcopy (True) or restore states by replay (False).
    """

    def __init__(self, make: Callable[[], Any] | str, *, name: str = "gymnasium",
                 action_names: Sequence[str] | None = None,
                 text_to_action: Callable[[str], Any] | None = None,
                 obs_to_text: Callable[[Any, dict[str, Any]], str] | None = None,
                 problem: Callable[[Any, dict[str, Any]], str] | None = None,
                 won: Callable[[float, bool, dict[str, Any]], bool] | None = None,
                 copyable: bool = True, make_kwargs: dict[str, Any] | None = None) -> None:
        if isinstance(make, str):
            gymnasium = require("gymnasium", "the gymnasium adapter")
            env_id, kwargs = make, dict(make_kwargs or {})
            self._make: Callable[[], Any] = lambda: gymnasium.make(env_id, **kwargs)
        else:
            self._make = make
        self.name = name
        self.can_copy = copyable
        self.splits = (*SPLITS, *DEV_ALIASES)
        self.action_names = tuple(action_names) if action_names is not None else None
        self._by_name = {" ".join(a.lower().split()): i
                         for i, a in enumerate(self.action_names or ())}
        self._text_to_action = text_to_action
        self._obs_to_text = obs_to_text
        self._problem = problem
        self._won = won

    # ------------------------------------------------------------------ TextGame contract

    def start(self, task: Task) -> tuple[GymnasiumSimulator, Transition]:
        env, obs, info = self._reset(self._seed(task))
        valid = self.valid_actions(info)
        text = self.to_text(obs, info)
        if not task.problem:  # a hand-made task: say the goal in the first observation
            goal = self.problem_of(env, obs, info)
            text = f"{goal}\n\n{text}".strip() if goal and goal not in text else text
        return GymnasiumSimulator(self, env, valid), Transition(text, valid_actions=valid)

    def tasks(self, n: int, split: str = "test", seed: int | None = None) -> list[Task]:
        """``n`` tasks: distinct reset seeds from a range that belongs to ``split``."""
        split = canonical_split(self.name, split)
        seeds = random.Random(f"{self.name}:{split}:{seed}").sample(range(1_000_000), n)
        return [self.task(_SPLIT_OFFSETS[split] + s, split) for s in seeds]

    # ------------------------------------------------------------------ helpers

    def task(self, seed: int, split: str | None = None) -> Task:
        """The :class:`Task` of one reset seed."""
        env, obs, info = self._reset(seed)
        try:
            problem = self.problem_of(env, obs, info)
        finally:
            close = getattr(env, "close", None)
            if close is not None:
                close()
        return Task(f"{self.name}:{seed}", problem, None, {"seed": seed, "split": split})

    def to_text(self, obs: Any, info: dict[str, Any]) -> str:
        if self._obs_to_text is not None:
            return str(self._obs_to_text(obs, info))
        if not isinstance(obs, str):
            raise TypeError(f"game {self.name!r}: the observation is a {type(obs).__name__}, "
                            "not text; pass obs_to_text=")
        return obs

    def to_action(self, command: str) -> Any:
        """The environment's action for a command, or None when it means nothing."""
        if self._text_to_action is not None:
            return self._text_to_action(command)
        if self.action_names is not None:
            return self._by_name.get(" ".join(command.lower().split()))
        return command  # a Text action space: the words are the action

    def valid_actions(self, info: dict[str, Any]) -> tuple[str, ...] | None:
        valid = info.get("valid_actions") if isinstance(info, dict) else None
        if valid is not None:
            return tuple(str(a) for a in valid)
        return self.action_names

    def is_won(self, reward: float, terminated: bool, info: dict[str, Any]) -> bool:
        if self._won is not None:
            return bool(self._won(reward, terminated, info))
        if isinstance(info, dict) and "won" in info:
            return bool(info["won"])
        return terminated and reward > 0

    def problem_of(self, env: Any, obs: Any, info: dict[str, Any]) -> str:
        if self._problem is not None:
            return str(self._problem(obs, info))
        mission = getattr(getattr(env, "unwrapped", env), "mission", None)
        if isinstance(mission, str):
            return mission
        return str(info.get("goal", "")) if isinstance(info, dict) else ""

    def _reset(self, seed: int) -> tuple[Any, Any, dict[str, Any]]:
        env = self._make()
        obs, info = env.reset(seed=seed)
        return env, obs, dict(info or {})

    def _seed(self, task: Task) -> int:
        meta = task.metadata or {}
        if "seed" in meta:
            return int(meta["seed"])
        _, _, seed = task.id.rpartition(":")
        if not seed.isdigit():
            raise ValueError(f"task {task.id!r}: expected metadata seed or an id '<name>:<seed>'")
        return int(seed)


def gymnasium_env(**knobs: Any) -> AgentEnvironment:
    """Entry point: a registered gymnasium text environment by id (``make``, the adapter's
    keyword arguments, and :class:`AgentEnvironment`'s knobs)."""
    env_knobs = {k: knobs.pop(k) for k in list(knobs) if k in _ENV_KNOBS}
    if "make" not in knobs:
        raise ValueError("gymnasium: give make=<a registered gymnasium id or a factory>")
    return AgentEnvironment(GymnasiumGame(knobs.pop("make"), **knobs), **env_knobs)


_ENV_KNOBS = ("instructions", "max_history", "show_valid_actions", "strict_actions", "pool_size",
              "step_delimiter")
