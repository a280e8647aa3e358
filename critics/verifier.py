"""The verifier: ground truth at finished states (the reference answer, the environment's
reward, unit tests), for data mode."""

from __future__ import annotations

from collections.abc import Sequence

from mcts_agent.contracts import Assessment, Critic, CriticInput


class VerifierCritic:
    """Scores finished states with ``environment.score`` (uses the task's reference, so only
    for data mode); unfinished states go to ``fallback`` (e.g. Monte Carlo rollouts) or get
    ``neutral``. A finished state the environment cannot score also gets ``neutral``."""

    name = "verifier"

    def __init__(self, fallback: Critic | None = None, neutral: float = 0.5) -> None:
        self.fallback = fallback
        self.neutral = neutral

    def evaluate(self, nodes: Sequence[CriticInput]) -> list[Assessment]:
        out: list[Assessment | None] = [None] * len(nodes)
        unfinished = []
        for i, node in enumerate(nodes):
            if node.done:
                score = node.environment.score(node.state, node.task)
                value = self.neutral if score is None else float(score)
                out[i] = Assessment(value, details={"verified": score is not None})
            else:
                unfinished.append(i)
        if unfinished:
            if self.fallback is None:
                rest = [Assessment(self.neutral)] * len(unfinished)
            else:
                rest = self.fallback.evaluate([nodes[i] for i in unfinished])
            for i, assessment in zip(unfinished, rest, strict=True):
                out[i] = assessment
        return out  # type: ignore[return-value]
