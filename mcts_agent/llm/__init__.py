"""Policy backends: language models that propose candidate steps for the search, in batches.

:mod:`.base` holds the contract every backend implements (:class:`GenerationRequest`,
:class:`Candidate`, :class:`Policy`) and how candidates count their tokens and log-probabilities.
The backends: :mod:`.hf` (transformers in this process, CPU or GPU; the embedded default),
:mod:`.vllm_engine` (vLLM's offline engine, prefix caching on), :mod:`.openai_api` (any
OpenAI-compatible server, with retries and a concurrency limit). :mod:`.load` picks one by
name; :mod:`.cache` keeps reproducible answers on disk.
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
from .cache import CachedPolicy
from .hf import HFPolicy
from .load import BACKENDS, BackendConfig, load_policy
from .openai_api import AuthenticationError, ModelNotFoundError, OpenAIPolicy, ServerError
from .vllm_engine import VLLMPolicy

__all__ = [
    "BACKENDS",
    "FINISH_REASONS",
    "AuthenticationError",
    "BackendConfig",
    "CachedPolicy",
    "Candidate",
    "FinishReason",
    "GenerationRequest",
    "HFPolicy",
    "Message",
    "ModelNotFoundError",
    "OpenAIPolicy",
    "Policy",
    "Prompt",
    "ServerError",
    "VLLMPolicy",
    "check_requests",
    "load_policy",
]
