"""From trees to a better policy in one script: search, mine step-level pairs, train with DPO.

    python examples/pairs_to_dpo.py

Searches a few training problems with the shipped tiny reasoner (data mode, no early stop so the
trees keep their wrong branches), mines confident sibling pairs, writes them as a dataset
(JSONL + Parquet + card) and runs a short DPO + NLL training with TRL. `mcts-agent iterate`
does the same in rounds, with held-out evaluation and resume.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from mcts_agent.data import PairConfig, mine_pairs, write_rows
from mcts_agent.registry import environments
from mcts_agent.search import SearchConfig
from mcts_agent.search.run import load_policy, run_search
from mcts_agent.train import TrainConfig, train_policy


def main(num_tasks: int = 8) -> None:
    torch.set_num_threads(1)
    out = Path(tempfile.mkdtemp(prefix="pairs-to-dpo-"))
    env = environments.create("arith")
    policy = load_policy()
    config = SearchConfig(simulations=6, expand_n=4, stop_when_solved=False, max_step_tokens=24)
    summary, results = run_search(env, tasks=env.tasks(num_tasks, split="train"), policy=policy,
                                  config=config, rollouts=2, out_dir=out / "search",
                                  baselines=False)
    rows, counts = mine_pairs(results, env, PairConfig(min_margin=0.3))
    print(f"{summary.tasks} trees ({summary.mcts_solved} solved) → {len(rows)} pairs "
          f"{dict(counts)}")
    for row in rows[:3]:
        print(f"  after {row['prompt']!r}: {row['chosen']!r} ≻ {row['rejected']!r} "
              f"(values {row['chosen_value']:.2f} vs {row['rejected_value']:.2f}, "
              f"confidence {row['confidence']:.2f})")
    paths = write_rows(rows, out / "data", "pairs", stats=counts)
    print("dataset:", ", ".join(str(p) for p in paths.values()))
    if rows:
        report = train_policy(policy.model.name_or_path, rows, out / "model",
                              TrainConfig(beta=5.0, nll_weight=1.0, epochs=1, batch_size=8))
        print(f"DPO + NLL: {report.steps} steps, loss {report.loss:.3f}, model in "
              f"{report.out_dir}")


if __name__ == "__main__":
    main()
