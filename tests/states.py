"""Building critic inputs on real environments, shared by the critic tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mcts_agent.contracts import CriticInput, Task


def critic_input(env: Any, task: Task, lines: Sequence[str] = (),
                 done: bool = False) -> CriticInput:
    """The state ``env`` reaches from ``task`` after ``lines``, as a critic sees it."""
    state = env.reset(task)
    for line in lines:
        state = env.step(state, line).state
    return CriticInput(task, env, state, done)
