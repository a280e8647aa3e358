"""Search → labels → reward model → fitted hybrid → search again, in one script.

    python examples/critics_hybrid.py

Searches training problems in data mode, mines Math-Shepherd-style stepwise labels and trains a
reward model on them; searches other problems in inference mode, fits hybrid weights (rollouts +
reward model) against verified outcomes, and searches held-out problems with the hybrid. Each
critic's AUROC is printed. `bench/critics.py` does the same at scale.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from critics.hybrid import HybridCritic
from critics.reward_model import RewardModelCritic
from critics.rollout import RolloutCritic
from critics.verifier import VerifierCritic
from mcts_agent.critic_eval import evaluate_critics, fit_hybrid, markdown_table
from mcts_agent.data import stepwise_rows
from mcts_agent.data.labels import labelled_nodes
from mcts_agent.registry import environments
from mcts_agent.search import SearchConfig
from mcts_agent.search.run import load_policy, run_search
from mcts_agent.train.reward_model import RewardModelConfig, train_reward_model


def main() -> None:
    torch.set_num_threads(1)
    out = Path(tempfile.mkdtemp(prefix="critics-hybrid-"))
    env = environments.create("arith")
    policy = load_policy()
    train = env.tasks(40, split="train")

    data = SearchConfig(mode="data", simulations=6, stop_when_solved=False)
    _, trees = run_search(env, tasks=train[:24], policy=policy, config=data, rollouts=2,
                          baselines=False)
    rows = stepwise_rows(trees, env)
    report = train_reward_model(rows, out / "rm", config=RewardModelConfig(epochs=2, threads=1))
    print(f"reward model: {report.rows} paths, {report.prefixes} prefixes, "
          f"{report.seconds:.1f} s")

    infer = SearchConfig(mode="inference", simulations=8, max_tokens=400)
    _, fit_trees = run_search(env, tasks=train[24:], policy=policy, config=infer, rollouts=2,
                              baselines=False)
    parts = {"rollout": RolloutCritic(policy, k=2, mode="inference"),
             "reward-model": RewardModelCritic(out / "rm")}
    nodes = labelled_nodes(fit_trees, env, max_per_tree=8)
    scores, values = evaluate_critics(parts, nodes)
    weights, fitted = fit_hybrid(values, nodes, {"rollout": "rollout=2",
                                                 "reward-model": f"reward-model={out / 'rm'}"})
    print(markdown_table({**scores, "hybrid (in-sample)": fitted}))

    hybrid = HybridCritic({"rollout": RolloutCritic(policy, k=2, mode="inference"),
                           "reward-model": parts["reward-model"]}, weights)
    # as `--critic hybrid=FILE` does: failed episodes are 0, whatever the hybrid would say
    critic = VerifierCritic(fallback=hybrid, reference=False)
    summary, _ = run_search(env, tasks=env.tasks(8, split="test"), policy=policy, config=infer,
                            critic=critic, baselines=False)
    print(f"held-out with the fitted hybrid: {summary.mcts_solved}/{summary.tasks} solved, "
          f"{summary.tokens} tokens")


if __name__ == "__main__":
    main()
