"""GPU check of the toolkit's model paths, with figures: generation, tree search, training.

    python bench/gpu_check.py --device cuda            # on a GPU machine (also times its CPU)
    python bench/gpu_check.py --device cpu --small     # the same script, quickly, on a CPU

Three sections, each reported even when another one fails:

* **generate**: ``load_policy(tiny-arith, device=..., dtype=...)`` and one batched ``propose``
  of ``--requests`` arithmetic prompts × ``--n`` samples, twice (search-like steps that stop at
  the newline, and whole solutions that stop at EOS), timed after a warm-up call; on ``cuda`` in
  bfloat16 and float32 at the policy's default batch size and at ``--big-batch``, and the same
  requests on the machine's CPU in float32 (``--no-cpu-compare`` skips it). Greedy whole
  solutions of ``--greedy-prompts`` prompts are compared token by token between float32 on the
  device and float32 on the CPU (and bfloat16 against float32, for information).
* **search**: ``run_search("arith", tasks=--tasks, policy=<bf16 policy>,
  config=SearchConfig(simulations=--simulations), baselines=False)``: solved trees, tokens,
  nodes, seconds.
* **train**: ``train_policy`` on the tiny reasoner with DPO on ``--pairs`` pairs (correct vs
  corrupted solutions) and SFT on ``--sft-rows`` solutions, in ``--precision`` (default
  bfloat16 on cuda, float32 on cpu). ``TrainConfig`` has no device setting: TRL trains on CUDA
  whenever it is visible, so ``--device cpu`` hides the GPUs (``CUDA_VISIBLE_DEVICES=""``)
  before torch loads. Each method runs twice (``--epochs-short`` and ``--epochs``) so the
  marginal steps/s excludes model loading and dataset preparation; the objective is measured
  on the training rows before and after (DPO loss against the starting model, SFT completion
  NLL), beside the trainer's own reported loss.

The last line printed is one JSON object with every figure; with ``OUT`` set it is also written
to ``$OUT/gpu_check.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda, cuda:1 … or cpu")
    p.add_argument("--small", action="store_true", help="small sizes, for a quick CPU run")
    p.add_argument("--requests", type=int, default=None, help="prompts per propose (256)")
    p.add_argument("--n", type=int, default=4, help="samples per prompt")
    p.add_argument("--big-batch", type=int, default=1024, help="second HF batch_size on cuda")
    p.add_argument("--greedy-prompts", type=int, default=None, help="greedy equality (16)")
    p.add_argument("--tasks", type=int, default=None, help="search trees (32)")
    p.add_argument("--simulations", type=int, default=8)
    p.add_argument("--pairs", type=int, default=None, help="DPO pairs (64)")
    p.add_argument("--sft-rows", type=int, default=None, help="SFT rows (64)")
    p.add_argument("--epochs", type=float, default=4.0)
    p.add_argument("--epochs-short", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=8, help="training batch")
    p.add_argument("--learning-rate", type=float, default=5e-4)
    p.add_argument("--precision", default=None, choices=["auto", "float32", "bfloat16"])
    p.add_argument("--no-cpu-compare", action="store_true",
                   help="on cuda: skip timing the same requests on the CPU")
    p.add_argument("--skip", action="append", default=[],
                   choices=["generate", "search", "train", "generate_cpu"])
    args = p.parse_args(argv)
    small = args.small
    for name, full, quick in (("requests", 256, 32), ("greedy_prompts", 16, 4),
                              ("tasks", 32, 4), ("pairs", 64, 16), ("sft_rows", 64, 16)):
        if getattr(args, name) is None:
            setattr(args, name, quick if small else full)
    if small:
        args.epochs, args.epochs_short = min(args.epochs, 2.0), min(args.epochs_short, 1.0)
    return args


ARGS = parse_args()
CUDA = ARGS.device.startswith("cuda")
if not CUDA:  # train_policy trains on CUDA whenever one is visible: keep a CPU run on the CPU
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(tempfile.gettempdir()) / "numba"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the script's own folder (bench/, first on sys.path) holds critics.py, which would shadow the
# `critics` package when mcts_agent is not installed (PYTHONPATH only): the repository root first
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from mcts_agent.llm.base import GenerationRequest  # noqa: E402
from mcts_agent.llm.load import BackendConfig, load_policy  # noqa: E402
from mcts_agent.models.tiny import TINY_ARITH_DIR  # noqa: E402


def log(message: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {message}", flush=True)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def arith_env() -> Any:
    from mcts_agent.registry import environments

    try:
        return environments.create("arith")
    except Exception as err:  # not installed (PYTHONPATH only): no entry points to find
        log(f"registry has no arith ({type(err).__name__}: {err}); registering built-ins here")
        from critics.rollout import RolloutCritic
        from critics.verifier import VerifierCritic
        from environments.math.arith_env import ArithEnvironment
        from mcts_agent.registry import critics

        environments.register("arith")(ArithEnvironment)
        for name, factory in (("rollout", RolloutCritic), ("verifier", VerifierCritic)):
            if name not in critics._factories:
                critics.register(name)(factory)
        return environments.create("arith")


# --------------------------------------------------------------------------- generation


def requests(env: Any, count: int, n: int, kind: str, seed: int = 0) -> list[GenerationRequest]:
    tasks = env.tasks(count, split="train", seed=seed)
    prompts = [env.prompt(env.reset(t)) for t in tasks]
    if kind == "step":  # what a search wave asks for
        return [GenerationRequest(p, n=n, max_tokens=48, temperature=1.0,
                                  stop=(env.step_delimiter,), seed=seed * 100_003 + i)
                for i, p in enumerate(prompts)]
    if kind == "solution":  # whole solutions, ended by EOS
        return [GenerationRequest(p, n=n, max_tokens=128, temperature=1.0,
                                  seed=seed * 100_003 + i) for i, p in enumerate(prompts)]
    return [GenerationRequest(p, n=1, max_tokens=128, temperature=0.0) for p in prompts]


def timed_propose(policy: Any, reqs: list[GenerationRequest]) -> dict[str, Any]:
    policy.propose(reqs[: max(1, len(reqs) // 8)])  # warm-up: kernels, allocator, caches
    sync()
    started = time.perf_counter()
    out = policy.propose(reqs)
    sync()
    seconds = time.perf_counter() - started
    tokens = sum(c.num_tokens for cands in out for c in cands)
    finish: dict[str, int] = {}
    for cands in out:
        for c in cands:
            finish[c.finish_reason] = finish.get(c.finish_reason, 0) + 1
    return {"rows": sum(len(c) for c in out), "tokens": tokens, "seconds": round(seconds, 3),
            "tokens_per_s": round(tokens / seconds, 1), "finish": finish}


def bench_policy(label: str, device: str, dtype: str, batch_size: int, env: Any,
                 args: argparse.Namespace) -> tuple[dict[str, Any], Any]:
    started = time.perf_counter()
    policy = load_policy(backend=BackendConfig(batch_size=batch_size), device=device, dtype=dtype)
    load_s = time.perf_counter() - started
    row: dict[str, Any] = {"device": str(policy.device), "dtype": str(policy.model.dtype),
                           "batch_size": batch_size, "load_s": round(load_s, 2)}
    for kind in ("step", "solution"):
        row[kind] = timed_propose(policy, requests(env, args.requests, args.n, kind, seed=1))
        log(f"generate {label} {kind}: {row[kind]}")
    return row, policy


def greedy_outputs(policy: Any, env: Any, count: int) -> list[Any]:
    return [cands[0] for cands in policy.propose(requests(env, count, 1, "greedy", seed=2))]


def compare_greedy(a: list[Any], b: list[Any]) -> dict[str, Any]:
    same_ids = [x.token_ids == y.token_ids for x, y in zip(a, b, strict=True)]
    return {"prompts": len(a), "identical_tokens": sum(same_ids),
            "identical_text": sum(x.text == y.text for x, y in zip(a, b, strict=True)),
            "max_abs_logprob_diff": max((abs(x.logprob - y.logprob)
                                         for x, y, s in zip(a, b, same_ids, strict=True) if s),
                                        default=None),
            "first_difference": next(({"a": x.text, "b": y.text} for x, y, s in
                                      zip(a, b, same_ids, strict=True) if not s), None)}


GREEDY: dict[str, list[Any]] = {}


def section_generate_cpu(env: Any, args: argparse.Namespace, figures: dict[str, Any]) -> None:
    """The same requests on the GPU machine's CPU (float32), and greedy equality with cuda."""
    gen = figures["generate"]
    cpu_row, cpu = bench_policy("cpu float32 b64", "cpu", "float32", 64, env, args)
    cpu_row["torch_threads"] = torch.get_num_threads()
    gen["cpu_float32"] = cpu_row
    if "cuda_float32" in GREEDY:
        cpu_greedy = greedy_outputs(cpu, env, args.greedy_prompts)
        gen["greedy_equal_cuda_cpu_float32"] = compare_greedy(GREEDY["cuda_float32"], cpu_greedy)
        log(f"greedy cuda fp32 vs cpu fp32: {gen['greedy_equal_cuda_cpu_float32']}")
    big = gen.get(f"cuda_bfloat16_b{args.big_batch}")
    for kind in ("step", "solution"):
        gen[f"speedup_{kind}_cuda_bf16_b64_vs_cpu"] = round(
            gen["cuda_bfloat16"][kind]["tokens_per_s"] / cpu_row[kind]["tokens_per_s"], 2)
        if big:
            gen[f"speedup_{kind}_cuda_bf16_b{args.big_batch}_vs_cpu"] = round(
                big[kind]["tokens_per_s"] / cpu_row[kind]["tokens_per_s"], 2)


def section_generate(env: Any, args: argparse.Namespace, figures: dict[str, Any]) -> Any:
    """Returns the bfloat16 (cuda) / float32 (cpu) policy for the search section."""
    gen: dict[str, Any] = {"requests": args.requests, "n": args.n}
    figures["generate"] = gen
    main_dtype = "bfloat16" if CUDA else "float32"
    gen[f"{'cuda' if CUDA else 'cpu'}_{main_dtype}"], policy = bench_policy(
        f"{ARGS.device} {main_dtype} b64", ARGS.device, main_dtype, 64, env, args)
    if not CUDA:
        gen["greedy_equal_cuda_cpu"] = None  # nothing to compare against on a CPU
        return policy
    bf16_greedy = greedy_outputs(policy, env, args.greedy_prompts)
    big, big_policy = bench_policy(f"cuda bfloat16 b{args.big_batch}", ARGS.device,
                                   "bfloat16", args.big_batch, env, args)
    gen[f"cuda_bfloat16_b{args.big_batch}"] = big
    del big_policy
    fp32_row, fp32 = bench_policy("cuda float32 b64", ARGS.device, "float32", 64, env, args)
    gen["cuda_float32"] = fp32_row
    GREEDY["cuda_float32"] = greedy_outputs(fp32, env, args.greedy_prompts)
    del fp32
    gen["greedy_equal_cuda_bf16_vs_fp32"] = compare_greedy(bf16_greedy, GREEDY["cuda_float32"])
    return policy


# --------------------------------------------------------------------------- search


def section_search(env: Any, policy: Any, args: argparse.Namespace,
                   figures: dict[str, Any]) -> None:
    from mcts_agent.search import SearchConfig
    from mcts_agent.search.run import run_search

    if policy is None:
        policy = load_policy(device=ARGS.device, dtype="bfloat16" if CUDA else "float32")
    summary, _ = run_search("arith", tasks=args.tasks, policy=policy,
                            config=SearchConfig(simulations=args.simulations),
                            baselines=False)
    s = summary.to_dict()
    figures["search"] = {
        "policy_dtype": str(policy.model.dtype), "device": str(policy.device),
        "tasks": s["tasks"], "simulations": args.simulations, "solved": s["mcts_solved"],
        "tokens": s["tokens"], "nodes": s["nodes"], "seconds": round(s["seconds"], 2),
        "tokens_per_s": round(s["tokens"] / s["seconds"], 1) if s["seconds"] else None,
        "statuses": s["statuses"], "environment_errors": s["environment_errors"]}
    log(f"search: {figures['search']}")


# --------------------------------------------------------------------------- training


def corrupt(solution: str) -> str:
    """A wrong solution: the final answer off by one (the steps stay)."""
    lines = solution.rstrip("\n").split("\n")
    head, _, number = lines[-1].rpartition(" ")
    lines[-1] = f"{head} {int(number) + 1}"
    return "\n".join(lines) + "\n"


def training_rows(env: Any, count: int, seed: int) -> tuple[list[dict], list[dict]]:
    tasks = env.tasks(count, split="train", seed=seed)
    pairs, sft = [], []
    for t in tasks:
        prompt, solution = env.prompt(env.reset(t)), env.solution(t)
        pairs.append({"prompt": prompt, "chosen": solution, "rejected": corrupt(solution),
                      "chosen_terminal": True, "rejected_terminal": True})
        sft.append({"prompt": prompt, "completion": solution})
    return pairs, sft


@torch.no_grad()
def completion_logps(model: Any, tokenizer: Any, rows: list[tuple[str, str]],
                     device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probability and token count of each completion after its prompt (EOS added,
    as TRL's trainers add it to plain-text completions), in float32."""
    from mcts_agent.llm.hf import encode_prompt

    logps, counts = [], []
    for prompt, completion in rows:
        p = encode_prompt(tokenizer, prompt)
        c = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = torch.tensor([p + c], device=device)
        logits = model(input_ids=ids).logits.float()[0, len(p) - 1:-1]
        lp = torch.log_softmax(logits, -1).gather(1, ids[0, len(p):, None]).sum()
        logps.append(lp.item())
        counts.append(len(c))
    return torch.tensor(logps, dtype=torch.float64), torch.tensor(counts, dtype=torch.float64)


def objective(method: str, model_dir: str | Path, rows: list[dict], beta: float,
              ref: dict[str, torch.Tensor] | None = None) -> tuple[float, dict]:
    """DPO: mean sigmoid loss against ``ref`` (the starting model's log-probs; log 2 for the
    starting model itself); SFT: mean NLL per completion token."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
    if method == "sft":
        lp, n = completion_logps(model, tokenizer,
                                 [(r["prompt"], r["completion"]) for r in rows], device)
        return float(-lp.sum() / n.sum()), {}
    chosen, _ = completion_logps(model, tokenizer, [(r["prompt"], r["chosen"]) for r in rows],
                                 device)
    rejected, _ = completion_logps(model, tokenizer,
                                   [(r["prompt"], r["rejected"]) for r in rows], device)
    now = {"chosen": chosen, "rejected": rejected}
    ref = ref or now
    margin = beta * ((chosen - ref["chosen"]) - (rejected - ref["rejected"]))
    return float(-torch.nn.functional.logsigmoid(margin).mean()), now


def saved_dtype(folder: Path) -> str | None:
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    with safe_open(str(files[0]), "pt") as f:
        return str(f.get_slice(next(iter(f.keys()))).get_dtype())


def section_train(env: Any, args: argparse.Namespace, figures: dict[str, Any]) -> None:
    from mcts_agent.train import TrainConfig, train_policy

    precision = args.precision or ("bfloat16" if CUDA else "float32")
    pairs, sft = training_rows(env, max(args.pairs, args.sft_rows), seed=7)
    pairs, sft = pairs[: args.pairs], sft[: args.sft_rows]
    train: dict[str, Any] = {
        "precision": precision, "trains_on": "cuda" if torch.cuda.is_available() else "cpu",
        "device_setting": "none in TrainConfig: TRL uses CUDA whenever it is visible "
                          "(use_cpu = not torch.cuda.is_available())",
        "bf16_mode": "TrainingArguments(bf16=True): autocast mixed precision, float32 weights "
                     "and optimizer state (train_policy loads the model in float32)"
                     if precision == "bfloat16" else None}
    figures["train"] = train
    work = Path(tempfile.mkdtemp(prefix="gpu_check_train_"))
    # untimed: the first training of a process pays one-off costs (CUDA and autocast set-up,
    # TRL's first imports); on the H200 a first 8-step DPO run took 5.1 s, the next 32 steps 2 s
    started = time.perf_counter()
    train_policy(TINY_ARITH_DIR, sft[: args.batch_size], work / "warmup",
                 TrainConfig(method="sft", precision=precision, epochs=1.0,
                             batch_size=args.batch_size, seed=0))
    train["warmup_s"] = round(time.perf_counter() - started, 2)
    for method, rows in (("dpo", pairs), ("sft", sft)):
        entry: dict[str, Any] = {"rows": len(rows)}
        train[method] = entry
        try:
            beta = 0.1
            before, ref = objective(method, TINY_ARITH_DIR, rows, beta)
            runs = {}
            for label, epochs in (("short", args.epochs_short), ("long", args.epochs)):
                config = TrainConfig(method=method, precision=precision, epochs=epochs,
                                     batch_size=args.batch_size, beta=beta,
                                     learning_rate=args.learning_rate, seed=0)
                report = train_policy(TINY_ARITH_DIR, rows, work / f"{method}_{label}", config)
                runs[label] = report
                log(f"train {method} {label}: steps {report.steps}, {report.seconds} s, "
                    f"loss {report.loss}, last log {report.metrics}")
            long, short = runs["long"], runs["short"]
            after, _ = objective(method, long.out_dir, rows, beta, ref)
            d_steps, d_s = long.steps - short.steps, long.seconds - short.seconds
            last_logged = long.metrics.get("loss")
            entry.update({
                "steps": long.steps, "seconds_incl_setup": long.seconds,
                "steps_per_s_incl_setup": round(long.steps / long.seconds, 2),
                # (long - short) steps over (long - short) seconds: without load and data set-up;
                # None when the difference is within timing noise
                "steps_per_s_marginal": round(d_steps / d_s, 2) if d_s > 0.25 and d_steps
                else None,
                "short_run": {"steps": short.steps, "seconds": short.seconds},
                "trainer_loss_mean": long.loss, "trainer_last_logged": long.metrics,
                "objective_before": round(before, 5), "objective_after": round(after, 5),
                "objective": "DPO sigmoid loss vs the starting model (beta 0.1)"
                             if method == "dpo" else "NLL per completion token",
                "saved_weights_dtype": saved_dtype(Path(long.out_dir)),
                "finite": all(v is not None and math.isfinite(v)
                              for v in (long.loss, short.loss, before, after)) and (
                    last_logged is None or math.isfinite(last_logged)),
                "decreased": after < before})
            entry["passed"] = entry["finite"] and entry["decreased"]
        except Exception as err:
            entry["error"] = f"{type(err).__name__}: {err}"
            entry["passed"] = False
            traceback.print_exc()
        log(f"train {method}: {entry}")


# --------------------------------------------------------------------------- main


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for name in ("torch", "transformers", "trl", "datasets", "accelerate", "pydantic",
                 "numba", "numpy", "pyarrow"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def write_out(figures: dict[str, Any]) -> None:
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_check.json").write_text(
            json.dumps(figures, indent=2, default=str))


def main() -> int:
    args = ARGS
    started = time.perf_counter()
    figures: dict[str, Any] = {"device_arg": args.device, "small": args.small,
                               "versions": versions(), "errors": {}}
    if CUDA:
        if not torch.cuda.is_available():
            figures["errors"]["cuda"] = "torch.cuda.is_available() is False"
        else:
            figures["gpu"] = torch.cuda.get_device_name(0)
    figures["cpu_threads"] = torch.get_num_threads()
    log(f"versions {figures['versions']}, gpu {figures.get('gpu')}")
    env = arith_env()
    state: dict[str, Any] = {"policy": None}

    def generate() -> None:
        state["policy"] = section_generate(env, args, figures)

    sections = [("generate", generate),
                ("search", lambda: section_search(env, state["policy"], args, figures)),
                ("train", lambda: section_train(env, args, figures))]
    if CUDA and not args.no_cpu_compare:  # last: the slowest part, least needed
        sections.append(("generate_cpu", lambda: section_generate_cpu(env, args, figures)))
    for name, run in sections:
        if name in args.skip or (name == "generate_cpu" and "generate" in args.skip) or (
                CUDA and "cuda" in figures["errors"]):
            continue
        t0 = time.perf_counter()
        try:
            run()
        except Exception as err:
            figures["errors"][name] = f"{type(err).__name__}: {err}"
            traceback.print_exc()
        figures.setdefault("section_seconds", {})[name] = round(time.perf_counter() - t0, 1)
        if CUDA and torch.cuda.is_available():
            figures["max_gpu_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        write_out(figures)  # what is done so far survives a timeout
    figures["total_seconds"] = round(time.perf_counter() - started, 1)
    train = figures.get("train", {})
    gen = figures.get("generate", {})
    greedy = gen.get("greedy_equal_cuda_cpu_float32")
    figures["passed"] = {
        "generate": None if "generate" in args.skip else (
            "generate" in figures and "generate" not in figures["errors"]),
        "greedy_cuda_equals_cpu_float32": (greedy["identical_tokens"] == greedy["prompts"])
        if greedy else None,
        "search": None if "search" in args.skip else (
            "search" in figures and "search" not in figures["errors"]),
        "train_dpo": train.get("dpo", {}).get("passed"),
        "train_sft": train.get("sft", {}).get("passed")}
    write_out(figures)
    print(json.dumps(figures, default=str), flush=True)
    return 0 if not figures["errors"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
