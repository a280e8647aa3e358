"""The hybrid critic: several critics' values combined into one, with a disagreement measure.

Each component scores the whole batch in its own single call; the values are combined as
:mod:`mcts_agent.hybrid` says (a weighted mean, or once fitted by ``mcts-agent fit-hybrid`` a
logistic model on their logits).

``Assessment.disagreement`` is the spread (max − min) of the component values: where critics
disagree strongly a node's value is unreliable, and pair mining can drop pairs built on it
(CREAM and SCIR make this point for self-rewarding loops).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np

from mcts_agent.contracts import Assessment, Critic, CriticInput, checked_assessments
from mcts_agent.errors import ConfigError
from mcts_agent.hybrid import HybridWeights, combine, fit_weights, log_loss, logit

if TYPE_CHECKING:
    from mcts_agent.search.critic_specs import CriticContext

__all__ = ["HybridCritic", "HybridWeights", "combine", "fit_weights", "log_loss", "logit"]


class HybridCritic:
    """Combine ``components`` (name → critic) with ``weights`` (default: equal weights, a
    plain mean). Feedback comes from the first component that gives some; ``tokens`` are
    summed and rollout ``completions`` passed on, so budgets and grafting work as with one
    critic."""

    name = "hybrid"

    def __init__(self, components: Mapping[str, Critic],
                 weights: HybridWeights | None = None) -> None:
        if not components:
            raise ValueError("a hybrid critic needs at least one component critic")
        self.components = dict(components)
        self.weights = weights or HybridWeights(list(self.components),
                                                [1.0] * len(self.components), combine="mean")
        missing = set(self.weights.components) - set(self.components)
        if missing:
            raise ValueError(f"the weights name critics that were not given: {sorted(missing)}")
        self._w = np.array(self.weights.weights, float)

    @classmethod
    def from_spec(cls, arg: str | None, context: CriticContext) -> HybridCritic:
        """``hybrid=FILE``: weights saved by ``fit-hybrid``; each component is built from the
        spec the file names for it, with the same context."""
        if not arg:
            raise ConfigError("hybrid needs its weights file: hybrid=FILE (from fit-hybrid)")
        weights = HybridWeights.load(arg)
        if missing := [c for c in weights.components if c not in weights.specs]:
            raise ConfigError(f"{arg}: no spec for components {missing}")
        return cls({c: context.build(weights.specs[c]) for c in weights.components}, weights)

    def describe(self) -> dict[str, Any]:
        """What scored, for the run's record: the components (described by the core) and the
        weights."""
        return {"components": self.components, "weights": asdict(self.weights)}

    def evaluate(self, nodes: Sequence[CriticInput]) -> list[Assessment]:
        if not nodes:
            return []
        names = self.weights.components
        # a component that breaks the contract is named, not the hybrid
        parts = {name: checked_assessments(self.components[name], nodes) for name in names}
        values = np.array([[a.value for a in parts[name]] for name in names]).T  # (n, m)
        combined = combine(values, self._w, self.weights.bias, self.weights.combine)
        spread = values.max(axis=1) - values.min(axis=1)
        out = []
        for i in range(len(nodes)):
            mine = [parts[name][i] for name in names]
            out.append(Assessment(
                float(combined[i]),
                feedback=next((a.feedback for a in mine if a.feedback), None),
                tokens=sum(a.tokens for a in mine),
                completions=tuple(text for a in mine for text in a.completions),
                disagreement=float(spread[i]),
                explanation=next((a.explanation for a in mine if a.explanation), None),
                components=dict(zip(names, values[i].tolist(), strict=True))))
        return out
