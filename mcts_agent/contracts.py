"""The shapes plug-in authors write against: tasks, environments, critics.

An :class:`Environment` turns a :class:`Task` into states and steps; the search driver asks a
policy (:mod:`mcts_agent.llm`) for candidate actions at many states at once, steps the
environment, and asks a :class:`Critic` for the value of every new state in one batched call.
Text-reasoning states are immutable values, so branches can never share mutable state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

Prompt = str | list[dict[str, str]]
"""What a policy sees: plain text, or chat messages (``{"role": ..., "content": ...}``)."""


@dataclass(frozen=True)
class Task:
    """One problem: ``problem`` is what the model is asked, ``reference`` what checks it (an
    answer, unit tests, a goal); ``metadata`` carries anything else (source, difficulty …)."""

    id: str
    problem: str
    reference: Any = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    """The outcome of one action: the next state, the reward on that edge, whether the episode
    ended, and free-form details (parse errors, the extracted answer …)."""

    state: Any
    reward: float = 0.0
    done: bool = False
    info: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Environment(Protocol):
    """A task suite the search can play.

    ``step_delimiter`` ends one action in the policy's output (a newline for step-by-step
    reasoning); the driver passes it to the policy as a stop string.
    """

    name: str
    step_delimiter: str

    def reset(self, task: Task) -> Any:
        """The root state of ``task``."""

    def step(self, state: Any, action: str) -> Step:
        """Apply ``action`` (one step of text) to ``state``; never mutates ``state``."""

    def prompt(self, state: Any) -> Prompt:
        """What the policy is shown to propose the next action from ``state``."""

    def score(self, state: Any, task: Task) -> float | None:
        """Ground truth for a finished state in [0, 1] (1 = solved), or None if unknown.

        Uses ``task.reference``; the verifier critic calls it only in data mode."""


@dataclass(frozen=True)
class Assessment:
    """A critic's verdict on one state: a value in [0, 1], optional feedback text for later
    expansions (SWE-Search style), and details (raw scores, judge output …)."""

    value: float
    feedback: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.value <= 1.0:
            raise ValueError(f"critic values lie in [0, 1], got {self.value}")


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
    """Scores many states per call (batched); results may be cached by state."""

    name: str

    def evaluate(self, nodes: Sequence[CriticInput]) -> list[Assessment]:
        """One assessment per input, in order."""
