"""The response cache: reproducible answers come back from disk, identical, and are never
asked of the model twice; random ones always go to the model."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from mcts_agent.llm import CachedPolicy, Candidate, GenerationRequest, Policy, load_policy
from mcts_agent.search import ResultFile, SearchConfig
from mcts_agent.search.run import run_search


class Counting:
    """A policy that counts the requests it answers (wrapping a real one)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.name = policy.name
        self.asked: list[GenerationRequest] = []

    def propose(self, requests: Sequence[GenerationRequest]) -> list[list[Candidate]]:
        self.asked.extend(requests)
        return self.policy.propose(requests)


def requests() -> list[GenerationRequest]:
    return [GenerationRequest("Q: 3+9*3=?\n", n=3, max_tokens=20, stop=("\n",), seed=1),
            GenerationRequest("Q: 3+9*3=?\n", n=2, max_tokens=20, temperature=0),
            GenerationRequest([{"role": "user", "content": "2+2"}], n=2, max_tokens=8, seed=2),
            GenerationRequest("Q: 1+1=?\n", n=2, max_tokens=20)]  # unseeded: random by intent


def test_cached_answers_are_identical_and_free(policy, tmp_path) -> None:
    counting = Counting(policy)
    cached = CachedPolicy(counting, tmp_path / "cache.sqlite")
    first = cached.propose(requests())
    assert len(counting.asked) == 4 and [len(c) for c in first] == [3, 2, 2, 2]
    again = CachedPolicy(counting, tmp_path / "cache.sqlite")  # a new process, the same file
    second = again.propose(requests())
    assert second[:3] == first[:3]  # token ids, logprobs, finish reasons: all kept
    assert len(counting.asked) == 5 and counting.asked[-1].seed is None  # only the random one
    assert again.stats == {"hits": 3, "misses": 0, "uncacheable": 1}
    assert again.entries() == 3


def test_the_key_holds_model_and_every_sampling_parameter(policy, tmp_path) -> None:
    counting = Counting(policy)
    cached = CachedPolicy(counting, tmp_path / "cache.sqlite")
    base = GenerationRequest("Q: 3+9*3=?\n", n=2, max_tokens=20, stop=("\n",), seed=1)
    variants = [base, GenerationRequest("Q: 3+9*3=?\n", n=2, max_tokens=20, stop=("\n",),
                                        seed=2),
                GenerationRequest("Q: 3+9*3=?\n", n=2, max_tokens=21, stop=("\n",), seed=1),
                GenerationRequest("Q: 3+9*3=?\n", n=2, max_tokens=20, seed=1),
                GenerationRequest("Q: 3+9*3=?\n", n=2, max_tokens=20, stop=("\n",), seed=1,
                                  temperature=0.5),
                GenerationRequest("Q: 3+9*3=?\n", n=2, max_tokens=20, stop=("\n",), seed=1,
                                  allowed=("Step 1: 9*3=27",))]  # constrained: another answer
    cached.propose(variants)
    assert len(counting.asked) == 6 and cached.entries() == 6
    counting.name = "hf:another-model"
    cached.propose([base])
    assert len(counting.asked) == 7


def test_a_resumed_search_regrows_its_trees_without_the_model(policy, tmp_path) -> None:
    config = SearchConfig(simulations=4, expand_n=2, max_depth=6, max_step_tokens=20)
    counting = Counting(policy)
    _, first = run_search("arith", tasks=3, policy=counting, config=config, rollouts=2,
                          out_dir=tmp_path, baselines=False)
    asked = len(counting.asked)
    lines = (tmp_path / "trees.jsonl").read_text().splitlines()
    (tmp_path / "trees.jsonl").write_text(lines[0] + "\n")  # as if it stopped after one tree
    _, resumed = run_search("arith", tasks=3, policy=counting, config=config, rollouts=2,
                            out_dir=tmp_path, baselines=False)
    assert len(counting.asked) == asked  # every generation came from responses.sqlite
    assert [r.nodes for r in resumed] == [r.nodes for r in first]
    assert len(list(ResultFile(tmp_path / "trees.jsonl"))) == 3


def test_load_policy_wraps_in_a_cache_and_names_backends(tmp_path) -> None:
    cached = load_policy(cache=tmp_path / "c.sqlite")
    assert isinstance(cached, CachedPolicy) and cached.name.startswith("hf:")
    assert cached  # an empty cache is still a policy (`policy or default` must keep it)
    assert cached.encode_prompt("Q: 1+1=?\n")  # the wrapped policy's attributes show through
    with pytest.raises(ValueError, match="base_url"):
        load_policy("tiny", backend="openai")
    with pytest.raises(ValueError, match="name"):
        load_policy(backend="tgi")
