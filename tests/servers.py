"""Servers for tests: a real ``vllm serve`` subprocess, and a proxy that misbehaves on purpose.

* :func:`start_vllm` runs ``python -m vllm.entrypoints.openai.api_server`` on a local model folder
  on ``127.0.0.1`` (a free port, its own process group, output to a log file), waits for
  ``/health`` and returns a :class:`VLLMServer`; :meth:`VLLMServer.stop` kills the whole group.
  A server that dies or does not come up raises with the tail of its log.
* :class:`FaultyProxy` forwards HTTP requests to an upstream URL from a stdlib
  ``ThreadingHTTPServer`` in a background thread, and replaces the answer to generation requests
  with a fault on a fixed schedule: request ``k`` (counted from 0 in arrival order) gets
  ``schedule[k % len(schedule)]`` (``None``: forwarded untouched). It counts what it did.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

FAULTS: tuple[str, ...] = (
    "drop",            # close the connection without answering
    "cut_body",        # send the headers and half the body, then close
    "status_500",      # 500 with an OpenAI-style error body
    "status_503",
    "status_429",      # 429 with a Retry-After header
    "slow",            # the real answer, but only after `slow_seconds` (past the client timeout)
    "truncated_json",  # 200 with the first half of the real body (a consistent Content-Length)
    "invalid_json",    # 200 with an HTML error page
    "missing_choice",  # 200, the real body less its last choice
    "duplicate_choice",  # 200, the real body with one choice's index repeated
)
"""Every fault :class:`FaultyProxy` can inject."""

GENERATION_PATHS = ("/v1/completions", "/v1/chat/completions")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the time of asking)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------------- vllm serve


@dataclass
class VLLMServer:
    """A running ``vllm serve`` subprocess.

    Attributes:
        process: the server process (leader of its own process group).
        url: its API root, ``http://127.0.0.1:<port>/v1``.
        model: the served model name.
        log_path: where its stdout and stderr go.
        api_key: the key it requires, if any.
    """

    process: subprocess.Popen
    url: str
    model: str
    log_path: Path
    api_key: str | None = None
    started_in: float = 0.0

    @property
    def root(self) -> str:
        """``http://127.0.0.1:<port>`` without the ``/v1``."""
        return self.url.rsplit("/v1", 1)[0]

    def log_tail(self, lines: int = 60) -> str:
        """The last ``lines`` lines of the server's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the server's process group (the engine workers too), SIGKILL after
        ``timeout`` seconds."""
        _kill_group(self.process, timeout)

    def __enter__(self) -> VLLMServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def vllm_cpu_env(kv_cache_gib: int = 1, threads: int = 1) -> dict[str, str]:
    """The environment for a small CPU vLLM server: a 1 GiB KV cache (the default reserves
    most of the machine's memory) and one compute thread."""
    env = dict(os.environ)
    env.update(VLLM_CPU_KVCACHE_SPACE=str(kv_cache_gib), OMP_NUM_THREADS=str(threads),
               VLLM_CPU_OMP_THREADS_BIND="nobind", TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1")
    return env


def start_vllm(
    model_dir: str | Path,
    *,
    served_model_name: str,
    api_key: str | None = None,
    max_model_len: int = 128,
    seed: int = 0,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    log_path: str | Path | None = None,
    timeout: float = 420.0,
) -> VLLMServer:
    """Start ``vllm serve`` of ``model_dir`` on a free local port and wait until it answers.

    ``--enforce-eager`` skips torch.compile (minutes on a small CPU, nothing gained for a tiny
    model). Raises RuntimeError with the log's tail if the server exits or is not up in time.
    """
    port = free_port()
    if log_path is None:
        handle, name = tempfile.mkstemp(prefix="vllm-serve-", suffix=".log")
        os.close(handle)
        log_path = name
    log_path = Path(log_path)
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir), "--served-model-name", served_model_name,
        "--host", "127.0.0.1", "--port", str(port),
        "--max-model-len", str(max_model_len), "--seed", str(seed), "--dtype", "float32",
        "--enforce-eager", "--max-num-seqs", "256", "--disable-log-stats",
        *(["--api-key", api_key] if api_key else []),
        *extra_args,
    ]
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True,
                                   env=dict(env) if env is not None else vllm_cpu_env())
    server = VLLMServer(process, f"http://127.0.0.1:{port}/v1", served_model_name, log_path,
                        api_key)
    atexit.register(server.stop)  # even if the caller never gets to stop it
    try:
        _wait_healthy(server, timeout)
    except BaseException:
        server.stop()
        raise
    server.started_in = time.perf_counter() - started
    return server


def _wait_healthy(server: VLLMServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    host, port = urlsplit(server.url).hostname, urlsplit(server.url).port
    while time.monotonic() < deadline:
        code = server.process.poll()
        if code is not None:
            raise RuntimeError(f"vllm serve exited with code {code} before it was ready; "
                               f"log {server.log_path}:\n{server.log_tail()}")
        try:
            connection = http.client.HTTPConnection(host, port, timeout=5)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            connection.close()
        time.sleep(0.5)
    raise RuntimeError(f"vllm serve did not answer /health within {timeout:.0f} s; "
                       f"log {server.log_path}:\n{server.log_tail()}")


def _kill_group(process: subprocess.Popen, timeout: float) -> None:
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):  # stragglers of the group (engine workers)
        os.killpg(process.pid, signal.SIGKILL)


# ---------------------------------------------------------------------- the faulty proxy


@dataclass
class ProxyCounts:
    """What a :class:`FaultyProxy` did."""

    received: int = 0  # generation requests that arrived
    forwarded: int = 0  # requests of any kind sent upstream
    faults: Counter = field(default_factory=Counter)  # injected faults by kind
    rejected: Counter = field(default_factory=Counter)  # "n" / "logprobs" refusals
    client_gone: int = 0  # replies the client no longer waited for (slow ones, at least)


class FaultyProxy:
    """A local HTTP proxy to ``upstream`` that breaks generation replies on a schedule.

    Args:
        upstream: the server's root or API root (``http://127.0.0.1:8000`` or ``…/v1``).
        schedule: per generation request, in arrival order and cycled: a fault of
            :data:`FAULTS` or ``None`` (forward untouched). Empty: never a fault.
        slow_seconds: how late a ``"slow"`` reply comes (set it past the client's timeout).
        retry_after: the ``Retry-After`` header of a ``"status_429"`` reply.
        reject_n: answer 400 to generation requests with ``n > 1`` (a server without ``n``).
        reject_logprobs: answer 400 to generation requests asking for log-probabilities.
        ignore_n: forward generation requests with ``n`` set to 1 (a server that ignores it).
        generic: pass for a server that is not vLLM, as OpenAI's: ``/v1/models`` says
            ``owned_by: "proxy"`` without ``max_model_len``, replies lose vLLM's per-choice
            ``stop_reason`` and token ids, and vLLM-only request fields get a 400.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. :attr:`url` is its API
    root (``http://127.0.0.1:<port>/v1``), :attr:`counts` what it did.
    """

    def __init__(self, upstream: str, schedule: Sequence[str | None] = (), *,
                 slow_seconds: float = 3.0, retry_after: str = "1", reject_n: bool = False,
                 reject_logprobs: bool = False, ignore_n: bool = False,
                 generic: bool = False) -> None:
        unknown = sorted({s for s in schedule if s is not None} - set(FAULTS))
        if unknown:
            raise ValueError(f"unknown faults {unknown}; known: {FAULTS}")
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.schedule = list(schedule)
        self.slow_seconds = slow_seconds
        self.retry_after = retry_after
        self.reject_n = reject_n
        self.reject_logprobs = reject_logprobs
        self.ignore_n = ignore_n
        self.generic = generic
        self.counts = ProxyCounts()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    @property
    def faults(self) -> Counter:
        """Injected faults by kind."""
        return self.counts.faults

    @property
    def forwarded(self) -> int:
        """Requests sent upstream."""
        return self.counts.forwarded

    def start(self) -> FaultyProxy:
        self._thread = threading.Thread(target=self._server.serve_forever, name="faulty-proxy",
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> FaultyProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self, schedule: Sequence[str | None] | None = None) -> None:
        """Zero the counts (and the schedule's position); optionally a new schedule."""
        with self._lock:
            self.counts = ProxyCounts()
            if schedule is not None:
                self.schedule = list(schedule)

    # -------------------------------------------------------------- used by the handler

    def _next_fault(self) -> str | None:
        with self._lock:
            k = self.counts.received
            self.counts.received += 1
            fault = self.schedule[k % len(self.schedule)] if self.schedule else None
            if fault is not None:
                self.counts.faults[fault] += 1
            return fault

    def _forward(self, method: str, path: str, body: bytes | None,
                 headers: Mapping[str, str]) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            self.counts.forwarded += 1
        connection = http.client.HTTPConnection(self.upstream_host, self.upstream_port,
                                                timeout=300)
        try:
            connection.request(method, path, body=body, headers=dict(headers))
            response = connection.getresponse()
            data = response.read()
            kept = {k: v for k, v in response.getheaders()
                    if k.lower() in ("content-type", "retry-after")}
            return response.status, kept, data
        finally:
            connection.close()


def _make_handler(proxy: FaultyProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real servers do

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            self._handle(None)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self._handle(self.rfile.read(length) if length else b"")

        def _handle(self, body: bytes | None) -> None:
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() in ("authorization", "content-type")}
            path = self.path if self.path.startswith("/v1") else "/v1" + self.path
            if self.command != "POST" or path.split("?")[0] not in GENERATION_PATHS:
                status, reply_headers, data = proxy._forward(self.command, path, body, headers)
                if proxy.generic and status == 200 and path.startswith("/v1/models"):
                    data = json.dumps(_not_vllm_models(json.loads(data))).encode()
                self._send(status, reply_headers, data)
                return
            refusal = self._refusal(body or b"")
            if refusal is not None:
                with proxy._lock:
                    proxy.counts.rejected[refusal] += 1
                self._send_json(400, {"error": {"message": _REFUSALS[refusal],
                                                "type": "BadRequestError", "code": 400}})
                return
            if proxy.ignore_n:
                body = json.dumps({**json.loads(body or b"{}"), "n": 1}).encode()
            fault = proxy._next_fault()
            if fault == "drop":
                self.close_connection = True  # no reply at all: the socket just closes
                return
            if fault in ("status_500", "status_503", "status_429"):
                status = int(fault.split("_")[1])
                extra = {"Retry-After": proxy.retry_after} if status == 429 else {}
                self._send_json(status, {"error": {"message": f"injected {status}",
                                                   "type": "ProxyFault", "code": status}},
                                extra)
                return
            if fault == "invalid_json":
                self._send(200, {"Content-Type": "application/json"},
                           b"<html><body>502 Bad Gateway</body></html>")
                return
            status, reply_headers, data = proxy._forward("POST", path, body, headers)
            if proxy.generic and status == 200:
                data = json.dumps(_not_vllm_reply(json.loads(data))).encode()
            if status != 200 or fault is None:
                self._send(status, reply_headers, data)
            elif fault == "slow":
                time.sleep(proxy.slow_seconds)  # the client has given up by now
                self._send(status, reply_headers, data)
            elif fault == "truncated_json":
                self._send(200, reply_headers, data[: len(data) // 2])
            elif fault == "cut_body":
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
            else:  # missing_choice / duplicate_choice
                self._send_json(200, _mangle_choices(json.loads(data), fault))

        def _refusal(self, body: bytes) -> str | None:
            if not (proxy.reject_n or proxy.reject_logprobs or proxy.generic):
                return None
            try:
                request = json.loads(body)
            except ValueError:
                return None
            if proxy.generic and set(request) & VLLM_ONLY_FIELDS:
                return "unrecognized"
            logprobs = request.get("logprobs")  # 0 asks too (and 0 == False: by identity)
            if proxy.reject_logprobs and logprobs is not None and logprobs is not False:
                return "logprobs"
            if proxy.reject_n and request.get("n", 1) > 1:
                return "n"
            return None

        def _send_json(self, status: int, payload: object,
                       extra: Mapping[str, str] | None = None) -> None:
            self._send(status, {"Content-Type": "application/json", **(extra or {})},
                       json.dumps(payload).encode())

        def _send(self, status: int, headers: Mapping[str, str], data: bytes) -> None:
            try:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()
            except OSError:  # the client gave up (its timeout) and closed the connection
                self.close_connection = True
                with proxy._lock:
                    proxy.counts.client_gone += 1

    return Handler


_REFUSALS = {
    "n": "n > 1 is not supported by this server: request one choice at a time",
    "logprobs": "logprobs are not supported by this server",
    "unrecognized": "Unrecognized request argument supplied (a vLLM-only field)",
}
VLLM_ONLY_FIELDS = frozenset({"return_token_ids", "return_tokens_as_token_ids", "top_k", "min_p",
                              "repetition_penalty"})


def _not_vllm_models(listing: dict) -> dict:
    """A ``/v1/models`` listing as a server other than vLLM gives it."""
    return {**listing, "data": [{"id": e["id"], "object": "model", "owned_by": "proxy"}
                                for e in listing.get("data", [])]}


def _not_vllm_reply(reply: dict) -> dict:
    """A generation reply without vLLM's extra fields (stop_reason, token ids)."""
    extra = {"stop_reason", "token_ids", "prompt_token_ids", "prompt_logprobs",
             "routed_experts"}
    return {**reply, "choices": [{k: v for k, v in c.items() if k not in extra}
                                 for c in reply.get("choices", [])]}


def _mangle_choices(reply: dict, fault: str) -> dict:
    """A reply with its last choice removed, or with one choice's index given twice."""
    choices = list(reply.get("choices", []))
    if fault == "missing_choice":
        choices = choices[:-1]
    elif len(choices) > 1:
        choices[-1] = {**choices[-1], "index": choices[0]["index"]}
    else:
        choices = choices * 2
    return {**reply, "choices": choices}


@contextlib.contextmanager
def faulty_proxy(upstream: str, schedule: Sequence[str | None] = (),
                 **options: object) -> Iterator[FaultyProxy]:
    """:class:`FaultyProxy` as a context manager in one call."""
    proxy = FaultyProxy(upstream, schedule, **options)  # type: ignore[arg-type]
    with proxy:
        yield proxy
