"""textarena's single-player puzzles as a :class:`~environments.agent.base.TextGame`.

A task is one (env id, seed) pair, e.g. ``("Minesweeper-v0-small", 7)``. The games run offline
and are plain Python objects, so simulators are cloned with :func:`copy.deepcopy`
(``can_copy=True``).

What the wrapper takes care of:

* **Randomness.** textarena seeds the *global* :mod:`random` module at reset, and several games
  draw from it while playing (Minesweeper places its mines on the first click, 2048 adds tiles,
  Blackjack deals). Each simulator therefore carries its own generator state (``random`` and
  numpy's global one), swapped in around every reset and step: a copy continues exactly like its
  original, and interleaving branches never disturb each other.
* **Brackets.** textarena reads moves in square brackets (``[A C]``, ``[3 2]``, ``[hit]``), while
  the ReAct parser (:func:`~mcts_agent.react.normalise`) strips brackets around a command
  and lower-cases it. The simulator puts them back: a command not starting with ``[`` gets one,
  one not ending with ``]`` too (``a c`` → ``[a c]``, ``a c] [b c`` → ``[a c] [b c]``). The
  lower-casing cannot be undone; the games listed in :data:`PUZZLES` read their moves regardless
  of case.
* **Text.** The game's instructions (textarena's prompt) become the task's problem and the
  rest of its messages the observations, without textarena's echo of the player's own move; the
  end-of-game reason is appended to the last observation.

The episode's reward is textarena's final reward (1 for a win; a completion fraction or a
penalty otherwise); ``won`` means a reward of 1 that did not come from an invalid move.
textarena does not list valid moves, so ``valid_actions`` is None.
"""

from __future__ import annotations

import contextlib
import copy
import io
import random
from collections.abc import Iterator, Sequence
from typing import Any

from mcts_agent.contracts import Task

from .base import DEV_ALIASES, SPLITS, AgentEnvironment, Transition, canonical_split, require

# Single-player ids checked to run offline, reset deterministically from a seed, step and
# deepcopy (the Wordle/Hangman/WordLadder family needs NLTK downloads; TwentyQuestions an API).
PUZZLES = (
    "TowerOfHanoi-v0",
    "Minesweeper-v0-small",
    "GuessTheNumber-v0",
    "Countdown-v0",
    "Sudoku-v0-very-easy",
    "FifteenPuzzle-v0",
    "LightsOut-v0",
    "Mastermind-v0",
    "FrozenLake-v0",
    "PegJump-v0",
    "2048-v0",
    "Cryptarithm-v0",
    "Secretary-v0",
    "Blackjack-v0",
)
_SPLIT_OFFSETS = {"train": 1_000_000, "dev": 2_000_000, "test": 0}


def bracketed(command: str) -> str:
    """The command as textarena reads it: wrapped in ``[...]`` where the parser stripped them."""
    command = command.strip()
    if not command.startswith("["):
        command = "[" + command
    if not command.endswith("]"):
        command += "]"
    return command


class _Rng:
    """A private copy of the global random generators' states, swapped in while a game runs."""

    def __init__(self) -> None:
        self.python: Any = None
        self.numpy: Any = None

    @contextlib.contextmanager
    def active(self, seed: int | None = None) -> Iterator[None]:
        import numpy as np

        saved = random.getstate(), np.random.get_state()
        if seed is not None:
            random.seed(seed)
            np.random.seed(seed % 2**32)
        else:
            random.setstate(self.python)
            np.random.set_state(self.numpy)
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # some games print while generating
                yield
        finally:
            self.python, self.numpy = random.getstate(), np.random.get_state()
            random.setstate(saved[0])
            np.random.set_state(saved[1])


class TextArenaSimulator:
    """One textarena episode with its own random state."""

    def __init__(self, env: Any, rng: _Rng) -> None:
        self.env, self.rng = env, rng
        self.ended = False

    def step(self, action: str) -> Transition:
        if self.ended:
            raise RuntimeError("the textarena episode has ended")
        with self.rng.active():
            done, _ = self.env.step(bracketed(action))
            _, messages = self.env.get_observation()
        text = render(messages)
        if not done:
            return Transition(text)
        self.ended = True
        state = self.env.state
        try:
            reward = float((state.rewards or {}).get(0, 0.0))
        except (TypeError, ValueError):  # a game that swapped reward and reason
            reward = 0.0
        info = state.game_info.get(0, {})
        reason = str(info.get("reason") or "")
        text = f"{text}\n\n{reason}".strip() if reason else text
        won = reward >= 1.0 and not info.get("invalid_move", False)
        return Transition(text, reward, True, won)

    def copy(self) -> TextArenaSimulator:
        return copy.deepcopy(self)


def render(messages: Sequence[tuple[int, str, Any]], prompts: bool = False) -> str:
    """The game's messages as one text: prompts only (``prompts``) or everything else, without
    the echo of the player's own move."""
    kinds = require("textarena", "the textarena game").ObservationType
    keep = []
    for message in messages:
        # (sender, text, kind) — though some games (Countdown) swap the fields around
        text = next((m for m in message if isinstance(m, str)), "")
        kind = next((m for m in message if isinstance(m, kinds)), None)
        if kind != kinds.PLAYER_ACTION and (kind == kinds.PROMPT) == prompts and text.strip():
            keep.append(text.strip())
    return "\n\n".join(keep)


class TextArenaGame:
    """textarena's single-player puzzles behind the TextGame contract.

    Args:
        env_ids: the puzzles :meth:`tasks` draws from, in turn (default: TowerOfHanoi only;
            :data:`PUZZLES` lists the ones known to work).
    """

    name = "textarena"
    can_copy = True
    splits = (*SPLITS, *DEV_ALIASES)

    def __init__(self, env_ids: Sequence[str] | str = ("TowerOfHanoi-v0",)) -> None:
        self.ta = require("textarena", "the textarena game")
        self.env_ids = [env_ids] if isinstance(env_ids, str) else list(env_ids)
        if not self.env_ids:
            raise ValueError("give at least one textarena env id")

    # ------------------------------------------------------------------ TextGame contract

    def start(self, task: Task) -> tuple[TextArenaSimulator, Transition]:
        env_id, seed = self._parse(task)
        env, rng, messages = self._reset(env_id, seed)
        text = render(messages)
        if not task.problem:  # a hand-made task: the instructions open the first observation
            text = f"{render(messages, prompts=True)}\n\n{text}".strip()
        return TextArenaSimulator(env, rng), Transition(text)

    def tasks(self, n: int, split: str = "test", seed: int | None = None) -> list[Task]:
        """``n`` tasks cycling through ``env_ids``, with distinct seeds drawn from a range that
        belongs to ``split`` (so train and test never share a board)."""
        split = canonical_split(self.name, split)
        rng = random.Random(f"textarena:{split}:{seed}")
        seeds = rng.sample(range(1_000_000), n)
        return [self.task(self.env_ids[i % len(self.env_ids)], _SPLIT_OFFSETS[split] + s, split)
                for i, s in enumerate(seeds)]

    # ------------------------------------------------------------------ helpers

    def task(self, env_id: str, seed: int, split: str | None = None) -> Task:
        """The :class:`Task` for one board; its problem is the game's instructions."""
        _, _, messages = self._reset(env_id, seed)
        return Task(f"{env_id}:{seed}", render(messages, prompts=True), None,
                    {"env_id": env_id, "seed": seed, "split": split})

    def walkthrough(self, task: Task) -> list[str] | None:
        """A winning command sequence where one is known without search: Tower of Hanoi (the
        recursive solution) and Guess the Number (the hidden number); None otherwise."""
        env_id, seed = self._parse(task)
        env, _, _ = self._reset(env_id, seed)
        inner = getattr(env, "env", env)
        if env_id.startswith("TowerOfHanoi"):
            moves: list[str] = []

            def solve(k: int, source: str, target: str, spare: str) -> None:
                if k:
                    solve(k - 1, source, spare, target)
                    moves.append(f"{source} {target}")
                    solve(k - 1, spare, target, source)

            solve(inner.num_disks, "A", "C", "B")
            return moves
        if env_id.startswith("GuessTheNumber"):
            return [str(inner.game_number)]
        return None

    def _reset(self, env_id: str, seed: int) -> tuple[Any, _Rng, list[Any]]:
        rng = _Rng()
        with rng.active(seed):
            env = self.ta.make(env_id if env_id.endswith("-raw") else f"{env_id}-raw")
            env.reset(num_players=1, seed=seed)
            _, messages = env.get_observation()
        return env, rng, messages

    def _parse(self, task: Task) -> tuple[str, int]:
        meta = task.metadata or {}
        if "env_id" in meta and "seed" in meta:
            return str(meta["env_id"]), int(meta["seed"])
        env_id, _, seed = task.id.rpartition(":")
        if not env_id or not seed.lstrip("-").isdigit():
            raise ValueError(f"task {task.id!r}: expected metadata env_id/seed or an id "
                             "'<env id>:<seed>'")
        return env_id, int(seed)


def textarena(**knobs: Any) -> AgentEnvironment:
    """Entry point: textarena puzzles as a search environment (``env_ids`` plus
    :class:`AgentEnvironment`'s knobs)."""
    game = TextArenaGame(**{k: knobs.pop(k) for k in ("env_ids",) if k in knobs})
    return AgentEnvironment(game, **knobs)
