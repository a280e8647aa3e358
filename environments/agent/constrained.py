"""Constrained decoding for agents: replies restricted to what the game accepts.

:class:`AdmissiblePolicy` wraps any policy that honours ``GenerationRequest.allowed``
(:func:`~mcts_agent.llm.base.constrains_replies`; the Hugging Face policy does). Every request
whose prompt an :class:`~environments.agent.base.AgentEnvironment` rendered gets that state's
admissible replies (:meth:`~environments.agent.base.AgentEnvironment.allowed_replies`) as its
``allowed`` texts, so the search driver, the rollout critic and episode players — which build
requests from ``env.prompt(state)`` and know nothing of constraints — all write only replies the
game accepts. A request that already carries ``allowed``, or whose prompt the environment did
not render, passes through unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from mcts_agent.llm.base import Candidate, GenerationRequest, Policy, constrains_replies

from .base import AgentEnvironment

__all__ = ["AdmissiblePolicy"]


class AdmissiblePolicy:
    """``policy`` whose replies in ``env`` are constrained to the game's admissible replies.

    Its ``name`` differs from the inner policy's (``<name>+admissible``), so response caches and
    run folders never mix constrained and free generations. Other attributes (``tokenizer`` …)
    are the inner policy's.
    """

    def __init__(self, policy: Policy, env: AgentEnvironment) -> None:
        if not constrains_replies(policy):
            raise ValueError(f"policy {getattr(policy, 'name', policy)!r} does not honour "
                             "GenerationRequest.allowed (constrained_decoding is not True)")
        self.policy, self.env = policy, env
        self.name = f"{policy.name}+admissible"
        self.constrained_decoding = True
        self.constrained = 0  # requests given allowed replies so far
        self.free = 0  # requests passed through unconstrained

    def propose(self, requests: Sequence[GenerationRequest]) -> list[list[Candidate]]:
        out = []
        for request in requests:
            allowed = (self.env.allowed_for_prompt(request.prompt)
                       if request.allowed is None else None)
            if allowed is not None:
                request = dataclasses.replace(request, allowed=allowed)
                self.constrained += 1
            elif request.allowed is None:
                self.free += 1
            out.append(request)
        return self.policy.propose(out)

    def __getattr__(self, name: str) -> Any:
        if name in ("policy", "env"):  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.policy, name)
