"""The OpenAI-compatible backend against a real ``vllm serve`` of the shipped tiny reasoner, and
through :class:`servers.FaultyProxy`, which drops, delays, truncates and refuses on purpose.

One server serves the whole module (its start is most of the cost). It requires an API key, so
the authentication error is the real vLLM's. The tiny model has no chat template; the server is
given one (``--chat-template``) that renders exactly like our local ``role: content`` transcript,
so the chat API (template applied by the server) and the completions API with a local tokenizer
(transcript rendered here, sent as token ids) must give the same seeded candidates.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict

import pytest

pytest.importorskip("vllm")

from servers import FAULTS, FaultyProxy, free_port, start_vllm

from mcts_agent.llm.base import FINISH_REASONS, Candidate, GenerationRequest, prompt_too_long
from mcts_agent.llm.openai_api import (
    AuthenticationError,
    ModelNotFoundError,
    OpenAIPolicy,
    ServerError,
)
from mcts_agent.models.tiny import TINY_ARITH_DIR

MODEL = "tiny-arith"
KEY = "test-key"
# renders like mcts_agent.llm.hf.render_prompt's transcript (BOS, then "role: content" lines)
CHAT_TEMPLATE = ("<bos>{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n"
                 "{% endfor %}assistant: ")
PROBLEMS = ["Q: 3+9*3=?\n", "Q: 12-4*2=?\n", "Q: (7+5)*2=?\nStep 1: 7+5=12\n",
            "Q: 18-3+6=?\nStep 1: 18-3=15\n"]
SOLVED = "Q: 3+9*3=?\nStep 1: 9*3=27\nStep 2: 3+27=30\nAnswer: 30\n"  # the model ends with EOS


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vllm")
    template = folder / "chat.jinja"
    template.write_text(CHAT_TEMPLATE)
    server = start_vllm(TINY_ARITH_DIR, served_model_name=MODEL, api_key=KEY,
                        extra_args=["--chat-template", str(template)],
                        log_path=folder / "server.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def direct(server):
    with OpenAIPolicy(server.url, MODEL, api_key=KEY, max_concurrency=16) as policy:
        yield policy


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TINY_ARITH_DIR)


def requests_like_a_search(count: int = 40, n: int = 4) -> list[GenerationRequest]:
    """Seeded step requests on growing arith prompts, as a search wave sends them."""
    return [GenerationRequest(PROBLEMS[i % len(PROBLEMS)], n=n, max_tokens=24, stop=("\n",),
                              temperature=1.0, seed=1000 + i) for i in range(count)]


def assert_same(got: list[list[Candidate]], want: list[list[Candidate]]) -> None:
    """The same candidates; log-probabilities to float precision."""
    assert len(got) == len(want)
    for row_got, row_want in zip(got, want, strict=True):
        assert len(row_got) == len(row_want)
        for a, b in zip(row_got, row_want, strict=True):
            assert (a.text, a.token_ids, a.num_tokens, a.finish_reason, a.stop_reason) == (
                b.text, b.token_ids, b.num_tokens, b.finish_reason, b.stop_reason)
            assert a.logprob == pytest.approx(b.logprob, abs=1e-4)


# ---------------------------------------------------------------------- the contract


def test_candidates_follow_the_contract(direct, tokenizer):
    import torch
    from transformers import AutoModelForCausalLM

    requests = [GenerationRequest(p, n=4, max_tokens=24, temperature=0.7, stop=("\n",), seed=7)
                for p in PROBLEMS]
    requests += [GenerationRequest(SOLVED, n=2, max_tokens=8, seed=1),  # EOS
                 GenerationRequest(PROBLEMS[0], n=3, max_tokens=3, seed=2)]  # length
    results = direct.propose(requests)
    assert direct.is_vllm and direct.name == f"openai:{MODEL}" and direct.max_model_len == 128
    assert [len(r) for r in results] == [r.n for r in requests]
    seen = set()
    for request, candidates in zip(requests, results, strict=True):
        for c in candidates:
            assert c.finish_reason in FINISH_REASONS and "\n" not in c.text
            assert c.num_tokens == len(c.token_ids) > 0 and c.logprob <= 0
            decoded = tokenizer.decode(list(c.token_ids))
            seen.add(c.finish_reason)
            if c.finish_reason == "stop":  # the stop string's token counted, cut from the text
                assert c.stop_reason == "\n" and decoded == c.text + "\n"
            elif c.finish_reason == "eos":
                assert c.token_ids[-1] == tokenizer.eos_token_id and c.stop_reason is None
                assert tokenizer.decode(list(c.token_ids[:-1])) == c.text
            else:
                assert c.num_tokens == request.max_tokens and decoded == c.text
    assert seen == {"stop", "eos", "length"}
    # logprob is the raw (temperature 1) log-softmax, here sampled at temperature 0.7
    model = AutoModelForCausalLM.from_pretrained(TINY_ARITH_DIR, dtype=torch.float32).eval()
    for request, candidates in zip(requests[:2], results[:2], strict=True):
        prompt = tokenizer(request.prompt)["input_ids"]
        for c in candidates:
            ids = torch.tensor([prompt + list(c.token_ids)])
            with torch.no_grad():
                logits = model(ids).logits[0, len(prompt) - 1 : -1]
            expected = torch.log_softmax(logits.double(), -1).gather(
                1, torch.tensor(c.token_ids)[:, None]).sum().item()
            assert c.logprob == pytest.approx(expected, abs=2e-3)


def test_seeded_requests_are_reproducible_and_greedy_is_one_decode(direct):
    requests = requests_like_a_search(8)
    first = direct.propose(requests)
    assert_same(direct.propose(requests), first)
    assert_same(direct.propose(requests[::-1]), first[::-1])  # whatever else is in flight
    reseeded = direct.propose([GenerationRequest(r.prompt, n=r.n, max_tokens=r.max_tokens,
                                                 stop=r.stop, seed=r.seed + 99)
                               for r in requests])
    assert [c.text for row in reseeded for c in row] != [c.text for row in first for c in row]
    before = direct.stats["requests"]
    greedy = direct.propose([GenerationRequest(PROBLEMS[0], n=3, temperature=0, stop="\n")])[0]
    assert direct.stats["requests"] == before + 1 and greedy[0] == greedy[1] == greedy[2]
    assert greedy[0].text == "Step 1: 9*3=27"


def test_token_id_prompts_and_the_chat_api_agree(server, direct):
    requests = requests_like_a_search(6, n=3)
    chat = [[{"role": "user", "content": "Q: 3+4=?"}], [{"role": "system", "content": "Q"},
                                                       {"role": "user", "content": "Q: 2*8=?"}]]
    chat_requests = [GenerationRequest(m, n=2, max_tokens=12, stop=("\n",), seed=5)
                     for m in chat]
    with OpenAIPolicy(server.url, MODEL, api_key=KEY, tokenizer=TINY_ARITH_DIR) as ids_policy:
        assert_same(ids_policy.propose(requests), direct.propose(requests))  # exact prompt ids
        local = ids_policy.propose(chat_requests)
        # context bound as in the HF backend: a long prompt ends at "length", never a 400
        long_prompt = PROBLEMS[0] + "Step 1: 1+1=2\n" * 8  # 124 tokens of 128
        short, full = ids_policy.propose([
            GenerationRequest(long_prompt, n=2, max_tokens=20, seed=1),
            GenerationRequest(long_prompt * 2, n=2, max_tokens=20, seed=1)])
        assert all(c.num_tokens <= 4 for c in short)
        assert full == prompt_too_long(2)  # known here: not sent
    with OpenAIPolicy(server.url, MODEL, api="chat", api_key=KEY) as chat_policy:
        assert_same(chat_policy.propose(chat_requests), local)
        text = GenerationRequest("Q: 3+4=?", n=2, max_tokens=12, stop=("\n",), seed=5)
        assert_same(chat_policy.propose([text]), local[:1])  # text → one user message
    with pytest.raises(ValueError, match=r"api='chat'.*tokenizer"):
        direct.propose(chat_requests)


def test_a_prompt_the_server_refuses_as_too_long_is_prompt_too_long(direct):
    """Without a tokenizer the length is only known to the server: its 400 ("maximum context
    length") ends that request, not the call."""
    requests = requests_like_a_search(3, n=2)
    alone = direct.propose(requests)
    huge = GenerationRequest(PROBLEMS[0] + "Step 1: 1+1=2\n" * 30, n=3, max_tokens=8, seed=1)
    mixed = direct.propose([requests[0], huge, *requests[1:]])
    assert mixed[1] == prompt_too_long(3)
    assert_same([mixed[0], *mixed[2:]], alone)


# ---------------------------------------------------------------------- clear errors


def test_clear_errors(server, monkeypatch):
    with pytest.raises(AuthenticationError, match=r"127\.0\.0\.1.*API key"):
        OpenAIPolicy(server.url, MODEL, api_key="wrong")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)  # the default key
    with OpenAIPolicy(server.root, MODEL) as policy:  # a bare host:port gets /v1
        assert policy.base_url == server.url
        policy.model = "gone"  # as if the server were restarted with another model
        with pytest.raises(ModelNotFoundError, match=r"'gone'.*serves: 'tiny-arith'"):
            policy.propose([GenerationRequest("Q: 1+1=?\n")])
    with pytest.raises(ModelNotFoundError, match="serves: 'tiny-arith'") as info:
        OpenAIPolicy(server.url, "tiny-arithm")
    assert info.value.available == [MODEL]
    with pytest.raises(ServerError, match=r"127\.0\.0\.1:\d+/v1: is the server running"):
        OpenAIPolicy(f"http://127.0.0.1:{free_port()}/v1", MODEL)

    class OutOfVocabulary:  # a tokenizer that does not belong to the served model
        bos_token = chat_template = None

        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": [1, 999]}

    with OpenAIPolicy(server.url, MODEL, tokenizer=OutOfVocabulary()) as policy, \
            pytest.raises(ValueError, match=r"rejected the request \(400\).*999"):
        policy.propose([GenerationRequest("Q", max_tokens=2)])


# ---------------------------------------------------------------------- faults


def faulty_policy(proxy: FaultyProxy, **options) -> OpenAIPolicy:
    settings = dict(api_key=KEY, max_concurrency=16, timeout=3.0, backoff=0.05,
                    max_backoff=2.0)
    return OpenAIPolicy(proxy.url, MODEL, **{**settings, **options})


def interleaved(faults=FAULTS, gap: int = 1) -> list[str | None]:
    """Each fault once, ``gap`` clean requests after each."""
    return [item for fault in faults for item in (fault, *[None] * gap)]


def test_every_fault_is_retried_and_changes_nothing(server, direct):
    requests = requests_like_a_search(40, n=4)
    want = direct.propose(requests)
    with FaultyProxy(server.url, interleaved(), slow_seconds=3.5) as proxy, \
            faulty_policy(proxy) as policy:
        got = policy.propose(requests)
        faults, stats = proxy.faults, policy.stats
    assert_same(got, want)
    assert set(faults) == set(FAULTS), faults  # every kind happened at least once
    assert_retries_match(stats, proxy, len(requests))


def assert_retries_match(stats, proxy: FaultyProxy, calls: int) -> None:
    """Every injected fault was seen and retried as what it is.

    A busy server can be slower than the client's timeout by itself: then a request retries
    for a timeout that the proxy did not inject, or (where the proxy was waiting on the server
    to break its reply) for a timeout instead of the injected fault. On a busy machine a request
    can also fail on its connection before the proxy reads it (a pooled connection the proxy
    has just closed): a connection retry the proxy never counts. Those are the only slack; with
    a quiet machine every count is exact.
    """
    faults = proxy.faults
    assert stats["retries"] == sum(v for k, v in stats.items() if k.startswith("retries_"))
    assert stats["requests"] == calls + stats["retries"]
    never_arrived = stats["requests"] - proxy.counts.received
    for status in ("status_500", "status_503", "status_429"):  # answered without the server
        assert stats[f"retries_{status}"] == faults[status]
    immediate_connection, waited_connection = faults["drop"], faults["cut_body"]
    immediate_bad, waited_bad = faults["invalid_json"], (
        faults["truncated_json"] + faults["missing_choice"] + faults["duplicate_choice"])
    assert 0 <= never_arrived <= stats["retries_connection"] - immediate_connection
    assert immediate_connection <= stats["retries_connection"] <= (
        immediate_connection + waited_connection + never_arrived)
    assert immediate_bad <= stats["retries_bad_reply"] <= immediate_bad + waited_bad
    assert stats["retries_timeout"] >= faults["slow"]
    unfaulted_timeouts = stats["retries"] - sum(faults.values()) - never_arrived
    assert 0 <= unfaulted_timeouts <= stats["retries_timeout"] - faults["slow"]
    if stats["retries_timeout"] == faults["slow"]:  # no timeout of its own: all exact
        assert stats["retries_connection"] == (
            immediate_connection + waited_connection + never_arrived)
        assert stats["retries_bad_reply"] == immediate_bad + waited_bad


def test_retry_after_is_honoured_and_retries_run_out(server):
    request = GenerationRequest(PROBLEMS[0], n=2, max_tokens=8, seed=3)
    with FaultyProxy(server.url, ["status_429", None], retry_after="1") as proxy, \
            faulty_policy(proxy, backoff=0.0, timeout=60.0) as policy:
        started = time.perf_counter()
        assert len(policy.propose([request])[0]) == 2
        assert time.perf_counter() - started >= 1.0 and policy.stats["retries_status_429"] == 1
    with FaultyProxy(server.url, ["status_503"]) as proxy, \
            faulty_policy(proxy, max_retries=2, backoff=0.0, timeout=60.0) as policy:
        with pytest.raises(ServerError, match=r"after 2 retries.*injected 503") as info:
            policy.propose([request])
        assert "503" in info.value.last_cause
        assert proxy.counts.received == 3 and proxy.forwarded == 1  # /models only
        with pytest.raises(ServerError):  # the first request out of retries ends the call
            policy.propose([request] * 3)
        sent = proxy.counts.received
        assert 3 + 3 <= sent <= 3 + 3 * 3
        time.sleep(0.3)
        assert proxy.counts.received == sent  # nothing of the failed call goes on after it


def test_a_search_through_the_faulty_proxy_builds_the_same_trees_with_either_driver(server, direct):
    from mcts_agent.registry import environments
    from mcts_agent.search import SearchConfig
    from mcts_agent.search.driver import TreeSearch
    from mcts_agent.search.run import default_critic

    env = environments.create("arith")
    tasks = env.tasks(3, seed=11)
    config = SearchConfig(simulations=8, expand_n=3, leaves_per_tree=2, max_depth=6,
                          max_step_tokens=20, stop_when_solved=False, seed=5)

    def search(policy, driver="wave"):
        critic = default_critic(policy, config, rollouts=2)  # rollouts: the policy again
        settings = config.model_copy(update={"driver": driver})
        results = list(TreeSearch(env, policy, critic, settings).run(tasks))
        return {r.task.id: [asdict(node) for node in r.nodes]  # NodeRecords, compared as dicts
                for r in sorted(results, key=lambda r: r.task.id)}

    want = search(direct)
    for driver in ("wave", "async"):  # async: every tree's calls on their own, in any order
        with FaultyProxy(server.url, interleaved(gap=2), slow_seconds=3.5) as proxy, \
                faulty_policy(proxy) as policy:
            got = search(policy, driver)
            faults = proxy.faults
        assert set(faults) == set(FAULTS), faults
        assert_retries_match(policy.stats, proxy,
                             policy.stats["requests"] - policy.stats["retries"])
        assert_same_trees(got, want)


def assert_same_trees(got, want):
    assert list(got) == list(want)
    for task_id, nodes in want.items():
        assert len(got[task_id]) == len(nodes) > 1  # no node lost or duplicated
        for a, b in zip(got[task_id], nodes, strict=True):
            assert {k: v for k, v in a.items() if not isinstance(v, float)} == {
                k: v for k, v in b.items() if not isinstance(v, float)}
            for key, value in b.items():
                if isinstance(value, float):
                    assert a[key] == pytest.approx(value, abs=1e-4) or (
                        math.isnan(value) and math.isnan(a[key]))


# ---------------------------------------------------------------------- degraded servers


def test_servers_without_n_or_logprobs(server, direct, caplog):
    requests = requests_like_a_search(5, n=3)
    # sample j of a split request is the single-choice request seeded seed + j
    want = [[direct.propose([GenerationRequest(r.prompt, n=1, max_tokens=r.max_tokens,
                                               stop=r.stop, seed=r.seed + j)])[0][0]
             for j in range(r.n)] for r in requests]
    with caplog.at_level(logging.WARNING, "mcts_agent.llm.openai_api"), \
            FaultyProxy(server.url, reject_n=True, reject_logprobs=True) as proxy, \
            faulty_policy(proxy) as policy:
        got = policy.propose(requests)
        again = policy.propose(requests)
    assert proxy.counts.rejected["logprobs"] >= 1 and proxy.counts.rejected["n"] >= 1
    for row, want_row in zip(got, want, strict=True):
        assert [(c.text, c.token_ids, c.finish_reason) for c in row] == [
            (c.text, c.token_ids, c.finish_reason) for c in want_row]
        assert all(c.logprob == 0.0 and c.num_tokens == len(c.token_ids) for c in row)
    assert again == got
    warnings = [r.getMessage() for r in caplog.records]
    assert sum("log-probabilities" in w for w in warnings) == 1
    assert sum("one request per sample" in w for w in warnings) == 1
    # a server that ignores n (one choice, whatever was asked): found out, then split too
    with FaultyProxy(server.url, ignore_n=True) as proxy, faulty_policy(proxy) as policy:
        assert_same(policy.propose(requests), direct.propose(requests))  # vLLM: child j = seed+j
        assert 2 <= policy.stats["retries_bad_reply"] <= 2 * len(requests)  # single choices


def test_a_server_that_is_not_vllm(server, direct, tokenizer):
    """No stop_reason, no token ids, no vLLM-only fields: the documented heuristics."""
    requests = [*requests_like_a_search(6, n=3),
                GenerationRequest(SOLVED, n=2, max_tokens=8, seed=9),
                GenerationRequest(PROBLEMS[0], n=2, max_tokens=3, stop=("\n",), seed=4)]
    want = direct.propose(requests)
    with FaultyProxy(server.url, generic=True) as proxy, faulty_policy(proxy) as policy:
        assert not policy.is_vllm and policy.max_model_len is None
        got = policy.propose(requests)
    assert proxy.counts.rejected["unrecognized"] == 0  # nothing vLLM-only was sent
    assert {c.finish_reason for row in want for c in row} == {"stop", "eos", "length"}
    for row, want_row in zip(got, want, strict=True):
        for a, b in zip(row, want_row, strict=True):
            assert a.token_ids == () and a.num_tokens == b.num_tokens  # from the log-probs
            assert (a.text, a.finish_reason, a.stop_reason) == (
                b.text, b.finish_reason, b.stop_reason)  # told apart by the tokens' text
            assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
