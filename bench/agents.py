"""Does learning from spliced failure → recovery dialogues (Agent-R) make an agent recover?

    python bench/agents.py --threads 1                        # the full run, see --help
    python bench/agents.py --test-games 8 --train-games 4 --rounds 1 --simulations 4  # a look

On generated TextWorld games with the shipped tiny agent, every reply constrained to the game's
admissible replies (``GenerationRequest.allowed`` through :class:`environments.agent.
AdmissiblePolicy`; ``--free`` turns that off):

1. the starting agent on held-out test games, free and constrained: the valid-reply rate
   (replies the game accepts / all replies), greedy and sampled success;
2. ``--rounds`` rounds of self-improvement per arm, each on ``--train-games`` fresh training
   games: MCTS trees grown by the arm's current agent (not stopped at the first win, so they
   hold failures too) → SFT of that agent on the round's data. The *splice* arm trains on
   validated failure → recovery splices plus won trajectories (Agent-R; what ``iterate
   --sft-data splice`` mines), the *plain* arm on the won trajectories alone (``--sft-data
   solutions``). Round 1 searches the same games with the same agent for both arms, so its
   trees are grown once;
3. both final agents on the same test games with the same seeds: greedy success, success of
   ``--samples`` sampled episodes per game, and the recovery rate — among sampled episodes that
   made a wrong move (a command after which the game's own optimal plan is no shorter, or a
   rejected reply), the share that still won. Standard errors of the splice − plain
   differences are paired over test games (per-game differences for success; the linearised
   ratio for recovery).

Every step is stored under ``--out`` and reused when the command runs again (evaluations per
test set: ``--test-start`` evaluates the same trained agents on fresh test games; the JSON
line's ``pooled`` repeats the paired test over every stored test set). The table goes to
``docs/results.md`` (``--results``); the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.sections import write_section  # noqa: E402
from environments.agent import AdmissiblePolicy  # noqa: E402
from mcts_agent.data import read_rows, write_rows  # noqa: E402
from mcts_agent.data.splice import SpliceConfig, splice_rows  # noqa: E402
from mcts_agent.episodes import Episode, play_episodes  # noqa: E402
from mcts_agent.files import read_marker, write_json  # noqa: E402
from mcts_agent.metrics import paired_difference, paired_ratio_difference  # noqa: E402
from mcts_agent.models.tiny_agent import TINY_AGENT_DIR, tiny_agent_environment  # noqa: E402
from mcts_agent.search import ResultFile, SearchConfig  # noqa: E402
from mcts_agent.search.run import load_policy, run_search  # noqa: E402
from mcts_agent.train.config import TrainConfig  # noqa: E402
from mcts_agent.train.trainers import train_policy  # noqa: E402

STEP_TOKENS = 48  # one reply
# short revision thoughts: a 1M-parameter agent learns these, and they fit in one reply
REVISIONS = ("That was wrong.", "This does not help.", "Wrong move, go back.")
ARMS = ("splice", "plain")
PASSIVE = ("look", "inventory", "examine")  # commands that change nothing in the world


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=TINY_AGENT_DIR, help="starting agent")
    parser.add_argument("--test-games", type=int, default=250)
    parser.add_argument("--test-start", type=int, default=0,
                        help="index of the first test game (a fresh test set for a replication "
                        "of the same trained agents)")
    parser.add_argument("--train-games", type=int, default=100, help="fresh games per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--simulations", type=int, default=8, help="expansions per tree")
    parser.add_argument("--rollouts", type=int, default=1, help="rollouts per node")
    parser.add_argument("--samples", type=int, default=4, help="sampled episodes per test game")
    parser.add_argument("--max-turns", type=int, default=10)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--free", action="store_true",
                        help="no constrained decoding (replies may name actions that do not exist)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-agents")
    parser.add_argument("--results", type=Path, default=None,
                        help="write the table here (e.g. docs/results.md)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    out: Path = args.out
    constrain = not args.free
    # the revision thoughts are admissible openings of a reply, so a splice-trained agent can
    # still write its revision turns under the constraint
    env = tiny_agent_environment(reply_thoughts=REVISIONS if constrain else ())
    test = env.tasks(args.test_start + args.test_games, split="test")[args.test_start:]
    # evaluations are kept per test set and sampling setting; searches and models are shared
    evals = out / (f"test_{args.test_start}-{args.test_start + args.test_games}"
                   f"_s{args.samples}_t{args.max_turns}")
    train = env.tasks(args.train_games * args.rounds, split="train")
    search = SearchConfig(simulations=args.simulations, expand_n=3, leaves_per_tree=4,
                          max_depth=args.max_turns, max_step_tokens=STEP_TOKENS, seed=args.seed,
                          stop_when_solved=False)

    def agent(model: Path) -> Any:
        policy = load_policy(model)
        return AdmissiblePolicy(policy, env) if constrain else policy

    free = _measure(evals / "eval_base_free.json", env, load_policy(args.model), test, args)
    before = _measure(evals / "eval_base.json", env, agent(args.model), test, args)
    print(f"base agent: free replies valid {free['valid_reply_rate']:.1%} (greedy "
          f"{free['greedy']:.1%}, sampled {free['sampled']:.1%}); as run: valid "
          f"{before['valid_reply_rate']:.1%}, greedy {before['greedy']:.1%}, sampled "
          f"{before['sampled']:.1%}, recovery {before['recovery']:.1%}", flush=True)

    models = dict.fromkeys(ARMS, args.model)
    rounds: list[dict[str, Any]] = []
    for r in range(1, args.rounds + 1):
        games = train[(r - 1) * args.train_games:r * args.train_games]
        mined: dict[Path, tuple[list, Any, dict]] = {}
        shared = models["splice"] == models["plain"]  # both arms start this round alike
        for arm in ARMS:
            folder = out / (f"round_{r}" if shared else f"{arm}/round_{r}")
            if folder not in mined:
                mined[folder] = _mine(folder, env, agent(models[arm]), games, search, args)
            turns, counts, summary = mined[folder]
            rows = turns if arm == "splice" else [t for t in turns if t["kind"] == "success"]
            model = out / arm / f"round_{r}" / "model"
            if not (model / "training.json").exists():
                train_policy(models[arm], rows, model, TrainConfig(
                    method="sft", epochs=args.epochs, learning_rate=args.lr, batch_size=16,
                    threads=args.threads, seed=args.seed))
            models[arm] = model
            rounds.append({"round": r, "arm": arm, "trees": summary["tasks"],
                           "trees_won": summary["mcts_solved"], "rows": len(rows),
                           "spliced": counts.get("spliced", 0),
                           "splice_turns": counts.get("splice_turns", 0),
                           "success_turns": counts.get("success_turns", 0)})
            print(f"round {r} {arm}: {rounds[-1]}", flush=True)

    after = {arm: _measure(evals / f"eval_{arm}.json", env, agent(models[arm]), test, args)
             for arm in ARMS}
    # did training on (constrained) valid replies also teach the format? greedy, free replies
    after_free = {arm: _measure(evals / f"eval_{arm}_free.json", env, load_policy(models[arm]),
                                test, args, samples=0) for arm in ARMS}
    # recovery without selection: every arm starts each game from the same injected wrong move
    starts = injected_starts(env, test, args.seed)
    injected = {arm: _injected(evals / f"injected_{arm}.json", env, agent(model), starts, args)
                for arm, model in (("base", args.model), *models.items())}
    for arm in ARMS:
        print(f"after {args.rounds} rounds of SFT on {arm}: greedy {after[arm]['greedy']:.1%}, "
              f"sampled {after[arm]['sampled']:.1%}, recovery {after[arm]['recovery']:.1%}",
              flush=True)
    record = {
        "games": len(test), "test_start": args.test_start, "samples": args.samples,
        "rounds": args.rounds,
        "train_games": len(train), "constrained": constrain,
        "valid_reply_rate": after["splice"]["valid_reply_rate"],
        "valid_reply_rate_plain": after["plain"]["valid_reply_rate"],
        "valid_reply_rate_base": before["valid_reply_rate"],
        "valid_reply_rate_free": free["valid_reply_rate"],
        "valid_reply_rate_free_after_splice_sft": after_free["splice"]["valid_reply_rate"],
        "valid_reply_rate_free_after_plain_sft": after_free["plain"]["valid_reply_rate"],
        "greedy_free_after_splice_sft": after_free["splice"]["greedy"],
        "greedy_free_after_plain_sft": after_free["plain"]["greedy"],
        "greedy_success_free": free["greedy"], "sampled_success_free": free["sampled"],
        "greedy_success": before["greedy"], "sampled_success": before["sampled"],
        "recovery_before": before["recovery"],
        "success_after_splice_sft": after["splice"]["sampled"],
        "success_after_plain_sft": after["plain"]["sampled"],
        "greedy_after_splice_sft": after["splice"]["greedy"],
        "greedy_after_plain_sft": after["plain"]["greedy"],
        "recovery_after_splice_sft": after["splice"]["recovery"],
        "recovery_after_plain_sft": after["plain"]["recovery"],
        "wrong_episodes_splice": int(sum(after["splice"]["wrong"])),
        "wrong_episodes_plain": int(sum(after["plain"]["wrong"])),
        **differences(after, injected, args.samples),
        "injected_games": injected["base"]["games"],
        "recovery_injected_before": injected["base"]["success"],
        "recovery_injected_after_splice_sft": injected["splice"]["success"],
        "recovery_injected_after_plain_sft": injected["plain"]["success"],
        "per_round": rounds,
        "pooled": pooled(out, args),
        "seconds": round(time.perf_counter() - started, 1),
    }
    if args.results is not None:
        write_section(args.results, "agents", _table(record))
    print(json.dumps(record))
    return 0


def pooled(out: Path, args: Any) -> dict[str, Any] | None:
    """The splice − plain differences over every stored test set of this sampling setting
    (the disjoint game ranges of earlier ``--test-start`` runs, the first of overlapping ones
    kept): one larger paired test. None with fewer than two sets."""
    sets = []
    for folder in out.glob(f"test_*-*_s{args.samples}_t{args.max_turns}"):
        start, end = map(int, folder.name.split("_")[1].split("-"))
        if all((folder / f"{kind}_{arm}.json").exists()
               for kind in ("eval", "injected") for arm in ARMS):
            sets.append((start, end, folder))
    kept, covered = [], 0
    for start, end, folder in sorted(sets):
        if start >= covered:
            kept.append(folder)
            covered = end
    if len(kept) < 2:
        return None

    def joined(name: str) -> dict[str, list]:
        lists: dict[str, list] = {}
        for folder in kept:
            for key, value in (read_marker(folder / name) or {}).items():
                if isinstance(value, list) and key != "rejected_examples":
                    lists.setdefault(key, []).extend(value)
        return lists

    evals = {arm: joined(f"eval_{arm}.json") for arm in ARMS}
    return {"test_sets": [folder.name for folder in kept], "games": len(evals["splice"]["won"]),
            **differences(evals, {arm: joined(f"injected_{arm}.json") for arm in ARMS},
                          args.samples)}


def differences(evals: dict[str, dict], injected: dict[str, dict], samples: int
                ) -> dict[str, Any]:
    """Splice − plain over the same test games (paired standard errors): sampled success,
    recovery (a ratio over the episodes with a wrong move), recovery from the injected move,
    the share of episodes with a wrong move; and the issue's target."""
    splice, plain = evals["splice"], evals["plain"]
    success = paired_difference(splice["won"], plain["won"])
    recovery = paired_ratio_difference(splice["recovered"], splice["wrong"],
                                       plain["recovered"], plain["wrong"])
    recovery_injected = paired_difference(injected["splice"]["won"], injected["plain"]["won"])
    erred = paired_difference(np.asarray(splice["wrong"]) / samples,
                              np.asarray(plain["wrong"]) / samples)
    return {"recovery_difference": recovery[0], "se": recovery[1],
            "success_difference": success[0], "se_success": success[1],
            "injected_difference": recovery_injected[0], "se_injected": recovery_injected[1],
            "erred_share_difference": erred[0], "se_erred_share": erred[1],
            "target_met": bool(recovery[0] >= 2 * recovery[1] and success[0] >= 0)}


def _mine(folder: Path, env: Any, policy: Any, games: list, search: SearchConfig,
          args: Any) -> tuple[list, Any, dict]:
    """One round's trees (grown once, resumable) and the per-turn SFT rows mined from them:
    splices + wins (``kind`` says which), as ``iterate --sft-data splice`` mines them."""
    summary = _cached(folder / "search" / "summary.json", lambda: run_search(
        env, tasks=games, policy=policy, config=search, rollouts=args.rollouts,
        out_dir=folder / "search", baselines=False)[0].to_dict())
    data = folder / "data"
    if (counts := read_marker(data / "turns.stats.json")) is not None:
        return read_rows(data / "turns.jsonl"), counts, summary
    results = list(ResultFile(folder / "search" / "trees.jsonl"))
    dialogues, turns, counts = splice_rows(results, env, SpliceConfig(revisions=REVISIONS,
                                                                      seed=args.seed))
    write_rows(dialogues, data, "spliced", stats=counts)
    write_rows(turns, data, "turns", stats=counts)
    return turns, dict(counts), summary


def _cached(path: Path, compute: Any) -> dict[str, Any]:
    """The record a finished step left at ``path``, else ``compute()``'s, written atomically
    (a step killed mid-write is redone, not read half-written)."""
    if (record := read_marker(path)) is not None:
        return record
    record = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, record)
    return record


def _measure(path: Path, env: Any, policy: Any, tasks: list, args: Any,
             samples: int | None = None) -> dict[str, Any]:
    """Greedy success, sampled success, valid-reply rate and recovery of ``policy`` on
    ``tasks``, with the per-game counts the paired standard errors need (``samples``
    episodes per game, ``--samples`` by default; 0: greedy only)."""
    samples = args.samples if samples is None else samples

    def compute() -> dict[str, Any]:
        common = dict(max_turns=args.max_turns, max_step_tokens=STEP_TOKENS, seed=args.seed)
        greedy = play_episodes(env, policy, [(t, env.reset(t)) for t in tasks], n=1,
                               temperature=0.0, **common)
        sampled = play_episodes(env, policy, [(t, env.reset(t)) for t in tasks],
                                n=samples, temperature=1.0, **common) if samples else []
        wrong = [[wrong_moves(env, e) > 0 for e in group] for group in sampled]
        states = [e.state for group in (*greedy, *sampled) for e in group]
        replies = sum(len(s.turns) for s in states)
        won = [sum(e.state.won for e in group) / len(group) for group in sampled] or [0.0]
        recovered = [sum(e.state.won for e, w in zip(group, flags, strict=True) if w)
                     for group, flags in zip(sampled, wrong, strict=True)]
        n_wrong = [sum(flags) for flags in wrong]
        return {
            "greedy": sum(g[0].state.won for g in greedy) / len(tasks),
            "sampled": float(np.mean(won)),
            "episodes": sum(len(g) for g in sampled), "with_wrong_move": sum(n_wrong),
            "recovery": sum(recovered) / max(sum(n_wrong), 1),
            "replies": replies, "invalid_replies": sum(s.invalid for s in states),
            "valid_reply_rate": 1 - sum(s.invalid for s in states) / max(replies, 1),
            "won": won, "wrong": n_wrong, "recovered": recovered,
            "rejected_examples": [t.message for s in states for t in s.turns
                                  if t.action is None][:5],
        }
    return _cached(path, compute)


def injected_starts(env: Any, tasks: list, seed: int) -> list[tuple[Any, Any]]:
    """For each task whose first turn offers one, the state after a wrong first move: a valid
    command that changes the world (not ``look``, ``inventory`` or ``examine …``, which only
    waste a turn) after which the game's optimal plan is no shorter and the game is still
    winnable (the first such command in a seeded shuffle of the valid actions)."""
    import random

    from mcts_agent.react import render_turn

    starts = []
    for task in tasks:
        state = env.reset(task)
        actions = sorted(a for a in state.current.valid_actions or ()
                         if not a.startswith(PASSIVE))
        random.Random(f"{seed}/{task.id}").shuffle(actions)
        for action in actions:
            sim, _ = env.game.start(task)
            try:
                before = len(sim.policy_commands)
                transition = sim.step(action)
                stalls = (not transition.done and len(sim.policy_commands) > 0
                          and len(sim.policy_commands) >= before)
            finally:
                sim.close()
            if stalls:
                starts.append((task, env.step(state, render_turn(action)).state))
                break
    return starts


def _injected(path: Path, env: Any, policy: Any, starts: list[tuple[Any, Any]],
              args: Any) -> dict[str, Any]:
    """Success of ``--samples`` sampled episodes per game played on from ``starts`` (one
    wrong move already made; the remaining turns of ``--max-turns``)."""
    def compute() -> dict[str, Any]:
        groups = play_episodes(env, policy, starts, n=args.samples, temperature=1.0,
                               max_turns=args.max_turns - 1, max_step_tokens=STEP_TOKENS,
                               seed=args.seed)
        won = [sum(e.state.won for e in group) / len(group) for group in groups]
        return {"games": len(starts), "tasks": [task.id for task, _ in starts],
                "first_moves": [state.commands[0] for _, state in starts],
                "success": float(np.mean(won)) if won else 0.0, "won": won}
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


def _table(record: dict[str, Any]) -> str:
    pct = lambda key: f"{record[key]:.1%}"  # noqa: E731
    rounds = "\n".join(
        f"| {row['round']} | {row['arm']} | {row['trees']} | {row['trees_won']} | "
        f"{row['spliced']} | {row['splice_turns'] if row['arm'] == 'splice' else 0} | "
        f"{row['success_turns']} | {row['rows']} |" for row in record["per_round"])
    return "\n".join([
        "## Agents: learning to recover from spliced failures (`python bench/agents.py`)",
        "",
        f"The shipped tiny agent on {record['games']} held-out generated TextWorld games "
        f"({record['samples']} sampled episodes each at T = 1, plus one greedy); "
        f"{record['rounds']} rounds of search → SFT per arm on {record['train_games']} "
        f"training games in all. Replies "
        + ("constrained to the game's admissible replies." if record["constrained"]
           else "free (not constrained)."),
        "",
        "| agent | valid replies | greedy success | sampled success | recovery rate |",
        "|---|---|---|---|---|",
        f"| tiny agent, free replies | {pct('valid_reply_rate_free')} | "
        f"{pct('greedy_success_free')} | {pct('sampled_success_free')} | – |",
        f"| tiny agent | {pct('valid_reply_rate_base')} | {pct('greedy_success')} | "
        f"{pct('sampled_success')} | {pct('recovery_before')} |",
        f"| + {record['rounds']} rounds SFT on wins only | {pct('valid_reply_rate_plain')} | "
        f"{pct('greedy_after_plain_sft')} | {pct('success_after_plain_sft')} | "
        f"{pct('recovery_after_plain_sft')} |",
        f"| + {record['rounds']} rounds SFT on splices + wins (Agent-R) | "
        f"{pct('valid_reply_rate')} | {pct('greedy_after_splice_sft')} | "
        f"{pct('success_after_splice_sft')} | {pct('recovery_after_splice_sft')} |",
        f"| wins-only agent, free replies | {pct('valid_reply_rate_free_after_plain_sft')} | "
        f"{pct('greedy_free_after_plain_sft')} | – | – |",
        f"| Agent-R agent, free replies | {pct('valid_reply_rate_free_after_splice_sft')} | "
        f"{pct('greedy_free_after_splice_sft')} | – | – |",
        "",
        f"Splice − plain: recovery {record['recovery_difference']:+.1%} (paired se "
        f"{record['se']:.1%}; {record['wrong_episodes_splice']} and "
        f"{record['wrong_episodes_plain']} episodes with a wrong move), sampled success "
        f"{record['success_difference']:+.1%} (paired se {record['se_success']:.1%}). "
        f"Target (recovery ≥ plain + 2·se, success not lower): "
        f"{'met' if record['target_met'] else 'not met'}.",
        "",
        f"Recovery from an injected wrong first move ({record['injected_games']} test games "
        f"that offer one, {record['samples']} sampled episodes each, the same move for every "
        f"agent): tiny agent {pct('recovery_injected_before')}, wins only "
        f"{pct('recovery_injected_after_plain_sft')}, Agent-R "
        f"{pct('recovery_injected_after_splice_sft')} (splice − plain "
        f"{record['injected_difference']:+.1%}, paired se {record['se_injected']:.1%}).",
        *_pooled_lines(record.get("pooled")),
        "",
        "| round | arm | trees | trees won | validated splices | splice turns | win turns "
        "| SFT rows |",
        "|---|---|---|---|---|---|---|---|",
        rounds,
    ])


def _pooled_lines(pool: dict[str, Any] | None) -> list[str]:
    if pool is None:
        return []
    return ["", f"Pooled over the stored test sets ({', '.join(pool['test_sets'])}; "
            f"{pool['games']} games), splice − plain: recovery {pool['recovery_difference']:+.1%} "
            f"(paired se {pool['se']:.1%}), sampled success {pool['success_difference']:+.1%} "
            f"(se {pool['se_success']:.1%}), recovery from the injected move "
            f"{pool['injected_difference']:+.1%} (se {pool['se_injected']:.1%}), share of "
            f"episodes with a wrong move {pool['erred_share_difference']:+.1%} "
            f"(se {pool['se_erred_share']:.1%}). Target on the pooled games: "
            f"{'met' if pool['target_met'] else 'not met'}."]


if __name__ == "__main__":
    sys.exit(main())
