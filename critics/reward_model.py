"""A trained value / process reward model as a critic: one forward pass per state, no generation.

The model is a causal LM with a scalar head, trained by
:func:`mcts_agent.train.reward_model.train_reward_model` on the search's own stepwise labels.
A state's value is ``sigmoid(head)`` at the last token of the text the policy saw
(``environment.prompt(state)``). Training reads the same head at the end of each step's
delimiter in one pass over a whole path; the model is causal, so both read the same number.

How a reward model reads text (:func:`encode_state`, :func:`score_positions`) lives in the core,
:mod:`mcts_agent.reward_encoding`, shared with training so the two can never drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from critics.cache import StateCache
from mcts_agent.contracts import Assessment, CriticInput
from mcts_agent.errors import ConfigError
from mcts_agent.reward_encoding import (  # re-exported: older imports name this module
    FORMAT,
    HOW_TO_MAKE,
    META_FILE,
    encode_path,
    encode_state,
    pad_id_of,
    pad_right,
    read_meta,
    score_positions,
)

if TYPE_CHECKING:
    from mcts_agent.search.critic_specs import CriticContext

__all__ = ["FORMAT", "HOW_TO_MAKE", "META_FILE", "RewardModelCritic", "encode_path",
           "encode_state", "pad_id_of", "pad_right", "read_meta", "score_positions"]


class RewardModelCritic:
    """Values from a reward model saved by ``train_reward_model``: ``sigmoid(head)`` at the last
    token of each state's text, every uncached state of a call in batched forward passes
    (``batch_size`` states each, similar lengths together). Finished states are scored the same
    way (training saw the final step too). A state longer than the model's ``max_length``
    keeps its last ``max_length`` tokens (``details["truncated"]``)."""

    name = "reward-model"

    def __init__(self, path: str | Path, device: str = "cpu", batch_size: int = 64,
                 max_cache: int = 100_000) -> None:
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.meta = read_meta(path)
        self.path, self.batch_size = Path(path), batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForTokenClassification.from_pretrained(
            path, dtype=torch.float32).to(device).eval()
        self.max_length: int | None = self.meta.get("max_length")
        self.pad_id = pad_id_of(self.tokenizer)
        self.cache = StateCache(max_cache)

    @classmethod
    def from_spec(cls, arg: str | None, context: CriticContext) -> RewardModelCritic:
        """``reward-model=DIR``: the folder ``mcts-agent train-rm`` wrote."""
        if not arg:
            raise ConfigError("reward-model needs its folder: reward-model=DIR "
                              "(made by `mcts-agent train-rm`)")
        return cls(Path(arg))

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "max_length": self.max_length}

    def evaluate(self, nodes: Sequence[CriticInput]) -> list[Assessment]:
        return self.cache.evaluate(nodes, self._compute)

    def _compute(self, nodes: list[CriticInput]) -> list[Assessment]:
        seqs = [encode_state(self.tokenizer, n.environment.prompt(n.state)) for n in nodes]
        cut = [self.max_length is not None and len(s) > self.max_length for s in seqs]
        seqs = [s[-self.max_length:] if c else s for s, c in zip(seqs, cut, strict=True)]
        values = score_positions(self.model, seqs, [[len(s) - 1] for s in seqs], self.pad_id,
                                 self.batch_size)
        return [Assessment(min(max(v, 0.0), 1.0), details={"truncated": True} if c else {})
                for (v,), c in zip(values, cut, strict=True)]
