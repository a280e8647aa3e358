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


class ValidActionPolicy:
    """A real, if simple, agent policy: a seeded random pick among the valid actions the
    prompt lists (``look`` when it lists none)."""

    name = "random-valid"

    def propose(self, requests):
        import random
        import re

        from mcts_agent.llm.base import Candidate

        out = []
        for request in requests:
            rng = random.Random(request.seed)
            found = re.search(r"Valid actions: (.*)$", request.prompt[-1]["content"])
            actions = found.group(1).split(", ") if found else ["look"]
            out.append([Candidate(f"Action: {rng.choice(actions)}", -1.0, 4, "stop", "\n")
                        for _ in range(request.n)])
        return out
