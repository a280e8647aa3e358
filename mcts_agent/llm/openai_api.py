"""OpenAI-compatible server backend: candidate steps from ``vllm serve``, OpenAI, or any server
speaking the ``/v1/completions`` or ``/v1/chat/completions`` API.

How a :meth:`OpenAIPolicy.propose` call runs:

* One HTTP request per :class:`~mcts_agent.llm.base.GenerationRequest`, asking for its ``n``
  candidates at once (a greedy request is asked once and copied, as in the HF backend). All
  requests of the call are in flight together, up to ``max_concurrency``, from a thread pool: no
  asyncio, so it works the same in scripts and inside Jupyter's running event loop.
* Prompts. Completions API: text is sent as is; with a ``tokenizer``, chat messages are rendered
  locally (:func:`mcts_agent.llm.hf.encode_prompt`) and *every* prompt is sent as token ids, which
  keeps the server's prefix cache exact and bounds each request's tokens by the served context as
  in the HF backend. Chat API: messages as given, a text prompt becoming one user message.
* Over-long prompts. A prompt that leaves no room for one new token (known here with a
  tokenizer and the served context; else from the server's 400 reply, whose message names the
  "maximum context length" (vLLM, OpenAI) or the "maximum model length" (vLLM's engine)) gets
  ``n`` empty ``"prompt_too_long"`` candidates; the call's other requests are unaffected.
* Accounting (see :mod:`mcts_agent.llm.base`). Candidates ask for the sampled token's
  log-probability (completions ``logprobs: 0``; chat ``logprobs: true, top_logprobs: 0``) and
  ``logprob`` is their sum. vLLM serves *raw* log-probabilities by default (``--logprobs-mode
  raw_logprobs``: the model's log-softmax before temperature and top-p), which is what the
  contract asks; a server started with a ``processed_*`` mode, or another vendor's server, may
  report temperature-scaled values. Against vLLM (``owned_by == "vllm"`` in ``/v1/models``) the
  request also carries ``return_token_ids`` and ``return_tokens_as_token_ids``, so ``token_ids``
  are exact (stop-completing or EOS token included), and neutral values of vLLM's extra sampling
  knobs (``top_k``, ``min_p``, penalties), so a model's ``generation_config`` cannot leak into
  sampling. Other servers give ``token_ids == ()`` and ``num_tokens`` from the log-probabilities
  (else the usage count of a one-choice reply, else the tokenizer, else 0).
* Finish reasons. vLLM reports a per-choice ``stop_reason``: a stop string → ``"stop"`` with that
  string; ``None`` (or a stop token id) with ``finish_reason == "stop"`` → ``"eos"``;
  ``"length"`` → ``"length"``. Servers without ``stop_reason`` (OpenAI) say ``"stop"`` for both a
  stop string and the end of text. The heuristic then: if the tokens' text is known (token
  strings of the log-probabilities, or token ids and a tokenizer) and holds a requested stop
  string, it is ``"stop"`` with the first such string, else ``"eos"``; without token text, a
  request with stop strings counts as ``"stop"`` (``stop_reason`` = its stop string when it has
  exactly one) and one without as ``"eos"``. Other finish reasons (``content_filter``, …) count as
  ``"length"`` (text cut short by the server).
* Failures. Retried with exponential backoff and jitter (``backoff · 2^k``, capped at
  ``max_backoff``; a ``Retry-After`` header is honoured, capped likewise): HTTP 408, 409, 425, 429,
  500, 502, 503, 504, connection errors and dropped connections, timeouts, and malformed replies
  (invalid JSON, missing choices, wrong choice count or indices). Choices are placed by their
  ``index``, so a request's candidates are never lost or duplicated. Not retried: 401/403
  (:class:`AuthenticationError`), an unknown model (:class:`ModelNotFoundError`, listing the
  server's models) and other 4xx (``ValueError`` with the server's message). After
  ``max_retries`` retries of one request, :class:`ServerError` names the last cause. A failed
  call raises and returns nothing: there are no partial results.
* Degraded servers. A server that rejects ``n > 1`` (or answers one choice when asked for
  several, twice in a row) gets one request per sample from then on, seeded ``seed + j`` for
  sample ``j``; one that rejects log-probabilities gets requests without them (``logprob`` 0.0),
  with a warning logged once.
"""

from __future__ import annotations

import logging
import math
import os
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from .base import (
    Candidate,
    FinishReason,
    GenerationRequest,
    _check_int,
    check_requests,
    prompt_too_long,
)

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
"""HTTP statuses worth another try: the server is busy, restarting or failed transiently."""

_VLLM_SAMPLING = {  # vLLM's extra knobs at neutral values: generation_config cannot leak in
    "top_k": 0, "min_p": 0.0, "repetition_penalty": 1.0,
    "presence_penalty": 0.0, "frequency_penalty": 0.0,
}
_TOKEN_ID = re.compile(r"token_id:(\d+)")


class ServerError(RuntimeError):
    """The server cannot be used: unreachable, or still failing after every retry.

    Attributes:
        base_url: the server's API URL.
        last_cause: what went wrong last (a message), when retries ran out.
    """

    def __init__(self, message: str, *, base_url: str = "", last_cause: str | None = None) -> None:
        super().__init__(message)
        self.base_url = base_url
        self.last_cause = last_cause


class AuthenticationError(ServerError):
    """The server refused the credentials (HTTP 401 or 403)."""


class ModelNotFoundError(ServerError, LookupError):
    """The server does not serve the model asked for.

    Attributes:
        available: the model ids the server lists.
    """

    def __init__(self, message: str, *, base_url: str = "",
                 available: Sequence[str] = ()) -> None:
        super().__init__(message, base_url=base_url)
        self.available = list(available)


class _Retry(Exception):
    """A transient failure of one attempt."""

    def __init__(self, reason: str, detail: str, retry_after: float | None = None,
                 single_choice: bool = False) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.retry_after = retry_after
        self.single_choice = single_choice  # one choice came back where n > 1 were asked


class _Unsupported(Exception):
    """The server rejected a parameter we can do without: ``"n"`` or ``"logprobs"``."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


class _PromptTooLong(Exception):
    """The server refused the prompt: longer than its context."""


_CONTEXT_REFUSAL = re.compile(r"maximum context length|longer than the maximum model length",
                              re.IGNORECASE)


class _Cancelled(Exception):
    """Another request of the same propose() call failed: stop this one."""


@dataclass(frozen=True)
class _Job:
    """One request ready to send: its prompt payload and what bounds its length."""

    request: GenerationRequest
    prompt: str | list[int] | list[dict[str, str]]
    max_tokens: int  # 0: the prompt already fills the model's context


class OpenAIPolicy:
    """A :class:`~mcts_agent.llm.base.Policy` over an OpenAI-compatible server (see module doc).

    Args:
        base_url: the API root, e.g. ``"http://127.0.0.1:8000/v1"``; a bare
            ``"http://host:port"`` gets ``/v1`` appended.
        model: the model id the server serves (``--served-model-name`` for vLLM).
        api: ``"completions"`` (``/completions``, text or token-id prompts) or ``"chat"``
            (``/chat/completions``, the server applies its chat template).
        api_key: sent as ``Authorization: Bearer …``; default: the ``OPENAI_API_KEY`` environment
            variable, else no header.
        max_concurrency: most HTTP requests in flight at once.
        timeout: seconds to wait for any one reply (connect, send, receive) before retrying.
        max_retries: retries of one request before :class:`ServerError` is raised.
        backoff: the first retry's wait in seconds, doubled for each further retry (with jitter).
        max_backoff: the longest wait between retries, ``Retry-After`` included.
        tokenizer: the served model's tokenizer (a loaded one, or a folder for
            ``AutoTokenizer``). Completions API: prompts go out as token ids and chat prompts are
            rendered locally; both APIs: token counts and stop detection where the server
            reports no token ids.
        chat_template: how chat prompts are rendered locally, as in
            :class:`~mcts_agent.llm.hf.HFPolicy`: ``None`` uses the tokenizer's template if it
            has one, else a ``"role: content"`` transcript; ``True`` requires the template;
            ``False`` always uses the transcript.

    Attributes:
        name: ``"openai:<model>"``.
        stats: a ``Counter``: ``requests`` (HTTP generation requests sent, retries included),
            ``retries`` and ``retries_<reason>`` (``status_429``, ``status_503``, …,
            ``connection``, ``timeout``, ``bad_reply``), ``tokens`` (generated tokens of the
            replies used) and ``prompt_tokens`` (as the server reports them).
        is_vllm: whether the server is vLLM (``owned_by == "vllm"`` in ``/v1/models``).
        max_model_len: the served context length, where the server reports it (vLLM).

    Raises:
        ServerError: the server cannot be reached ("is the server running?").
        AuthenticationError: it refuses the API key.
        ModelNotFoundError: it does not serve ``model`` (the message lists what it serves).
    """

    continuous_batching = True  # concurrent calls join one running batch

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api: Literal["completions", "chat"] = "completions",
        api_key: str | None = None,
        max_concurrency: int = 32,
        timeout: float = 120.0,
        max_retries: int = 8,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        tokenizer: str | Path | Any | None = None,
        chat_template: bool | None = None,
    ) -> None:
        if api not in ("completions", "chat"):
            raise ValueError(f"api must be 'completions' or 'chat', got {api!r}")
        if not isinstance(model, str) or not model:
            raise ValueError(f"model must be a non-empty str, got {model!r}")
        _check_int("max_concurrency", max_concurrency, minimum=1)
        _check_int("max_retries", max_retries, minimum=0)
        for name, value in (("timeout", timeout), ("backoff", backoff),
                            ("max_backoff", max_backoff)):
            _check_number(name, value, minimum=0)
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout!r}")
        self.base_url = _api_root(base_url)
        self.model = model
        self.api = api
        self.name = f"openai:{model}"
        self.max_concurrency = max_concurrency
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.stats: Counter[str] = Counter()
        self.tokenizer = _load_tokenizer(tokenizer)
        has_template = bool(getattr(self.tokenizer, "chat_template", None))
        if chat_template is True and not has_template:
            raise ValueError("chat_template=True but the tokenizer has no chat_template")
        self.use_chat_template = has_template and chat_template is not False
        self.is_vllm = False
        self.max_model_len: int | None = None  # the served context, where the server says
        self._split_n = False  # the server gets one request per sample
        self._logprobs = True  # the server accepts log-probability requests
        self._warned: set[str] = set()
        self._lock = threading.Lock()
        self._random = random.Random()
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=self.timeout,
            limits=httpx.Limits(max_connections=max_concurrency,
                                max_keepalive_connections=max_concurrency))
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency,
                                        thread_name_prefix="openai-policy")
        try:
            self._check_server()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ public API

    def propose(self, requests: Sequence[GenerationRequest]) -> list[list[Candidate]]:
        """Return ``requests[i].n`` candidates for every request, in request order.

        Either every request gets its candidates or the call raises (the first error; the
        call's other requests are abandoned and waited for, so none outlives the call).
        """
        requests = check_requests(requests)
        jobs = [self._job(request) for request in requests]  # prompt errors before any traffic
        if not jobs:
            return []
        cancel = threading.Event()
        # submitted so that prompts sharing a prefix reach the server together (its prefix
        # cache computes a shared block once); results are read back in request order
        futures: list[Future] = [None] * len(jobs)  # type: ignore[list-item]
        for i in sorted(range(len(jobs)), key=lambda i: _prefix_key(jobs[i].prompt)):
            futures[i] = self._pool.submit(self._run_job, jobs[i], cancel)
        try:
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = next((f for f in futures if f in done and f.exception() is not None), None)
            if failed is not None:
                cancel.set()
                for future in futures:
                    future.cancel()
                wait(futures)
                raise _first_error(futures)
            return [future.result() for future in futures]
        except BaseException:
            cancel.set()  # e.g. KeyboardInterrupt: stop retrying, cancel what has not started
            for future in futures:
                future.cancel()
            raise

    def models(self) -> list[str]:
        """The model ids the server lists at ``GET /models``."""
        return [entry["id"] for entry in self._model_entries()]

    def close(self) -> None:
        """Stop the worker threads and close the HTTP connections."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()

    def __enter__(self) -> OpenAIPolicy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"OpenAIPolicy({self.base_url!r}, {self.model!r}, api={self.api!r})"

    # ------------------------------------------------------------------ the server

    def _check_server(self) -> None:
        """Check the server answers, accepts the key and serves the model; learn what it is."""
        try:
            entries = self._model_entries()
        except ModelNotFoundError:  # no /models route (some gateways): nothing to check
            self._warn_once("models", "%s has no /models route; cannot check that it serves %r",
                            self.base_url, self.model)
            return
        ids = [entry["id"] for entry in entries]
        if self.model not in ids:
            raise ModelNotFoundError(
                f"{self.base_url} does not serve model {self.model!r}; it serves: "
                f"{', '.join(map(repr, ids)) or '(no models)'}",
                base_url=self.base_url, available=ids)
        entry = entries[ids.index(self.model)]
        self.is_vllm = any(e.get("owned_by") == "vllm" for e in entries)
        context = entry.get("max_model_len")
        if isinstance(context, int) and not isinstance(context, bool) and context > 0:
            self.max_model_len = context

    def _model_entries(self) -> list[dict[str, Any]]:
        """``GET /models``'s ``data`` (retrying transient failures; refused → at once)."""
        attempt = 0
        while True:
            try:
                response = self._client.get("/models")
            except httpx.ConnectError as exc:
                raise ServerError(f"cannot connect to {self.base_url}: is the server running? "
                                  f"({exc})", base_url=self.base_url) from exc
            except httpx.HTTPError as exc:
                cause = _Retry(_transport_reason(exc), _describe(exc))
            else:
                if response.status_code == 404:
                    raise ModelNotFoundError(f"{self.base_url}/models not found",
                                             base_url=self.base_url)
                if response.status_code == 200:
                    try:
                        data = response.json()["data"]
                        if not all(isinstance(e, dict) and isinstance(e.get("id"), str)
                                   for e in data):
                            raise TypeError("a model entry without an id")
                        return data
                    except (ValueError, KeyError, TypeError) as exc:
                        cause = _Retry("bad_reply", f"GET /models: {exc}")
                elif response.status_code in RETRY_STATUSES:
                    cause = _Retry(f"status_{response.status_code}", _error_message(response),
                                   _retry_after(response))
                else:
                    self._raise_for_status(response)
                    raise AssertionError("unreachable")
            attempt += 1
            self._count_retry(cause)
            if attempt > self.max_retries:
                raise self._exhausted(cause)
            time.sleep(self._delay(attempt, cause))

    def _raise_for_status(self, response: httpx.Response) -> None:
        """Raise the error a non-retryable, non-200 reply means."""
        status, message = response.status_code, _error_message(response)
        if status in (401, 403):
            raise AuthenticationError(
                f"{self.base_url} refused the request ({status}: {message}); check the API key "
                "(api_key=..., or the OPENAI_API_KEY environment variable)",
                base_url=self.base_url)
        lowered = message.lower()
        if status == 404 or ("model" in lowered and "does not exist" in lowered):
            try:
                available = ", ".join(map(repr, self.models())) or "(no models)"
            except Exception:  # the listing is a courtesy: keep the server's own message
                available = f"(no model list at {self.base_url}/models: is base_url right?)"
            raise ModelNotFoundError(
                f"{self.base_url} does not serve model {self.model!r} ({status}: {message}); "
                f"it serves: {available}", base_url=self.base_url)
        if 400 <= status < 500:
            raise ValueError(f"{self.base_url} rejected the request ({status}): {message}")
        raise ServerError(f"{self.base_url} failed ({status}): {message}",
                          base_url=self.base_url, last_cause=message)

    # ------------------------------------------------------------------ one request

    def _job(self, request: GenerationRequest) -> _Job:
        """The prompt payload of ``request`` and its (context-bounded) token budget."""
        prompt = request.prompt
        # vLLM refuses max_tokens above its context, and caps a prompt + max_tokens beyond it
        # itself (ending at "length"): only the first needs doing here when the prompt's length
        # is unknown.
        budget = request.max_tokens
        if self.max_model_len is not None:
            budget = min(budget, max(1, self.max_model_len - 1))
        if self.api == "chat":
            messages = ([{"role": "user", "content": prompt}] if isinstance(prompt, str)
                        else [{"role": m["role"], "content": m["content"]} for m in prompt])
            return _Job(request, messages, budget)
        if self.tokenizer is None:
            if not isinstance(prompt, str):
                raise ValueError(
                    "a chat-message prompt needs the chat API or a local chat template: pass "
                    "api='chat' (the server applies its template) or tokenizer=... (rendered "
                    "here, sent as token ids)")
            return _Job(request, prompt, budget)
        from .hf import encode_prompt  # torch and transformers only where a tokenizer is used

        ids = encode_prompt(self.tokenizer, prompt, self.use_chat_template)
        if self.max_model_len is not None:  # as in the HF backend: the context ends the step
            budget = max(0, min(request.max_tokens, self.max_model_len - len(ids)))
        return _Job(request, ids, budget)

    def _run_job(self, job: _Job, cancel: threading.Event) -> list[Candidate]:
        """All ``n`` candidates of one request."""
        if job.max_tokens == 0:  # the prompt fills the context: nothing can follow
            return prompt_too_long(job.request.n)
        try:
            return self._candidates(job, cancel)
        except _PromptTooLong:
            return prompt_too_long(job.request.n)

    def _candidates(self, job: _Job, cancel: threading.Event) -> list[Candidate]:
        """All ``n`` candidates of one request the server is asked for."""
        request = job.request
        if request.greedy:  # one decode; every candidate is the same
            return self._ask(job, 1, request.seed, cancel) * request.n
        if self._split_n and request.n > 1:
            return self._split(job, cancel)
        try:
            return self._ask(job, request.n, request.seed, cancel)
        except _Unsupported:  # the server cannot return n choices: one request per sample
            return self._split(job, cancel)

    def _split(self, job: _Job, cancel: threading.Event) -> list[Candidate]:
        """One single-choice request per sample ``j``, seeded ``seed + j``."""
        seed = job.request.seed
        return [self._ask(job, 1, None if seed is None else seed + j, cancel)[0]
                for j in range(job.request.n)]

    def _ask(self, job: _Job, n: int, seed: int | None,
             cancel: threading.Event) -> list[Candidate]:
        """``n`` choices of one request, retrying transient failures; ``_Unsupported`` when the
        server cannot return ``n > 1`` choices (and ``self._split_n`` is then set)."""
        attempt = single_choice = 0
        while True:
            if cancel.is_set():
                raise _Cancelled
            try:
                return self._attempt(job, n, seed)
            except _Unsupported as exc:
                if exc.parameter == "logprobs":  # this body asked for them: never again
                    self._logprobs = False
                    self._warn_once("logprobs", "%s rejects log-probabilities (%s); candidates "
                                    "get logprob 0.0", self.base_url, exc)
                    continue
                if exc.parameter == "n" and n > 1:
                    self._use_split(str(exc))
                    raise
                raise ValueError(f"{self.base_url} rejected the request: {exc}") from None
            except _Retry as exc:
                single_choice = single_choice + 1 if exc.single_choice else 0
                if single_choice >= 2:  # it ignores n: one choice every time
                    self._use_split(f"one choice came back twice when {n} were asked")
                self._count_retry(exc)
                if n > 1 and self._split_n:  # found out here or by another request
                    raise _Unsupported("n", exc.detail) from None
                attempt += 1
                if attempt > self.max_retries:
                    raise self._exhausted(exc) from None
                if cancel.wait(self._delay(attempt, exc)):
                    raise _Cancelled from None

    def _attempt(self, job: _Job, n: int, seed: int | None) -> list[Candidate]:
        """Send one HTTP request and parse its ``n`` choices."""
        body = self._body(job, n, seed)
        path = "/chat/completions" if self.api == "chat" else "/completions"
        with self._lock:
            self.stats["requests"] += 1
        try:
            response = self._client.post(path, json=body)
        except httpx.HTTPError as exc:  # timeouts, refused/dropped connections, bad HTTP
            raise _Retry(_transport_reason(exc), _describe(exc)) from exc
        status = response.status_code
        if status in RETRY_STATUSES:
            raise _Retry(f"status_{status}", _error_message(response), _retry_after(response))
        if status != 200:
            if status in (400, 422):
                message = _error_message(response)
                if _CONTEXT_REFUSAL.search(message):
                    raise _PromptTooLong(message)
                self._check_unsupported(body, message)
            self._raise_for_status(response)
        try:
            reply = response.json()
        except ValueError as exc:
            raise _Retry("bad_reply", f"invalid JSON ({exc}): {response.text[:80]!r}") from exc
        candidates = self._parse(reply, job, n)
        usage = reply.get("usage") if isinstance(reply.get("usage"), dict) else {}
        with self._lock:
            self.stats["tokens"] += sum(c.num_tokens for c in candidates)
            self.stats["prompt_tokens"] += _int_or_zero(usage.get("prompt_tokens"))
        return candidates

    def _body(self, job: _Job, n: int, seed: int | None) -> dict[str, Any]:
        """The JSON body of one request."""
        request = job.request
        key = "messages" if self.api == "chat" else "prompt"
        body: dict[str, Any] = {
            "model": self.model, key: job.prompt, "n": n, "max_tokens": job.max_tokens,
            "temperature": request.temperature, "top_p": request.top_p,
        }
        if request.stop:
            body["stop"] = list(request.stop)
        if seed is not None:
            body["seed"] = seed
        if self._logprobs:
            if self.api == "chat":
                body.update(logprobs=True, top_logprobs=0)
            else:
                body["logprobs"] = 0
        if self.is_vllm:
            body.update(_VLLM_SAMPLING, return_token_ids=True)
            if self._logprobs:
                body["return_tokens_as_token_ids"] = True
        return body

    def _check_unsupported(self, body: dict[str, Any], message: str) -> None:
        """Raise ``_Unsupported`` if a 400 reply blames ``logprobs`` or ``n``."""
        lowered = message.lower()
        if "logprobs" in body and "logprob" in lowered:
            raise _Unsupported("logprobs", message)
        if body.get("n", 1) > 1 and re.search(r"\bn\b|choices", lowered):
            raise _Unsupported("n", message)

    # ------------------------------------------------------------------ replies

    def _parse(self, reply: Any, job: _Job, n: int) -> list[Candidate]:
        """The ``n`` candidates of a 200 reply, placed by their ``index``."""
        choices = reply.get("choices") if isinstance(reply, dict) else None
        if not isinstance(choices, list) or not choices:
            raise _Retry("bad_reply", "no choices in the reply")
        if len(choices) != n:
            raise _Retry("bad_reply", f"{len(choices)} choices for n={n}",
                         single_choice=len(choices) == 1)
        slots: list[Candidate | None] = [None] * n
        usage = reply.get("usage") if isinstance(reply.get("usage"), dict) else {}
        for choice in choices:
            index = choice.get("index") if isinstance(choice, dict) else None
            if not isinstance(index, int) or not 0 <= index < n or slots[index] is not None:
                raise _Retry("bad_reply", f"choice index {index!r} for n={n}")
            try:
                slots[index] = self._candidate(choice, job.request,
                                               usage.get("completion_tokens") if n == 1 else None)
            except (KeyError, TypeError, ValueError) as exc:
                raise _Retry("bad_reply", f"malformed choice {index}: {exc!r}") from exc
        return slots  # type: ignore[return-value]

    def _candidate(self, choice: dict[str, Any], request: GenerationRequest,
                   usage_tokens: Any) -> Candidate:
        """One choice as a :class:`Candidate` (see the module doc for the accounting)."""
        if self.api == "chat":
            message = choice["message"]
            text = message.get("content") or ""
            entries = (choice.get("logprobs") or {}).get("content") or []
            tokens = [entry["token"] for entry in entries]
            logprobs = [entry["logprob"] for entry in entries]
        else:
            text = choice["text"]
            block = choice.get("logprobs") or {}
            tokens = list(block.get("tokens") or [])
            logprobs = list(block.get("token_logprobs") or [])
        if not isinstance(text, str):
            raise TypeError(f"text is {type(text).__name__}")
        if len(tokens) != len(logprobs):
            raise ValueError(f"{len(tokens)} tokens but {len(logprobs)} log-probabilities")
        token_ids = choice.get("token_ids")
        if token_ids is None and tokens and all(_TOKEN_ID.fullmatch(t) for t in tokens):
            token_ids = [int(t.split(":", 1)[1]) for t in tokens]
        token_ids = tuple(int(t) for t in token_ids or ())
        if logprobs and token_ids and len(token_ids) != len(logprobs):
            raise ValueError(f"{len(token_ids)} token ids but {len(logprobs)} log-probabilities")
        logprob = math.fsum(float(lp) for lp in logprobs if lp is not None)
        num_tokens = len(token_ids) or len(logprobs) or self._count_tokens(
            text, usage_tokens, choice.get("finish_reason"), request)
        finish, stop_reason = self._finish(choice, request, text, tokens, token_ids)
        return Candidate(text, logprob, num_tokens, finish, stop_reason, token_ids)

    def _count_tokens(self, text: str, usage_tokens: Any, finish: Any,
                      request: GenerationRequest) -> int:
        """Tokens of a choice that came without token ids or log-probabilities."""
        if isinstance(usage_tokens, int) and not isinstance(usage_tokens, bool):
            return usage_tokens
        if self.tokenizer is None:
            return 0
        count = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return count + (finish == "stop")  # the stop string's or EOS token, roughly

    def _finish(self, choice: dict[str, Any], request: GenerationRequest, text: str,
                tokens: list[str], token_ids: tuple[int, ...]) -> tuple[FinishReason, str | None]:
        """``(finish_reason, stop_reason)`` of a choice (vLLM's exact, else the heuristic)."""
        finish = choice.get("finish_reason")
        if finish == "length":
            return "length", None
        if finish in (None, "abort", "error"):
            raise ValueError(f"the generation did not finish (finish_reason {finish!r})")
        if finish != "stop":
            return "length", None
        if "stop_reason" in choice:  # vLLM: the stop string, a stop token id, or None (EOS)
            reason = choice["stop_reason"]
            if isinstance(reason, str):
                return "stop", reason
            return "eos", None
        if not request.stop:
            return "eos", None
        seen = self._token_text(tokens, token_ids)
        if seen is None:  # nothing to tell a stop string from the end of text
            return "stop", request.stop[0] if len(request.stop) == 1 else None
        found = [(seen.find(s, len(text)), len(s), s) for s in request.stop
                 if seen.find(s, len(text)) >= 0]
        return ("stop", min(found)[2]) if found else ("eos", None)

    def _token_text(self, tokens: list[str], token_ids: tuple[int, ...]) -> str | None:
        """The text of the generated tokens (stop string included), where it can be known."""
        if token_ids and self.tokenizer is not None:
            return self.tokenizer.decode(list(token_ids), skip_special_tokens=True,
                                         clean_up_tokenization_spaces=False)
        if tokens and not any(_TOKEN_ID.fullmatch(t) for t in tokens):
            return "".join(tokens)
        return None

    # ------------------------------------------------------------------ retries

    def _delay(self, attempt: int, cause: _Retry) -> float:
        """Seconds to wait before retry number ``attempt``."""
        if cause.retry_after is not None:
            return min(self.max_backoff, cause.retry_after)
        delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        return delay * (0.5 + 0.5 * self._random.random())  # jitter: spread retried requests

    def _count_retry(self, cause: _Retry) -> None:
        with self._lock:
            self.stats["retries"] += 1
            self.stats[f"retries_{cause.reason}"] += 1

    def _exhausted(self, cause: _Retry) -> ServerError:
        return ServerError(f"{self.base_url} still failing after {self.max_retries} retries; "
                           f"last error: {cause}", base_url=self.base_url,
                           last_cause=str(cause))

    def _use_split(self, why: str) -> None:
        with self._lock:
            self._split_n = True
        self._warn_once("n", "%s does not return n > 1 choices (%s); sending one request per "
                        "sample, seeded seed + j", self.base_url, why)

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        with self._lock:
            if key in self._warned:
                return
            self._warned.add(key)
        log.warning(message, *args)


# ---------------------------------------------------------------------- helpers


def _prefix_key(prompt: str | list[int] | list[dict[str, str]]) -> tuple | str:
    """Sort key putting prompts with a shared prefix next to each other (one policy sends
    prompts of one kind: token ids, text, or messages)."""
    if isinstance(prompt, str):
        return prompt
    return tuple(p if isinstance(p, int) else (p["role"], p["content"]) for p in prompt)


def _api_root(base_url: str) -> str:
    """``base_url`` without a trailing slash, ``/v1`` appended to a bare ``scheme://host:port``."""
    if not isinstance(base_url, str) or not base_url:
        raise ValueError(f"base_url must be a non-empty str, got {base_url!r}")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"base_url must be an http(s) URL like 'http://127.0.0.1:8000/v1', "
                         f"got {base_url!r}")
    root = base_url.rstrip("/")
    return root + "/v1" if parts.path in ("", "/") else root


def _load_tokenizer(tokenizer: str | Path | Any | None) -> Any:
    if tokenizer is None or not isinstance(tokenizer, (str, Path)):
        return tokenizer
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer)


def _check_number(name: str, value: object, *, minimum: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= minimum:
        raise ValueError(f"{name} must be a number >= {minimum}, got {value!r}")


def _error_message(response: httpx.Response) -> str:
    """The server's own words: OpenAI's ``{"error": {"message"}}``, vLLM's, or the body."""
    try:
        data = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        for key in ("message", "detail", "error"):
            if data.get(key):
                return str(data[key])
    return str(data)[:500]


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header (delay-seconds; an HTTP date counts as 1 s)."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return 1.0


def _transport_reason(exc: httpx.HTTPError) -> str:
    return "timeout" if isinstance(exc, httpx.TimeoutException) else "connection"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _int_or_zero(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _first_error(futures: Sequence[Future]) -> BaseException:
    """The first real error of a failed call (not the cancellations it caused)."""
    errors = [f.exception() for f in futures if not f.cancelled() and f.exception() is not None]
    real = [e for e in errors if not isinstance(e, _Cancelled)]
    return (real or errors)[0]  # type: ignore[return-value]


__all__: list[str] = ["AuthenticationError", "ModelNotFoundError", "OpenAIPolicy", "ServerError"]
