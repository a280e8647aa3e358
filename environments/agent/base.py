"""Interactive text environments (agents) behind the search's :class:`Environment` contract.

A plug-in writes a :class:`TextGame`: it lists tasks and starts a live :class:`Simulator` for
one; the simulator steps on a command and reports a :class:`Transition` (observation, reward,
done, won, valid actions when the game knows them). :class:`AgentEnvironment` turns that into
search states:

* An :class:`AgentState` is an immutable value: the task, the turns so far (what the model
  wrote, the command sent, what came back). It holds no simulator, so branches can never share
  mutable simulator state.
* Stepping needs a simulator *at* a state. :class:`SimulatorPool` keeps recently used ones,
  keyed by the commands that led there: a game whose simulator can ``copy()`` itself hands out
  copies of its snapshot; one that cannot (ScienceWorld) gives its simulator away and the next
  request replays from the deepest cached prefix, or from ``start``. Either way a simulator is
  only ever stepped by one branch.
* Outcomes are cached by (task, commands): the games are deterministic, so stepping the same
  command from the same state again (a replayed tree, a repeated candidate) costs no simulation.
  :meth:`AgentEnvironment.replay` bypasses every cache: it is the check that a dialogue really
  happens in the game.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

from mcts_agent.contracts import Step, Task
from mcts_agent.errors import ConfigError
from mcts_agent.react import DEFAULT_INSTRUCTIONS, parse_action, render_turn

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
"""The splits of the games that draw tasks from seed ranges (BabyAI, textarena, gymnasium)."""
DEV_ALIASES = ("validation", "valid", "val")
"""Other names accepted for the held-out development split."""


def canonical_split(game: str, split: object, names: Sequence[str] = SPLITS,
                    aliases: Sequence[str] = DEV_ALIASES) -> str:
    """``split`` by the name the game uses (an alias becomes ``dev``), or a one-line
    :class:`ConfigError` naming the game and the splits it has."""
    if isinstance(split, str) and split in aliases:
        return "dev"
    if isinstance(split, str) and split in names:
        return split
    also = f" ({'/'.join(aliases)} mean dev)" if aliases else ""
    raise ConfigError(f"{game} has no split {split!r}; use one of {', '.join(names)}{also} "
                      "with --split or split=")


@dataclass(frozen=True)
class Transition:
    """What a game says after a command (or at the start): the observation text, the reward on
    that step, whether the episode ended and whether it was won, and the commands it would
    accept next (None when the game does not know them)."""

    observation: str
    reward: float = 0.0
    done: bool = False
    won: bool = False
    valid_actions: tuple[str, ...] | None = None


@runtime_checkable
class Simulator(Protocol):
    """One live, mutable episode. Optional methods: ``copy() -> Simulator`` (an independent
    clone at the same point; without it states are restored by replay) and ``close()``."""

    def step(self, action: str) -> Transition:
        """Apply ``action`` in place."""


@runtime_checkable
class TextGame(Protocol):
    """What a plug-in author writes for an interactive environment.

    ``start(task)`` returns a fresh simulator and the first transition; it must be
    deterministic (the same task always plays the same way), because states are restored by
    copying or replaying. ``tasks(n, split, seed)`` lists tasks when the game can make them.
    ``can_copy`` says whether its simulators have ``copy()``.
    """

    name: str
    can_copy: bool

    def start(self, task: Task) -> tuple[Simulator, Transition]: ...


@dataclass(frozen=True)
class Turn:
    """One agent turn: the model's reply, the command sent to the game (None when the reply was
    rejected and nothing was sent) and what the agent was shown back."""

    message: str
    action: str | None
    observation: str
    reward: float = 0.0


@dataclass(frozen=True)
class AgentState:
    """An immutable point of an episode: the task, its first observation and the turns since."""

    task: Task
    first: Transition
    turns: tuple[Turn, ...] = ()
    last: Transition | None = None  # the latest transition the game produced (None: first)
    invalid: int = 0  # replies rejected so far

    @property
    def commands(self) -> tuple[str, ...]:
        """The commands the simulator has received: its position in the game."""
        return tuple(t.action for t in self.turns if t.action is not None)

    @property
    def current(self) -> Transition:
        return self.last or self.first

    @property
    def score(self) -> float:
        return sum(t.reward for t in self.turns)

    @property
    def done(self) -> bool:
        return self.current.done

    @property
    def won(self) -> bool:
        return self.current.won


class SimulatorPool:
    """Live simulators keyed by (task id, commands), least recently used evicted.

    ``take`` returns a simulator positioned at the commands that belongs to the caller alone;
    ``keep`` offers one back for later requests. A stored simulator is either copied (it stays
    as a snapshot) or handed over (and is gone from the pool); the pool measures what copying,
    starting and stepping cost in this game and copies only when that is cheaper than
    replaying from the start. (TextWorld: a copy costs ~0.1 s, a start 0.02 s and a step
    0.004 s, so replaying wins for any realistic depth; BabyAI copies in under a millisecond.)
    """

    def __init__(self, game: TextGame, capacity: int = 256) -> None:
        self.game, self.capacity = game, capacity
        self._sims: OrderedDict[tuple[str, tuple[str, ...]], Simulator] = OrderedDict()
        self._seconds = {"copy": 0.0, "start": 0.0, "step": 0.0}
        self._calls = {"copy": 0, "start": 0, "step": 0}
        self.replayed_steps = 0  # commands re-applied to restore a state (the cost of no copy)
        self.copies = 0

    def take(self, task: Task, commands: tuple[str, ...]) -> Simulator:
        for depth in range(len(commands), -1, -1):
            key = (task.id, commands[:depth])
            if key in self._sims:
                sim = self._claim(key, depth)
                break
        else:
            depth, sim = 0, self._timed("start", lambda: self.game.start(task)[0])
        for command in commands[depth:]:
            self._timed("step", lambda c=command: sim.step(c))
            self.replayed_steps += 1
        return sim

    def keep(self, task: Task, commands: tuple[str, ...], sim: Simulator) -> None:
        key = (task.id, commands)
        old = self._sims.pop(key, None)
        if old is not None and old is not sim:
            _close(old)
        self._sims[key] = sim
        while len(self._sims) > self.capacity:
            _close(self._sims.popitem(last=False)[1])

    def _claim(self, key: tuple[str, tuple[str, ...]], depth: int) -> Simulator:
        if self.game.can_copy and self._copy_pays(depth):
            self._sims.move_to_end(key)
            self.copies += 1
            return self._timed("copy", self._sims[key].copy)  # type: ignore[attr-defined]
        return self._sims.pop(key)

    def _copy_pays(self, depth: int) -> bool:
        """Copy when no copy was timed yet, or when it beats a replay from the start."""
        if not self._calls["copy"] or not self._calls["start"]:
            return True
        mean = {k: self._seconds[k] / max(self._calls[k], 1) for k in self._seconds}
        return mean["copy"] < mean["start"] + depth * mean["step"]

    def _timed(self, kind: str, fn: Any) -> Any:
        started = time.perf_counter()
        out = fn()
        self._seconds[kind] += time.perf_counter() - started
        self._calls[kind] += 1
        return out

    def clear(self) -> None:
        while self._sims:
            _close(self._sims.popitem()[1])


def _close(sim: Simulator) -> None:
    close = getattr(sim, "close", None)
    if close is not None:
        close()


@dataclass
class AgentEnvironment:
    """A :class:`TextGame` as a search environment with ReAct turns.

    Args:
        game: the plug-in.
        instructions: the system message (None or "" = no system message: small models trained
            on the bare format).
        max_history: most past turns shown in a prompt (None = all); older ones are summarised
            as a count so prompts stay inside small models' contexts.
        show_valid_actions: list the game's valid actions in the prompt when it knows them.
        strict_actions: reject a command that is not among the valid actions (when known) without
            sending it, as a typed interface would; False sends it and lets the game answer.
        pool_size: simulators kept for restoring states.
        reply_thoughts: thoughts an admissible reply may open with (:meth:`allowed_replies`;
            e.g. the revision sentences of splices), besides the bare ``Action: <command>``.
    """

    game: TextGame
    instructions: str | None = DEFAULT_INSTRUCTIONS
    max_history: int | None = None
    show_valid_actions: bool = True
    strict_actions: bool = True
    pool_size: int = 256
    reply_thoughts: tuple[str, ...] = ()
    step_delimiter: str = "\n"
    interactive: bool = field(default=True, init=False)  # one model turn per step, always

    def __post_init__(self) -> None:
        self.name = self.game.name
        self.pool = SimulatorPool(self.game, self.pool_size)
        self._outcomes: OrderedDict[tuple[str, tuple[str, ...]], Transition] = OrderedDict()
        self._allowed: OrderedDict[str, tuple[str, ...]] = OrderedDict()  # by rendered prompt
        self.simulated_steps = 0

    # ------------------------------------------------------------------ Environment contract

    def reset(self, task: Task) -> AgentState:
        sim, first = self.pool._timed("start", lambda: self.game.start(task))
        self.pool.keep(task, (), sim)
        return AgentState(task, first)

    def step(self, state: AgentState, action: str) -> Step:
        if state.done:
            raise ValueError(f"task {state.task.id}: the episode has ended; no more actions")
        current = state.current
        parsed = parse_action(action, current.valid_actions if self.strict_actions else None)
        if parsed.action is None:
            return self._rejected(state, action, parsed.error or "Invalid reply.")
        commands = (*state.commands, parsed.action)
        outcome = self._outcome(state.task, commands)
        turn = Turn(action.strip(), parsed.action, outcome.observation, outcome.reward)
        child = replace(state, turns=(*state.turns, turn), last=outcome)
        # node values are chances of winning, in [0, 1]: the game's reward stays on the turn
        # (and in info) rather than being added to them on the way up
        return Step(child, 0.0, outcome.done, {"won": outcome.won, "reward": outcome.reward})

    def prompt(self, state: AgentState) -> list[dict[str, str]]:
        """The chat the policy continues: the recent turns and the valid actions. The state's
        admissible replies are remembered by prompt (:meth:`allowed_for_prompt`)."""
        messages = self.messages(state, self.max_history, show_valid=self.show_valid_actions)
        allowed = self.allowed_replies(state)
        if allowed is not None:
            key = prompt_key(messages)
            self._allowed[key] = allowed
            self._allowed.move_to_end(key)
            while len(self._allowed) > 64 * self.pool_size:
                self._allowed.popitem(last=False)
        return messages

    # ------------------------------------------------------------------ admissible replies

    def allowed_replies(self, state: AgentState) -> tuple[str, ...] | None:
        """Every reply the game would accept now, as the agent writes it: ``Action: <command>``
        for each valid action, and ``Thought: <thought> Action: <command>`` for each of
        :attr:`reply_thoughts`. None when the game does not list its valid actions (or the
        episode has ended): then any reply may be tried. What constrained decoding
        (``GenerationRequest.allowed``) restricts a reply to."""
        valid = state.current.valid_actions
        if not valid or state.done:
            return None
        return tuple(render_turn(a) for a in valid) + tuple(
            render_turn(a, thought) for thought in self.reply_thoughts for a in valid)

    def allowed_for_prompt(self, prompt: Any) -> tuple[str, ...] | None:
        """The admissible replies of the state this environment last rendered as ``prompt``
        (None for a prompt it did not render, or rendered too long ago): how a policy wrapper
        that sees only requests constrains them (:class:`~environments.agent.AdmissiblePolicy`).
        States with the same prompt show the same valid actions, so they share the answer."""
        return self._allowed.get(prompt_key(prompt))

    def messages(self, state: AgentState, max_history: int | None = None,
                 show_valid: bool = False) -> list[dict[str, str]]:
        """``state`` as chat messages: the system instructions, the goal and first observation,
        then one assistant/user pair per turn (the last ``max_history`` only; None = all)."""
        turns = state.turns if max_history is None else state.turns[
            max(0, len(state.turns) - max_history):]
        skipped = len(state.turns) - len(turns)
        opening = f"Goal: {state.task.problem}\n\n{state.first.observation}".strip()
        if skipped:
            opening += f"\n\n({skipped} earlier turns not shown)"
        messages = [{"role": "system", "content": self.instructions}] if self.instructions else []
        messages.append({"role": "user", "content": opening})
        for turn in turns:
            messages += [{"role": "assistant", "content": turn.message},
                         {"role": "user", "content": turn.observation}]
        valid = state.current.valid_actions
        if show_valid and valid and not state.done:
            messages[-1] = {"role": "user", "content": messages[-1]["content"]
                            + "\nValid actions: " + ", ".join(valid)}
        return messages

    def score(self, state: AgentState, task: Task) -> float:
        """1 when the game was won, else 0: the game itself is the verifier (no reference)."""
        return 1.0 if state.won else 0.0

    @property
    def splits(self) -> tuple[str, ...] | None:
        """The split names the game's :meth:`tasks` accepts (None: it does not say)."""
        splits = getattr(self.game, "splits", None)
        return tuple(splits) if splits is not None else None

    def tasks(self, n: int, split: str = "test", seed: int | None = None) -> list[Task]:
        tasks = getattr(self.game, "tasks", None)
        if tasks is None:
            raise ConfigError(f"game {self.name!r} does not generate tasks; pass a list of "
                              "Task objects (or a task file) instead")
        return tasks(n, split=split, seed=seed)

    # ------------------------------------------------------------------ replay and dialogues

    def replay(self, task: Task, commands: Sequence[str]) -> list[Transition]:
        """Play ``commands`` in a fresh simulator, no cache: the first transition, then one per
        command (stopping early if the game ends)."""
        sim, first = self.game.start(task)
        out = [first]
        try:
            for command in commands:
                if out[-1].done:
                    break
                out.append(sim.step(command))
        finally:
            _close(sim)
        return out

    def play(self, task: Task, replies: Sequence[str]) -> AgentState:
        """The state reached by feeding the model ``replies`` one per turn from the start."""
        state = self.reset(task)
        for reply in replies:
            if state.done:
                break
            state = self.step(state, reply).state
        return state

    def verify_dialogue(self, task: Task, messages: Sequence[dict[str, str]]) -> bool:
        """Whether ``messages`` (as :meth:`messages` writes them, all turns) is what really
        happens when its assistant replies are played in a fresh simulator, with no cache: the
        check every spliced dialogue passes before it is kept."""
        replies = [m["content"] for m in messages if m["role"] == "assistant"]
        fresh = replace(self, pool_size=1)  # its own pool and outcome cache, both empty
        try:
            state = fresh.play(task, replies)
            return len(state.turns) == len(replies) and fresh.messages(state) == [
                dict(m) for m in messages]
        except Exception as err:  # a reply the game cannot take is a failed check, not a crash
            log.info("task %s: dialogue does not replay: %s", task.id, err)
            return False
        finally:
            fresh.pool.clear()  # its simulators only: the game is shared

    # ------------------------------------------------------------------ internals

    def _rejected(self, state: AgentState, reply: str, error: str) -> Step:
        valid = state.current.valid_actions
        shown = error if not valid else f"{error} Valid actions: {', '.join(valid)}"
        turn = Turn(reply.strip(), None, shown)
        child = replace(state, turns=(*state.turns, turn), invalid=state.invalid + 1)
        return Step(child, 0.0, False, {"invalid_action": True})

    def _outcome(self, task: Task, commands: tuple[str, ...]) -> Transition:
        key = (task.id, commands)
        if key in self._outcomes:
            self._outcomes.move_to_end(key)
            return self._outcomes[key]
        sim = self.pool.take(task, commands[:-1])
        outcome = self.pool._timed("step", lambda: sim.step(commands[-1]))
        self.simulated_steps += 1
        if outcome.done:
            _close(sim)
        else:
            self.pool.keep(task, commands, sim)
        self._outcomes[key] = outcome
        if len(self._outcomes) > 64 * self.pool_size:
            self._outcomes.popitem(last=False)
        return outcome

    def close(self) -> None:
        """Close every simulator this environment holds, then the game (JVMs, interpreters)."""
        self.pool.clear()
        close = getattr(self.game, "close", None)
        if close is not None:
            close()


def prompt_key(prompt: Any) -> str:
    """A prompt (text or chat messages) as one string, for looking it up."""
    if isinstance(prompt, str):
        return prompt
    return json.dumps([[m["role"], m["content"]] for m in prompt])


def require(module: str, game: str, install: str | None = None) -> Any:
    """Import a game's optional package, or say how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:  # pragma: no cover - exercised only without the package
        raise ImportError(f"{game} needs the {module!r} package: pip install "
                          f"{install or module}  (or pip install 'mcts-agent[agents]')") from err


def transitions_match(a: Transition, b: Transition) -> bool:
    """Whether two transitions show the agent the same thing (what replay validation checks)."""
    return (a.observation == b.observation and a.done == b.done and a.won == b.won
            and abs(a.reward - b.reward) < 1e-9)


def describe(state: AgentState) -> dict[str, Any]:
    """A JSON-able summary of a state (for logs and reports)."""
    return {"task": state.task.id, "turns": len(state.turns), "commands": list(state.commands),
            "score": state.score, "done": state.done, "won": state.won,
            "invalid": state.invalid}
