"""Does training on what the search found make the model better? Several ways, side by side.

    python bench/self_improve.py                          # arith, 3 rounds × 512 tasks (~70 min)
    python bench/self_improve.py --setting late-errors    # errors surface late (see below)
    python bench/self_improve.py --tasks 64 --rounds 1 --eval-tasks 50   # a quick look

From a shipped tiny reasoner, with the same search settings (and so about the same search
tokens) per round, one self-improvement run (`mcts-agent iterate`) per method:

* ``step_dpo``:    step-level DPO on sibling pairs mined over whole trees (Wilson-gated);
* ``step_dpo_continuation``: the same pairs, each side carrying the best line under its step;
* ``first_error``: Step-DPO's pairs: the first wrong step of each failed solution against a
  sibling step that leads to a verified one;
* ``corrupted``:   RISE's negatives: each step of a verified solution against a copy with one
  checked slip;
* ``step_dpo_margin``: ``step_dpo_continuation`` with pairs drawn by the tree's value margin;
* ``step_dpo_bstar``: ``step_dpo_continuation`` with B-STaR's per-round temperature and
  pair threshold;
* ``outcome_dpo``: DPO on whole solutions, a verified one against a wrong one;
* ``sft``:         SFT on the best verified path of each tree (STaR / ReST).

Settings (``--setting``): ``check-steps`` is ``arith`` with its calculator (a false line ends
the episode) and the shipped tiny reasoner; ``late-errors`` is ``arith`` without it (a false
line is followed by more lines; only the answer is verified), 5–7 operands (4–6 steps, an
answer line) and the tiny reasoner trained on those (``tiny-arith-long``). There the benchmark
first measures whether outcome pairs localise the error: where the two sides of each outcome
pair first differ, against the first false line of the rejected side — for the pairs mined
from round 1's trees, and for pairs of solutions the starting model sampled independently
(as the papers' outcome baselines are built). ``free-order`` is ``late-errors`` where a
problem's products may be worked out in any order, and the start model (trained here once,
~10 min: ``tiny-arith-long`` taught on such solutions) samples the orders: two solutions of
one problem then often differ from their first line, long before either errs, so an outcome
pair no longer points at the error by where it differs.

``--replicate N`` then tests the start and every final model greedily on N fresh held-out
problems (none of the first evaluation's): a larger second test, and an unbiased one of the
step method the first test picked as best; ``--seeds K`` adds each method's final round
trained again with K other seeds (how far a training seed alone moves a method).
``--ablate`` trains each DPO method's round 1 again without its NLL term and with a vanishing
beta (the NLL on the chosen sides alone): what the preference term itself adds.

Each round searches fresh training problems with the current model, mines, trains and
measures held-out greedy accuracy (and pass@k) on the same test problems; round 1's search
(from the same start) is shared by all methods that search alike. Runs resume where they
stopped (``--out``). The table goes to ``docs/results.md`` (``--results``); the last line
printed is one JSON object, with ``se`` the paired standard error of the difference between
the best step-level method and outcome DPO / SFT over the same held-out tasks.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.sections import write_section  # noqa: E402
from environments.math.arith import check_step  # noqa: E402
from mcts_agent.contracts import load_tasks  # noqa: E402
from mcts_agent.data import PairConfig, read_rows  # noqa: E402
from mcts_agent.files import read_marker, write_json  # noqa: E402
from mcts_agent.llm.load import load_policy  # noqa: E402
from mcts_agent.metrics import paired_difference  # noqa: E402
from mcts_agent.models.tiny import TINY_ARITH_DIR, TINY_ARITH_LONG_DIR  # noqa: E402
from mcts_agent.models.tiny import train as train_tiny  # noqa: E402
from mcts_agent.registry import environments  # noqa: E402
from mcts_agent.search import SearchConfig  # noqa: E402
from mcts_agent.search.baselines import sample_solutions  # noqa: E402
from mcts_agent.train import TrainConfig  # noqa: E402
from mcts_agent.train.balance import BalanceConfig  # noqa: E402
from mcts_agent.train.iterate import IterateConfig, iterate, train_round  # noqa: E402

# what each method mines and how it trains; everything else is shared
METHODS: dict[str, dict] = {
    "step_dpo": {"strategy": "sibling"},
    "step_dpo_continuation": {"strategy": "sibling", "completion": "continuation"},
    "first_error": {"strategy": "first_error"},
    "corrupted": {"strategy": "corrupted"},
    "step_dpo_margin": {"strategy": "sibling", "completion": "continuation",
                        "pair_weights": "margin"},
    "step_dpo_bstar": {"strategy": "sibling", "completion": "continuation", "balance": True},
    "outcome_dpo": {"strategy": "outcome"},
    "sft": {"method": "sft"},
}
NOT_STEP = ("outcome_dpo", "sft")
SETTINGS = {
    "check-steps": {"env_args": {}, "model": TINY_ARITH_DIR,
                    "methods": ("step_dpo", "outcome_dpo", "sft"), "section": "self_improve"},
    "late-errors": {"env_args": {"check_steps": False, "num_operands": (5, 7),
                                 "max_operand": 9},
                    "model": TINY_ARITH_LONG_DIR, "section": "self_improve_late",
                    "methods": ("first_error", "corrupted", "step_dpo_continuation",
                                "outcome_dpo", "sft")},
    "free-order": {"env_args": {"check_steps": False, "num_operands": (5, 7), "max_operand": 9,
                                "step_order": "random"},
                   "model": ROOT / "runs" / "tiny-arith-free", "section": "self_improve_free",
                   "methods": ("first_error", "step_dpo_continuation", "outcome_dpo", "sft"),
                   # the start model, trained here when missing: tiny-arith-long taught to
                   # work out the products in any order
                   "start": {"init": TINY_ARITH_LONG_DIR, "steps": 150, "max_positions": 192,
                             "eval_every": 50}},
}


def settings(method: str, args: argparse.Namespace) -> IterateConfig:
    """One method's run; everything but what is mined and how it is trained is shared."""
    spec = METHODS[method]
    setting = SETTINGS[args.setting]
    train = dict(learning_rate=args.lr, epochs=args.epochs, batch_size=32, threads=args.threads,
                 beta=args.beta, nll_weight=args.nll_weight,
                 pair_weights=spec.get("pair_weights", "none"))
    if spec.get("method") == "sft":
        train = {**train, "method": "sft", "beta": 0.1, "nll_weight": 0.0}
    return IterateConfig(
        env="arith", env_args=setting["env_args"], model=str(setting["model"]),
        rounds=args.rounds, tasks_per_round=args.tasks, eval_tasks=args.eval_tasks,
        eval_k=args.eval_k, rollouts=4, seed=args.seed,
        search=SearchConfig(simulations=args.simulations, stop_when_solved=False),
        pairs=PairConfig(strategy=spec.get("strategy", "sibling"),
                         completion=spec.get("completion", "step"), max_per_depth=8,
                         max_per_tree=32),
        balance=BalanceConfig() if spec.get("balance") else None,
        train=TrainConfig(**train))


def env_and_search(args: argparse.Namespace) -> tuple[object, SearchConfig]:
    """The setting's environment, and the search settings (the same for every method)."""
    env = environments.create("arith", **SETTINGS[args.setting]["env_args"])
    return env, settings(next(iter(METHODS)), args).search


def start_model(setting: dict, threads: int) -> None:
    """Train the setting's start model when it has a recipe and is not there yet (resumes
    nothing: a stopped training starts again)."""
    model = Path(setting["model"])
    if "start" not in setting or (model / "training.json").exists():
        return
    print(f"[start] training the start model into {model} (once)", flush=True)
    report = train_tiny(model, data=setting["env_args"], threads=threads, **setting["start"])
    print(f"[start] held-out greedy {report['eval']['greedy_accuracy']:.1%}", flush=True)


def share_start(source: Path, target: Path) -> None:
    """Round 0's evaluation and round 1's search are the same for every method that searches
    alike (same model, tasks, seeds and settings): copy them instead of redoing them."""
    for part in ("round_0/eval.json", "round_1/search"):
        src, dst = source / part, target / part
        if src.exists() and not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)


def localisation(rows: list[dict]) -> dict:
    """Where outcome pairs put their contrast: per pair, the line where the two solutions
    first differ against the first false line (by the calculator) of the rejected one."""
    same, later_lines, correct_after, after = 0, 0, 0, 0
    for row in rows:
        chosen, rejected = row["chosen"].splitlines(), row["rejected"].splitlines()
        pairs = zip(chosen, rejected, strict=False)  # the sides may differ in length
        split = next((i for i, (a, b) in enumerate(pairs) if a != b),
                     min(len(chosen), len(rejected)))
        text = row["prompt"] + "".join(line + "\n" for line in rejected[:split])
        first_false = None
        for i in range(split, len(rejected)):
            ok = check_step(text, rejected[i])
            if first_false is None and not ok:
                first_false = i
            correct_after += ok
            after += 1
            text += rejected[i] + "\n"
        same += first_false == split
        later_lines += len(rejected) - split - 1
    n = max(len(rows), 1)
    return {"pairs": len(rows), "first_difference_is_first_error": round(same / n, 3),
            "rejected_lines_after_the_difference": round(later_lines / n, 2),
            "locally_correct_share_of_differing_rejected_lines": round(
                correct_after / max(after, 1), 3)}


def independent_pairs(args: argparse.Namespace, out: Path, samples: int = 8) -> list[dict]:
    """Outcome pairs as the papers build them: ``samples`` solutions the starting model
    samples independently (at the search's temperature) for each of ``args.tasks`` training
    problems, a verified one against a wrong one (disjoint pairs); stored in ``out`` so a
    rerun reads them back."""
    stored = out / "independent_pairs.json"
    if (done := read_marker(stored)) is not None:
        return done["rows"]
    setting = SETTINGS[args.setting]
    env, search = env_and_search(args)
    problems = load_tasks(env, args.tasks, split="train", seed=args.seed)
    attempts = sample_solutions(
        env, load_policy(str(setting["model"]), device="cpu"), problems, samples,
        temperature=search.temperature, max_tokens=search.max_step_tokens * search.max_depth,
        seed=args.seed)
    rows = []
    for task, attempt in zip(problems, attempts, strict=True):
        judged = list(zip(attempt.texts, attempt.scores, strict=True))
        right = [text for text, score in judged if score == 1.0]
        wrong = [text for text, score in judged if score != 1.0]
        rows += [{"prompt": env.prompt(env.reset(task)), "chosen": c, "rejected": w}
                 for c, w in zip(right, wrong, strict=False)]
    write_json(stored, {"rows": rows})
    return rows


def results_table(runs: dict[str, list[dict]]) -> str:
    rounds = max(len(rows) for rows in runs.values())
    k = next(iter(runs.values()))[0].get("k", "k")
    head = "| round | " + " | ".join(f"{m} greedy | {m} pass@{k} | {m} rows"
                                     for m in runs) + " |"
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
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="check-steps")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=512, help="training problems per round")
    parser.add_argument("--eval-tasks", type=int, default=200)
    parser.add_argument("--eval-k", type=int, default=8, help="samples per held-out task")
    parser.add_argument("--simulations", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--beta", type=float, default=5.0,
                        help="DPO beta; large: only pairs the model still gets wrong pull")
    parser.add_argument("--nll-weight", type=float, default=1.0)
    parser.add_argument("--methods", default=None,
                        help="comma-separated; default: the setting's own list")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None,
                        help="default: runs/bench-self-improve[-late-errors]")
    parser.add_argument("--results", type=Path, default=None,
                        help="write the table here (e.g. docs/results.md)")
    parser.add_argument("--seeds", type=int, default=0, metavar="K",
                        help="with --replicate: train each method's final round again with K "
                        "other seeds (same model before it, same rows) and test those too")
    parser.add_argument("--replicate", type=int, default=0, metavar="N",
                        help="then test the start and every final model greedily on N fresh "
                        "held-out problems (none of the evaluation's): a second, larger test")
    parser.add_argument("--ablate", action="store_true",
                        help="then train each DPO method's round 1 again without the NLL term "
                        "and with a vanishing beta (what the preference term adds)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    setting = SETTINGS[args.setting]
    out = args.out or ROOT / "runs" / ("bench-self-improve" + (
        "" if args.setting == "check-steps" else f"-{args.setting}"))
    methods = [m for m in (args.methods or ",".join(setting["methods"])).split(",") if m]
    unknown = set(methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; choose from {list(METHODS)}")
    started = time.perf_counter()
    start_model(setting, args.threads)
    runs = {}
    for method in methods:
        first = next((m for m in runs if not METHODS[m].get("balance")), None)
        if first is not None and not METHODS[method].get("balance"):
            share_start(out / first, out / method)
        runs[method] = iterate(settings(method, args), out / method,
                               report=lambda line, m=method: print(f"[{m}] {line}", flush=True))
    table = results_table(runs)
    print(table)
    summary = summarise(runs, args, out)
    if args.replicate:
        summary["replication"] = replicate(runs, args, out, summary["step_dpo_method"])
    if args.ablate:
        summary["preference_ablation"] = preference_ablation(runs, args, out)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    if args.results is not None:
        details = {m: (out / m / "rounds.md").read_text() for m in runs}
        write_results(args.results, setting["section"], args.setting, table, summary, details)
    print(json.dumps(summary))
    return 0


def summarise(runs: dict[str, list[dict]], args: argparse.Namespace, out: Path) -> dict:
    """The benchmark's JSON line: final accuracies, the best step-level method, and paired
    standard errors of its differences to outcome DPO and SFT."""
    final = {m: rows[-1]["greedy_acc"] for m, rows in runs.items()}
    steps = [m for m in runs if m not in NOT_STEP]
    best = max(steps, key=lambda m: final[m], default=None)
    summary = {
        "setting": args.setting, "start_acc": next(iter(runs.values()))[0]["greedy_acc"],
        "step_dpo_acc": final.get(best) if best else None, "step_dpo_method": best,
        "outcome_dpo_acc": final.get("outcome_dpo"), "sft_acc": final.get("sft"),
        "final_acc": final, "rounds": args.rounds, "tasks_per_round": args.tasks,
        "eval_tasks": args.eval_tasks,
    }
    per_task = {m: rows[-1].get("greedy_per_task") for m, rows in runs.items()}
    ses = {}
    for other in NOT_STEP:
        if best and other in runs and per_task[best] and per_task[other]:
            ses[other] = paired(per_task[best], per_task[other])
    summary["vs"] = ses
    summary["se"] = max((v["se"] for v in ses.values()), default=None)
    summary["target_met"] = bool(ses) and all(v["difference"] > 0 and v["difference"] >= 2 * v["se"]
                                              for v in ses.values())
    outcome_pairs = out / "outcome_dpo" / "round_1" / "data" / "pairs.jsonl"
    if args.setting != "check-steps" and outcome_pairs.exists():
        summary["outcome_localisation"] = localisation(read_rows(outcome_pairs))
        summary["independent_localisation"] = localisation(independent_pairs(args, out))
    summary.update({
        "per_round": {m: [row["greedy_acc"] for row in rows] for m, rows in runs.items()},
        "rows_per_round": {m: [row.get("rows") for row in rows[1:]] for m, rows in runs.items()},
        "search_tokens": {m: [row.get("search_tokens") for row in rows[1:]]
                          for m, rows in runs.items()},
        "bstar": {m: [(row.get("temperature"), row.get("min_margin")) for row in rows[1:]]
                  for m, rows in runs.items() if METHODS[m].get("balance")},
        # search + training time of every round, also when this call only resumed a run
        "compute_seconds": round(sum((row.get("search_seconds") or 0)
                                     + (row.get("train_seconds") or 0)
                                     for rows in runs.values() for row in rows), 1),
    })
    return summary


def replicate(runs: dict[str, list[dict]], args: argparse.Namespace, out: Path,
              picked: str | None) -> dict:
    """Greedy accuracy of the start model and of every method's final model on
    ``args.replicate`` fresh held-out problems (no question of the evaluation's), each model's
    per-problem results stored under ``out/replicate_N`` (a stopped run resumes). The step
    method ``picked`` as best on the evaluation is tested here afresh, against outcome DPO and
    SFT (paired standard errors): the first test picked it, so only this one is unbiased."""
    setting = SETTINGS[args.setting]
    env, search = env_and_search(args)
    used = {t.problem for t in load_tasks(env, args.eval_tasks, split="test")}
    fresh = [t for t in load_tasks(env, args.replicate + len(used), split="test",
                                   seed=args.seed + 1) if t.problem not in used][:args.replicate]
    folder = out / f"replicate_{len(fresh)}"
    models = {"start": str(setting["model"]),
              **{m: str(out / m / f"round_{len(rows) - 1}" / "model") for m, rows in runs.items()},
              **retrained(runs, args, out)}
    solved: dict[str, list[int]] = {}
    for name, model in models.items():
        solved[name] = greedy_solved(env, model, fresh, search, folder / f"{name}.json",
                                     args.seed)
        print(f"[replicate] {name}: greedy {100 * np.mean(solved[name]):.1f}% on {len(fresh)} "
              "fresh problems", flush=True)
    vs = step_differences(list(runs), solved)
    picked_vs = {k: v for k, v in vs.items() if picked and k.startswith(f"{picked}_vs_")}
    per_seed = {m: [solved[name] for name in solved if name == m or name.startswith(f"{m}@seed")]
                for m in runs}
    seeds = {m: [round(float(np.mean(s)), 4) for s in lists] for m, lists in per_seed.items()}
    return {"tasks": len(fresh), "final_round_seeds": seeds if args.seeds else None,
            # each problem's score averaged over a method's seeds, then paired as above
            "seed_mean_vs": step_differences(list(runs), {
                m: np.mean(lists, axis=0) for m, lists in per_seed.items()})
            if args.seeds else None,
            "greedy_acc": {m: round(float(np.mean(v)), 4) for m, v in solved.items()},
            "picked": picked, "vs": vs,
            "picked_target_met": bool(picked_vs) and all(
                v["difference"] > 0 and v["difference"] >= 2 * v["se"]
                for v in picked_vs.values())}


def paired(a: list, b: list) -> dict[str, float]:
    """``a − b`` over the same problems and its paired standard error, as the JSON line
    writes them."""
    diff, se = paired_difference(a, b)
    return {"difference": round(diff, 4), "se": round(se, 4)}


def step_differences(methods: list[str], scores: dict) -> dict:
    """Each step method's paired difference (and its se) to outcome DPO and SFT, from
    per-problem ``scores`` of the same problems."""
    result = {}
    for step in (m for m in methods if m not in NOT_STEP):
        for other in (m for m in NOT_STEP if m in methods):
            result[f"{step}_vs_{other}"] = paired(scores[step], scores[other])
    return result


def greedy_solved(env: object, model: str, tasks: list, search: SearchConfig, marker: Path,
                  seed: int) -> list[int]:
    """Per task, whether ``model`` solves it greedily; stored in ``marker`` (and read back
    from it while it names the same model)."""
    if (row := read_marker(marker)) is None or row.get("model") != model:
        attempts = sample_solutions(
            env, load_policy(model, device="cpu"), tasks, 1, temperature=0.0,
            max_tokens=search.max_step_tokens * search.max_depth, seed=seed)
        row = {"model": model, "solved": [int(a.any_correct) for a in attempts]}
        marker.parent.mkdir(parents=True, exist_ok=True)
        write_json(marker, row)
    return row["solved"]


# A DPO method's training with one of its two terms switched off: no NLL on the chosen side,
# or a vanishing beta (DPO's gradient scales with beta: the NLL on the chosen sides is left).
ABLATIONS = {"dpo_only": {"nll_weight": 0.0}, "nll_only": {"beta": 1e-3}}


def preference_ablation(runs: dict[str, list[dict]], args: argparse.Namespace, out: Path
                        ) -> dict:
    """What the preference term adds: each DPO method's round 1 trained again, from the start
    model on the same rows, with one term off (:data:`ABLATIONS`), and tested greedily beside
    the method's own round-1 model on the evaluation's problems (paired differences)."""
    env, search = env_and_search(args)
    tasks = load_tasks(env, args.eval_tasks, split="test")
    result = {}
    for method in (m for m, rows in runs.items() if m != "sft" and len(rows) > 1):
        config, round_1 = settings(method, args), out / method / "round_1"
        models = {"full": str(round_1 / "model")}
        for name, change in ABLATIONS.items():
            models[name] = train_again(round_1 / name, config.model, config, 1, change,
                                       f"[ablation] {method}: round 1 again as {name}")
        solved = {name: greedy_solved(env, model, tasks, search,
                                      round_1 / f"ablation_{name}.json", args.seed)
                  for name, model in models.items()}
        result[method] = {"greedy_acc": {k: round(float(np.mean(v)), 4)
                                         for k, v in solved.items()}}
        for name in ABLATIONS:
            result[method][f"{name}_vs_full"] = paired(solved[name], solved["full"])
    return result


def ablation_table(ablation: dict) -> str:
    """The preference ablation as markdown (greedy %, and points ± se against the full
    method)."""
    lines = ["| method (round 1) | DPO + NLL (as trained) | DPO only | NLL only |",
             "|---|---|---|---|"]
    for method, row in ablation.items():
        acc = row["greedy_acc"]
        cells = [f"{100 * acc['full']:.1f}"] + [
            f"{100 * acc[name]:.1f} ({100 * row[f'{name}_vs_full']['difference']:+.1f} ± "
            f"{100 * row[f'{name}_vs_full']['se']:.1f})" for name in ABLATIONS]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def retrained(runs: dict[str, list[dict]], args: argparse.Namespace, out: Path
              ) -> dict[str, str]:
    """Each method's final round trained again with ``args.seeds`` other seeds, from the same
    model on the same rows as ``iterate`` trained it (models kept under the round's folder):
    how much a training seed alone moves a method. Model folders by ``method@seedK``."""
    models = {}
    for method, rows in runs.items():
        config, r = settings(method, args), len(rows) - 1
        if r < 1:
            continue
        before = str(out / method / f"round_{r - 1}" / "model") if r > 1 else config.model
        for k in range(1, args.seeds + 1):
            seed = config.train.seed + 1000 * k
            models[f"{method}@seed{k}"] = train_again(
                out / method / f"round_{r}" / f"seed_{k}", before, config, r, {"seed": seed},
                f"[seeds] {method}: round {r} again with seed {seed + r}")
    return models


def train_again(folder: Path, before: str, config: IterateConfig, r: int, change: dict,
                label: str) -> str:
    """Round ``r`` of ``config``'s run trained again from the model ``before`` on that round's
    rows (``folder``'s parent's data), with ``change`` to its training settings, into
    ``folder`` (kept when it is there); returns the folder."""
    if read_marker(folder / "training.json") is None:
        print(label, flush=True)
        train = config.train.model_copy(update=change)
        train_round(folder, before, config.model, read_rows(folder.parent / "data"),
                    config.model_copy(update={"train": train}), r)
    return str(folder)


def replication_table(rep: dict) -> str:
    """The replication as markdown: greedy accuracy per model, and each step method's paired
    difference to outcome DPO and SFT (points ± se)."""
    acc = rep["greedy_acc"]
    lines = [f"Replication on {rep['tasks']} fresh held-out problems (greedy, final models; "
             f"`{rep['picked']}` was picked as the best step method on the first test):", "",
             "| model | greedy % | vs outcome_dpo | vs sft |", "|---|---|---|---|"]
    for name, value in ((n, v) for n, v in acc.items() if "@" not in n):  # seeds: below
        cells = [f"{100 * v['difference']:+.1f} ± {100 * v['se']:.1f}"
                 if (v := rep["vs"].get(f"{name}_vs_{other}")) else "—"
                 for other in ("outcome_dpo", "sft")]
        lines.append(f"| {name} | {100 * value:.1f} | " + " | ".join(cells) + " |")
    if rep.get("final_round_seeds"):
        lines += ["", "The final round trained again with other seeds (same model and rows; "
                  "greedy % on the same problems, iterate's own seed first):", "",
                  "| method | seeds | mean | spread (max − min) |", "|---|---|---|---|"]
        for method, accs in rep["final_round_seeds"].items():
            lines.append(f"| {method} | " + " / ".join(f"{100 * a:.1f}" for a in accs)
                         + f" | {100 * np.mean(accs):.1f} | {100 * (max(accs) - min(accs)):.1f} |")
        lines += ["", "On each problem's score averaged over the seeds (points ± paired se):", ""]
        lines += [f"- {pair.replace('_vs_', ' vs ')}: {100 * v['difference']:+.1f} ± "
                  f"{100 * v['se']:.1f}" for pair, v in rep["seed_mean_vs"].items()]
    return "\n".join(lines)


def write_results(path: Path, key: str, setting: str, table: str, summary: dict,
                  details: dict[str, str]) -> None:
    """This run's section of ``path`` (between its markers)."""
    command = "python bench/self_improve.py " + " ".join(sys.argv[1:])
    per_method = "".join(f"\n`{m}` (every measure; `rows` = training rows mined):\n\n{md}"
                         for m, md in details.items())
    if "replication" in summary:
        per_method += "\n" + replication_table(summary["replication"]) + "\n"
    if "preference_ablation" in summary:
        per_method += ("\nWhat the preference term adds (round 1 trained again from the start "
                       "on the same rows; greedy % on the evaluation's problems, points ± se "
                       "against the method as trained):\n\n"
                       + ablation_table(summary["preference_ablation"]) + "\n")

    title = {"check-steps": "Self-improvement on `arith` (bench/self_improve.py)",
             "late-errors": "Self-improvement where errors surface late (bench/self_improve.py "
                            "--setting late-errors)",
             "free-order": "Self-improvement where solutions differ from their first line "
                           "(bench/self_improve.py --setting free-order)"}[setting]
    section = (
        f"## {title}\n\n"
        f"Command: `{command.strip()}` · {summary['compute_seconds'] / 60:.0f} min of search "
        "and training on this machine.\n\n"
        "Held-out greedy accuracy and pass@k (%, the same test problems every round), and the "
        "training rows mined per round. Round 0 is the starting model.\n\n" + table + "\n"
        + per_method + "\n```json\n" + json.dumps(summary) + "\n```")
    write_section(path, key, section)


if __name__ == "__main__":
    raise SystemExit(main())
