"""The shapes plug-in authors write against: tasks, environments and their capabilities, critics.

An environment is built from small declared protocols. Every environment implements the core
:class:`Environment` contract; the others are capabilities the core uses when present:

==========================  ===================================================================
:class:`Environment`        ``name``, ``step_delimiter``, ``reset``, ``step``, ``prompt``,
                            ``score`` — what the search needs to grow and verify a tree
:class:`TaskSource`         ``tasks(n, split, seed)`` (and optionally ``splits``) — the
                            environment lists its own problems (``--tasks N`` on the CLI)
:class:`AnswerEnvironment`  ``answer(state)`` — episodes end in an answer (math, code): inference
                            mode votes over answers; without it the environment is a game whose
                            verdict (``score``) is final
:class:`InteractiveEnvironment`  ``interactive = True`` and ``messages(state)`` — an agent that
                            observes the world between actions; episodes are played turn by turn
:class:`ReplayableEnvironment`  ``play(task, replies)`` and ``verify_dialogue(task, messages)`` —
                            a dialogue can be replayed in a fresh simulator (Agent-R splicing)
:class:`TestedEnvironment`  ``visible_score``, ``feedback``, ``prefetch`` — answers are programs
                            graded by tests; the visible ones judge without the reference
                            (inference mode), failures become feedback, a wave grades at once
==========================  ===================================================================

**Rewards and values.** ``score`` is the ground truth of a finished state in [0, 1] (1 = solved)
or None when unknown; it may read ``task.reference``, and the core calls it only where a
reference may be used (data mode; after an inference search, for reporting). ``Step.reward`` is
the reward on one edge, added to the value backed up through it: math-style environments leave
it 0 (the verdict is ``score``); a game keeps its own per-turn reward out of the node values
(which are chances of success in [0, 1]) and reports it in ``Step.info``.

:func:`check_environment` checks an environment against these protocols when it is created
(before any model loads) and names the environment and the missing or wrong piece;
:func:`load_tasks` checks what ``tasks()`` returns. Pure Python: importing this module imports
no model library.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from .errors import ConfigError, PluginError

Prompt = str | list[dict[str, str]]
"""What a policy sees: plain text, or chat messages (``{"role": ..., "content": ...}``)."""


@dataclass(frozen=True)
class Task:
    """One problem: ``problem`` is what the model is asked, ``reference`` what checks it (an
    answer, unit tests, a goal); ``metadata`` carries anything else (source, difficulty …).

    ``fingerprint`` is a hash of the problem and its reference: a run folder keeps it with each
    tree, so a resumed run never mistakes another problem for one it has done."""

    id: str
    problem: str
    reference: Any = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return content_hash(self.problem, self.reference)


def content_hash(*parts: Any) -> str:
    """A short stable hash of JSON-able ``parts`` (16 hex digits)."""
    text = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Step:
    """The outcome of one action: the next state, the reward on that edge (see the module
    docstring), whether the episode ended, and free-form details (parse errors, the extracted
    answer; ``invalid_action: True`` for an agent reply the game would not take)."""

    state: Any
    reward: float = 0.0
    done: bool = False
    info: Mapping[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- environments


@runtime_checkable
class Environment(Protocol):
    """The core contract: a task suite the search can play.

    ``step_delimiter`` ends one action in the policy's output (a newline for step-by-step
    reasoning); the driver passes it to the policy as a stop string, and strips the whitespace
    around each action. An environment whose steps are indentation-sensitive (code) may set
    ``keep_indent = True`` to be given each action with its leading whitespace (see
    :func:`action_text`). Where the driver passes on feedback about alternatives already
    tried (``sibling_feedback``), an environment may say how it joins the prompt with
    ``prompt_with_feedback(state, feedback)`` (code writes it as comments above the program;
    see :func:`feedback_prompt`). States must be immutable values (or snapshots): the driver
    steps many branches from the same state.
    """

    name: str
    step_delimiter: str

    def reset(self, task: Task) -> Any:
        """The root state of ``task``."""

    def step(self, state: Any, action: str) -> Step:
        """Apply ``action`` (one step of text, delimiter stripped) to ``state``; never mutates
        ``state``. Raising costs only that branch (counted as an environment error)."""

    def prompt(self, state: Any) -> Prompt:
        """What the policy is shown to propose the next action from ``state``."""

    def score(self, state: Any, task: Task) -> float | None:
        """Ground truth for a finished state in [0, 1] (1 = solved), or None if unknown."""


@runtime_checkable
class TaskSource(Protocol):
    """An environment that lists its own tasks. ``split`` names a part of the suite ("test"
    is held out from "train"); an environment may declare the names it accepts as ``splits``
    (a collection; ``None`` in it means the source has no splits and ignores the name)."""

    def tasks(self, n: int, split: str = "test", seed: int | None = None) -> list[Task]:
        """``n`` tasks of ``split`` (fewer if the source has fewer), reproducible by ``seed``."""


@runtime_checkable
class AnswerEnvironment(Protocol):
    """Episodes end in an answer: inference mode votes over the answers of finished nodes."""

    def answer(self, state: Any) -> str | None:
        """The answer of a finished state (None: the episode ended without one)."""


@runtime_checkable
class InteractiveEnvironment(Protocol):
    """An agent environment: the policy observes the world between actions, so episodes are
    played turn by turn (one batched policy call per turn), never generated in one call."""

    interactive: bool

    def messages(self, state: Any) -> list[dict[str, str]]:
        """The whole episode so far as chat messages (all turns; judges and splicing read it)."""


@runtime_checkable
class ReplayableEnvironment(Protocol):
    """Dialogues can be replayed in a fresh simulator (what splicing validates with)."""

    def play(self, task: Task, replies: Sequence[str]) -> Any:
        """The state reached by feeding ``replies`` one per turn from ``reset(task)``."""

    def verify_dialogue(self, task: Task, messages: Sequence[Mapping[str, str]]) -> bool:
        """Whether ``messages`` is exactly what happens when its replies are replayed."""


@runtime_checkable
class TestedEnvironment(Protocol):
    """Answers are programs graded by tests (code): some tests are shown in the prompt
    (visible) and may judge a program without the reference; the rest stay hidden."""

    def visible_score(self, state: Any, task: Task) -> float | None:
        """Share of the visible tests a finished program passes; 0 for an unfinished one,
        without running anything. None for every state of a task that shows no tests."""

    def feedback(self, state: Any, task: Task, visible: bool = False) -> str | None:
        """What went wrong (the first failing test and its error) for critics and expansions;
        ``visible`` keeps it to the visible tests (inference mode must not leak hidden ones)."""

    def prefetch(self, pairs: Sequence[tuple[Any, Task]], visible: bool = False) -> None:
        """Grade a wave's finished programs in one batched call; later calls hit its cache."""


@runtime_checkable
class CorruptingEnvironment(Protocol):
    """Correct steps can be turned into verified wrong ones (RISE-style negatives for the
    ``corrupted`` pair strategy): the environment knows its steps well enough to break one."""

    def corrupt_step(self, state: Any, action: str, rng: random.Random) -> str | None:
        """``action`` (a step taken from ``state``) with one subtle edit that the environment
        has checked to be wrong there (e.g. one digit of a result changed), or None when it
        cannot make one (``action`` is itself wrong, or has nothing to edit)."""


def has_answers(env: Any) -> bool:
    """Whether episodes end in an answer (math, code) rather than in a game's own verdict."""
    return callable(getattr(env, "answer", None))


def action_text(env: Any, text: str) -> str:
    """One generated step as the environment takes it: stripped, or only right-stripped (and
    without blank leading lines) where the environment declares ``keep_indent``."""
    if getattr(env, "keep_indent", False) is True:
        return text.rstrip().lstrip("\r\n")
    return text.strip()


def with_feedback(prompt: Prompt, feedback: str | None) -> Prompt:
    """``prompt`` with a feedback block: before the text of a plain prompt; appended to the
    last user message of a chat (or as a first system message when there is none)."""
    if not feedback:
        return prompt
    if isinstance(prompt, str):
        return f"{feedback}\n\n{prompt}"
    messages = [dict(m) for m in prompt]
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if users:
        messages[users[-1]]["content"] += f"\n\n{feedback}"
    else:
        messages.insert(0, {"role": "system", "content": feedback})
    return messages


def feedback_prompt(env: Any, state: Any, feedback: str | None) -> Prompt:
    """The prompt from ``state`` carrying ``feedback``: the environment's own
    ``prompt_with_feedback`` where it declares one, else :func:`with_feedback`."""
    if feedback and getattr(env, "prompt_with_feedback", None) is not None:
        return env.prompt_with_feedback(state, feedback)
    return with_feedback(env.prompt(state), feedback)


def is_interactive(env: Any) -> bool:
    """Whether the environment is an agent's world, played turn by turn."""
    return getattr(env, "interactive", False) is True


def final_answer(env: Any, state: Any) -> str | None:
    """The environment's answer of a finished state (None if it has no notion of one)."""
    return env.answer(state) if has_answers(env) else None


def checked_score(env: Environment, state: Any, task: Task) -> float | None:
    """``env.score(state, task)``, refused with the environment's name when it breaks the
    contract (a number in [0, 1], or None)."""
    return check_score(env, env.score(state, task), task)


def check_score(env: Any, score: Any, task: Task) -> float | None:
    """``score`` (what ``env.score`` returned for ``task``) if it keeps the contract."""
    if score is None:
        return None
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0.0 <= score <= 1.0:
        raise PluginError(f"environment {_name(env)!r}: score() returned {score!r} for task "
                          f"{task.id!r}; a score is a number in [0, 1] (1 = solved) or None")
    return float(score)


@dataclass(frozen=True)
class Capabilities:
    """What :func:`check_environment` found an environment to implement."""

    tasks: bool
    answers: bool
    interactive: bool
    replay: bool
    tested: bool = False


_CORE_METHODS = {"reset": 1, "step": 2, "prompt": 1, "score": 2}
_OPTIONAL = {"tasks": ("TaskSource", 1), "answer": ("AnswerEnvironment", 1),
             "messages": ("InteractiveEnvironment", 1), "play": ("ReplayableEnvironment", 2),
             "verify_dialogue": ("ReplayableEnvironment", 2),
             "visible_score": ("TestedEnvironment", 2), "feedback": ("TestedEnvironment", 2),
             "prefetch": ("TestedEnvironment", 1),
             "prompt_with_feedback": ("Environment", 2)}


def check_environment(env: Any) -> Capabilities:
    """Check ``env`` against the declared protocols (like Gymnasium's ``check_env``): the core
    contract must be complete, an optional capability complete when present. Raises
    :class:`~mcts_agent.errors.PluginError` naming the environment and the missing or wrong
    piece; returns the capabilities found."""
    name = _name(env)
    if not isinstance(getattr(env, "name", None), str) or not env.name:
        raise PluginError(f"environment {name!r}: `name` must be a non-empty string "
                          "(a class attribute is enough)")
    delimiter = getattr(env, "step_delimiter", None)
    if not isinstance(delimiter, str) or not delimiter:
        raise PluginError(f"environment {name!r}: `step_delimiter` must be a non-empty string "
                          f"(the stop string that ends one action), got {delimiter!r}")
    for method, arity in _CORE_METHODS.items():
        _check_method(env, name, method, arity, "Environment")
    for method, (protocol, arity) in _OPTIONAL.items():
        if getattr(env, method, None) is not None:
            _check_method(env, name, method, arity, protocol)
    if not isinstance(getattr(env, "keep_indent", False), bool):
        raise PluginError(f"environment {name!r}: `keep_indent` must be True or False, got "
                          f"{env.keep_indent!r}")
    interactive = getattr(env, "interactive", False)
    if not isinstance(interactive, bool):
        raise PluginError(f"environment {name!r}: `interactive` must be True or False, got "
                          f"{interactive!r}")
    if interactive and getattr(env, "messages", None) is None:
        raise PluginError(f"environment {name!r} is interactive but has no messages(state) "
                          "(InteractiveEnvironment): judges and splicing read the whole episode")
    replay = _complete(env, name, "ReplayableEnvironment", ("play", "verify_dialogue"))
    tested = _complete(env, name, "TestedEnvironment", ("visible_score", "feedback", "prefetch"))
    return Capabilities(tasks=isinstance(env, TaskSource), answers=has_answers(env),
                        interactive=interactive, replay=replay, tested=tested)


def _complete(env: Any, name: str, protocol: str, methods: tuple[str, ...]) -> bool:
    """Whether ``env`` implements all of ``methods``; refused when it has only some."""
    present = [m for m in methods if getattr(env, m, None) is not None]
    if present and len(present) < len(methods):
        missing = ", ".join(f"{m}()" for m in methods if m not in present)
        raise PluginError(f"environment {name!r} has {present[0]}() but not {missing} "
                          f"({protocol} needs all of them)")
    return bool(present)


def _check_method(env: Any, name: str, method: str, arity: int, protocol: str) -> None:
    fn = getattr(env, method, None)
    if fn is None:
        raise PluginError(f"environment {name!r} has no {method}() ({protocol} contract in "
                          "mcts_agent.contracts; see the README's plug-in section)")
    if not callable(fn):
        raise PluginError(f"environment {name!r}: {method} must be a method, got "
                          f"{type(fn).__name__}")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins and C extensions: nothing to check
        return
    try:
        signature.bind(*range(arity))
    except TypeError:
        raise PluginError(f"environment {name!r}: {method}{signature} cannot take "
                          f"{arity} argument{'s' * (arity > 1)} ({protocol} contract)") from None


def load_tasks(env: Any, n: int, split: str = "test", seed: int | None = None) -> list[Task]:
    """``env.tasks(n, split, seed)`` checked: the split is one the environment declares, and
    every item is a :class:`Task` with a string id and problem, ids unique."""
    name = _name(env)
    if not isinstance(env, TaskSource):
        raise PluginError(f"environment {name!r} does not list tasks (no tasks(n, split, seed)); "
                          "pass a list of Task objects, or use an environment with a task file")
    splits = getattr(env, "splits", None)
    if splits is not None and None not in splits and split not in splits:
        raise ConfigError(f"environment {name!r} has no split {split!r}; use one of "
                          f"{', '.join(map(str, splits))} (--split)")
    tasks = env.tasks(n, split=split, seed=seed)
    if not isinstance(tasks, (list, tuple)):
        raise PluginError(f"environment {name!r}: tasks() returned {type(tasks).__name__}; "
                          "return a list of mcts_agent.contracts.Task")
    seen: set[str] = set()
    for i, task in enumerate(tasks):
        if not isinstance(task, Task):
            raise PluginError(f"environment {name!r}: tasks() item {i} is a "
                              f"{type(task).__name__}, not a mcts_agent.contracts.Task "
                              "(build Task(id=..., problem=..., reference=...))")
        if not isinstance(task.id, str) or not isinstance(task.problem, str):
            raise PluginError(f"environment {name!r}: task {i} needs a string id and problem, "
                              f"got id {task.id!r} and a {type(task.problem).__name__} problem")
        if task.id in seen:
            raise PluginError(f"environment {name!r}: task id {task.id!r} appears twice; "
                              "ids must be unique (they key saved trees)")
        seen.add(task.id)
    return list(tasks)


def _name(env: Any) -> str:
    name = getattr(env, "name", None)
    return name if isinstance(name, str) and name else type(env).__name__


# --------------------------------------------------------------------------- critics


@dataclass(frozen=True)
class Assessment:
    """A critic's verdict on one state.

    ``value`` in [0, 1]; ``feedback``: text for later expansions (SWE-Search style);
    ``tokens``: tokens the critic generated for it (counted in the tree's budget);
    ``completions``: finished rollout texts the driver grafts into the tree (rStar-Math);
    ``disagreement``: a hybrid's spread of component values; ``details``: anything else
    (raw scores, judge output), stored by nobody and read by nobody in the core;
    ``explanation``: a judge's reasoning behind the value (kept in the tree, shown by the
    viewer); ``components``: a hybrid's value from each of its critics, by name (kept too)."""

    value: float
    feedback: str | None = None
    tokens: int = 0
    completions: tuple[str, ...] = ()
    disagreement: float | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    explanation: str | None = None
    components: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.value, bool) or not isinstance(self.value, (int, float)) or not (
                0.0 <= self.value <= 1.0):
            raise ValueError(f"critic values lie in [0, 1], got {self.value!r}")


@dataclass(frozen=True)
class CriticInput:
    """What a critic sees of one node: the task, the environment, the state and whether the
    episode ended there."""

    task: Task
    environment: Environment
    state: Any
    done: bool


@runtime_checkable
class Critic(Protocol):
    """Scores many states per call (batched); results may be cached by state.

    A critic plug-in is built from a spec (``--critic NAME[=ARG]``): see
    :mod:`mcts_agent.search.critic_specs` for how ARG and the search's policy reach it."""

    name: str

    def evaluate(self, nodes: Sequence[CriticInput]) -> list[Assessment]:
        """One assessment per input, in order."""


def check_critic(critic: Any, label: str | None = None) -> Any:
    """Check ``critic`` against :class:`Critic` (a name and an evaluate method)."""
    label = label or type(critic).__name__
    if not isinstance(getattr(critic, "name", None), str):
        raise PluginError(f"critic {label!r}: `name` must be a string")
    if not callable(getattr(critic, "evaluate", None)):
        raise PluginError(f"critic {label!r} has no evaluate(nodes) method (Critic contract)")
    return critic


def checked_assessments(critic: Critic, nodes: Sequence[CriticInput]) -> list[Assessment]:
    """``critic.evaluate(nodes)``, refused with the critic's name when it returns the wrong
    number or kind of results."""
    if not nodes:
        return []
    out = critic.evaluate(nodes)
    if not isinstance(out, (list, tuple)) or len(out) != len(nodes):
        size = len(out) if isinstance(out, (list, tuple)) else type(out).__name__
        raise PluginError(f"critic {critic.name!r}: evaluate() returned {size} results for "
                          f"{len(nodes)} nodes; return one Assessment per node, in order")
    for item in out:
        if not isinstance(item, Assessment):
            raise PluginError(f"critic {critic.name!r}: evaluate() returned a "
                              f"{type(item).__name__}; return mcts_agent.contracts.Assessment")
    return list(out)
