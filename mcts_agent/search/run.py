"""A whole search run from names: environment, model, critic → trees on disk + a summary.

This is what ``mcts-agent search`` calls; it is also the Python entry point for scripts.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .. import __version__
from ..contracts import Critic, Environment, Task, check_score, has_answers, load_tasks
from ..errors import PluginError, RunMismatchError, UserError
from ..files import write_atomic
from ..llm.base import Policy
from ..llm.cache import CachedPolicy
from ..llm.load import load_policy
from ..registry import PluginSpec, environments
from ..trees import ResultFile, TreeRecord
from .baselines import TaskBaseline, best_of_n, sample_solutions
from .config import SearchConfig
from .critic_specs import build_critic, describe_critic
from .discriminator import build_discriminator
from .driver import TreeSearch

log = logging.getLogger(__name__)

SPEED_ONLY = frozenset({"max_trees_in_flight", "cohorts", "driver"})
"""Search settings that change how fast trees grow, never which trees: a run may resume
with other values."""


@dataclass
class RunSummary:
    """Solved counts of the trees and of their baselines on the same tasks, what it cost, and
    how the trees ended. ``tokens``/``nodes`` cover every tree of the run; ``searched`` trees
    (``searched_tokens``) were grown by this call in ``seconds`` (a resumed run's earlier
    trees cost nothing now)."""

    mode: str
    tasks: int
    mcts_solved: int
    greedy_solved: int | None
    best_of_n_solved: int | None
    tokens: int
    baseline_tokens: int | None
    nodes: int
    seconds: float
    searched: int = 0
    searched_tokens: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    environment_errors: int = 0
    first_error: str | None = None
    per_task: list[TaskBaseline] = field(default_factory=list, repr=False)  # baselines.jsonl

    def to_dict(self) -> dict[str, Any]:
        """``summary.json``'s content (the per-task baselines go to ``baselines.jsonl``)."""
        out = asdict(self)
        del out["per_task"]
        return out

    def save(self, out_dir: str | Path) -> None:
        """Write ``summary.json`` and, when baselines ran, ``baselines.jsonl`` (one line per
        task: what greedy and best-of-N answered; the viewer shows them beside each tree)."""
        write_atomic(Path(out_dir) / "summary.json", json.dumps(self.to_dict(), indent=2))
        if self.per_task:
            write_atomic(Path(out_dir) / "baselines.jsonl", "".join(
                json.dumps(asdict(row)) + "\n" for row in self.per_task))

def default_critic(policy: Policy, config: SearchConfig, rollouts: int) -> Critic:
    """Data mode: the verifier at finished states, Monte Carlo rollouts elsewhere. Inference
    mode: rollouts scored by agreement with the majority answer (no reference)."""
    return build_critic(["rollout"], policy, config, rollouts)


def run_search(
    env: str | Environment,
    *,
    tasks: list[Task] | int = 20,
    split: str = "test",
    env_spec: PluginSpec | None = None,
    policy: Policy | None = None,
    model: str | Path | None = None,
    config: SearchConfig | None = None,
    critic: Critic | None = None,
    rollouts: int = 4,
    out_dir: str | Path | None = None,
    baselines: bool = True,
    on_result: Callable[[TreeRecord], Any] | None = None,
    cache: bool = True,
    allow_changed: bool = False,
) -> tuple[RunSummary, list[TreeRecord]]:
    """Search ``tasks`` (a list, or that many of the environment's own ``split``).

    ``env`` is a registered environment's name or an environment object; ``env_spec`` says how
    it is built (registered name and arguments): with a name, the environment is built from
    it; with an object, it goes into the run record, so ``pairs`` and the other readers can
    rebuild the same environment (without it the record holds only the object's name).
    With ``out_dir``, trees go to ``out_dir/trees.jsonl`` as they finish, beside
    ``config.yaml`` (the resolved environment, critic, policy and search settings) and
    ``summary.json``. The same call resumes an interrupted run; a run folder made with other
    settings is refused (:class:`~mcts_agent.errors.RunMismatchError`) unless
    ``allow_changed`` (``config.yaml`` then keeps the earlier settings under ``history``).
    With ``cache`` too, the model's answers are kept in ``out_dir/responses.sqlite``, so the
    trees that were in flight when a run stopped are re-grown without paying for the same
    generations again (a critic passed in keeps the policy it was built with: build it on a
    :class:`~mcts_agent.llm.cache.CachedPolicy` to cache its generations too).
    """
    config = config or SearchConfig()
    if isinstance(env, str):
        spec = env_spec or PluginSpec(env, {})
        environment = environments.create(env, **(spec.args or {}))
    else:
        environment = env
        spec = env_spec or PluginSpec(env.name, None)
    if isinstance(tasks, int):
        tasks = load_tasks(environment, tasks, split=split)
    if policy is None:
        policy = load_policy(model)
    owned_cache = None
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if cache and not isinstance(policy, CachedPolicy):
            policy = owned_cache = CachedPolicy(policy, out / "responses.sqlite")
    critic = critic or default_critic(policy, config, rollouts)
    try:
        if out_dir is not None:
            settings = run_settings(spec, policy, critic, config, split)
            claim_run_folder(Path(out_dir), settings, len(tasks), allow_changed)
        return _run(environment, tasks, policy, config, critic, out_dir, baselines, on_result)
    finally:
        if owned_cache is not None:
            owned_cache.close()


def _run(environment: Environment, tasks: list[Task], policy: Policy, config: SearchConfig,
         critic: Critic, out_dir: str | Path | None, baselines: bool,
         on_result: Callable[[TreeRecord], Any] | None,
         ) -> tuple[RunSummary, list[TreeRecord]]:
    results_file = ResultFile(Path(out_dir) / "trees.jsonl") if out_dir is not None else None
    started = time.perf_counter()
    discriminator = build_discriminator(config.discriminator, policy, seed=config.seed)
    search = TreeSearch(environment, policy, critic, config, discriminator)
    fresh = list(search.run(tasks, results_file, on_result=on_result))
    return conclude_run(environment, policy, config, tasks, fresh, results_file, baselines,
                        time.perf_counter() - started, out_dir)


def conclude_run(environment: Environment, policy: Policy, config: SearchConfig,
                 tasks: list[Task], fresh: list[TreeRecord], results_file: ResultFile | None,
                 baselines: bool, seconds: float, out_dir: str | Path | None,
                 ) -> tuple[RunSummary, list[TreeRecord]]:
    """Every task's tree (a resumed run's earlier ones too, from ``results_file``) and the
    run's summary (with its baselines), saved to ``out_dir``; whatever grew the ``fresh``
    trees (one process or a cluster)."""
    by_id = {r.task.id: r for r in (results_file if results_file is not None else fresh)}
    results = [by_id[t.id] for t in tasks if t.id in by_id]
    summary = _summarise(environment, policy, config, tasks, results, fresh, baselines, seconds)
    if out_dir is not None:
        summary.save(out_dir)
    return summary, results


def _summarise(env: Environment, policy: Policy, config: SearchConfig, tasks: list[Task],
               results: list[TreeRecord], fresh: list[TreeRecord], baselines: bool,
               seconds: float) -> RunSummary:
    tokens = {r.task.id: r.stats.tokens for r in results}
    greedy = best = baseline_tokens = None
    per_task: list[TaskBaseline] = []
    if baselines and tasks:
        max_tokens = config.max_step_tokens * config.max_depth
        turns = dict(max_turns=config.max_depth, max_step_tokens=config.max_step_tokens)
        greedy_runs = sample_solutions(env, policy, tasks, 1, temperature=0.0,
                                       max_tokens=max_tokens, seed=config.seed, **turns)
        # best-of-N gets the tokens the tree spent on the same task
        sampled = best_of_n(env, policy, tasks, tokens, greedy_runs,
                            temperature=config.temperature, max_tokens=max_tokens,
                            seed=config.seed + 1, **turns)
        # without answers to vote on, the game's own verdict (seen while playing) picks
        mode = "data" if config.mode == "data" or not has_answers(env) else "inference"
        per_task = [TaskBaseline.of(g, a, env, mode)
                    for g, a in zip(greedy_runs, sampled, strict=True)]
        greedy = sum(row.greedy_correct for row in per_task)
        best = sum(row.best_correct for row in per_task)
        baseline_tokens = sum(row.best_tokens for row in per_task)
    errors = [r for r in results if r.stats.counts.get("environment_errors")]
    return RunSummary(
        config.mode, len(results), sum(bool(r.solved) for r in results), greedy, best,
        sum(tokens.values()), baseline_tokens, sum(len(r.nodes) for r in results), seconds,
        searched=len(fresh), searched_tokens=sum(r.stats.tokens for r in fresh),
        statuses=dict(Counter(r.status for r in results)),
        environment_errors=sum(r.stats.counts["environment_errors"] for r in errors),
        first_error=next((r.stats.first_error for r in errors if r.stats.first_error), None),
        per_task=per_task)


# --------------------------------------------------------------------------- the run folder


def run_settings(env: PluginSpec, policy: Policy, critic: Critic, config: SearchConfig,
                 split: str) -> dict[str, Any]:
    """What makes a run's trees what they are: the environment (name and arguments), the
    policy, every critic component, the split and the search settings."""
    return settings_record(env, {"policy": policy.name, "critic": describe_critic(critic)},
                           config, split)


def settings_record(env: PluginSpec, described: dict[str, Any], config: SearchConfig,
                    split: str) -> dict[str, Any]:
    """:func:`run_settings` from a policy and critic already described (``policy``: its name,
    ``critic``: :func:`describe_critic`), e.g. by a worker that holds them."""
    return {"environment": env.to_json(), **described, "split": split,
            "search": config.model_dump(mode="json")}


def claim_run_folder(out: Path, settings: dict[str, Any], tasks: int,
                     allow_changed: bool = False) -> None:
    """Write ``out/config.yaml`` after :func:`check_run_folder`."""
    history = check_run_folder(out, settings, allow_changed)
    record = {**settings, "tasks": tasks, "versions": _versions(),
              **({"history": history} if history else {})}
    record_file = out / "config.yaml"
    try:
        write_atomic(record_file, yaml.safe_dump(record, sort_keys=False, allow_unicode=True))
    except OSError as err:
        raise UserError(f"cannot write {record_file}: {err.strerror or err}; choose a writable "
                        "--out folder") from err


def check_run_folder(out: Path, settings: Mapping[str, Any],
                     allow_changed: bool = False) -> list[dict[str, Any]]:
    """If ``out`` already holds trees, check that they were grown with ``settings`` (those
    given; speed-only ones aside): a mismatch is refused unless ``allow_changed``. Returns
    the settings history to keep (the earlier settings, when they changed)."""
    record_file = out / "config.yaml"
    if not record_file.exists() or not any(True for _ in ResultFile(out / "trees.jsonl")):
        return []
    before = _read_yaml(record_file)
    changed = settings_changes(before, settings)
    if changed and not allow_changed:
        raise RunMismatchError(
            f"{out} holds trees searched with other settings ({'; '.join(changed)}): search "
            "into a new --out folder to start a new run, or pass --allow-changed to add trees "
            "with these settings to this one deliberately")
    history = list(before.get("history", []))
    if changed:
        history.append({k: v for k, v in before.items() if k not in ("history", "versions")})
    return history


def settings_changes(before: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """Readable differences between two runs' settings ("search.seed 0 → 1",
    "critic.settings.k 4 → 8"); search settings the earlier record does not have, at any
    depth (older versions wrote fewer, e.g. ``search.engine.node_state``), are not compared,
    nor speed-only ones."""
    changes: list[str] = []
    for key, value in now.items():
        if key in before:
            _diff(key, before[key], value, changes)
    return changes


def _diff(where: str, old: Any, new: Any, changes: list[str]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            path = f"{where}.{key}"
            in_search = where == "search" or where.startswith("search.")
            if (where == "search" and key in SPEED_ONLY) or (in_search and key not in old):
                continue
            _diff(path, old.get(key), new.get(key), changes)
    elif old != new:
        changes.append(f"{where} {_short(old)} → {_short(new)}")


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def run_environment_spec(folder: Path) -> PluginSpec | None:
    """The environment a run folder's trees were grown in (None if it does not say)."""
    record_file = folder / "config.yaml"
    if not record_file.exists():
        return None
    env = _read_yaml(record_file).get("environment")
    if isinstance(env, dict):
        return PluginSpec.from_json(env, where=str(record_file))
    if isinstance(env, str):  # an older run folder: the name only
        return PluginSpec(env, None)
    return None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise UserError(f"cannot read {path}: {err}; delete it or pass the settings "
                        "explicitly") from err
    if not isinstance(data, dict):
        raise UserError(f"{path} does not hold a mapping of run settings; delete it or pass "
                        "the settings explicitly")
    return data


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"mcts_agent": __version__, "python": platform.python_version()}
    for package in ("numpy", "numba", "torch", "transformers", "vllm"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            continue
    return out


def check_environment_runs(env: Environment, task: Task) -> None:
    """Reset ``task`` and render its prompt before any model loads: a plug-in that breaks
    there is named at once, not after minutes of model loading."""
    try:
        prompt = env.prompt(env.reset(task))
    except Exception as err:
        raise PluginError(f"environment {env.name!r}: reset/prompt failed on task {task.id!r}: "
                          f"{type(err).__name__}: {err}") from err
    if not isinstance(prompt, (str, list)) or (isinstance(prompt, list) and not all(
            isinstance(m, dict) and {"role", "content"} <= set(m) for m in prompt)):
        raise PluginError(f"environment {env.name!r}: prompt() returned "
                          f"{type(prompt).__name__}; return a string or a list of "
                          "{'role': ..., 'content': ...} messages")
    try:  # a score outside [0, 1] would otherwise surface only at the first finished state
        root_score = env.score(env.reset(task), task)
    except Exception:  # scoring an unfinished state may legitimately fail
        return
    if root_score is not None:
        check_score(env, root_score, task)
