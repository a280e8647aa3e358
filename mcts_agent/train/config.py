"""Settings of one training step (typed; loadable from YAML; overridable from the CLI)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from ..settings import Settings


class TrainConfig(Settings):
    """How the policy is trained on mined data.

    ``dpo`` trains on preference pairs with TRL's DPOTrainer (step boundaries handled: no EOS is
    taught after a step that does not end the episode); ``sft`` trains on solution rows with TRL's
    SFTTrainer.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Literal["dpo", "sft"] = "dpo"
    learning_rate: float = Field(1e-4, gt=0)
    epochs: float = Field(2.0, gt=0, description="Passes over the rows.")
    batch_size: int = Field(16, ge=1)
    gradient_accumulation: int = Field(1, ge=1)
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Share of steps spent warming up.")
    scheduler: str = Field("cosine", description="A transformers lr_scheduler_type.")
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    beta: float = Field(0.1, gt=0, description="DPO: strength of the KL anchor to the reference.")
    nll_weight: float = Field(0.0, ge=0, description="DPO: weight of an added NLL loss on the "
                              "chosen side (DPO + NLL, as in RPO / Iterative RPO); 0 = plain DPO.")
    pair_weights: Literal["none", "confidence", "margin"] = Field(
        "none", description="DPO: draw pairs in proportion to a column, so each pair's loss "
        "counts by it in expectation: `confidence` (how sure the tree was that the chosen side "
        "is better: conservative DPO) or `margin` (the tree's value difference between the "
        "sides).")
    max_length: int | None = Field(1024, ge=8, description="Token cap of prompt + completion.")
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="auto: bfloat16 on a CUDA GPU that supports it, else float32.")
    threads: int | None = Field(None, ge=1, description="CPU threads for torch (None: as is).")
    seed: int = 0
