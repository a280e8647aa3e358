"""Does tree search help on code? Greedy vs best-of-N vs MCTS on program-writing tasks.

    python bench/code.py                          # tiny suite + a HumanEval subset + sandbox
    python bench/code.py --tasks 40 --humaneval 0 # a quicker look at the tiny suite only

Tiny suite: held-out `code-gen` tasks with the shipped tiny code model. HumanEval: the first
``--humaneval`` problems of its test split with SmolLM2-135M-Instruct (the chat model the toolkit
ships). At the same generated-token budget per problem (best-of-N samples as many programs as
fit in the tokens the tree spent on that problem):

* greedy: one program, graded on the hidden tests;
* best-of-N: N sampled programs; the one passing most of the *visible* tests (the examples in
  the prompt; ties to the surest, by mean log-probability per token, as the tree's pick) is
  graded on the hidden tests — no reference used to choose;
* MCTS inference: the search sees only the visible tests (the verifier runs them on finished
  programs); the chosen program is graded on the hidden tests;
* MCTS data: the hidden tests judge finished programs during the search (solved = a program in
  the tree passes them all; training-data generation, not a fair inference comparison).

Every program runs in the sandbox. The last line is one JSON object:
{"tiny": {...}, "humaneval": {...}, "sandbox": {...}}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mcts_agent.contracts import load_tasks  # noqa: E402
from mcts_agent.llm.base import Policy  # noqa: E402
from mcts_agent.registry import PluginSpec, environments  # noqa: E402
from mcts_agent.search import SearchConfig  # noqa: E402
from mcts_agent.search.baselines import best_of_n, sample_solutions  # noqa: E402
from mcts_agent.search.critic_specs import build_critic  # noqa: E402
from mcts_agent.search.run import load_policy, run_search  # noqa: E402

console = Console(highlight=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100,
                        help="held-out tiny-suite tasks (0: skip)")
    parser.add_argument("--humaneval", type=int, default=10, help="HumanEval problems (0: skip)")
    parser.add_argument("--simulations", type=int, default=16)
    parser.add_argument("--expand-n", type=int, default=4)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--critic", action="append", default=None,
                        help="critic spec(s) of the searches (default: verifier — finished "
                        "programs judged by the visible tests in inference mode); e.g. "
                        "rollout=2: Monte Carlo rollouts, grafted and judged the same way")
    parser.add_argument("--sandbox", action=argparse.BooleanOptionalAction, default=True,
                        help="also run bench/sandbox.py's figures")
    parser.add_argument("--out", type=Path, default=None, help="keep the run folders here")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-code-"))
    report: dict[str, Any] = {}
    from mcts_agent.models.tiny_code import TINY_CODE_DIR

    if args.tasks:
        report["tiny"] = compare("code-gen", {}, load_policy(TINY_CODE_DIR), args.tasks, args,
                                 out / "tiny", max_depth=10, step_tokens=40, data_mode=True)
    if args.humaneval:
        from mcts_agent.models.smollm2 import smollm2_path

        report["humaneval"] = compare("humaneval", {}, load_policy(smollm2_path()),
                                      args.humaneval, args, out / "humaneval", max_depth=16,
                                      step_tokens=48, data_mode=False)
    if args.sandbox:
        report["sandbox"] = sandbox_figures()
    if tiny := report.get("tiny"):
        report["targets"] = {
            "tiny_mcts_inference_at_least_1.3x_greedy":
                tiny["mcts_inference"] >= 1.3 * max(tiny["greedy"], 1e-9),
            "tiny_mcts_inference_above_best_of_n": tiny["mcts_inference"] > tiny["best_of_n"],
        }
    report["settings"] = {k: str(v) for k, v in vars(args).items()}
    console.print(f"run folders: {out}")
    print(json.dumps(report))
    return 0


def compare(name: str, env_args: dict[str, Any], policy: Policy, n: int,
            args: argparse.Namespace, out: Path, *, max_depth: int, step_tokens: int,
            data_mode: bool) -> dict[str, Any]:
    """Greedy, best-of-N (chosen by visible tests), MCTS inference (and MCTS data) on ``n``
    held-out tasks of environment ``name``; solve rates on the hidden tests."""
    env = environments.create(name, **env_args)
    tasks = load_tasks(env, n, split="test", seed=args.seed)
    started = time.perf_counter()
    row: dict[str, Any] = {"tasks": len(tasks)}
    records = {}
    for mode in ("inference", "data") if data_mode else ("inference",):
        config = SearchConfig(mode=mode, simulations=args.simulations, expand_n=args.expand_n,
                              temperature=args.temperature, seed=args.seed, max_depth=max_depth,
                              max_step_tokens=step_tokens)
        critic = build_critic(args.critic or ["verifier"], policy, config)
        summary, results = run_search(env, tasks=tasks, env_spec=PluginSpec(name, env_args),
                                      policy=policy, config=config, critic=critic,
                                      out_dir=out / mode, baselines=False, cache=False)
        records[mode] = results
        row[f"mcts_{mode}"] = summary.mcts_solved / max(len(tasks), 1)
        row[f"tokens_{mode}"] = summary.tokens
    budget = {r.task.id: r.stats.tokens for r in records["inference"]}
    max_tokens = step_tokens * max_depth
    greedy = sample_solutions(env, policy, tasks, 1, temperature=0.0, max_tokens=max_tokens,
                              seed=args.seed)
    row["greedy"] = sum(a.any_correct for a in greedy) / max(len(tasks), 1)
    sampled = best_of_n(env, policy, tasks, budget, greedy, oversample=2.0,
                        temperature=args.temperature, max_tokens=max_tokens, seed=args.seed + 1)
    counts = [len(a.texts) for a in sampled]
    row["best_of_n"] = sum(a.picked_correct(env) for a in sampled) / max(len(tasks), 1)
    row["best_of_n_oracle"] = sum(a.any_correct for a in sampled) / max(len(tasks), 1)
    row["tokens"] = row["tokens_inference"]
    row["best_of_n_tokens"] = sum(a.tokens for a in sampled)
    row["mean_n"] = sum(counts) / max(len(counts), 1)
    row["seconds"] = round(time.perf_counter() - started, 1)
    _table(name, row)
    return row


def _table(name: str, row: dict[str, Any]) -> None:
    table = Table(title=f"{name}: {row['tasks']} held-out problems (share solved, hidden tests)")
    for column in ("method", "solved", "tokens"):
        table.add_column(column)
    table.add_row("greedy", f"{row['greedy']:.1%}", "")
    table.add_row(f"best-of-N (visible tests pick; mean N {row['mean_n']:.1f})",
                  f"{row['best_of_n']:.1%}", f"{row['best_of_n_tokens']:,}")
    table.add_row("best-of-N oracle (any passes)", f"{row['best_of_n_oracle']:.1%}", "")
    table.add_row("MCTS inference (visible tests)", f"{row['mcts_inference']:.1%}",
                  f"{row['tokens_inference']:,}")
    if "mcts_data" in row:
        table.add_row("MCTS data (hidden tests)", f"{row['mcts_data']:.1%}",
                      f"{row['tokens_data']:,}")
    console.print(table)


def sandbox_figures() -> dict[str, Any]:
    """The sandbox's own bench (bench/sandbox.py), its last line."""
    import subprocess

    done = subprocess.run([sys.executable, str(ROOT / "bench" / "sandbox.py")],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    sys.exit(main())
