"""Hard boundaries of the LLM layer: over-long prompts, light imports, model folders and devices
that cannot be loaded, and a response cache that is damaged or cannot be written.

Each boundary either gives a result that says what happened ("prompt_too_long" candidates, a
cache started over with a warning) or one line saying what was wrong, where, and what to do.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from mcts_agent.errors import ConfigError, ModelLoadError, UserError
from mcts_agent.llm import CachedPolicy, Candidate, GenerationRequest, load_policy
from mcts_agent.llm.base import FINISH_REASONS, prompt_too_long
from mcts_agent.llm.hf import HFPolicy
from mcts_agent.models.tiny import TINY_ARITH_DIR

QUESTIONS = ["Q: 3+9*3=?\n", "Q: 12-4+7=?\n", "Q: 5*5-19=?\n"]


@pytest.fixture(scope="module")
def tiny() -> HFPolicy:
    torch.set_num_threads(1)
    return HFPolicy.from_pretrained(TINY_ARITH_DIR, device="cpu")


def steps() -> list[GenerationRequest]:
    """Ordinary step requests: seeded samples and a greedy one."""
    return [GenerationRequest(QUESTIONS[0], n=3, max_tokens=24, stop=("\n",), seed=1),
            GenerationRequest(QUESTIONS[1], n=2, max_tokens=24, stop=("\n",), seed=2),
            GenerationRequest(QUESTIONS[2], n=2, max_tokens=24, stop=("\n",), temperature=0)]


def prompt_of(policy: HFPolicy, tokens: int) -> str:
    """A question that encodes to exactly ``tokens`` tokens (the tiny model is char-level)."""
    text = "Q: " + "1+" * tokens
    while len(policy.encode_prompt(text)) > tokens:
        text = text[:-1]
    assert len(policy.encode_prompt(text)) == tokens
    return text


# ---------------------------------------------------------------------- over-long prompts


def test_an_over_long_prompt_changes_nothing_for_the_others(tiny: HFPolicy) -> None:
    alone = tiny.propose(steps())
    assert all(c.num_tokens > 5 for row in alone for c in row)
    huge = GenerationRequest("Q: " + "1+" * 5000 + "1=?\n", n=3, max_tokens=24, seed=9)
    mixed = tiny.propose([*steps()[:2], huge, steps()[2]])
    assert [mixed[0], mixed[1], mixed[3]] == alone  # exactly: the model never saw the long one
    assert mixed[2] == prompt_too_long(3)
    assert {c.finish_reason for c in mixed[2]} == {"prompt_too_long"} <= set(FINISH_REASONS)
    [[greedy_huge, _]] = tiny.propose([GenerationRequest(huge.prompt, n=2, temperature=0)])
    assert greedy_huge == Candidate("", 0.0, 0, "prompt_too_long")


def test_a_prompt_near_the_context_gets_what_is_left_and_only_that(tiny: HFPolicy) -> None:
    context = tiny.context
    assert context == 128
    near = GenerationRequest(prompt_of(tiny, context - 5), n=2, max_tokens=24, seed=3)
    full = GenerationRequest(prompt_of(tiny, context), n=2, max_tokens=24, seed=3)
    alone = tiny.propose(steps())
    mixed = tiny.propose([near, *steps(), full])
    assert mixed[1:4] == alone
    assert all(0 < c.num_tokens <= 5 for c in mixed[0])
    assert mixed[4] == prompt_too_long(2)  # no room for one token: not run
    small_batches = HFPolicy(tiny.model, tiny.tokenizer, batch_size=2)  # other chunks
    for got, want in zip(small_batches.propose([near, *steps(), full])[1:4], alone, strict=True):
        assert [replace(c, logprob=0.0) for c in got] == [replace(c, logprob=0.0) for c in want]
        assert [c.logprob for c in got] == pytest.approx([c.logprob for c in want], abs=1e-4)


class _ContextServer:
    """A stand-in OpenAI-compatible server with a 64-character context: it answers "ok" to
    short prompts and refuses longer ones with vLLM's 400 message."""

    def __init__(self, *, max_model_len: int | None = None) -> None:
        self.prompts: list[object] = []
        self.max_model_len = max_model_len
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/v1"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                entry = {"id": "m", "object": "model", "owned_by": "test"}
                if server.max_model_len:
                    entry["max_model_len"] = server.max_model_len
                self._send(200, {"data": [entry]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.prompts.append(body["prompt"])
                if len(body["prompt"]) > 64:
                    self._send(400, {"error": {"message": (
                        "This model's maximum context length is 64 tokens. However, your "
                        f"prompt contains {len(body['prompt'])} input tokens, which exceeds "
                        "this limit even without any output tokens."), "code": 400}})
                    return
                choices = [{"index": i, "text": "ok", "finish_reason": "length",
                            "logprobs": None} for i in range(body["n"])]
                self._send(200, {"choices": choices, "usage": {"completion_tokens": 1}})

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_server_context_refusal_becomes_prompt_too_long() -> None:
    from mcts_agent.llm.openai_api import OpenAIPolicy

    server = _ContextServer()
    try:
        with OpenAIPolicy(server.url, "m", max_retries=0) as policy:
            short = GenerationRequest("Q: 1+1=?\n", n=2, max_tokens=4, seed=1)
            huge = GenerationRequest("Q: " + "1+" * 100, n=3, max_tokens=4, seed=1)
            got = policy.propose([short, huge])
    finally:
        server.close()
    assert [c.text for c in got[0]] == ["ok", "ok"]
    assert got[1] == prompt_too_long(3)


def test_a_prompt_known_too_long_is_not_sent() -> None:
    from mcts_agent.llm.openai_api import OpenAIPolicy

    server = _ContextServer(max_model_len=64)
    try:
        with OpenAIPolicy(server.url, "m", tokenizer=TINY_ARITH_DIR) as policy:
            huge = GenerationRequest("Q: " + "1+" * 100, n=2, max_tokens=4, seed=1)
            got = policy.propose([huge])
    finally:
        server.close()
    assert got == [prompt_too_long(2)] and server.prompts == []


# ---------------------------------------------------------------------- light imports


def run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_the_llm_contract_imports_no_model_library() -> None:
    loaded = run_python(
        "import mcts_agent.llm, mcts_agent.llm.base, mcts_agent.llm.load, mcts_agent.llm.cache;"
        " import sys; print([m for m in ('torch','transformers','vllm','numba') "
        "if m in sys.modules])")
    assert loaded == "[]"
    assert run_python("from mcts_agent.llm import HFPolicy; import sys; "
                      "print(HFPolicy.__module__, 'torch' in sys.modules)") == (
        "mcts_agent.llm.hf True")


# ---------------------------------------------------------------------- vLLM beside numba


def test_the_engine_package_leaves_llvmlite_alone() -> None:
    assert run_python("import mcts_agent.engine; from llvmlite.binding import ffi; "
                      "print('__dict__' in ffi.lib._fntab)") == "False"


@pytest.mark.parametrize("numba_first", [True, False])
def test_the_courier_fixes_llvmlite_in_a_fresh_worker(numba_first: bool, tmp_path: Path) -> None:
    """vLLM's spawned worker unpickles the engine config (hf_overrides with it) after
    importing the script's main module, numba or not, and before it scans vars() of every
    module."""
    from mcts_agent.llm.vllm_engine import _LlvmliteCourier

    courier = _LlvmliteCourier()
    assert courier("config") == "config"  # an identity hf_overrides
    (tmp_path / "config.pickle").write_bytes(pickle.dumps(courier))
    unpickle = f"import pickle; pickle.loads(open({str(tmp_path / 'config.pickle')!r}, 'rb')"
    unpickle += ".read())"
    steps = ["import numba", unpickle] if numba_first else [unpickle, "import numba"]
    code = "; ".join([*steps, "from llvmlite.binding import ffi",
                      "print(type(vars(ffi.lib)).__name__)"])
    assert run_python(code) == "dict"


# ---------------------------------------------------------------------- model folders


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "readme.txt").write_text("not a model")
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TINY_ARITH_DIR / name, no_weights / name)
    cut = tmp_path / "cut"
    shutil.copytree(TINY_ARITH_DIR, cut)
    weights = cut / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    return {"notes": notes, "no-weights": no_weights, "cut": cut,
            "missing": tmp_path / "missing"}


@pytest.mark.parametrize(("folder", "message"), [
    ("notes", "is not a model folder (no config.json): pass a folder saved with save_pretrained"),
    ("no-weights", "has a config.json but no weights"),
    ("cut", "model.safetensors is truncated or corrupt"),
    ("missing", "does not exist: pass a folder saved with save_pretrained"),
])
def test_a_folder_that_cannot_be_loaded_says_why(folders: dict[str, Path], folder: str,
                                                  message: str) -> None:
    path = folders[folder]
    for load in (lambda: HFPolicy.from_pretrained(path, device="cpu"),
                 lambda: load_policy(path)):
        with pytest.raises(ModelLoadError) as caught:
            load()
        assert message in str(caught.value) and str(path) in str(caught.value)
        assert "\n" not in str(caught.value)


def test_a_vllm_engine_is_not_started_on_a_bad_folder(folders: dict[str, Path]) -> None:
    from mcts_agent.llm.vllm_engine import VLLMPolicy

    with pytest.raises(ModelLoadError, match="truncated or corrupt"):
        VLLMPolicy(folders["cut"])  # raised before vLLM is even imported


@pytest.mark.parametrize(("device", "message"), [
    ("nosuchdev", "device 'nosuchdev' is not a device torch knows: use cpu, cuda"),
    pytest.param("cuda", "device 'cuda' is not available here", marks=pytest.mark.skipif(
        torch.cuda.is_available(), reason="CUDA is available here")),
])
def test_a_device_that_does_not_exist_says_so_before_loading(device: str, message: str) -> None:
    with pytest.raises(ModelLoadError, match=message) as caught:
        HFPolicy.from_pretrained(TINY_ARITH_DIR, device=device)
    assert "\n" not in str(caught.value)
    with pytest.raises(ModelLoadError, match=message):
        load_policy(device=device)


def test_backend_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="backend name 'tgi' is not one of hf, vllm, openai"):
        load_policy(backend="tgi")
    with pytest.raises(ConfigError, match="base_url"):
        load_policy("m", backend="openai")
    with pytest.raises(ConfigError, match="dtype must be one of"):
        load_policy(dtype="float8")


# ---------------------------------------------------------------------- the response cache


class Echo:
    """A policy answering every request with its prompt (no model needed)."""

    name = "echo"

    def propose(self, requests: Sequence[GenerationRequest]) -> list[list[Candidate]]:
        return [[Candidate(str(r.prompt), -1.0, 1, "stop")] * r.n for r in requests]


def seeded(count: int) -> list[GenerationRequest]:
    return [GenerationRequest(f"question {i} " * 20, n=2, seed=i) for i in range(count)]


def real_cache(path: Path, entries: int = 2000) -> None:
    cache = CachedPolicy(Echo(), path)
    cache.propose(seeded(entries))
    cache.close()


@pytest.fixture
def warnings(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.WARNING, logger="mcts_agent.llm.cache"):
        yield caplog


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_cache_is_set_aside_and_the_run_goes_on(damage: str, tmp_path: Path,
                                                          warnings) -> None:
    path = tmp_path / "responses.sqlite"
    if damage == "garbage":
        path.write_bytes(b"not a database at all\n" * 300)
    else:
        real_cache(path)
        os.truncate(path, path.stat().st_size // 2)
    damaged = path.read_bytes()
    cache = CachedPolicy(Echo(), path)
    assert cache.propose(seeded(3)) == Echo().propose(seeded(3))
    assert cache.entries() == 3  # a fresh cache, in use
    [moved] = tmp_path.glob("responses.sqlite.corrupt-*")
    assert moved.read_bytes() == damaged  # kept for a look, not deleted
    [record] = warnings.records
    assert str(path) in record.getMessage() and str(moved) in record.getMessage()
    assert "starts again empty" in record.getMessage() and "--no-cache" in record.getMessage()


def test_an_empty_cache_file_is_just_an_empty_cache(tmp_path: Path, warnings) -> None:
    path = tmp_path / "responses.sqlite"
    path.write_bytes(b"")
    cache = CachedPolicy(Echo(), path)
    assert cache.propose(seeded(2)) == Echo().propose(seeded(2)) and cache.entries() == 2
    assert not warnings.records and not list(tmp_path.glob("*.corrupt-*"))


def test_damage_found_mid_run_starts_the_cache_over(tmp_path: Path, warnings) -> None:
    path = tmp_path / "responses.sqlite"
    cache = CachedPolicy(Echo(), path)
    cache.propose(seeded(2))
    broken = sqlite3.DatabaseError("database disk image is malformed")
    broken.sqlite_errorcode = 11  # SQLITE_CORRUPT

    class Failing:
        def execute(self, *args: object) -> None:
            raise broken

        def close(self) -> None:
            pass

    cache._db.close()
    cache._db = Failing()  # type: ignore[assignment]
    assert cache.propose(seeded(3)) == Echo().propose(seeded(3))
    assert cache.entries() == 3 and len(warnings.records) == 1


def test_a_cache_that_cannot_be_written_is_a_user_error(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:  # root writes anyway: let the check see what another user would
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == folder
                            else real_access(p, mode))
    try:
        with pytest.raises(UserError, match="cannot write the response cache") as caught:
            CachedPolicy(Echo(), folder / "responses.sqlite")
    finally:
        folder.chmod(0o755)
    message = str(caught.value)
    assert str(folder / "responses.sqlite") in message and "--no-cache" in message
    assert "--out" in message and "\n" not in message
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(UserError, match="cannot write the response cache"):
        CachedPolicy(Echo(), blocker / "run" / "responses.sqlite")
