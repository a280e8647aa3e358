"""Training on what the search found: TRL's DPO and SFT trainers and the iterate loop."""

from .config import TrainConfig
from .trainers import StepDPOTrainer, TrainReport, strip_turn_end, train_policy

__all__ = ["StepDPOTrainer", "TrainConfig", "TrainReport", "strip_turn_end", "train_policy"]
