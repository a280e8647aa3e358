"""ScienceWorld (Wang et al., 2022) as a :class:`~environments.agent.base.TextGame`.

A task is one (task name, variation) pair, e.g. ``boil`` variation 3; the split follows
ScienceWorld's own train/dev/test variation lists. The simulator runs in a JVM that cannot be
snapshotted, so ``can_copy`` is False and states are restored by replaying commands.

Three things make that practical and correct:

* **A small pool of JVMs.** Starting one costs seconds and a few hundred MB, so the game keeps at
  most ``max_jvms`` of them and loads tasks into free ones. A simulator that is idle (kept by
  :class:`~environments.agent.base.SimulatorPool` for later) may lose its JVM to a new request;
  its next ``step`` then reloads the task on another JVM and replays its own commands first. The
  search's pool can therefore hold hundreds of simulators while only a few JVMs exist.
* **Determinism.** ScienceWorld seeds its random generator on every load, but rooms keep their
  objects in hash sets ordered by Java identity hash codes, which differ from one load to the
  next: the same task lists objects, and numbers the choices of an ambiguous command, in another
  order. The JVMs are started with ``-XX:hashCode=2`` (every identity hash is the same), which
  makes that order depend only on the order objects were added and removed, so the same task and
  commands always give the same text, on any JVM (measured: no slower).
* **Cheap steps.** :class:`scienceworld.ScienceWorldEnv` computes the look, inventory and the full
  valid-action list on every step; this wrapper calls the server directly and asks only for the
  score and completion.

Rewards are score deltas on [0, 1] (ScienceWorld scores 0..100); a task is won when the game
says it is completed with score 100, and lost (the episode ends) when the score turns negative
(e.g. focusing on the wrong object). Valid actions are left out by default: ScienceWorld's list
has hundreds to thousands of entries and misses commands the game accepts (its own gold paths
use ``pick up metal pot`` for a pot in an open cupboard, ``examine substance in metal pot``), so
the game itself answers unknown commands ("No known action matches that input.").
"""

from __future__ import annotations

import random
import threading
import weakref
from collections.abc import Sequence
from typing import Any

from mcts_agent.contracts import Task

from .base import DEV_ALIASES, AgentEnvironment, Transition, canonical_split, require

SPLITS = ("train", "dev", "test")
# Same identity hash for every Java object: hash-set iteration follows insertion order, so a
# task lists its objects in the same order on every load (see the module docstring).
DETERMINISTIC_JAVA_OPTS = ("-XX:+UnlockExperimentalVMOptions", "-XX:hashCode=2")
# A bounded heap and the serial collector: ~0.3 GB per JVM instead of ~1 GB, no slower (the
# heaviest gold-path generation, mendelian genetics, runs in 512 MB).
DEFAULT_JAVA_OPTS = ("-Xmx1g", "-XX:+UseSerialGC")


def split_variations(n_variations: int, split: str) -> range:
    """ScienceWorld's split of a task's variations: the first half trains, the next quarter is
    dev, the rest test (what ``get_variations_train/dev/test`` return, without loading)."""
    quarter = n_variations // 4
    bounds = {"train": (0, 2 * quarter), "dev": (2 * quarter, 3 * quarter),
              "test": (3 * quarter, n_variations)}
    return range(*bounds[canonical_split("scienceworld", split, SPLITS)])


def clean_observation(text: str) -> str:
    """Tabs as two spaces, no trailing spaces, no blank edges: the same text in fewer tokens."""
    return "\n".join(line.rstrip() for line in text.replace("\t", "  ").splitlines()).strip()


class _Jvm:
    """One ScienceWorld server process (a py4j gateway) and who is using it."""

    def __init__(self, java_opts: Sequence[str]) -> None:
        from py4j.java_gateway import GatewayParameters, JavaGateway, launch_gateway

        constants = require("scienceworld", "the ScienceWorld game (and Java >= 11)").constants
        port, proc = launch_gateway(classpath=constants.JAR_PATH, die_on_exit=True,
                                    cwd=constants.BASEPATH, return_proc=True,
                                    javaopts=list(java_opts))
        self.gateway = JavaGateway(gateway_parameters=GatewayParameters(auto_field=True,
                                                                        port=port),
                                   java_process=proc)
        self.server = self.gateway.jvm.scienceworld.runtime.pythonapi.PythonInterface()
        self.owner: ScienceWorldSimulator | None = None
        self.busy = False  # stepping right now: never taken away
        self.last_used = 0

    def load(self, name: str, variation: int, simplifications: str, gold: bool = False) -> None:
        error = self.server.load(name, variation, simplifications, gold)
        if error:
            raise ValueError(f"ScienceWorld could not load {name!r} variation {variation}: "
                             f"{error}")

    def close(self) -> None:
        try:
            self.gateway.shutdown()
            proc = self.gateway.java_process
            if proc is not None and proc.poll() is None:  # as ScienceWorldEnv.close does
                proc.stdin.write(b"\n")
                proc.stdin.flush()
        except Exception:  # already gone
            pass


class ScienceWorldSimulator:
    """One episode. It owns a JVM while it is being used; if the game hands that JVM to someone
    else while this simulator sits idle, the next step reloads the task and replays."""

    def __init__(self, game: ScienceWorldGame, name: str, variation: int,
                 simplifications: str) -> None:
        self.game, self.name, self.variation = game, name, variation
        self.simplifications = simplifications
        self.commands: list[str] = []
        self.score = 0  # ScienceWorld's integer score, 0..100 (negative: failed)
        self.ended = False
        self._jvm: _Jvm | None = None

    def begin(self) -> Transition:
        jvm = self._attach()
        try:
            observation = jvm.server.step("look around")
        finally:
            jvm.busy = False
        return Transition(clean_observation(observation),
                          valid_actions=self.game.valid_actions(jvm))

    def step(self, action: str) -> Transition:
        if self.ended:
            raise RuntimeError("the ScienceWorld episode has ended")
        jvm = self._attach()
        try:
            observation = jvm.server.step(action)
            score = round(100 * jvm.server.getScore())
            completed = bool(jvm.server.getCompleted())
            valid = None if completed or score < 0 else self.game.valid_actions(jvm)
        finally:
            jvm.busy = False
        self.commands.append(action)
        reward = (score - self.score) / 100
        self.score = score
        won = completed and score >= 100
        limit = self.game.max_steps is not None and len(self.commands) >= self.game.max_steps
        self.ended = completed or score < 0 or limit
        return Transition(clean_observation(observation), reward, self.ended, won,
                          None if self.ended else valid)

    def close(self) -> None:
        self.game._release(self)

    def _attach(self) -> _Jvm:
        """This simulator's JVM, marked busy; reloaded and replayed if it was taken away."""
        jvm = self.game._acquire(self)
        if jvm.owner is not self:
            try:
                jvm.load(self.name, self.variation, self.simplifications)
                jvm.server.step("look around")
                for command in self.commands:
                    jvm.server.step(command)
            except BaseException:
                self.game._free(jvm)
                raise
            self.game.replayed_steps += len(self.commands)
            jvm.owner, self._jvm = self, jvm
        return jvm


class ScienceWorldGame:
    """ScienceWorld tasks behind the :class:`~environments.agent.base.TextGame` contract.

    Args:
        simplifications: ScienceWorld's simplification string; ``"easy"`` (the default) opens
            doors and containers, adds ``teleport to`` and removes electrical actions where a task
            does not need them: shorter episodes, fewer dead ends. ``""`` plays the full game.
        task_names: restrict :meth:`tasks` to these task names (default: all 30).
        max_jvms: JVMs kept at most (each ~0.3 GB and seconds to start); exceeded only when
            every JVM is in the middle of a step on another thread.
        max_steps: end an episode after this many commands (None: no limit; the search's depth
            bounds it anyway).
        max_valid_actions: list the game's valid actions when there are at most this many (0:
            never, the default; ScienceWorld's lists are huge and incomplete).
        java_opts: JVM options (default :data:`DEFAULT_JAVA_OPTS`; the determinism options are
            always added). ``-XX:TieredStopAtLevel=1`` speeds up short runs such as tests.
    """

    name = "scienceworld"
    can_copy = False
    splits = (*SPLITS, *DEV_ALIASES)

    def __init__(self, simplifications: str = "easy", task_names: Sequence[str] | None = None,
                 max_jvms: int = 2, max_steps: int | None = None, max_valid_actions: int = 0,
                 java_opts: Sequence[str] = DEFAULT_JAVA_OPTS) -> None:
        self.scienceworld = require("scienceworld", "the ScienceWorld game (and Java >= 11)")
        self.simplifications = simplifications
        known = list(self.scienceworld.constants.ID2TASK.values())
        unknown = sorted(set(task_names or ()) - set(known))
        if unknown:
            raise ValueError(f"unknown ScienceWorld tasks {unknown}; known: {known}")
        self.task_names = list(task_names) if task_names else sorted(known)
        self.max_jvms = max(1, max_jvms)
        self.max_steps = max_steps
        self.max_valid_actions = max_valid_actions
        self.java_opts = (*DETERMINISTIC_JAVA_OPTS, *java_opts)
        self.replayed_steps = 0  # commands replayed after a simulator lost its JVM
        self.jvm_starts = 0
        self._jvms: list[_Jvm] = []
        self._clock = 0
        self._lock = threading.Lock()
        self._walkthroughs: dict[tuple[str, int, str], list[str]] = {}
        self._variations: dict[str, int] = {}
        self._finalizer = weakref.finalize(self, _close_all, self._jvms)  # also runs at exit

    # ------------------------------------------------------------------ TextGame contract

    def start(self, task: Task) -> tuple[ScienceWorldSimulator, Transition]:
        name, variation, simplifications = self._parse(task)
        sim = ScienceWorldSimulator(self, name, variation, simplifications)
        return sim, sim.begin()

    def tasks(self, n: int, split: str = "test", seed: int | None = None) -> list[Task]:
        """``n`` (task, variation) pairs of ``split``, spread over the task names in turn (a
        seeded shuffle of each task's variations); the problem is the task's description."""
        split = canonical_split(self.name, split, SPLITS)  # before any JVM starts
        rng = random.Random(seed if seed is not None else 0)
        pools = {}
        for name in self.task_names:
            variations = list(split_variations(self.n_variations(name), split))
            rng.shuffle(variations)
            pools[name] = variations
        order = list(self.task_names)
        rng.shuffle(order)
        chosen: list[tuple[str, int]] = []
        depth = 0
        while len(chosen) < n and any(len(v) > depth for v in pools.values()):
            chosen += [(name, pools[name][depth]) for name in order if len(pools[name]) > depth]
            depth += 1
        return [self.task(name, variation, split) for name, variation in chosen[:n]]

    # ------------------------------------------------------------------ helpers

    def task(self, name: str, variation: int, split: str | None = None) -> Task:
        """The :class:`Task` for one variation (loads it once to read its description)."""
        jvm = self._acquire(None)
        try:
            jvm.load(name, variation, self.simplifications)
            description = str(jvm.server.getTaskDescription())
        finally:
            self._free(jvm)
        split = split or next(s for s in SPLITS
                              if variation in split_variations(self.n_variations(name), s))
        return Task(f"{name}-{variation}", description, None,
                    {"task": name, "variation": variation, "split": split,
                     "simplifications": self.simplifications})

    def n_variations(self, name: str) -> int:
        if name not in self._variations:
            jvm = self._acquire(None)
            try:
                self._variations[name] = int(jvm.server.getTaskMaxVariations(name))
            finally:
                self._free(jvm)
        return self._variations[name]

    def walkthrough(self, task: Task) -> list[str]:
        """ScienceWorld's gold action sequence, cut where the task is completed (the gold paths
        often carry a few trailing actions past the win)."""
        key = self._parse(task)
        if key not in self._walkthroughs:
            name, variation, simplifications = key
            jvm = self._acquire(None)
            try:
                jvm.load(name, variation, simplifications, gold=True)
                gold = [str(a) for a in jvm.server.getGoldActionSequence()]
                jvm.load(name, variation, simplifications)
                jvm.server.step("look around")
                for i, action in enumerate(gold):
                    jvm.server.step(action)
                    if jvm.server.getCompleted() or jvm.server.getScore() < 0:
                        gold = gold[:i + 1]
                        break
            finally:
                self._free(jvm)
            self._walkthroughs[key] = gold
        return list(self._walkthroughs[key])

    def valid_actions(self, jvm: _Jvm) -> tuple[str, ...] | None:
        if self.max_valid_actions <= 0:
            return None
        actions = list(jvm.server.getValidActionObjectCombinations())
        return tuple(sorted(actions)) if len(actions) <= self.max_valid_actions else None

    def close(self) -> None:
        """Stop every JVM (simulators still alive reload on a new one if stepped again)."""
        with self._lock:
            for jvm in self._jvms:
                if jvm.owner is not None:
                    jvm.owner._jvm = None
            _close_all(self._jvms)

    def _parse(self, task: Task) -> tuple[str, int, str]:
        meta = task.metadata or {}
        if "task" in meta and "variation" in meta:
            name, variation = str(meta["task"]), int(meta["variation"])
        else:  # a hand-written Task("boil-3", ...)
            name, _, variation_text = task.id.rpartition("-")
            if not name or not variation_text.isdigit():
                raise ValueError(f"task {task.id!r}: expected metadata task/variation or an id "
                                 "'<task name>-<variation>'")
            variation = int(variation_text)
        if name not in self.scienceworld.constants.ID2TASK.values():
            raise ValueError(f"task {task.id!r}: unknown ScienceWorld task {name!r}")
        return name, variation, str(meta.get("simplifications", self.simplifications))

    # ------------------------------------------------------------------ the JVM pool

    def _acquire(self, sim: ScienceWorldSimulator | None) -> _Jvm:
        """A JVM for ``sim`` (None: a short internal job), marked busy: its own if it still has
        it, else a free one, a new one below ``max_jvms``, or the least recently used idle one
        (whose simulator will replay when stepped again)."""
        with self._lock:
            self._clock += 1
            jvm = sim._jvm if sim is not None else None
            if jvm is None or jvm.owner is not sim or jvm not in self._jvms:
                idle = [j for j in self._jvms if not j.busy]
                free = [j for j in idle if j.owner is None]
                if free:
                    jvm = free[0]
                elif len(self._jvms) >= self.max_jvms and idle:
                    jvm = min(idle, key=lambda j: j.last_used)
                    if jvm.owner is not None:
                        jvm.owner._jvm = None
                    jvm.owner = None
                else:
                    jvm = None
                if jvm is not None:
                    jvm.busy = True
            if jvm is not None:
                jvm.busy, jvm.last_used = True, self._clock
                return jvm
        jvm = _Jvm(self.java_opts)  # outside the lock: seconds
        with self._lock:
            self.jvm_starts += 1
            jvm.busy, jvm.last_used = True, self._clock
            self._jvms.append(jvm)
        return jvm

    def _free(self, jvm: _Jvm) -> None:
        with self._lock:
            jvm.busy, jvm.owner = False, None

    def _release(self, sim: ScienceWorldSimulator) -> None:
        with self._lock:
            jvm, sim._jvm = sim._jvm, None
            if jvm is not None and jvm.owner is sim:
                jvm.owner = None


def _close_all(jvms: list[_Jvm]) -> None:
    while jvms:
        jvms.pop().close()


def scienceworld(**knobs: Any) -> AgentEnvironment:
    """Entry point: ScienceWorld as a search environment (knobs: :class:`ScienceWorldGame`'s
    and :class:`AgentEnvironment`'s)."""
    env_knobs = {k: knobs.pop(k) for k in list(knobs) if k in _ENV_KNOBS}
    return AgentEnvironment(ScienceWorldGame(**knobs), **env_knobs)


_ENV_KNOBS = ("instructions", "max_history", "show_valid_actions", "strict_actions", "pool_size",
              "step_delimiter")
