"""The self-improvement loop: search → mine → train → evaluate, N rounds, resumable.

A run folder holds one sub-folder per round::

    run/iterate.yaml            the resolved settings (a resumed run must use the same)
    run/round_0/eval.json       the starting policy, measured on the held-out tasks
    run/round_1/balance.json    B-STaR's temperature choice (only with ``balance``)
    run/round_1/search/         trees.jsonl (resumes tree by tree), summary.json
    run/round_1/data/           the mined rows (JSONL + Parquet + dataset card)
    run/round_1/model/          the trained policy (save_pretrained) + training.json
    run/round_1/eval.json       the trained policy on the held-out tasks
    run/rounds.json, rounds.md, rounds.png   one row per round, rewritten after each round

Every step writes its output last, so an interrupted run redoes at most the step in flight.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, Field

from ..contracts import load_tasks
from ..data import PairConfig, mine_rows, read_rows, write_rows
from ..data.splice import SpliceConfig, splice_rows
from ..errors import RunMismatchError
from ..files import read_marker, write_json
from ..llm.base import Policy
from ..llm.load import BackendConfig, load_policy
from ..metrics import PolicyMetrics, evaluate_policy
from ..models.tiny import TINY_ARITH_DIR
from ..registry import PluginSpec, environments
from ..scale import RayConfig
from ..search import SearchConfig
from ..search.run import SPEED_ONLY, run_search
from ..settings import Settings
from ..trees import ResultFile, TreeRecord
from .balance import BalanceConfig, choose_margin, choose_temperature
from .config import TrainConfig
from .trainers import train_policy

log = logging.getLogger(__name__)

Report = Callable[[str], Any]


class IterateConfig(Settings):
    """Settings of a self-improvement run.

    What is trained follows from ``pairs`` and ``train``: ``train.method="dpo"`` trains on
    preference pairs mined with ``pairs.strategy`` (``sibling``: step-level; ``path``: the
    MCTS-DPO rule; ``outcome``: whole solutions); ``train.method="sft"`` trains on the best
    verified paths (STaR / ReST).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    env: str = Field("arith", description="Environment name (see `mcts-agent envs`).")
    env_args: dict[str, Any] = Field(default_factory=dict)
    model: str | None = Field(None, description="Starting model folder; None = the shipped "
                              "tiny reasoner.")
    rounds: int = Field(3, ge=1)
    tasks_per_round: int = Field(128, ge=1, description="Fresh training tasks searched per "
                                 "round (train split).")
    eval_tasks: int = Field(200, ge=1, description="Held-out tasks (test split), the same "
                            "every round.")
    eval_k: int = Field(8, ge=1, description="Samples per held-out task for pass@k and "
                        "the B-STaR measures.")
    rollouts: int = Field(4, ge=1, description="Monte Carlo rollouts per node (the critic).")
    reference: Literal["previous", "initial"] = Field(
        "previous", description="DPO's reference model: the previous round's policy, or the "
        "starting one throughout (as MCTS-DPO does).")
    sft_per_tree: int = Field(1, ge=1, description="SFT: verified solutions kept per tree.")
    sft_data: Literal["solutions", "splice"] = Field(
        "solutions", description="SFT on verified solutions only, or (agents) on Agent-R "
        "failure → recovery splices plus won trajectories, turn by turn.")
    splice: SpliceConfig = Field(default_factory=SpliceConfig,
                                 description="How splices are cut (sft_data=splice).")
    device: str = "cpu"
    backend: BackendConfig = Field(
        default_factory=BackendConfig, description="What serves the policy in search and "
        "evaluation: hf, or vllm (one engine for the whole run, reloaded with each round's "
        "trained weights).")
    seed: int = 0
    search: SearchConfig = Field(default_factory=lambda: SearchConfig(stop_when_solved=False))
    pairs: PairConfig = Field(
        default_factory=lambda: PairConfig(completion="continuation"),
        description="Sibling pairs whose sides carry the best line down to the answer: the "
        "best of the measured variants on arith (docs/results.md).")
    train: TrainConfig = Field(
        default_factory=lambda: TrainConfig(beta=5.0, nll_weight=1.0),
        description="DPO + NLL with a large beta by default: on the shipped tiny reasoner plain "
        "DPO at beta 0.1 wrecked held-out accuracy (35.5 % → 13 %) while beta 5 with NLL "
        "raised it (→ 45 %); see docs/results.md.")
    balance: BalanceConfig | None = Field(
        None, description="B-STaR: each round, choose the search temperature (on a probe of "
        "training tasks) and the pair threshold (on the round's trees) that maximise the "
        "balance score, instead of search.temperature and pairs.min_margin.")
    ray: RayConfig | None = Field(
        None, description="Run each round's search and the held-out evaluation on a Ray "
        "cluster (pip install 'mcts-agent[ray]'); training stays a TRL run in this process. "
        "Speed only: a run may resume with or without it.")


def iterate(config: IterateConfig, out_dir: str | Path, report: Report = log.info,
            on_tree: Callable[[TreeRecord], Any] | None = None) -> list[dict[str, Any]]:
    """Run (or resume) ``config.rounds`` rounds in ``out_dir``; returns one row per round
    (round 0 = the starting policy). ``report`` gets a line per step, ``on_tree`` each tree
    as its search finishes (for progress bars)."""
    out = Path(out_dir)
    _claim(out, config)
    env = environments.create(config.env, **config.env_args)
    held_out = load_tasks(env, config.eval_tasks, split="test")
    start = model = config.model or str(TINY_ARITH_DIR)
    policies = (_RayPolicies(config, model, report) if config.ray is not None
                else _PolicyCache(config.device, config.backend))
    try:
        rows = [_evaluate(out / "round_0", env, policies, model, held_out, config, report, 0)]
        _write_table(out, rows)
        for r in range(1, config.rounds + 1):
            folder = out / f"round_{r}"
            temperature = _temperature(folder, env, policies, model, config, r, report)
            search = _search(folder / "search", env, policies, model, config, r, report,
                             on_tree, temperature)
            data, mined = _mine(folder / "data", env, search, config, r, report)
            trained = _train(folder / "model", policies, model, start, data, config, r, report)
            model = str(folder / "model") if trained else model
            row = _evaluate(folder, env, policies, model, held_out, config, report, r)
            row.update(search=search, mined=mined, trained=trained, temperature=temperature)
            rows.append(_flatten(row))
            _write_table(out, rows)
    finally:
        if isinstance(policies, _RayPolicies):
            policies.close()
    return rows


class _PolicyCache:
    """The policy of one model folder, loaded once for the evaluation and the next round's
    search that both use it (lazily: a resumed run that skips both never loads it). An engine
    that can swap weights in place (vLLM) is started once and reloaded with each new model."""

    def __init__(self, device: str, backend: BackendConfig) -> None:
        self.device = device
        self.backend = backend
        self.model: str | None = None
        self.policy: Policy | None = None

    def get(self, model: str) -> Policy:
        if self.policy is not None and model != self.model and hasattr(self.policy, "reload"):
            self.policy.reload(model)
            self.model = model
        if self.policy is None or model != self.model:
            self.policy = None  # drop the old model before loading the next
            self.model, self.policy = model, load_policy(model, backend=self.backend,
                                                         device=self.device)
        return self.policy

    def release(self) -> None:
        """Free the model before training loads its own copy; an engine that reloads in
        place is kept (starting it again would cost more than it holds)."""
        if not hasattr(self.policy, "reload"):
            self.model = self.policy = None


class _RayPolicies:
    """``iterate`` on a Ray cluster: one pool of search workers for the whole run (started
    when first needed), switched to each round's model; evaluation goes through the workers'
    policies too."""

    def __init__(self, config: IterateConfig, model: str, report: Report) -> None:
        self.config, self.model, self.report = config, model, report
        self.pool: Any = None

    def get(self, model: str) -> Policy:
        from ..scale.ray_search import PoolPolicy, WorkerJob, WorkerPool

        cfg = self.config
        if self.pool is None:
            job = WorkerJob(PluginSpec(cfg.env, dict(cfg.env_args)), model, cfg.backend,
                            cfg.device, ("rollout",), cfg.rollouts, cfg.search,
                            None if cfg.ray.gpus_per_worker else int(cfg.ray.cpus_per_worker))
            self.pool = WorkerPool(job, cfg.ray, self.report)
        elif model != self.pool.job.model:
            self.pool.configure(model, self.pool.job.config)
        self.model = model
        return PoolPolicy(self.pool, self.pool.describe()["policy"])

    def release(self) -> None:
        """Training runs here; the workers keep their own resources."""

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()


Policies = _PolicyCache | _RayPolicies


# --------------------------------------------------------------------------- the four steps


def _temperature(folder: Path, env: Any, policies: Policies, model: str,
                 config: IterateConfig, r: int, report: Report) -> float:
    """The round's search temperature: B-STaR's pick on a probe (stored, so a resumed run
    keeps it), or the configured one."""
    if config.balance is None:
        return config.search.temperature
    done = folder / "balance.json"
    if (choice := read_marker(done)) is not None:
        return float(choice["temperature"])
    probe = load_tasks(env, config.balance.probe_tasks, split="train",
                       seed=config.seed * 1000 + 500 + r)  # apart from the round's tasks
    s = config.search
    temperature, scores = choose_temperature(
        env, policies.get(model), probe, config.balance, seed=config.seed + r,
        max_tokens=s.max_step_tokens * s.max_depth, max_turns=s.max_depth,
        max_step_tokens=s.max_step_tokens)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(done, {"temperature": temperature,
                      "scores": {str(t): v for t, v in scores.items()}})
    report(f"round {r}: B-STaR temperature {temperature} (balance "
           + ", ".join(f"{t}: {v:.3f}" for t, v in scores.items()) + ")")
    return temperature


def _search(folder: Path, env: Any, policies: Policies, model: str, config: IterateConfig,
            r: int, report: Report, on_tree: Callable[[TreeRecord], Any] | None,
            temperature: float) -> dict[str, Any]:
    summary_file = folder / "summary.json"
    if (summary := read_marker(summary_file)) is not None:
        report(f"round {r}: search done before")
        return summary
    seed = config.seed * 1000 + r  # fresh problems and samples every round
    search = config.search.model_copy(update={"seed": seed, "temperature": temperature})
    tasks = load_tasks(env, config.tasks_per_round, split="train", seed=seed)
    report(f"round {r}: searching {len(tasks)} training tasks")
    if isinstance(policies, _RayPolicies):
        from ..scale.ray_search import run_ray_search

        policies.get(model)
        summary, _ = run_ray_search(PluginSpec(config.env, dict(config.env_args)), tasks=tasks,
                                    split="train", pool=policies.pool,
                                    config=search,
                                    rollouts=config.rollouts, out_dir=folder, baselines=False,
                                    on_result=on_tree)
        return summary.to_dict()
    summary, _ = run_search(env, tasks=tasks, split="train",
                            env_spec=PluginSpec(config.env, dict(config.env_args)),
                            policy=policies.get(model),
                            config=search,
                            rollouts=config.rollouts, out_dir=folder, baselines=False,
                            on_result=on_tree)
    return summary.to_dict()


def _mine(folder: Path, env: Any, search: dict[str, Any], config: IterateConfig, r: int,
          report: Report) -> tuple[Path, dict[str, Any]]:
    name = "pairs" if config.train.method == "dpo" else (
        "splice" if config.sft_data == "splice" else "sft")
    stats_file = folder / f"{name}.stats.json"
    if (stats := read_marker(stats_file)) is not None:
        return folder / f"{name}.jsonl", stats
    results = list(ResultFile(folder.parent / "search" / "trees.jsonl"))
    if name == "splice":
        _, rows, stats = splice_rows(results, env, config.splice,
                                     success_per_tree=config.sft_per_tree)
    elif name == "pairs" and config.balance is not None:
        pairs, rows, stats, scores = choose_margin(results, env, config.pairs, config.balance)
        stats = {**stats, "rows": len(rows), "min_margin": pairs.min_margin,
                 "balance": {str(m): v for m, v in scores.items()}}
        report(f"round {r}: B-STaR pair threshold {pairs.min_margin} (balance "
               + ", ".join(f"{m}: {v:.3f}" for m, v in scores.items()) + ")")
    else:
        rows, stats = mine_rows(name, results, env, config.pairs, per_tree=config.sft_per_tree)
    write_rows(rows, folder, name, stats=stats,
               description=f"round {r} of an `mcts-agent iterate` run ({name})")
    report(f"round {r}: {len(rows)} {name} rows from {len(results)} trees "
           f"({search.get('mcts_solved', '?')} solved)")
    return folder / f"{name}.jsonl", dict(stats)


def _train(folder: Path, policies: Policies, model: str, start: str, data: Path,
           config: IterateConfig, r: int, report: Report) -> dict[str, Any] | None:
    done = folder / "training.json"
    if (marker := read_marker(done)) is not None and isinstance(marker.get("report"), dict):
        return marker["report"]
    rows = read_rows(data)
    if not rows:
        report(f"round {r}: nothing to train on; the policy stays as it was")
        return None
    report(f"round {r}: training ({config.train.method}) on {len(rows)} rows")
    policies.release()  # training loads its own copy: do not hold two models
    return train_round(folder, model, start, rows, config, r).to_dict()


def train_round(folder: Path, model: str, start: str, rows: list[dict[str, Any]],
                config: IterateConfig, r: int) -> Any:
    """Round ``r``'s training of ``model`` on ``rows`` into ``folder``, as ``iterate`` does it
    (the round's seed; DPO's reference model per ``config.reference``, ``start`` being the
    run's first model): for a caller that trains a round again, e.g. with another seed."""
    reference = start if config.train.method == "dpo" and config.reference == "initial" else None
    train = config.train.model_copy(update={"seed": config.train.seed + r})
    return train_policy(model, rows, folder, train, reference=reference)


def _evaluate(folder: Path, env: Any, policies: Policies, model: str, tasks: list,
              config: IterateConfig, report: Report, r: int) -> dict[str, Any]:
    done = folder / "eval.json"
    if (row := read_marker(done)) is not None:
        return row
    metrics: PolicyMetrics = evaluate_policy(
        env, policies.get(model), tasks, k=config.eval_k, temperature=config.search.temperature,
        max_tokens=config.search.max_step_tokens * config.search.max_depth, seed=config.seed,
        max_turns=config.search.max_depth, max_step_tokens=config.search.max_step_tokens)
    row = {"round": r, "model": model, **metrics.to_dict()}
    folder.mkdir(parents=True, exist_ok=True)
    write_json(done, row)
    report(f"round {r}: held-out greedy {metrics.greedy_acc:.1%}, pass@{config.eval_k} "
           f"{metrics.pass_at_k:.1%}")
    return row


# --------------------------------------------------------------------------- run folder


def _claim(out: Path, config: IterateConfig) -> None:
    """Write the settings, or check that a resumed run uses the same ones."""
    out.mkdir(parents=True, exist_ok=True)
    settings = out / "iterate.yaml"
    wanted = config.model_dump(mode="json")
    if settings.exists():
        before = yaml.safe_load(settings.read_text())
        changed = sorted(k for k in wanted if k not in ("rounds", "ray")
                         and _comparable(before.get(k)) != _comparable(wanted[k]))
        if changed:
            raise RunMismatchError(f"{out} holds a run with other settings ({', '.join(changed)});"
                                   " resume with the same settings or choose a new --out folder")
    settings.write_text(yaml.safe_dump(wanted, sort_keys=False))


def _comparable(section: Any) -> Any:
    """A settings section without what only changes speed (CPU threads; the search's driver,
    trees in flight and cohorts)."""
    speed_only = SPEED_ONLY | {"threads"}
    return {k: v for k, v in section.items() if k not in speed_only} if isinstance(
        section, dict) else section


COLUMNS = ("round", "greedy_acc", "pass_at_1", "pass_at_k", "distinct_correct", "diversity",
           "pick_acc", "exploitation", "rows", "search_tokens", "solved", "train_loss")


def _flatten(row: dict[str, Any]) -> dict[str, Any]:
    search, mined, trained = row.pop("search"), row.pop("mined"), row.pop("trained")
    return {**row, "rows": mined.get("rows", 0), "search_tokens": search.get("tokens"),
            "solved": f"{search.get('mcts_solved')}/{search.get('tasks')}",
            "train_loss": trained and trained.get("loss"),
            "train_seconds": trained and trained.get("seconds"),
            "min_margin": mined.get("min_margin"),
            "search_seconds": search.get("seconds")}


def _write_table(out: Path, rows: list[dict[str, Any]]) -> None:
    write_json(out / "rounds.json", rows)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in COLUMNS) + " |" for row in rows]
    (out / "rounds.md").write_text("\n".join(lines) + "\n")
    plot_rounds(rows, out / "rounds.png")


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def plot_rounds(rows: list[dict[str, Any]], path: Path) -> None:
    """A PNG of the held-out measures per round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = rows[0].get("k", "k")
    series = {"greedy_acc": "greedy", "pass_at_k": f"pass@{k}",
              "pick_acc": f"majority of {k} samples"}
    fig, ax = plt.subplots(figsize=(6, 3.5))
    rounds = [row["round"] for row in rows]
    for name, label in series.items():
        ax.plot(rounds, [row.get(name) for row in rows], marker="o", label=label)
    ax.set_title("held-out accuracy per round (round 0: the starting policy)", fontsize=10)
    ax.set_xlabel("round")
    ax.set_ylabel("share of held-out tasks")
    ax.set_xticks(rounds)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
