"""Calls from several threads share batches on a batch-per-call backend (group commit).

Reference: each call made alone. Merged into shared batches, every caller must get exactly what
it would have got alone, and a failure must reach every caller of the failed batch, no other.
"""

from __future__ import annotations

import threading
import time

import pytest

from mcts_agent.llm.base import Candidate, GenerationRequest
from mcts_agent.llm.batching import Coalescer
from mcts_agent.llm.hf import HFPolicy
from mcts_agent.models.tiny import TINY_ARITH_DIR


def echo(requests: list[GenerationRequest]) -> list[list[Candidate]]:
    """A slow batch whose answers name their request."""
    time.sleep(0.02)
    return [[Candidate(f"{r.prompt}#{j}", 0.0, 1, "stop") for j in range(r.n)] for r in requests]


def in_threads(propose, calls: list[list[GenerationRequest]]) -> list:
    out: list = [None] * len(calls)

    def call(i: int) -> None:
        try:
            out[i] = propose(calls[i])
        except Exception as err:
            out[i] = err

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return out


def test_concurrent_calls_share_batches_and_get_their_own_answers():
    coalescer = Coalescer(echo)
    calls = [[GenerationRequest(f"q{i}.{j}", n=1 + j) for j in range(i % 3 + 1)]
             for i in range(24)]
    got = in_threads(coalescer, calls)
    assert got == [echo(call) for call in calls]
    assert coalescer.batches < len(calls)  # callers that came during a batch shared the next


def test_a_failed_batch_fails_its_callers_and_a_bad_call_fails_alone():
    def flaky(requests):
        if any(r.prompt == "poison" for r in requests):
            raise RuntimeError("the model fell over")
        return echo(requests)

    coalescer = Coalescer(flaky)
    with pytest.raises(TypeError, match="not GenerationRequest"):
        coalescer(["not a request"])
    with pytest.raises(RuntimeError, match="fell over"):
        coalescer([GenerationRequest("poison")])
    assert coalescer([GenerationRequest("fine")]) == echo([GenerationRequest("fine")])


def test_hf_calls_from_threads_match_calls_alone():
    policy = HFPolicy.from_pretrained(TINY_ARITH_DIR, device="cpu")
    calls = [[GenerationRequest(f"Q: {a}+{a * 3}=?\n", n=3, max_tokens=16, stop=("\n",),
                                seed=a)] for a in range(1, 9)]
    alone = [policy.propose(call) for call in calls]
    together = in_threads(policy.propose, calls)
    for got, want in zip(together, alone, strict=True):
        assert [c.token_ids for c in got[0]] == [c.token_ids for c in want[0]]
        assert [c.logprob for c in got[0]] == pytest.approx([c.logprob for c in want[0]],
                                                            abs=1e-4)
