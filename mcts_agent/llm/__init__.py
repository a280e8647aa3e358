"""Policy backends: language models that propose candidate steps for the search, in batches.

:mod:`.base` holds the contract every backend implements (:class:`GenerationRequest`,
:class:`Candidate`, :class:`Policy`) and how candidates count their tokens and log-probabilities;
:mod:`.hf` is the embedded Hugging Face transformers backend (CPU or GPU). vLLM and
OpenAI-compatible servers will plug in behind the same protocol.
"""

from .base import (
    FINISH_REASONS,
    Candidate,
    FinishReason,
    GenerationRequest,
    Message,
    Policy,
    Prompt,
    check_requests,
)
from .hf import HFPolicy

__all__ = [
    "FINISH_REASONS",
    "Candidate",
    "FinishReason",
    "GenerationRequest",
    "HFPolicy",
    "Message",
    "Policy",
    "Prompt",
    "check_requests",
]
