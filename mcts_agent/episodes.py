"""Playing a whole generated text through an environment, one step per delimiter."""

from __future__ import annotations

from typing import Any

from .contracts import Environment


def play_text(env: Environment, state: Any, text: str) -> tuple[Any, bool]:
    """Apply each non-empty line (``env.step_delimiter``-separated) of ``text`` to ``state``
    until the episode ends; returns (last state, whether it ended). An environment error ends
    the play where it happened, unfinished: a garbled completion is a failed one."""
    for line in text.split(env.step_delimiter):
        if not line.strip():
            continue
        try:
            step = env.step(state, line.strip())
        except Exception:
            return state, False
        state = step.state
        if step.done:
            return state, True
    return state, False


def final_answer(env: Environment, state: Any) -> Any:
    """The environment's answer of a finished state (None if it has no notion of one)."""
    answer = getattr(env, "answer", None)
    return answer(state) if answer is not None else None
