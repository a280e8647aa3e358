"""Benchmark of the tree engine: numba step-wise, numba fused and the plain-Python reference.

    python bench/engine.py            # full run (a few minutes on 2 cores)
    python bench/engine.py --quick    # CI smoke run (< 60 s)

Workload: :class:`~mcts_agent.engine.SyntheticGame` (branching 8, terminal only at depth 20;
priors and values hashed from the path), AlphaZero-style evaluations, K = 8 leaves per tree per
wave with virtual loss. Simulations per second = trees · simulations / wall seconds of the whole
search call (root evaluations are not counted as simulations, as in the API). Each figure is the
median of ``--repeats`` timed runs after an untimed warm-up run (JIT compiled, caches hot).

Modes, all measured in the same process:

* ``numba-stepwise``: :func:`mcts_agent.engine.search` with the Python evaluator
  ``synthetic.evaluator(game)``: one return to Python per wave, as the LLM driver runs it.
* ``numba-fused``: :func:`mcts_agent.engine.search_fused` with ``synthetic.evaluate_kernel``:
  the whole search in one compiled call.
* ``python-reference``: ``tests/reference_mcts.ReferenceMCTS``, an object-tree MCTS with the same
  semantics (measured at fewer sizes / runs when slow; batch 64 always shares a size with numba).

The three must build the same trees: root visit counts are compared at one size (asserted).

Beside them, at the headline size with one leaf per tree per wave, ``bench/dense_puct.py`` (a
plain dense-row numba PUCT, each tree to completion: the yardstick of issue 17) is timed
interleaved with the engine's fused, step-wise, step-wise K=8 and parallel fused searches
(``fused_vs_reference_b64``, ``stepwise_vs_reference_b64``, ``stepwise_k8_sims_per_s_b64``,
``prange_sims_per_s_b64``), the engine's forests keeping the game's state word per node as the
reference keeps its rows' (and the fused and step-wise searches once more without it); its root
visits must equal the engine's (asserted). The parallel
search runs with ``OMP_WAIT_POLICY=passive`` unless set otherwise (numba's OpenMP threads
spin-wait by default, which made each parallel region cost ~16 ms on 2 cores).

The last line printed is one JSON object with the figures and the targets' pass / fail.
"""

from __future__ import annotations

import argparse
import gc
import json
import os

os.environ.setdefault("OMP_WAIT_POLICY", "passive")  # before numba starts threads (see --help)
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import dense_puct  # noqa: E402
import numba  # noqa: E402
import numpy as np  # noqa: E402
from reference_mcts import ReferenceMCTS  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import mcts_agent.engine as engine  # noqa: E402
from mcts_agent.engine import BYTES_PER_NODE, EngineConfig, SyntheticGame  # noqa: E402
from mcts_agent.engine.storage import STATE_BYTES  # noqa: E402
from mcts_agent.engine.synthetic import evaluate_kernel, evaluator  # noqa: E402

GAME = SyntheticGame(seed=0, branching=8, max_depth=20, terminal_prob=0.0)
LEAVES_PER_CALL = 8
HEADLINE_BATCH = 64

TARGETS = {
    "stepwise_sims_per_s_b64": 1_000_000,
    "stepwise_speedup_b64": 20.0,
    "fused_sims_per_s_b64": 3_000_000,
    "fused_vs_reference_b64": 1.0,
    "stepwise_vs_reference_b64": 1.0,
    "prange_sims_per_s_b64": 3_000_000,
    "bytes_per_node": 61,
    "jit_warmup_s": 3.0,
}

STEPWISE, FUSED, PYTHON = "numba-stepwise", "numba-fused", "python-reference"

# A new interpreter: import the engine, run a tiny search in both modes, report the seconds.
WARMUP_CODE = """
import json, time
t0 = time.perf_counter()
import mcts_agent.engine as E
from mcts_agent.engine.synthetic import evaluate_kernel, evaluator
t1 = time.perf_counter()
g = E.SyntheticGame(seed=0, branching=8, max_depth=20, terminal_prob=0.0)
E.search(evaluator(g), 8, num_trees=2, leaves_per_call=8, logits=True)
t2 = time.perf_counter()
E.search_fused(evaluate_kernel, g, g.branching, 8, num_trees=2, leaves_per_call=8, logits=True)
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "stepwise_s": t2 - t1, "fused_s": t3 - t2,
                  "total_s": t3 - t0}))
"""


# --------------------------------------------------------------------------- the three modes


def run_stepwise(batch: int, sims: int) -> Any:
    return engine.search(evaluator(GAME), sims, num_trees=batch, config=EngineConfig(),
                         leaves_per_call=LEAVES_PER_CALL, logits=True)


def run_fused(batch: int, sims: int) -> Any:
    return engine.search_fused(evaluate_kernel, GAME, GAME.branching, sims, num_trees=batch,
                               config=EngineConfig(), leaves_per_call=LEAVES_PER_CALL,
                               logits=True)


def run_python(batch: int, sims: int) -> Any:
    return ReferenceMCTS(EngineConfig(), GAME, batch).run(sims, LEAVES_PER_CALL)


RUNNERS: dict[str, Callable[[int, int], Any]] = {
    STEPWISE: run_stepwise, FUSED: run_fused, PYTHON: run_python,
}


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def measure(mode: str, batch: int, sims: int, repeats: int, warm: bool) -> dict[str, Any]:
    """Median wall time of ``repeats`` searches (after one untimed run when ``warm``)."""
    runner = RUNNERS[mode]
    if warm:
        runner(batch, sims)
    times, result = [], None
    for _ in range(repeats):
        seconds, result = timed(lambda: runner(batch, sims))
        times.append(seconds)
    median = statistics.median(times)
    row = {
        "mode": mode, "batch": batch, "sims": sims, "runs": repeats,
        "median_s": median, "min_s": min(times), "max_s": max(times),
        "sims_per_s": batch * sims / median,
    }
    if mode == PYTHON:
        row["nodes"] = sum(len(result.nodes_breadth_first(t)) for t in range(batch))
    else:
        row["nodes"] = result.num_nodes
    return {"row": row, "result": result}


def mctx_rate(batch: int, sims: int, repeats: int) -> float | None:
    """DeepMind mctx's ``muzero_policy`` (jitted, CPU) on a jax-native game of the same shape
    (branching 8, priors and values hashed from the path): sims/s, median of ``repeats`` after
    compilation. Not the same trees as ours (another hash); None where jax or mctx is absent."""
    try:
        import jax
        import jax.numpy as jnp
        import mctx
    except ImportError:
        return None
    width = GAME.branching

    def mix(h):  # a 32-bit integer mix (lowbias32), uint32 throughout
        h = (h ^ (h >> 16)) * jnp.uint32(0x7FEB352D)
        h = (h ^ (h >> 15)) * jnp.uint32(0x846CA68B)
        return h ^ (h >> 16)

    def evaluate(h):
        units = mix(h[:, None] + jnp.arange(1, width + 1, dtype=jnp.uint32)) / 2.0**32
        return GAME.logit_scale * (2.0 * units - 1.0), mix(h ^ jnp.uint32(0x9E3779B9)) / 2.0**32

    def recurrent_fn(params, rng, action, h):
        h = mix(h * jnp.uint32(31) + action.astype(jnp.uint32) + 1)
        logits, value = evaluate(h)
        zeros = jnp.zeros(batch)
        return mctx.RecurrentFnOutput(reward=zeros, discount=zeros + 1.0, prior_logits=logits,
                                      value=value), h

    @jax.jit
    def run(key):
        h = jnp.arange(batch, dtype=jnp.uint32)
        logits, value = evaluate(h)
        root = mctx.RootFnOutput(prior_logits=logits, value=value, embedding=h)
        out = mctx.muzero_policy((), key, root, recurrent_fn, num_simulations=sims,
                                 dirichlet_fraction=0.0)
        return out.search_tree.node_visits

    run(jax.random.PRNGKey(0)).block_until_ready()  # compile
    times = []
    for i in range(repeats):
        seconds, _ = timed(lambda i=i: run(jax.random.PRNGKey(i)).block_until_ready())
        times.append(seconds)
    return batch * sims / statistics.median(times)


def gumbel_rate(batch: int, sims: int, repeats: int) -> float:
    """Our Gumbel MuZero search (one simulation per tree per call, as mctx) on the synthetic
    game: sims/s, median of ``repeats`` after a warm-up run."""
    def run() -> Any:
        return engine.gumbel_search(evaluator(GAME), sims, num_trees=batch,
                                    max_num_considered_actions=16, seed=0)

    run()
    return batch * sims / statistics.median(timed(run)[0] for _ in range(repeats))


# --------------------------------------------------------------------------- dense-row yardstick


def versus_reference(batch: int, sims: int, repeats: int) -> dict[str, Any]:
    """The engine against ``bench/dense_puct.py`` (a plain dense-row numba PUCT) on the same
    game, one leaf per tree per wave, timed interleaved (one run of each per round; medians).

    Also the engine step-wise at K=8 and fused with ``parallel=True``. Root visits of the
    reference and of every engine mode must be equal (the same trees).

    The engine's forests keep the game's state word per node (``EngineConfig(node_state=True)``:
    the evaluator hashes a leaf from its parent's word, as the reference keeps each row's
    ``steps``); the ``*_no_state`` runs are the same searches without it (the evaluator walks
    up the path instead)."""
    def ours(k: int, fused: bool, parallel: bool = False, state: bool = True) -> Callable[[], Any]:
        config = EngineConfig(node_state=state)
        if fused:
            return lambda: engine.search_fused(evaluate_kernel, GAME, GAME.branching, sims,
                                               num_trees=batch, leaves_per_call=k, logits=True,
                                               parallel=parallel, config=config)
        return lambda: engine.search(evaluator(GAME), sims, num_trees=batch,
                                     leaves_per_call=k, logits=True, config=config)

    runs = {
        "fused_k1": ours(1, True), "reference_fused": lambda: dense_puct.fused(GAME, batch, sims),
        "stepwise_k1": ours(1, False),
        "reference_stepwise": lambda: dense_puct.stepwise(GAME, batch, sims),
        "stepwise_k8": ours(8, False), "prange_k1": ours(1, True, parallel=True),
        "fused_k1_no_state": ours(1, True, state=False),
        "stepwise_k1_no_state": ours(1, False, state=False),
    }
    outputs = {name: run() for name, run in runs.items()}  # warm-up (and compile)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            times[name].append(timed(run)[0])
    rates = {name: batch * sims / statistics.median(t) for name, t in times.items()}
    visits = {name: np.asarray(out if isinstance(out, np.ndarray)
                               else [out.root_visits(t) for t in range(batch)])
              for name, out in outputs.items() if name != "stepwise_k8"}
    identical = all(np.array_equal(v, visits["reference_fused"]) for v in visits.values())
    return {
        "batch": batch, "sims": sims, "repeats": repeats, "sims_per_s": rates,
        "fused_vs_reference": rates["fused_k1"] / rates["reference_fused"],
        "stepwise_vs_reference": rates["stepwise_k1"] / rates["reference_stepwise"],
        "fused_no_state_vs_reference": rates["fused_k1_no_state"] / rates["reference_fused"],
        "stepwise_no_state_vs_reference": (rates["stepwise_k1_no_state"]
                                           / rates["reference_stepwise"]),
        "identical_root_visits": identical,
        "threads": numba.get_num_threads(), "threading_layer": _threading_layer(),
    }


def _threading_layer() -> str:
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel region has run
        return "none"


# --------------------------------------------------------------------------- cross-check


def root_visits(result: Any, batch: int) -> list[list[int]]:
    """Per tree, the root children's visit counts (Forest and ReferenceMCTS share the method)."""
    return [[int(v) for v in result.root_visits(t)] for t in range(batch)]


def cross_check(results: dict[str, Any], batch: int, sims: int) -> dict[str, Any]:
    visits = {mode: root_visits(res, batch) for mode, res in results.items()}
    base = visits[STEPWISE]
    mismatched = {
        mode: [t for t in range(batch) if v[t] != base[t]] for mode, v in visits.items()
    }
    identical = all(not bad for bad in mismatched.values())
    return {
        "batch": batch, "sims": sims, "modes": sorted(visits),
        "identical_root_visits": identical,
        "root_visit_total": int(sum(map(sum, base))),
        "mismatched_trees": {m: bad[:10] for m, bad in mismatched.items() if bad},
    }


# --------------------------------------------------------------------------- JIT warm-up


def cache_files() -> dict[str, float]:
    """numba's on-disk cache entries (``.nbc``) of the engine, with their modification times."""
    override = os.environ.get("NUMBA_CACHE_DIR")
    base = Path(override) if override else Path(engine.__file__).parent / "__pycache__"
    if not base.exists():
        return {}
    return {str(p.relative_to(base)): p.stat().st_mtime for p in base.rglob("*.nbc")}


def warmup_subprocess() -> dict[str, Any]:
    before = cache_files()
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", WARMUP_CODE], cwd=ROOT, capture_output=True,
                          text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"warm-up subprocess failed:\n{proc.stderr}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    after = cache_files()
    written = sorted({Path(name).name.split("-")[0] for name, mtime in after.items()
                      if before.get(name) != mtime})
    out["process_wall_s"] = wall
    out["cache_entries_written"] = written
    return out


def measure_warmup() -> dict[str, Any]:
    first = warmup_subprocess()
    second = warmup_subprocess()
    return {
        "jit_warmup_s": second["total_s"],
        "note": "new `python -c` process: import mcts_agent.engine + a tiny search in both modes "
                "(time from before the import to the end, interpreter start-up excluded; "
                "process_wall_s includes it). Run twice; the second run is reported (the first "
                "may populate numba's on-disk cache).",
        "first": first,
        "second": second,
    }


# --------------------------------------------------------------------------- main


def plan(quick: bool, repeats: int) -> dict[str, Any]:
    if quick:
        return {"batches": [1, 64], "sims": [64, 256], "repeats": repeats or 1,
                "python_sizes": [(1, 64), (1, 256), (64, 64)], "python_repeats": 1}
    repeats = repeats or 5
    return {"batches": [1, 64], "sims": [64, 256, 1024], "repeats": repeats,
            "python_sizes": [(1, 64), (1, 256), (1, 1024), (64, 64), (64, 256), (64, 1024)],
            "python_repeats": min(repeats, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smaller sizes and 1 repeat (CI smoke run, < 60 s)")
    parser.add_argument("--repeats", type=int, default=0,
                        help="timed runs per size, median reported (default 5; --quick: 1)")
    parser.add_argument("--python-max-s", type=float, default=20.0,
                        help="skip reference sizes whose estimated time per run exceeds this")
    args = parser.parse_args(argv)
    cfg = plan(args.quick, args.repeats)
    console = Console(highlight=False, width=max(Console().width, 110))
    started = time.perf_counter()

    console.print(f"[bold]mcts-agent engine benchmark[/] — {platform.processor() or 'cpu'}, "
                  f"{os.cpu_count()} cores, numba {numba.__version__}, numpy {np.__version__}")
    console.print(f"game {GAME}, K={LEAVES_PER_CALL} leaves per tree per call, "
                  f"{cfg['repeats']} timed runs per numba size")

    # In-process JIT warm-up, so no timed run pays for compilation.
    run_stepwise(2, 8)
    run_fused(2, 8)

    rows: list[dict[str, Any]] = []
    kept: dict[tuple[str, int, int], Any] = {}
    for batch in cfg["batches"]:
        for sims in cfg["sims"]:
            for mode in (STEPWISE, FUSED):
                m = measure(mode, batch, sims, cfg["repeats"], warm=True)
                rows.append(m["row"])
                kept[(mode, batch, sims)] = m["result"]

    python_rate = None  # sims/s measured so far, to estimate the cost of the next size
    for batch, sims in cfg["python_sizes"]:
        if python_rate and batch * sims / python_rate > args.python_max_s:
            console.print(f"[yellow]skipping python-reference at batch {batch}, {sims} sims "
                          f"(estimated {batch * sims / python_rate:.0f} s per run)[/]")
            continue
        est = batch * sims / python_rate if python_rate else 0.0
        runs = cfg["python_repeats"] if est * cfg["python_repeats"] <= args.python_max_s else 1
        m = measure(PYTHON, batch, sims, runs, warm=False)
        rows.append(m["row"])
        kept[(PYTHON, batch, sims)] = m["result"]
        python_rate = m["row"]["sims_per_s"]

    def rate(mode: str, batch: int, sims: int) -> float | None:
        for r in rows:
            if (r["mode"], r["batch"], r["sims"]) == (mode, batch, sims):
                return r["sims_per_s"]
        return None

    # Headline sizes: the largest simulation count for numba; for the ratio, the largest count
    # at batch 64 that the reference also ran.
    headline_sims = max(cfg["sims"])
    shared = [s for s in cfg["sims"] if rate(PYTHON, HEADLINE_BATCH, s) is not None]
    if not shared:
        raise RuntimeError("the reference ran at no batch-64 size shared with numba")
    speedup_sims = max(shared)

    check = cross_check({mode: kept[(mode, HEADLINE_BATCH, speedup_sims)]
                         for mode in (STEPWISE, FUSED, PYTHON)}, HEADLINE_BATCH, speedup_sims)

    forest = kept[(STEPWISE, HEADLINE_BATCH, headline_sims)]
    fused_forest = kept[(FUSED, HEADLINE_BATCH, headline_sims)]
    memory = {
        "BYTES_PER_NODE": int(BYTES_PER_NODE),
        "forest_nbytes_per_node": forest.nbytes / forest.num_nodes,
        "stepwise_allocated_bytes_per_node": sum(a.nbytes for a in forest.nodes)
        / forest.num_nodes,
        "fused_allocated_bytes_per_node": sum(a.nbytes for a in fused_forest.nodes)
        / fused_forest.num_nodes,
        "nodes": forest.num_nodes,
        "size": f"batch {HEADLINE_BATCH}, {headline_sims} sims",
    }

    console.print("measuring the engine against a dense-row numba PUCT (bench/dense_puct.py)…")
    yardstick = versus_reference(HEADLINE_BATCH, headline_sims, cfg["repeats"])

    console.print("measuring DeepMind mctx (jax, jitted) on a game of the same shape…")
    mctx_b64 = mctx_rate(HEADLINE_BATCH, headline_sims, cfg["repeats"])
    gumbel_b64 = gumbel_rate(HEADLINE_BATCH, headline_sims, cfg["repeats"])

    console.print("measuring JIT warm-up in fresh processes (twice)…")
    warmup = measure_warmup()

    # ------------------------------------------------------------------ report
    table = Table(title="simulations per second (median of timed runs; higher is better)")
    for col, justify in (("mode", "left"), ("batch", "right"), ("sims/tree", "right"),
                         ("runs", "right"), ("median s", "right"), ("sims/s", "right"),
                         ("nodes", "right"), ("× python", "right")):
        table.add_column(col, justify=justify)
    for r in sorted(rows, key=lambda r: (r["batch"], r["sims"], r["mode"])):
        ref = rate(PYTHON, r["batch"], r["sims"])
        table.add_row(r["mode"], str(r["batch"]), str(r["sims"]), str(r["runs"]),
                      f"{r['median_s']:.4f}", f"{r['sims_per_s']:,.0f}", f"{r['nodes']:,}",
                      f"{r['sims_per_s'] / ref:,.1f}" if ref else "—")
    console.print(table)

    stepwise_b64 = rate(STEPWISE, HEADLINE_BATCH, headline_sims)
    fused_b64 = rate(FUSED, HEADLINE_BATCH, headline_sims)
    python_b64 = rate(PYTHON, HEADLINE_BATCH, speedup_sims)
    speedup = rate(STEPWISE, HEADLINE_BATCH, speedup_sims) / python_b64
    values = {
        "stepwise_sims_per_s_b64": stepwise_b64,
        "stepwise_speedup_b64": speedup,
        "fused_sims_per_s_b64": fused_b64,
        "fused_vs_reference_b64": yardstick["fused_vs_reference"],
        "stepwise_vs_reference_b64": yardstick["stepwise_vs_reference"],
        "prange_sims_per_s_b64": yardstick["sims_per_s"]["prange_k1"],
        "bytes_per_node": BYTES_PER_NODE,
        "jit_warmup_s": warmup["jit_warmup_s"],
    }
    targets = {}
    for name, target in TARGETS.items():
        upper = name in ("bytes_per_node", "jit_warmup_s")
        ok = values[name] <= target if upper else values[name] >= target
        targets[name] = {"value": values[name], "target": f"{'<=' if upper else '>='} {target}",
                         "pass": bool(ok)}

    summary = Table(title="targets")
    for col in ("figure", "value", "target", "pass"):
        summary.add_column(col)
    for name, t in targets.items():
        v = t["value"]
        shown = f"{v:,.0f}" if v >= 1000 else f"{v:,.2f}"
        summary.add_row(name, shown, t["target"], "[green]yes[/]" if t["pass"] else "[red]NO[/]")
    console.print(summary)
    console.print(f"headline: batch {HEADLINE_BATCH}, {headline_sims} sims/tree for numba modes; "
                  f"speedup = step-wise / python at batch {HEADLINE_BATCH}, {speedup_sims} sims")
    status = "[green]identical[/]" if check["identical_root_visits"] else "[red]DIFFERENT[/]"
    console.print(f"cross-check at batch {check['batch']}, {check['sims']} sims: root visit "
                  f"counts of {', '.join(check['modes'])} are {status}")
    console.print(f"Gumbel MuZero search (ours), batch {HEADLINE_BATCH}, {headline_sims} sims: "
                  f"{gumbel_b64:,.0f} sims/s")
    ys = yardstick["sims_per_s"]
    same = "[green]identical[/]" if yardstick["identical_root_visits"] else "[red]DIFFERENT[/]"
    console.print(f"dense-row reference, batch {HEADLINE_BATCH}, {headline_sims} sims, K=1 "
                  f"(interleaved, median of {yardstick['repeats']}): fused ours "
                  f"{ys['fused_k1']:,.0f} vs reference {ys['reference_fused']:,.0f} "
                  f"(×{yardstick['fused_vs_reference']:.2f}); step-wise ours "
                  f"{ys['stepwise_k1']:,.0f} vs {ys['reference_stepwise']:,.0f} "
                  f"(×{yardstick['stepwise_vs_reference']:.2f}); step-wise K=8 "
                  f"{ys['stepwise_k8']:,.0f}; fused parallel ({yardstick['threads']} threads, "
                  f"{yardstick['threading_layer']}) {ys['prange_k1']:,.0f}; root visits {same}. "
                  f"Without the node state word: fused {ys['fused_k1_no_state']:,.0f} "
                  f"(×{yardstick['fused_no_state_vs_reference']:.2f}), step-wise "
                  f"{ys['stepwise_k1_no_state']:,.0f} "
                  f"(×{yardstick['stepwise_no_state_vs_reference']:.2f})")
    if mctx_b64 is not None:
        console.print(f"DeepMind mctx (jitted muzero_policy, jax CPU), batch {HEADLINE_BATCH}, "
                      f"{headline_sims} sims: {mctx_b64:,.0f} sims/s (ours: step-wise "
                      f"{stepwise_b64:,.0f}, fused {fused_b64:,.0f})")
    console.print(f"bytes/node: BYTES_PER_NODE={BYTES_PER_NODE} (+{STATE_BYTES} with "
                  f"node_state), forest.nbytes/num_nodes="
                  f"{memory['forest_nbytes_per_node']:.1f} (allocated incl. spare capacity: "
                  f"step-wise {memory['stepwise_allocated_bytes_per_node']:.1f}, fused "
                  f"{memory['fused_allocated_bytes_per_node']:.1f})")
    w1, w2 = warmup["first"], warmup["second"]
    console.print(f"JIT warm-up (new process, 2nd of 2 runs): {w2['total_s']:.2f} s = import "
                  f"{w2['import_s']:.2f} + step-wise {w2['stepwise_s']:.2f} + fused "
                  f"{w2['fused_s']:.2f} (process wall {w2['process_wall_s']:.2f} s; 1st run "
                  f"{w1['total_s']:.2f} s)")
    if w2["cache_entries_written"]:
        console.print(f"[yellow]numba wrote cache entries in the 2nd warm-up run (recompiled): "
                      f"{', '.join(w2['cache_entries_written'])}[/]")

    report = {
        "numba_stepwise_sims_per_s_b64": stepwise_b64,
        "python_sims_per_s_b64": python_b64,
        "stepwise_speedup_b64": speedup,
        "numba_fused_sims_per_s_b64": fused_b64,
        "fused_vs_reference_b64": yardstick["fused_vs_reference"],
        "stepwise_vs_reference_b64": yardstick["stepwise_vs_reference"],
        "stepwise_k8_sims_per_s_b64": yardstick["sims_per_s"]["stepwise_k8"],
        "prange_sims_per_s_b64": yardstick["sims_per_s"]["prange_k1"],
        "reference": yardstick,
        "mctx_sims_per_s_b64": mctx_b64,
        "gumbel_sims_per_s_b64": gumbel_b64,
        "bytes_per_node": BYTES_PER_NODE,
        "jit_warmup_s": warmup["jit_warmup_s"],
        "headline_sims": headline_sims,
        "speedup_sims": speedup_sims,
        "targets": targets,
        "all_targets_pass": all(t["pass"] for t in targets.values()),
        "cross_check": check,
        "memory": memory,
        "jit_warmup": warmup,
        "sims_per_s": {f"{r['mode']}/b{r['batch']}/s{r['sims']}": r["sims_per_s"]
                       for r in sorted(rows, key=lambda r: (r["mode"], r["batch"], r["sims"]))},
        "results": sorted(rows, key=lambda r: (r["mode"], r["batch"], r["sims"])),
        "config": {
            "quick": args.quick, "repeats": cfg["repeats"],
            "python_repeats": cfg["python_repeats"], "leaves_per_call": LEAVES_PER_CALL,
            "game": GAME._asdict(), "cpu_count": os.cpu_count(),
            "numba": numba.__version__, "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "bench_wall_s": time.perf_counter() - started,
    }
    sys.stdout.flush()
    print(json.dumps(report))
    if not check["identical_root_visits"]:
        print(f"cross-check failed: {check['mismatched_trees']}", file=sys.stderr)
        return 1
    if not yardstick["identical_root_visits"]:
        print("the engine and the dense-row reference built different trees", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
