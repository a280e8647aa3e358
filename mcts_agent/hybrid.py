"""The arithmetic of hybrid critics: combining component values, fitting their weights, and the
weights file that describes a fitted hybrid.

Values are combined either as a weighted mean or, once fitted, as a logistic model on their
logits, ``sigmoid(bias + Σ wᵢ·logit(vᵢ))`` — Platt scaling of each critic plus a learned trust
in it (LATS mixes an LM score and self-consistency with a fixed λ; fitting the weights against
verified outcomes lets the data choose). :func:`fit_weights` is that regression
(L2-regularised, Newton's method), so weights saved from one run's trees drive the next run's
search.

The core owns this (``mcts-agent fit-hybrid`` and :mod:`mcts_agent.critic_eval` use it); the
critic that applies it is the ``hybrid`` plug-in, :class:`critics.hybrid.HybridCritic`.
Needs only numpy.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .errors import ConfigError

EPS = 1e-4  # values are clipped to [EPS, 1 − EPS] before taking logits


def logit(values: np.ndarray) -> np.ndarray:
    v = np.clip(np.asarray(values, float), EPS, 1 - EPS)
    return np.log(v / (1 - v))


@dataclass
class HybridWeights:
    """A fitted (or hand-set) combination; ``specs`` say how to rebuild each component
    (e.g. ``reward-model=runs/rm``) so a weights file alone describes the critic."""

    components: list[str]
    weights: list[float]
    bias: float = 0.0
    combine: Literal["logistic", "mean"] = "logistic"
    specs: dict[str, str] = field(default_factory=dict)
    fitted_on: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> HybridWeights:
        try:
            data = json.loads(Path(path).read_text())
            weights = cls(**data)
        except (OSError, ValueError, TypeError) as err:
            raise ConfigError(f"{path} is not a hybrid weights file ({err}); make one with "
                              "`mcts-agent fit-hybrid RUN --critic … --out FILE`") from err
        if len(weights.components) != len(weights.weights):
            raise ConfigError(f"{path}: {len(weights.components)} components but "
                              f"{len(weights.weights)} weights")
        return weights


def combine(values: np.ndarray, weights: np.ndarray, bias: float, how: str) -> np.ndarray:
    """Rows of component values → one value per row in [0, 1]."""
    if how == "mean":
        return np.clip(values @ weights / max(weights.sum(), 1e-12), 0.0, 1.0)
    z = bias + logit(values) @ weights
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


def fit_weights(values: np.ndarray, labels: Sequence[bool], l2: float = 1e-2,
                iterations: int = 50) -> tuple[np.ndarray, float]:
    """Logistic regression of ``labels`` on the logits of ``values`` (n × m): weights and
    bias by Newton's method with an L2 penalty ``l2`` on the weights (not the bias)."""
    x = logit(np.asarray(values, float))
    y = np.asarray(labels, float)
    if x.ndim != 2 or len(x) != len(y) or len(y) == 0:
        raise ValueError("values must be an (n, m) array with one label per row")
    if y.min() == y.max():
        raise ValueError("fitting needs both outcomes among the labels (some verified right, "
                         "some wrong); search more tasks")
    design = np.hstack([x, np.ones((len(x), 1))])
    penalty = np.full(design.shape[1], l2 * len(y))
    penalty[-1] = 0.0
    beta = np.zeros(design.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ beta, -50, 50)))
        gradient = design.T @ (p - y) + penalty * beta
        hessian = (design.T * (p * (1 - p))) @ design + np.diag(penalty) + 1e-9 * np.eye(
            len(beta))
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    if not np.all(np.isfinite(beta)):
        raise ValueError("the hybrid fit diverged; check the component values")
    return beta[:-1], float(beta[-1])


def log_loss(values: Sequence[float], labels: Sequence[bool]) -> float:
    """Mean negative log-likelihood of the labels under the values (clipped)."""
    v = np.clip(np.asarray(values, float), EPS, 1 - EPS)
    y = np.asarray(labels, float)
    return float(-np.mean(y * np.log(v) + (1 - y) * np.log(1 - v))) if len(y) else math.nan
