"""Does tree search help the shipped tiny reasoner? MCTS vs greedy vs best-of-N on `arith`.

    python bench/search.py                # 200 held-out problems, data and inference mode
    python bench/search.py --tasks 40     # a quicker look

Both modes use the same model, tasks and settings; best-of-N gets, per task, as many samples
as fit in the tokens the tree spent there. Data mode: solved = a verified-correct solution was
found (the verifier may use the reference). Inference mode: solved = the answer chosen without
the reference is correct (rollouts score nodes by agreement with the majority answer).
The last line printed is one JSON object: {"data": {...}, "inference": {...}}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mcts_agent.search import SearchConfig  # noqa: E402
from mcts_agent.search.run import load_policy, run_search  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--simulations", type=int, default=16)
    parser.add_argument("--expand-n", type=int, default=4)
    parser.add_argument("--rollouts", type=int, default=4)
    parser.add_argument("--temperature", type=float, default=0.7,
                        help="sampling temperature of expansions, rollouts and best-of-N alike")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    console = Console(highlight=False)
    policy = load_policy()
    report = {}
    for mode in ("data", "inference"):
        config = SearchConfig(mode=mode, simulations=args.simulations, expand_n=args.expand_n,
                              temperature=args.temperature, seed=args.seed, max_depth=8,
                              max_step_tokens=24)
        out = Path(tempfile.mkdtemp(prefix=f"bench-search-{mode}-"))
        started = time.perf_counter()
        summary, _ = run_search("arith", tasks=args.tasks, policy=policy, config=config,
                                rollouts=args.rollouts, out_dir=out)
        seconds = time.perf_counter() - started
        shutil.rmtree(out)
        report[mode] = {
            "tasks": summary.tasks, "greedy_solved": summary.greedy_solved,
            "best_of_n_solved": summary.best_of_n_solved, "mcts_solved": summary.mcts_solved,
            "tokens": summary.tokens, "best_of_n_tokens": summary.baseline_tokens,
            "nodes": summary.nodes, "search_seconds": summary.seconds, "seconds": seconds,
            "nodes_per_s": summary.nodes / summary.seconds,
            "tokens_per_s": summary.tokens / summary.seconds,
            "mcts_over_greedy": summary.mcts_solved / max(summary.greedy_solved or 0, 1),
        }
        table = Table(title=f"{mode} mode, {summary.tasks} held-out arith problems")
        for column in ("method", "solved", "tokens"):
            table.add_column(column)
        table.add_row("greedy", str(summary.greedy_solved), "")
        table.add_row("best-of-N", str(summary.best_of_n_solved), f"{summary.baseline_tokens:,}")
        table.add_row("MCTS", str(summary.mcts_solved), f"{summary.tokens:,}")
        console.print(table)
    report["targets"] = {
        "data_mcts_at_least_1.5x_greedy": report["data"]["mcts_over_greedy"] >= 1.5,
        "inference_mcts_beats_greedy":
            report["inference"]["mcts_solved"] > (report["inference"]["greedy_solved"] or 0),
    }
    report["settings"] = vars(args)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
