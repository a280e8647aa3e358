"""Does training on what the search found make the model better? Three ways, side by side.

    python bench/self_improve.py          # 3 rounds × 512 tasks, ~50 min on 2 cores
    python bench/self_improve.py --tasks 64 --rounds 1 --eval-tasks 50   # a quick look

From the shipped tiny reasoner, with the same search settings (and so about the same search
tokens) per round, three self-improvement runs (`mcts-agent iterate`):

* ``step_dpo``:    step-level DPO on sibling pairs mined over whole trees (Wilson-gated);
* ``outcome_dpo``: DPO on whole solutions, a verified one against a wrong one;
* ``sft``:         SFT on the best verified path of each tree (STaR / ReST);
* ``step_dpo_continuation`` (only when named in ``--methods``): step-level pairs whose sides
  carry the best line under each step down to the answer.

Each round searches fresh training problems with the current model, mines, trains and
measures held-out greedy accuracy (and pass@k) on the same 200 test problems. Runs resume
where they stopped (``--out``). The table goes to ``docs/results.md`` (``--results``); the last
line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.sections import write_section  # noqa: E402
from mcts_agent.data import PairConfig  # noqa: E402
from mcts_agent.search import SearchConfig  # noqa: E402
from mcts_agent.train import TrainConfig  # noqa: E402
from mcts_agent.train.iterate import IterateConfig, iterate  # noqa: E402

METHODS = ("step_dpo", "outcome_dpo", "sft")
EXTRA = ("step_dpo_continuation",)  # each side = its step + the best line under it


def settings(method: str, args: argparse.Namespace) -> IterateConfig:
    """One method's run; everything but what is mined and how it is trained is shared."""
    train = dict(learning_rate=args.lr, epochs=args.epochs, batch_size=32, threads=args.threads,
                 beta=args.beta, nll_weight=args.nll_weight)
    if method == "sft":
        train = {**train, "method": "sft", "beta": 0.1, "nll_weight": 0.0}
    strategy = "outcome" if method == "outcome_dpo" else "sibling"
    completion = "continuation" if method == "step_dpo_continuation" else "step"
    return IterateConfig(
        env="arith", rounds=args.rounds, tasks_per_round=args.tasks, eval_tasks=args.eval_tasks,
        eval_k=8, rollouts=4, seed=args.seed,
        search=SearchConfig(simulations=args.simulations, stop_when_solved=False),
        pairs=PairConfig(strategy=strategy, completion=completion, max_per_depth=8,
                         max_per_tree=32),
        train=TrainConfig(**train))


def results_table(runs: dict[str, list[dict]]) -> str:
    rounds = max(len(rows) for rows in runs.values())
    head = "| round | " + " | ".join(f"{m} greedy | {m} pass@8 | {m} rows" for m in runs) + " |"
    lines = [head, "|" + "---|" * (1 + 3 * len(runs))]
    for r in range(rounds):
        cells = []
        for rows in runs.values():
            row = rows[r] if r < len(rows) else {}
            cells += [_pct(row.get("greedy_acc")), _pct(row.get("pass_at_k")),
                      str(row.get("rows", "—"))]
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=512, help="training problems per round")
    parser.add_argument("--eval-tasks", type=int, default=200)
    parser.add_argument("--simulations", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--beta", type=float, default=5.0,
                        help="DPO beta; large: only pairs the model still gets wrong pull")
    parser.add_argument("--nll-weight", type=float, default=1.0)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-self-improve")
    parser.add_argument("--results", type=Path, default=None,
                        help="write the table here (e.g. docs/results.md)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    methods = [m for m in args.methods.split(",") if m]
    unknown = set(methods) - set(METHODS) - set(EXTRA)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; choose from {METHODS + EXTRA}")
    started = time.perf_counter()
    runs = {}
    for method in methods:
        runs[method] = iterate(settings(method, args), args.out / method,
                               report=lambda line, m=method: print(f"[{m}] {line}", flush=True))
    table = results_table(runs)
    print(table)
    final = {m: rows[-1]["greedy_acc"] for m, rows in runs.items()}
    summary = {
        "start_acc": next(iter(runs.values()))[0]["greedy_acc"],
        "step_dpo_acc": final.get("step_dpo"), "outcome_dpo_acc": final.get("outcome_dpo"),
        "sft_acc": final.get("sft"), "rounds": args.rounds, "tasks_per_round": args.tasks,
        "eval_tasks": args.eval_tasks,
        "per_round": {m: [row["greedy_acc"] for row in rows] for m, rows in runs.items()},
        "rows_per_round": {m: [row.get("rows") for row in rows[1:]] for m, rows in runs.items()},
        "search_tokens": {m: [row.get("search_tokens") for row in rows[1:]]
                          for m, rows in runs.items()},
        # search + training time of every round, also when this call only resumed a run
        "compute_seconds": round(sum((row.get("search_seconds") or 0)
                                     + (row.get("train_seconds") or 0)
                                     for rows in runs.values() for row in rows), 1),
        "seconds": round(time.perf_counter() - started, 1),
    }
    if args.results is not None:
        details = {m: (args.out / m / "rounds.md").read_text() for m in runs}
        write_results(args.results, table, summary, details)
    print(json.dumps(summary))
    return 0


def write_results(path: Path, table: str, summary: dict, details: dict[str, str]) -> None:
    """This run's section of ``path`` (between its markers)."""
    command = "python bench/self_improve.py " + " ".join(sys.argv[1:])
    per_method = "".join(f"\n`{m}` (every measure; `rows` = training rows mined):\n\n{md}"
                         for m, md in details.items())
    section = (
        f"## Self-improvement on `arith` (bench/self_improve.py)\n\n"
        f"Command: `{command.strip()}` · {summary['compute_seconds'] / 60:.0f} min of search "
        "and training on this machine.\n\n"
        "Held-out greedy accuracy and pass@8 (%, the same test problems every round), and the "
        "training rows mined per round, from the shipped tiny reasoner. Round 0 is the "
        "starting model.\n\n" + table + "\n" + per_method + "\n```json\n"
        + json.dumps(summary) + "\n```")
    write_section(path, "self_improve", section)


if __name__ == "__main__":
    raise SystemExit(main())
