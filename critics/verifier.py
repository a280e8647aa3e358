"""The verifier: ground truth at finished states.

With the reference (data mode) a finished state is scored by ``environment.score``: the
reference answer, the environment's reward, unit tests. Without it (inference mode) the
verifier still knows one thing for sure: an episode the environment ended without an answer
(a false step, a crash, the depth limit) has failed, whatever a learned critic would guess.
"""

from __future__ import annotations

from collections.abc import Sequence

from mcts_agent.contracts import Assessment, Critic, CriticInput
from mcts_agent.episodes import final_answer


class VerifierCritic:
    """Finished states: ``environment.score`` with ``reference=True``; with
    ``reference=False`` only failed episodes (finished, no answer) are decided, at 0, and only
    in environments that have a notion of an answer. Everything else goes to ``fallback``
    (e.g. rollouts, a reward model) or gets ``neutral``; so does a finished state the
    environment cannot score."""

    name = "verifier"

    def __init__(self, fallback: Critic | None = None, neutral: float = 0.5,
                 reference: bool = True) -> None:
        self.fallback = fallback
        self.neutral = neutral
        self.reference = reference

    def evaluate(self, nodes: Sequence[CriticInput]) -> list[Assessment]:
        out: list[Assessment | None] = [self._verdict(node) if node.done else None
                                        for node in nodes]
        rest = [i for i, verdict in enumerate(out) if verdict is None]
        if rest:
            if self.fallback is None:
                judged = [Assessment(self.neutral)] * len(rest)
            else:
                judged = self.fallback.evaluate([nodes[i] for i in rest])
            for i, assessment in zip(rest, judged, strict=True):
                out[i] = assessment
        return out  # type: ignore[return-value]

    def _verdict(self, node: CriticInput) -> Assessment | None:
        if not self.reference:  # only environments with a notion of an answer can fail so
            if getattr(node.environment, "answer", None) is None:
                return None
            failed = final_answer(node.environment, node.state) is None
            return Assessment(0.0, details={"verified": True}) if failed else None
        score = node.environment.score(node.state, node.task)
        return None if score is None else Assessment(float(score), details={"verified": True})
