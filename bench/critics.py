"""Which critic makes the search better, and how good is each one? Side by side on `arith`.

    python bench/critics.py                    # ~25 min on 2 cores
    python bench/critics.py --rm-tasks 64 --fit-tasks 16 --test-tasks 20   # a quick look

With the shipped tiny reasoner, closing the loop Qwen2.5-Math and rStar-Math describe:

1. search training problems in data mode (rollouts + verifier) and mine stepwise labels;
2. train a reward model on them (``mcts-agent train-rm``);
3. search other training problems in inference mode and fit hybrid weights (rollouts +
   reward model) against verified outcomes (``mcts-agent fit-hybrid``);
4. on held-out test problems in inference mode (no reference answers), at the same budget of
   generated tokens per problem: greedy, majority vote, and MCTS valued by rollouts, by the
   reward model, and by the fitted hybrid;
5. each critic's AUROC, Brier score and calibration on labelled nodes of the test trees.

Every step is stored under ``--out`` and reused when the command runs again. The table goes to
``docs/results.md`` (``--results``); the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.sections import write_section  # noqa: E402
from critics.hybrid import HybridCritic  # noqa: E402
from environments.math.arith_env import ArithEnvironment  # noqa: E402
from mcts_agent.critic_eval import (  # noqa: E402
    evaluate_critics,
    fit_hybrid,
    markdown_table,
    write_report,
)
from mcts_agent.data import stepwise_rows, write_rows  # noqa: E402
from mcts_agent.data.labels import labelled_nodes  # noqa: E402
from mcts_agent.hybrid import HybridWeights  # noqa: E402
from mcts_agent.search import SearchConfig  # noqa: E402
from mcts_agent.search.baselines import sample_solutions  # noqa: E402
from mcts_agent.search.critic_specs import build_component, build_critic  # noqa: E402
from mcts_agent.search.run import load_policy, run_search  # noqa: E402
from mcts_agent.train.reward_model import (  # noqa: E402
    RewardModelConfig,
    train_reward_model,
)

MAX_TOKENS = 256  # one whole solution of the baselines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rm-tasks", type=int, default=512, help="problems searched for labels")
    parser.add_argument("--fit-tasks", type=int, default=128, help="problems for hybrid weights")
    parser.add_argument("--test-tasks", type=int, default=300)
    parser.add_argument("--budget", type=int, default=600, help="generated tokens per problem")
    parser.add_argument("--simulations", type=int, default=64)
    parser.add_argument("--rollouts", type=int, default=4)
    parser.add_argument("--nodes-per-tree", type=int, default=12,
                        help="labelled nodes per tree scored by each critic")
    parser.add_argument("--rm-epochs", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-critics")
    parser.add_argument("--results", type=Path, default=None,
                        help="write the tables here (e.g. docs/results.md)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    out: Path = args.out
    env = ArithEnvironment()
    policy = load_policy()
    train = env.tasks(args.rm_tasks + args.fit_tasks, split="train")
    rm_tasks, fit_tasks = train[:args.rm_tasks], train[args.rm_tasks:]
    test_tasks = env.tasks(args.test_tasks, split="test")

    # 1-2. labels from data-mode search, then the reward model
    rm_dir = out / "reward_model"
    if not (rm_dir / "reward_model.json").exists():
        data_cfg = SearchConfig(mode="data", simulations=16, stop_when_solved=False,
                                seed=args.seed)
        _, results = run_search(env, tasks=rm_tasks, policy=policy, config=data_cfg,
                                rollouts=args.rollouts, out_dir=out / "rm_search",
                                baselines=False)
        counts: Counter = Counter()
        rows = stepwise_rows(results, env, counts=counts)
        write_rows(rows, out / "rm_data", "stepwise", stats=counts)
        report = train_reward_model(rows, rm_dir, config=RewardModelConfig(
            epochs=args.rm_epochs, threads=args.threads, seed=args.seed))
        print(f"reward model: {report}", flush=True)
    specs = {"rollout": f"rollout={args.rollouts}", "reward-model": f"reward-model={rm_dir}"}

    # 3. hybrid weights from inference-mode trees of other training problems
    infer = SearchConfig(mode="inference", simulations=args.simulations,
                         max_tokens=args.budget, seed=args.seed)
    weights_file = out / "hybrid.json"
    if not weights_file.exists():
        _, fit_trees = run_search(env, tasks=fit_tasks, policy=policy, config=infer,
                                  rollouts=args.rollouts, out_dir=out / "fit_search",
                                  baselines=False)
        nodes = labelled_nodes(fit_trees, env, max_per_tree=args.nodes_per_tree,
                               seed=args.seed)
        parts = {name: build_component(spec, policy, infer)[1] for name, spec in specs.items()}
        scores, values = evaluate_critics(parts, nodes)
        weights, fitted = fit_hybrid(values, nodes, specs,
                                     source=str(out / "fit_search"))
        weights.save(weights_file)
        print(markdown_table({**scores, "hybrid (in-sample)": fitted}), flush=True)

    # 4. held-out problems, inference mode, the same token budget per problem
    accuracy, tokens = baselines(env, policy, test_tasks, args)
    searched = {}
    for name, critic_specs in (("rollout", [specs["rollout"]]),
                               ("rm", [specs["reward-model"]]),
                               ("hybrid", [f"hybrid={weights_file}"])):
        critic = build_critic(critic_specs, policy, infer, args.rollouts)
        summary, results = run_search(env, tasks=test_tasks, policy=policy, config=infer,
                                      critic=critic, out_dir=out / f"test_{name}",
                                      baselines=False)
        accuracy[f"mcts_{name}"] = summary.mcts_solved / len(test_tasks)
        tokens[f"mcts_{name}"] = summary.tokens / len(test_tasks)
        searched[name] = results
        print(f"mcts with {name}: {accuracy[f'mcts_{name}']:.3f}", flush=True)

    # 5. critic quality on labelled nodes of the held-out trees
    nodes = labelled_nodes(searched["rollout"], env, max_per_tree=args.nodes_per_tree,
                           seed=args.seed)
    parts = {name: build_component(spec, policy, infer)[1] for name, spec in specs.items()}
    # the hybrid over the same critic objects: their cached values are reused, not recomputed
    parts["hybrid"] = HybridCritic(dict(parts), HybridWeights.load(weights_file))
    scores, _ = evaluate_critics(parts, nodes)
    write_report(scores, out / "critic_report", {"trees": str(out / "test_rollout")})
    table = accuracy_table(accuracy, tokens, len(test_tasks)) + "\n" + markdown_table(scores)
    print(table)
    weights = json.loads(weights_file.read_text())
    summary = {
        "greedy_acc": accuracy["greedy"], "majority_acc": accuracy["majority"],
        "mcts_rollout_acc": accuracy["mcts_rollout"], "mcts_rm_acc": accuracy["mcts_rm"],
        "mcts_hybrid_acc": accuracy["mcts_hybrid"],
        "auroc": {name: round(s.auroc, 4) for name, s in scores.items()},
        "brier": {name: round(s.brier, 4) for name, s in scores.items()},
        "tokens_per_task": {k: round(v, 1) for k, v in tokens.items()},
        "hybrid_weights": dict(zip(weights["components"], weights["weights"], strict=True)),
        "test_tasks": len(test_tasks), "budget": args.budget, "labelled_nodes": len(nodes),
        "seconds": round(time.perf_counter() - started, 1),
    }
    if args.results is not None:
        write_results(args.results, table, summary)
    print(json.dumps(summary))
    return 0


def baselines(env, policy, tasks, args) -> tuple[dict[str, float], dict[str, float]]:
    """Greedy, and majority vote over as many samples as fit the token budget."""
    greedy = sample_solutions(env, policy, tasks, 1, temperature=0.0, max_tokens=MAX_TOKENS,
                              seed=args.seed)
    mean_tokens = max(np.mean([g.tokens for g in greedy]), 1.0)
    n = max(1, int(args.budget // mean_tokens))
    sampled = sample_solutions(env, policy, tasks, n, temperature=1.0, max_tokens=MAX_TOKENS,
                               seed=args.seed + 1)
    accuracy = {"greedy": float(np.mean([g.any_correct for g in greedy])),
                "majority": float(np.mean([a.majority_correct for a in sampled]))}
    tokens = {"greedy": float(np.mean([g.tokens for g in greedy])),
              "majority": float(np.mean([a.tokens for a in sampled]))}
    print(f"greedy {accuracy['greedy']:.3f}, majority of {n} {accuracy['majority']:.3f}",
          flush=True)
    return accuracy, tokens


def accuracy_table(accuracy: dict[str, float], tokens: dict[str, float], n: int) -> str:
    lines = [f"| method ({n} held-out problems, inference mode) | accuracy | tokens / problem |",
             "|---|---:|---:|"]
    for name, acc in accuracy.items():
        lines.append(f"| {name.replace('_', ' ')} | {100 * acc:.1f} % | {tokens[name]:.0f} |")
    return "\n".join(lines) + "\n"


def write_results(path: Path, table: str, summary: dict) -> None:
    """This run's section of ``path`` (between its markers)."""
    command = "python bench/critics.py " + " ".join(sys.argv[1:])
    section = (
        f"## Critics on `arith` (bench/critics.py)\n\n"
        f"Command: `{command.strip()}` · {summary['seconds'] / 60:.0f} min on this machine.\n\n"
        "Accuracy on held-out problems without reference answers at the same budget of "
        "generated tokens per problem, then each critic's quality on labelled nodes of the "
        "held-out trees (label: a verified-right answer lies at or below the node).\n\n"
        + table + "\n```json\n" + json.dumps(summary) + "\n```")
    write_section(path, "critics", section)


if __name__ == "__main__":
    raise SystemExit(main())
