"""A whole search run from names: environment, model, critic → trees on disk + a summary.

This is what ``mcts-agent search`` calls; it is also the Python entry point for scripts.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from .. import __version__
from ..contracts import Critic, Environment, Task
from ..episodes import has_answers
from ..llm.base import Policy
from ..llm.cache import CachedPolicy
from ..llm.load import load_policy
from ..registry import environments
from .baselines import sample_solutions
from .config import SearchConfig
from .critic_specs import build_critic
from .discriminator import build_discriminator
from .driver import TreeSearch
from .results import ResultFile, SearchResult

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """Solved counts of the tree and of its baselines on the same tasks, and what it cost."""

    mode: str
    tasks: int
    mcts_solved: int
    greedy_solved: int | None
    best_of_n_solved: int | None
    tokens: int
    baseline_tokens: int | None
    nodes: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_critic(policy: Policy, config: SearchConfig, rollouts: int) -> Critic:
    """Data mode: the verifier at finished states, Monte Carlo rollouts elsewhere. Inference
    mode: rollouts scored by agreement with the majority answer (no reference)."""
    return build_critic(["rollout"], policy, config, rollouts)


def run_search(
    env: str | Environment,
    *,
    tasks: list[Task] | int = 20,
    split: str = "test",
    policy: Policy | None = None,
    model: str | Path | None = None,
    config: SearchConfig | None = None,
    critic: Critic | None = None,
    rollouts: int = 4,
    out_dir: str | Path | None = None,
    baselines: bool = True,
    on_result: Callable[[SearchResult], Any] | None = None,
    cache: bool = True,
) -> tuple[RunSummary, list[SearchResult]]:
    """Search ``tasks`` (a list, or that many of the environment's own ``split``).

    With ``out_dir``, trees go to ``out_dir/trees.jsonl`` as they finish (the same call resumes
    an interrupted run), beside ``config.yaml`` and ``summary.json``; with ``cache`` too, the
    model's answers are kept in ``out_dir/responses.sqlite``, so the trees that were in flight
    when a run stopped are re-grown without paying for the same generations again (a critic
    passed in keeps the policy it was built with: build it on a
    :class:`~mcts_agent.llm.cache.CachedPolicy` to cache its generations too).
    """
    config = config or SearchConfig()
    environment = environments.create(env) if isinstance(env, str) else env
    if isinstance(tasks, int):
        if not hasattr(environment, "tasks"):
            raise ValueError(f"environment {environment.name!r} does not generate tasks; "
                             "pass a list of tasks (e.g. from a JSONL file)")
        tasks = environment.tasks(tasks, split=split)
    if policy is None:
        policy = load_policy(model)
    owned_cache = None
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if cache and not isinstance(policy, CachedPolicy):
            policy = owned_cache = CachedPolicy(policy, out / "responses.sqlite")
    try:
        return _run(environment, tasks, policy, config,
                    critic or default_critic(policy, config, rollouts), out_dir, baselines,
                    on_result)
    finally:
        if owned_cache is not None:
            owned_cache.close()


def _run(environment: Environment, tasks: list[Task], policy: Policy, config: SearchConfig,
         critic: Critic, out_dir: str | Path | None, baselines: bool,
         on_result: Callable[[SearchResult], Any] | None,
         ) -> tuple[RunSummary, list[SearchResult]]:
    results_file = None
    if out_dir is not None:
        out = Path(out_dir)
        _write_config(out, environment, policy, critic, config, len(tasks))
        results_file = ResultFile(out / "trees.jsonl")
    started = time.perf_counter()
    discriminator = build_discriminator(config.discriminator, policy, seed=config.seed)
    search = TreeSearch(environment, policy, critic, config, discriminator)
    fresh = list(search.run(tasks, results_file, on_result=on_result))
    by_id = {r.task.id: r for r in (results_file if results_file is not None else fresh)}
    results = [by_id[t.id] for t in tasks if t.id in by_id]  # a resumed run's earlier trees too
    summary = _summarise(environment, policy, config, tasks, results, baselines,
                         time.perf_counter() - started)
    if out_dir is not None:
        (Path(out_dir) / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2))
    return summary, results


def _summarise(env: Environment, policy: Policy, config: SearchConfig, tasks: list[Task],
               results: list[SearchResult], baselines: bool, seconds: float) -> RunSummary:
    tokens = [r.stats.get("tokens", 0) for r in results]
    greedy = best = baseline_tokens = None
    if baselines and tasks:
        max_tokens = config.max_step_tokens * config.max_depth
        turns = dict(max_turns=config.max_depth, max_step_tokens=config.max_step_tokens)
        greedy_runs = sample_solutions(env, policy, tasks, 1, temperature=0.0,
                                       max_tokens=max_tokens, seed=config.seed, **turns)
        # best-of-N gets the tokens the tree spent on the same task
        n = [max(1, round(t / max(g.tokens, 1))) for t, g in zip(tokens, greedy_runs,
                                                                  strict=True)]
        sampled = sample_solutions(env, policy, tasks, n, temperature=config.temperature,
                                   max_tokens=max_tokens, seed=config.seed + 1, **turns)
        # without answers to vote on, the game's own verdict (seen while playing) picks
        judge = (lambda a: a.any_correct) if config.mode == "data" or not has_answers(env) else (
            lambda a: a.majority_correct)
        greedy = sum(g.any_correct for g in greedy_runs)
        best = sum(judge(a) for a in sampled)
        baseline_tokens = sum(a.tokens for a in sampled)
    return RunSummary(config.mode, len(results), sum(bool(r.solved) for r in results), greedy,
                      best, sum(tokens), baseline_tokens, sum(len(r.nodes) for r in results),
                      seconds)


def _write_config(out: Path, env: Environment, policy: Policy, critic: Critic,
                  config: SearchConfig, tasks: int) -> None:
    """The resolved settings and versions, so a run can be understood and repeated."""
    import numba
    import numpy
    import torch
    import transformers

    record = {
        "environment": env.name, "policy": policy.name, "critic": critic.name, "tasks": tasks,
        "search": config.model_dump(mode="json"),
        "versions": {"mcts_agent": __version__, "python": platform.python_version(),
                     "numpy": numpy.__version__, "numba": numba.__version__,
                     "torch": str(torch.__version__), "transformers": transformers.__version__},
    }
    (out / "config.yaml").write_text(yaml.safe_dump(record, sort_keys=False))
