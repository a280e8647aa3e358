"""Value critics (plug-ins): each scores many states per call with values in [0, 1]."""

from critics.hybrid import HybridCritic, HybridWeights, fit_weights
from critics.rollout import RolloutCritic
from critics.verifier import VerifierCritic

__all__ = ["HybridCritic", "HybridWeights", "RolloutCritic", "VerifierCritic", "fit_weights"]
