"""Does learning from spliced failure → recovery dialogues (Agent-R) make an agent recover?

    python bench/agents.py                                   # the full run, see --help
    python bench/agents.py --test-games 8 --train-games 8 --simulations 8   # a quick look

On generated TextWorld games with the shipped tiny agent:

1. held-out test games: greedy success, success of sampled episodes, and MCTS success (the
   game's own verdict, as in Agent-R's trees);
2. training games: MCTS trees (not stopped at the first win, so they hold failures too) →
   validated splices (``mcts-agent splice``) and won trajectories;
3. two SFT runs from the same agent with the same settings: on splices + wins (Agent-R) and on
   wins only (the plain baseline);
4. each agent on the test games: success, and the recovery rate — among episodes that made a
   wrong move (a turn that did not shorten the game's own optimal plan, or a reply the game
   rejected), the share that still won.

Every step is stored under ``--out`` and reused when the command runs again. The table goes to
``docs/results.md`` (``--results``); the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.sections import write_section  # noqa: E402
from mcts_agent.data import write_rows  # noqa: E402
from mcts_agent.data.splice import SpliceConfig, splice_rows  # noqa: E402
from mcts_agent.episodes import Episode, play_episodes  # noqa: E402
from mcts_agent.models.tiny_agent import TINY_AGENT_DIR, tiny_agent_environment  # noqa: E402
from mcts_agent.search import ResultFile, SearchConfig  # noqa: E402
from mcts_agent.search.run import load_policy, run_search  # noqa: E402
from mcts_agent.train.config import TrainConfig  # noqa: E402
from mcts_agent.train.trainers import train_policy  # noqa: E402

STEP_TOKENS = 48  # one reply
# short revision thoughts: a 1M-parameter agent learns these, and they fit in one reply
REVISIONS = ("That was wrong.", "This does not help.", "Wrong move, go back.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=TINY_AGENT_DIR, help="starting agent")
    parser.add_argument("--test-games", type=int, default=50)
    parser.add_argument("--train-games", type=int, default=100)
    parser.add_argument("--simulations", type=int, default=16, help="expansions per tree")
    parser.add_argument("--rollouts", type=int, default=1, help="rollouts per node")
    parser.add_argument("--samples", type=int, default=4, help="sampled episodes per game")
    parser.add_argument("--max-turns", type=int, default=12)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-agents")
    parser.add_argument("--results", type=Path, default=None,
                        help="write the table here (e.g. docs/results.md)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    out: Path = args.out
    env = tiny_agent_environment()
    test = env.tasks(args.test_games, split="test")
    train = env.tasks(args.train_games, split="train")
    search = SearchConfig(simulations=args.simulations, expand_n=3, leaves_per_tree=4,
                          max_depth=args.max_turns, max_step_tokens=STEP_TOKENS, seed=args.seed)
    base = load_policy(args.model)

    before = _measure(out / "eval_base.json", env, base, test, args)
    mcts = _cached(out / "test_search" / "summary.json", lambda: run_search(
        env, tasks=test, policy=base, config=search, rollouts=args.rollouts,
        out_dir=out / "test_search", baselines=False)[0].to_dict())
    print(f"base agent: greedy {before['greedy']:.1%}, sampled {before['sampled']:.1%}, "
          f"MCTS {mcts['mcts_solved'] / len(test):.1%}", flush=True)

    mined = search.model_copy(update={"stop_when_solved": False})
    _cached(out / "train_search" / "summary.json", lambda: run_search(
        env, tasks=train, policy=base, config=mined, rollouts=args.rollouts,
        out_dir=out / "train_search", baselines=False)[0].to_dict())
    results = list(ResultFile(out / "train_search" / "trees.jsonl"))
    dialogues, turns, counts = splice_rows(results, env, SpliceConfig(revisions=REVISIONS,
                                                                      seed=args.seed))
    write_rows(dialogues, out / "data", "spliced", stats=counts)
    plain = [row for row in turns if row["kind"] == "success"]
    print(f"splices: {len(dialogues)} ({dict(counts)}); turns: {len(turns)} with splices, "
          f"{len(plain)} wins only", flush=True)

    after = {}
    for name, rows in (("splice", turns), ("plain", plain)):
        model = out / f"sft_{name}"
        if not (model / "training.json").exists():
            train_policy(args.model, rows, model, TrainConfig(
                method="sft", epochs=args.epochs, learning_rate=args.lr, batch_size=16,
                threads=args.threads, seed=args.seed))
        after[name] = _measure(out / f"eval_{name}.json", env, load_policy(model), test, args)
        print(f"after SFT on {name}: {after[name]}", flush=True)

    record = {
        "games": len(test), "train_games": len(train),
        "greedy_success": before["greedy"], "sampled_success": before["sampled"],
        "mcts_success": mcts["mcts_solved"] / len(test),
        "spliced": len(dialogues), "splice_turns": len(turns) - len(plain),
        "success_turns": len(plain),
        "success_after_splice_sft": after["splice"]["sampled"],
        "success_after_plain_sft": after["plain"]["sampled"],
        "greedy_after_splice_sft": after["splice"]["greedy"],
        "greedy_after_plain_sft": after["plain"]["greedy"],
        "recovery_before": before["recovery"],
        "recovery_after_splice_sft": after["splice"]["recovery"],
        "recovery_after_plain_sft": after["plain"]["recovery"],
        "seconds": round(time.perf_counter() - started, 1),
    }
    if args.results is not None:
        write_section(args.results, "agents", _table(record, counts))
    print(json.dumps(record))
    return 0


def _cached(path: Path, compute: Any) -> dict[str, Any]:
    if path.exists():
        return json.loads(path.read_text())
    record = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2))
    return record


def _measure(path: Path, env: Any, policy: Any, tasks: list, args: Any) -> dict[str, Any]:
    """Greedy success, sampled success and recovery rate of ``policy`` on ``tasks``."""
    def compute() -> dict[str, Any]:
        common = dict(max_turns=args.max_turns, max_step_tokens=STEP_TOKENS, seed=args.seed)
        greedy = play_episodes(env, policy, [(t, env.reset(t)) for t in tasks], n=1,
                               temperature=0.0, **common)
        sampled = play_episodes(env, policy, [(t, env.reset(t)) for t in tasks],
                                n=args.samples, temperature=1.0, **common)
        episodes = [e for group in sampled for e in group]
        wrong = [e for e in episodes if wrong_moves(env, e) > 0]
        return {
            "greedy": sum(g[0].state.won for g in greedy) / len(tasks),
            "sampled": sum(e.state.won for e in episodes) / len(episodes),
            "episodes": len(episodes), "with_wrong_move": len(wrong),
            "recovery": sum(e.state.won for e in wrong) / max(len(wrong), 1),
            "invalid_replies": sum(e.state.invalid for e in episodes),
        }
    return _cached(path, compute)


def wrong_moves(env: Any, episode: Episode) -> int:
    """Turns that did not bring the agent closer to winning: a rejected reply, or a command
    after which the game's own optimal plan (TextWorld's policy commands) is no shorter."""
    sim, _ = env.game.start(episode.task)
    wrong = 0
    try:
        for turn in episode.state.turns:
            if turn.action is None:
                wrong += 1
                continue
            before = len(sim.policy_commands)
            transition = sim.step(turn.action)
            if not transition.won and len(sim.policy_commands) >= before:
                wrong += 1
    finally:
        sim.close()
    return wrong


def _table(record: dict[str, Any], counts: Any) -> str:
    pct = lambda key: f"{record[key]:.1%}"  # noqa: E731
    return "\n".join([
        "## Agents: learning to recover from spliced failures (`python bench/agents.py`)",
        "",
        f"The shipped tiny agent on {record['games']} held-out generated TextWorld games; "
        f"{record['train_games']} training games searched for splices "
        f"({record['spliced']} validated splices; {dict(counts)}).",
        "",
        "| agent | greedy success | sampled success | recovery rate |",
        "|---|---|---|---|",
        f"| tiny agent | {pct('greedy_success')} | {pct('sampled_success')} | "
        f"{pct('recovery_before')} |",
        f"| + SFT on wins only | {pct('greedy_after_plain_sft')} | "
        f"{pct('success_after_plain_sft')} | {pct('recovery_after_plain_sft')} |",
        f"| + SFT on splices + wins (Agent-R) | {pct('greedy_after_splice_sft')} | "
        f"{pct('success_after_splice_sft')} | {pct('recovery_after_splice_sft')} |",
        "",
        f"MCTS with the tiny agent (the game's verdict, rollouts as the critic): "
        f"{pct('mcts_success')} of the test games.",
    ])


if __name__ == "__main__":
    sys.exit(main())
