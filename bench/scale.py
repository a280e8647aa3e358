"""Does the search scale over Ray workers? 1 vs 2 workers on the same tasks, same seed.

    python bench/scale.py                 # 24 arith tasks, the shipped tiny reasoner
    python bench/scale.py --tasks 12      # a quicker look

A local Ray cluster (explicit CPUs, small object store, no dashboard) runs the search workers,
each holding its own copy of the tiny reasoner on one CPU thread: a CPU-bound model, so two
workers on two cores should approach twice the trees per second. The same tasks are searched
in one process first (one torch thread), which gives Ray's overhead per tree, and the trees
of all three runs are compared (``identical_trees``: every step, visit and count exactly,
log-probabilities to 1e-4). ``worker_cpu_share_N``: the CPU time the workers used over
wall time × N; under 1, other jobs on the machine took part of their cores. The last line
printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mcts_agent.registry import PluginSpec  # noqa: E402
from mcts_agent.scale import RayConfig  # noqa: E402
from mcts_agent.scale.compare import tree_differences  # noqa: E402
from mcts_agent.search import ResultFile, SearchConfig  # noqa: E402
from mcts_agent.search.run import load_policy, run_search  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=24)
    parser.add_argument("--simulations", type=int, default=8)
    parser.add_argument("--chunk", type=int, default=4, help="Tasks per call to a worker.")
    parser.add_argument("--repeats", type=int, default=2, help="Ray runs per worker count, "
                        "interleaved; the fastest counts (other jobs share the cores).")
    args = parser.parse_args(argv)
    from mcts_agent.scale.ray_search import WorkerJob, WorkerPool, run_ray_search, start_ray

    config = SearchConfig(simulations=args.simulations, expand_n=4, max_depth=6,
                          max_step_tokens=20, stop_when_solved=False, max_trees_in_flight=8)
    job = WorkerJob(PluginSpec("arith", {}), rollouts=2, config=config, threads=1)
    runs: dict[str, dict] = {}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        torch.set_num_threads(1)
        policy = load_policy()
        run_search("arith", tasks=2, policy=policy, config=config, rollouts=2,  # warm-up (JIT)
                   out_dir=Path(tmp, "warm-up"), baselines=False, cache=False)
        started = time.perf_counter()
        run_search("arith", tasks=args.tasks, policy=policy, config=config, rollouts=2,
                   out_dir=Path(tmp, "single"), baselines=False, cache=False)
        runs["single"] = {"seconds": time.perf_counter() - started, "start_s": 0.0}
        # 3 logical CPUs: both pools stay up (1 + 2 actors); each actor runs one torch thread
        start_s = start_ray(RayConfig(num_cpus=3, object_store_mb=200))
        pools = {}
        for workers in (1, 2):
            begun = time.perf_counter()
            pools[workers] = WorkerPool(job, RayConfig(workers=workers, chunk=args.chunk))
            runs[f"ray{workers}"] = {"seconds": float("inf"),
                                     "start_s": time.perf_counter() - begun}
        try:
            for repeat in range(args.repeats):
                for workers, pool in pools.items():
                    name = f"ray{workers}"
                    pool.configure(job.model, config)  # fresh critics: no cached values
                    cpu = _cpu(pool)
                    summary, _ = run_ray_search(
                        "arith", tasks=args.tasks, config=config, pool=pool, baselines=False,
                        out_dir=Path(tmp, name if repeat == 0 else f"{name}-{repeat}"),
                        rollouts=2)
                    if summary.seconds < runs[name]["seconds"]:
                        runs[name].update(seconds=summary.seconds, cpu_share=round(
                            (_cpu(pool) - cpu) / (summary.seconds * workers), 3))
        finally:
            for pool in pools.values():
                pool.close()
        trees = {name: ResultFile(Path(tmp, name, "trees.jsonl")).read() for name in runs}
    differences = (tree_differences(trees["ray1"], trees["single"])
                   + tree_differences(trees["ray2"], trees["single"]))
    rate = {name: args.tasks / run["seconds"] for name, run in runs.items()}
    report = {
        "tasks": args.tasks, "simulations": args.simulations, "chunk": args.chunk,
        "trees_per_s_single": round(rate["single"], 3),
        "trees_per_s_1": round(rate["ray1"], 3), "trees_per_s_2": round(rate["ray2"], 3),
        "scaling_2": round(rate["ray2"] / rate["ray1"], 3),
        # the same ratio had every worker had its whole core (see worker_cpu_share_N)
        "scaling_2_per_cpu_second": round((rate["ray2"] / runs["ray2"]["cpu_share"])
                                          / (rate["ray1"] / runs["ray1"]["cpu_share"]), 3),
        "ray_overhead_s": {
            "cluster_start": round(start_s, 2),
            "workers_start_1": round(runs["ray1"]["start_s"], 2),
            "workers_start_2": round(runs["ray2"]["start_s"], 2),
            "per_tree": round((runs["ray1"]["seconds"] - runs["single"]["seconds"])
                              / args.tasks, 4)},
        "identical_trees": not differences,
        "worker_cpu_share_1": runs["ray1"]["cpu_share"],
        "worker_cpu_share_2": runs["ray2"]["cpu_share"],
        "load_average_before": round(load_before, 2),
    }
    _table(runs, rate, args.tasks)
    if differences:
        print("first differences:", differences[:5])
    print(json.dumps(report))
    return 0


def _cpu(pool) -> float:
    """CPU seconds the pool's workers have used so far, together."""
    return sum(pool.ray.get([w.actor.cpu_seconds.remote() for w in pool.workers]))


def _table(runs: dict[str, dict], rate: dict[str, float], tasks: int) -> None:
    table = Table(title=f"{tasks} arith trees, the tiny reasoner, 1 CPU thread per worker")
    for column in ("run", "start (s)", "search (s)", "trees/s"):
        table.add_column(column, justify="right" if column != "run" else "left")
    names = {"single": "one process", "ray1": "Ray, 1 worker", "ray2": "Ray, 2 workers"}
    for name, run in runs.items():
        table.add_row(names[name], f"{run['start_s']:.1f}", f"{run['seconds']:.1f}",
                      f"{rate[name]:.2f}")
    Console().print(table)


if __name__ == "__main__":
    raise SystemExit(main())
