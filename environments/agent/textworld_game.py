"""TextWorld games (Microsoft's procedurally generated text adventures) as a :class:`TextGame`.

Games are generated locally by textworld (its Inform 7 compiler ships in the wheel), once, and
cached on disk under ``$MCTS_AGENT_CACHE/textworld`` (default ``~/.cache/mcts-agent/textworld``):
one folder per game holding the ``.z8`` story, textworld's ``.json`` and our ``meta.json``
(cleaned objective, walkthrough). A game is written into a temporary folder and renamed into
place, so processes generating in parallel never see half a game; the loser of a race simply
discards its copy.

Every game is a pure function of ``(settings, split, index, seed)``: train and test games use
disjoint textworld seeds, so held-out evaluation never meets a training game.

Observations are cleaned for small models: the ASCII banner, the objective (shown separately as
the goal), the status line (``> -= Room =-0/2``) and the ``Would you like to RESTART...``
trailer are removed and whitespace is collapsed. Simulators copy themselves (textworld's
``env.copy()``), so states are restored by copying, never by replay.

textworld is optional: ``pip install textworld``. It is imported only when a game is generated
or played; listing cached tasks does not need it.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from mcts_agent.contracts import Task

from .base import Transition, canonical_split, require

__all__ = ["SPLITS", "TextWorldGame", "TextWorldSimulator", "clean_objective",
           "clean_observation", "default_cache_dir", "demonstration_choice"]

SPLITS = ("train", "valid", "test")
_SPLIT_BASE = {"train": 0, "valid": 1 << 29, "test": 2 << 29}  # disjoint seed ranges
_SEED_SPAN = 1 << 29
_ATTEMPTS = 5
_FORMAT = 1  # bump when the cached layout or the cleaning of meta.json changes

# Sentences of the "house" grammar's prologue and epilogue that carry no instruction.
_FILLER = re.compile(
    r"(TextWorld|^You do!$|^Here is (your task for today|how to play)[.!]$|^Got that\?$|^Good!$"
    r"|^Alright, thanks!$|^That's it!$|^Once that's all handled, you can stop!$"
    r"|^And once you've done that, you win!$|^And if you do that, you're the winner!$)")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_STATUS = re.compile(r">\s*-=[^\n]*?=-\s*-?\d+/\d+\s*$")  # "> ... -= Room =-0/2" at the end
_RESTART = re.compile(r"Would you like to RESTART, RESTORE a saved game, QUIT or UNDO the last"
                      r" command\?")
_BANNER_LINE = re.compile(r"^[\s_|\\/$<>]*$")
# the end-of-game tally counts turns: two ways to win would never show the same text
_TALLY = re.compile(r"You scored -?\d+ out of a possible -?\d+, in \d+ turns?\.")
_DIRECTIONS = {"north": "south", "south": "north", "east": "west", "west": "east"}


def default_cache_dir() -> Path:
    """``$MCTS_AGENT_CACHE/textworld``, else ``~/.cache/mcts-agent/textworld``."""
    env = os.environ.get("MCTS_AGENT_CACHE")
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "mcts-agent"
    return root / "textworld"


def clean_objective(objective: str) -> str:
    """The objective without the grammar's welcome and sign-off sentences (they cost a small
    model context and say nothing), whitespace collapsed."""
    sentences = _SENTENCE.split(" ".join(objective.split()))
    kept = [s for s in sentences if s and not _FILLER.search(s)]
    return " ".join(kept) if kept else " ".join(objective.split())


def clean_observation(text: str, objective: str | None = None) -> str:
    """Game text as the agent sees it: no banner or objective (the first observation), no
    status line, prompt or restart question, whitespace collapsed."""
    if objective and objective in text:
        text = text[text.index(objective) + len(objective):]
    text = _STATUS.sub("", text.rstrip())
    text = _TALLY.sub("", _RESTART.sub("", text))
    lines = [line for line in text.splitlines() if not _BANNER_LINE.match(line)]
    text = " ".join(" ".join(lines).split())
    return text[:-1].rstrip() if text.endswith(">") else text


def _infos() -> Any:
    textworld = require("textworld", "TextWorld games")
    return textworld.EnvInfos(feedback=True, admissible_commands=True, policy_commands=True,
                              won=True, lost=True, score=True, max_score=True, objective=True)


class TextWorldSimulator:
    """One live textworld episode: ``step`` reports the score delta as the reward, ``copy``
    forks it (textworld's ``env.copy()``), ``close`` frees the interpreter."""

    def __init__(self, env: Any, objective: str, score: float = 0.0,
                 state: Any = None) -> None:
        self._env, self._objective, self._score, self._state = env, objective, score, state

    def step(self, action: str) -> Transition:
        state, score, _ = self._env.step(action)
        reward, self._score, self._state = float(score) - self._score, float(score), state
        return self._transition(state, reward)

    def copy(self) -> TextWorldSimulator:
        return TextWorldSimulator(_fast_copy(self._env), self._objective, self._score,
                                  self._state)

    def close(self) -> None:
        self._env.close()

    @property
    def policy_commands(self) -> tuple[str, ...]:
        """The game's own shortest plan to win from here (empty when it cannot be won)."""
        return tuple(self._state["policy_commands"] or ()) if self._state is not None else ()

    def _transition(self, state: Any, reward: float, first: bool = False) -> Transition:
        won, lost = bool(state["won"]), bool(state["lost"])
        done = won or lost
        text = clean_observation(state["feedback"], self._objective if first else None)
        valid = () if done else tuple(sorted(set(state["admissible_commands"] or ())))
        return Transition(text, reward, done, won, valid)


# What textworld puts in every state that a state copy may share: game-level facts (the same
# objects every step) and the tracker's internals (rebuilt every step; each copied env forks
# its own tracker). None of them is ever mutated in place.
_SHARED_INFOS = frozenset({"game", "command_templates", "verbs", "entities", "typed_entities",
                           "possible_commands", "possible_admissible_commands", "objective",
                           "max_score", "_game_progression", "_facts", "_winning_policy",
                           "_valid_actions", "_last_action"})
_COPY_LOCK = threading.Lock()


def _fast_copy(env: Any) -> Any:
    """``env.copy()`` without its two big costs (~0.1 s of 0.12 s): textworld deep-copies the
    whole game description held in every state, and its Jericho backend loads the story into
    an interpreter it then throws away. Inside this call state copies share the game-level
    entries (textworld re-sets them each step and never mutates them) and the backend copy
    forks the interpreter only."""
    from copy import deepcopy

    from textworld.core import GameState
    from textworld.envs.zmachine.jericho import JerichoEnv

    def state_copy(self: Any) -> Any:
        state = GameState(self)
        for key, value in self.items():
            if key not in _SHARED_INFOS and not key.startswith("extra."):
                state[key] = deepcopy(value)
        return state

    def jericho_copy(self: Any) -> Any:
        copied = JerichoEnv(self.request_infos)
        copied._seed, copied.gamefile = self._seed, self.gamefile
        if self._jericho:
            copied._jericho, copied._reset = self._jericho.copy(), True
        copied.state = self.state.copy()
        copied.request_infos = self.request_infos.copy()
        return copied

    with _COPY_LOCK, _quiet():
        saved = GameState.copy, JerichoEnv.copy
        GameState.copy, JerichoEnv.copy = state_copy, jericho_copy
        try:
            return env.copy()
        finally:
            GameState.copy, JerichoEnv.copy = saved


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence Jericho's "not fully supported" warning: textworld tracks score and moves
    itself (textworld filters it at import, but test runners reset warning filters)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is not fully supported")
        yield


@dataclass(frozen=True)
class _GameRecord:
    """What ``meta.json`` holds about a generated game."""

    objective: str
    raw_objective: str
    walkthrough: tuple[str, ...]
    max_score: float
    textworld_seed: int
    seconds: float


@dataclass
class TextWorldGame:
    """Procedurally generated TextWorld quests (see the module doc).

    Args:
        world_size: rooms per game.
        nb_objects: objects besides the rooms' doors.
        quest_length: actions of the winning quest (the walkthrough's length).
        theme: textworld grammar theme: ``"house"`` (natural descriptions) or ``"basic"``
            (terse: ``room0``, ``thing3``).
        seed: the default seed of :meth:`tasks`; games differ per seed.
        cache_dir: where games are kept (default :func:`default_cache_dir`, read when used).
    """

    world_size: int = 3
    nb_objects: int = 4
    quest_length: int = 3
    theme: str = "house"
    seed: int = 0
    cache_dir: str | Path | None = None
    name: str = field(default="textworld", init=False)
    can_copy: bool = field(default=True, init=False)
    splits: ClassVar[tuple[str, ...]] = SPLITS

    def __post_init__(self) -> None:
        if self.world_size < 1 or self.nb_objects < 0 or self.quest_length < 1:
            raise ValueError("need world_size >= 1, nb_objects >= 0 and quest_length >= 1")
        self._records: dict[Path, _GameRecord] = {}

    # ------------------------------------------------------------------ tasks

    @property
    def settings(self) -> dict[str, Any]:
        """The generation settings (what makes a game folder)."""
        return {"world_size": self.world_size, "nb_objects": self.nb_objects,
                "quest_length": self.quest_length, "theme": self.theme}

    @property
    def folder(self) -> Path:
        """The cache folder of games with these settings."""
        root = Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()
        return root / (f"v{_FORMAT}-{self.theme}-w{self.world_size}-o{self.nb_objects}"
                       f"-q{self.quest_length}")

    def tasks(self, n: int, split: str = "test", seed: int | None = None) -> list[Task]:
        """The first ``n`` games of ``split`` for ``seed`` (default: the game's), generated on
        first use (about a second each) and loaded from the cache afterwards."""
        split = canonical_split(self.name, split, SPLITS, aliases=())
        seed = self.seed if seed is None else seed
        return [self.task(split, index, seed) for index in range(n)]

    def task(self, split: str, index: int, seed: int | None = None) -> Task:
        """Game ``index`` of ``split`` as a task (generating it if needed)."""
        seed = self.seed if seed is None else seed
        path = self.game_dir(split, index, seed)
        record = self._record(path, split, index, seed)
        seed_tag = "" if seed == 0 else f"s{seed}-"
        return Task(
            f"{self.name}{self._tag}-{split}-{seed_tag}{index:04d}", record.objective,
            list(record.walkthrough),
            {"game_file": str(path / "game.z8"), "walkthrough": list(record.walkthrough),
             "split": split, "index": index, "seed": seed, "textworld_seed":
                 record.textworld_seed, "max_score": record.max_score, **self.settings})

    @property
    def _tag(self) -> str:
        """The settings that differ from the defaults, for task ids ("" for the defaults):
        games of different settings never share an id."""
        defaults = {"world_size": ("w", 3), "nb_objects": ("o", 4), "quest_length": ("q", 3)}
        tag = "" if self.theme == "house" else f"-{self.theme}"
        for key, (letter, default) in defaults.items():
            if getattr(self, key) != default:
                tag += f"-{letter}{getattr(self, key)}"
        return tag

    def game_dir(self, split: str, index: int, seed: int) -> Path:
        """Where game ``index`` of ``split`` for ``seed`` is cached."""
        return self.folder / f"{split}-s{seed}-{index:05d}"

    @staticmethod
    def textworld_seed(split: str, index: int, seed: int, attempt: int = 0) -> int:
        """The textworld seed of a game: splits draw from disjoint ranges. ``attempt`` > 0
        gives the seeds tried after a game that cannot be won as generated."""
        if index < 0 or seed < 0 or attempt < 0:
            raise ValueError("index, seed and attempt must be >= 0")
        return _SPLIT_BASE[split] + (seed * 1_000_003 + index + attempt * 100_000_007) % _SEED_SPAN

    def _record(self, path: Path, split: str, index: int, seed: int) -> _GameRecord:
        if path not in self._records and not (path / "meta.json").is_file():
            # About 1 game in 700 is unwinnable as generated (two objects the parser cannot
            # tell apart, e.g. "box" and "Henderson's limited edition box"): the next seed.
            for attempt in range(_ATTEMPTS):
                if self._generate(path, self.textworld_seed(split, index, seed, attempt)):
                    break
            else:
                raise RuntimeError(f"textworld: no winnable game for {split} {index} seed {seed}"
                                   f" in {_ATTEMPTS} attempts with {self.settings}")
        return self._load(path)

    def _load(self, path: Path) -> _GameRecord:
        if path not in self._records:
            data = json.loads((path / "meta.json").read_text())
            self._records[path] = _GameRecord(
                data["objective"], data["raw_objective"], tuple(data["walkthrough"]),
                float(data["max_score"]), int(data["textworld_seed"]), float(data["seconds"]))
        return self._records[path]

    def _generate(self, path: Path, tw_seed: int) -> bool:
        """Make, compile and check one game in a temporary folder, then rename it into place;
        False (and nothing written) when its walkthrough does not win."""
        require("textworld", "TextWorld games")
        from textworld import GameOptions
        from textworld.generator import compile_game, make_game

        start = time.perf_counter()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}-", dir=path.parent))
        try:
            options = GameOptions()
            options.seeds = tw_seed
            options.nb_rooms = self.world_size
            options.nb_objects = self.nb_objects
            options.quest_length = self.quest_length
            options.grammar.theme = self.theme
            options.path = str(tmp / "game.z8")
            options.force_recompile = True
            game = make_game(options)
            compile_game(game, options)
            walkthrough = list(game.walkthrough or ())
            record = {"objective": clean_objective(game.objective),
                      "raw_objective": game.objective, "walkthrough": walkthrough,
                      "max_score": game.max_score, "textworld_seed": tw_seed,
                      "settings": self.settings, "textworld_version": _version(),
                      "seconds": round(time.perf_counter() - start, 3)}
            if not self._walkthrough_wins(tmp / "game.z8", game.objective, walkthrough):
                return False
            (tmp / "meta.json").write_text(json.dumps(record, indent=1) + "\n")
            (tmp / "game.ni").unlink(missing_ok=True)  # Inform 7 source: not needed to play
            tmp.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache from other users
            try:
                tmp.rename(path)
            except OSError:  # another process finished it first: keep theirs
                if not (path / "meta.json").is_file():
                    raise
            return True
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _walkthrough_wins(self, story: Path, objective: str, walkthrough: Sequence[str]) -> bool:
        sim, last = self._open(story, objective)
        try:
            for command in walkthrough:
                last = sim.step(command)
            return last.won
        finally:
            sim.close()

    # ------------------------------------------------------------------ playing

    def start(self, task: Task) -> tuple[TextWorldSimulator, Transition]:
        """A fresh simulator at the start of ``task`` and the opening room description."""
        story = Path(task.metadata["game_file"])
        if not story.is_file():  # e.g. a task list made on another machine: regenerate it
            meta = task.metadata
            story = self.game_dir(meta["split"], meta["index"], meta["seed"]) / "game.z8"
            self._record(story.parent, meta["split"], meta["index"], meta["seed"])
        return self._open(story, self._load(story.parent).raw_objective)

    def _open(self, story: Path, objective: str) -> tuple[TextWorldSimulator, Transition]:
        textworld = require("textworld", "TextWorld games")
        with _quiet():
            env = textworld.start(str(story), request_infos=_infos())
            state = env.reset()
        sim = TextWorldSimulator(env, objective, float(state["score"] or 0), state)
        return sim, sim._transition(state, 0.0, first=True)

    @staticmethod
    def inverse(command: str) -> str | None:
        """The command that undoes ``command`` ("" when it changes nothing, None when it cannot
        be undone): what splicing uses to walk a bad step back before the good continuation."""
        verb, _, rest = command.strip().partition(" ")
        if verb in ("look", "inventory", "examine"):
            return ""
        if verb == "go" and rest in _DIRECTIONS:
            return f"go {_DIRECTIONS[rest]}"
        swaps = {"open": "close", "close": "open", "lock": "unlock", "unlock": "lock"}
        if verb in swaps and rest:
            return f"{swaps[verb]} {rest}"
        if verb in ("put", "insert") and (" on " in rest or " into " in rest):
            thing, _, holder = rest.partition(" on " if " on " in rest else " into ")
            return f"take {thing} from {holder}"
        if verb == "take" and rest and " from " not in rest:
            return f"drop {rest}"
        if verb == "drop" and rest:
            return f"take {rest}"
        return None

    def walkthrough(self, task: Task) -> list[str]:
        """The commands that win ``task`` (textworld's own solution)."""
        return list(task.metadata["walkthrough"])

    def labelled_demonstration(self, task: Task, noise: float, rng: random.Random,
                               max_steps: int | None = None) -> list[tuple[str, str]]:
        """A noisy walkthrough as ``(command sent, expert command at that state)`` pairs.

        With probability ``noise`` a random valid command other than the expert's is sent,
        otherwise the expert's: the first of the game's ``policy_commands`` from the *current*
        state, so the demonstration recovers after a detour. Ends when the game ends, when it
        can no longer be won, or after ``max_steps`` (default :meth:`demonstration_limit`).
        """
        limit = max_steps if max_steps is not None else self.demonstration_limit(task)
        sim, current = self.start(task)
        pairs: list[tuple[str, str]] = []
        try:
            while len(pairs) < limit:
                choice = demonstration_choice(sim, current, noise, rng)
                if choice is None:
                    break
                pairs.append(choice)
                current = sim.step(choice[0])
        finally:
            sim.close()
        return pairs

    @staticmethod
    def demonstration_step(sim: TextWorldSimulator, current: Transition, noise: float,
                           rng: random.Random) -> tuple[str, str] | None:
        """:func:`demonstration_choice`, for callers that hold only the game (model training
        scripts, which never import ``environments``)."""
        return demonstration_choice(sim, current, noise, rng)

    def demonstration_limit(self, task: Task) -> int:
        """Most commands of a demonstration: 3 x the walkthrough + 6."""
        return 3 * len(self.walkthrough(task)) + 6

    def demonstration(self, task: Task, noise: float, rng: random.Random,
                      max_steps: int | None = None) -> list[str]:
        """The commands of :meth:`labelled_demonstration` (a walkthrough with recoverable
        detours: training data that shows how to get back on track)."""
        return [command for command, _ in self.labelled_demonstration(task, noise, rng,
                                                                      max_steps)]


def demonstration_choice(sim: TextWorldSimulator, current: Transition, noise: float,
                         rng: random.Random) -> tuple[str, str] | None:
    """One step of a noisy demonstration at ``sim`` (whose latest transition is ``current``):
    ``(command to send, expert command)``, or None when the game is over or cannot be won.
    The expert command is the game's next step from here; with probability ``noise`` another
    valid command is sent instead."""
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be in [0, 1], got {noise}")
    plan = sim.policy_commands
    if current.done or not plan:
        return None
    expert = plan[0]
    detours = [a for a in current.valid_actions or () if a != expert]
    command = rng.choice(detours) if detours and rng.random() < noise else expert
    return command, expert


def _version() -> str:
    import textworld

    return str(textworld.__version__)


def textworld(**knobs: Any) -> Any:
    """Entry point: TextWorld games as a search environment. :class:`TextWorldGame` arguments
    (``world_size``, ``quest_length``, ``cache_dir`` …) go to the game, the rest to
    :class:`~environments.agent.base.AgentEnvironment` (``max_history`` …)."""
    import dataclasses

    from .base import AgentEnvironment

    game_fields = {f.name for f in dataclasses.fields(TextWorldGame) if f.init}
    game = TextWorldGame(**{k: v for k, v in knobs.items() if k in game_fields})
    return AgentEnvironment(game, **{k: v for k, v in knobs.items() if k not in game_fields})

