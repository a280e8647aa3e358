"""Value critics (plug-ins): each scores many states per call with values in [0, 1]."""

from critics.rollout import RolloutCritic
from critics.verifier import VerifierCritic

__all__ = ["RolloutCritic", "VerifierCritic"]
