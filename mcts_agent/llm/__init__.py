"""Policy backends: language models that propose candidate steps for the search, in batches.

:mod:`.base` holds the contract every backend implements (:class:`GenerationRequest`,
:class:`Candidate`, :class:`Policy`) and how candidates count their tokens and log-probabilities.
The backends: :mod:`.hf` (transformers in this process, CPU or GPU; the embedded default),
:mod:`.vllm_engine` (vLLM's offline engine, prefix caching on), :mod:`.openai_api` (any
OpenAI-compatible server, with retries and a concurrency limit). :mod:`.load` picks one by
name; :mod:`.cache` keeps reproducible answers on disk.

The backends are imported when first asked for (``mcts_agent.llm.HFPolicy``), so importing this
package, :mod:`.base`, :mod:`.load` or :mod:`.cache` costs no torch, transformers or vLLM.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from .cache import CachedPolicy
    from .hf import HFPolicy
    from .load import BACKENDS, BackendConfig, load_policy
    from .openai_api import AuthenticationError, ModelNotFoundError, OpenAIPolicy, ServerError
    from .vllm_engine import VLLMPolicy

_LAZY = {  # name -> the submodule that defines it, imported on first use
    "CachedPolicy": "cache",
    "HFPolicy": "hf",
    "BACKENDS": "load",
    "BackendConfig": "load",
    "load_policy": "load",
    "AuthenticationError": "openai_api",
    "ModelNotFoundError": "openai_api",
    "OpenAIPolicy": "openai_api",
    "ServerError": "openai_api",
    "VLLMPolicy": "vllm_engine",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # the next access is a plain lookup
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


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
