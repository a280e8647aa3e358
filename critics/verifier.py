"""The verifier: ground truth at finished states.

With the reference (data mode) a finished state is scored by ``environment.score``: the
reference answer, the environment's reward, unit tests. Without it (inference mode) the
verifier still knows one thing for sure: an episode the environment ended without an answer
(a false step, a crash, the depth limit) has failed, whatever a learned critic would guess.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mcts_agent.contracts import (
    Assessment,
    Critic,
    CriticInput,
    TestedEnvironment,
    check_score,
    checked_assessments,
    checked_score,
    final_answer,
    has_answers,
)
from mcts_agent.errors import ConfigError

if TYPE_CHECKING:
    from mcts_agent.search.critic_specs import CriticContext


class VerifierCritic:
    """Finished states: ``environment.score`` with ``reference=True``; with
    ``reference=False`` only failed episodes (finished, no answer) are decided, at 0, and only
    in environments that have a notion of an answer. Everything else goes to ``fallback``
    (e.g. rollouts, a reward model), whose assessments pass through unchanged (tokens,
    completions, feedback), or gets ``neutral``; so does a finished state the environment
    cannot score."""

    name = "verifier"

    def __init__(self, fallback: Critic | None = None, neutral: float = 0.5,
                 reference: bool = True) -> None:
        self.fallback = fallback
        self.neutral = neutral
        self.reference = reference

    @classmethod
    def from_spec(cls, arg: str | None, context: CriticContext) -> VerifierCritic:
        """``verifier``: with the reference in data mode, without it in inference mode."""
        if arg is not None:
            raise ConfigError(f"the verifier takes no argument: write `verifier`, not "
                              f"`verifier={arg}`")
        return cls(reference=context.mode == "data")

    def describe(self) -> dict[str, Any]:
        return {"reference": self.reference, "neutral": self.neutral,
                "fallback": self.fallback}

    def evaluate(self, nodes: Sequence[CriticInput]) -> list[Assessment]:
        self._prefetch(nodes)
        out: list[Assessment | None] = [self._verdict(node) if node.done else None
                                        for node in nodes]
        rest = [i for i, verdict in enumerate(out) if verdict is None]
        if rest:
            if self.fallback is None:
                judged = [Assessment(self.neutral)] * len(rest)
            else:  # a wrong answer from the fallback is blamed on the fallback
                judged = checked_assessments(self.fallback, [nodes[i] for i in rest])
            for i, assessment in zip(rest, judged, strict=True):
                out[i] = assessment
        return out  # type: ignore[return-value]

    def _prefetch(self, nodes: Sequence[CriticInput]) -> None:
        """An environment that runs programs (code) grades a wave's finished states in one
        batched call (``prefetch``), so the per-node scores below come from its cache."""
        done = [node for node in nodes if node.done]
        if done and isinstance(env := done[0].environment, TestedEnvironment):
            env.prefetch([(node.state, node.task) for node in done], visible=not self.reference)

    def _verdict(self, node: CriticInput) -> Assessment | None:
        env = node.environment
        if not self.reference:  # only environments with a notion of an answer can fail so
            if not has_answers(env):
                return None
            if final_answer(env, node.state) is None:
                return Assessment(0.0, _feedback(env, node, True), details={"verified": True})
            return self._visible_verdict(node)
        score = checked_score(env, node.state, node.task)
        return None if score is None else Assessment(
            score, _feedback(env, node, False), details={"verified": True})

    def _visible_verdict(self, node: CriticInput) -> Assessment | None:
        """Inference mode in code: the tests shown in the prompt (``visible_score``) judge a
        finished program without the reference; None where there are none."""
        env = node.environment
        score = env.visible_score(node.state, node.task) if isinstance(
            env, TestedEnvironment) else None
        if score is None:
            return None
        score = check_score(node.environment, score, node.task)
        return Assessment(score, _feedback(node.environment, node, True),
                          details={"visible_tests": True})


def _feedback(env: Any, node: CriticInput, visible: bool) -> str | None:
    """The environment's feedback on a finished state (code: the first failing test and its
    error), passed on to sibling expansions; None for environments without it."""
    if not isinstance(env, TestedEnvironment):
        return None
    return env.feedback(node.state, node.task, visible=visible)
