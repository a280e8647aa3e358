"""Where a search spends its time, function by function: ours beside the dense-row reference.

    python bench/profile_engine.py                 # fused, 64 trees x 1,024 simulations, 20 runs
    python bench/profile_engine.py --runs 5 --trees 8
    python bench/profile_engine.py --stepwise      # one leaf per tree per wave, from Python
    python bench/profile_engine.py --no-state      # our forests without the game's state word
    python bench/profile_engine.py --stepwise --leaves 8   # ours at 8 leaves per tree per wave

Each side runs in a child process under ``perf record`` (Linux ``perf``; the machine must allow
it: ``perf_event_paranoid`` <= 2 for your own processes). numba's compiled code is invisible to
perf by default, so the child compiles everything afresh (into a temporary ``NUMBA_CACHE_DIR``:
code loaded from numba's cache carries no function names) and writes ``/tmp/perf-<pid>.map``,
the map perf reads for JIT code, from every compiled function's address. Each child compiles
with a tiny search and runs one untimed search of the full size (as ``bench/engine.py`` does:
fresh memory's first touch is not what a steady search pays) before it tells perf, through a
control fifo, to start sampling; the table gives nanoseconds per simulation of the timed runs
for each compiled function, libm and libc call and kernel page fault, at perf's sampling
frequency, and one line for the rest (the Python interpreter, numba's dispatch).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FREQUENCY = 4000  # samples per second of CPU time
REST = "(the rest: Python, dispatch, LLVM)"
KEEP = re.compile(r"^(_ZN|__ieee754|exp@|log@|numba_|NRT_|clear_page|exc_page_fault|"
                  r"do_huge_pmd|memset|__memset|__memmove)")


def child(side: str, trees: int, sims: int, runs: int, stepwise: bool, state: bool,
          leaves: int) -> None:
    """Compile with a tiny search, run one untimed search, then ``runs`` sampled ones, and
    write the perf map."""
    for path in (ROOT, ROOT / "bench"):
        sys.path.insert(0, str(path))
    import dense_puct

    import mcts_agent.engine as engine
    from mcts_agent.engine.synthetic import evaluate_kernel, evaluator

    game = engine.SyntheticGame(seed=0, branching=8, max_depth=20, terminal_prob=0.0)
    def run(trees: int, sims: int):
        if side == "reference":
            return (dense_puct.stepwise if stepwise else dense_puct.fused)(game, trees, sims)
        config = engine.EngineConfig(node_state=state)
        if stepwise:
            return engine.search(evaluator(game), sims, num_trees=trees,
                                 leaves_per_call=leaves, logits=True, config=config)
        return engine.search_fused(evaluate_kernel, game, game.branching, sims,
                                   num_trees=trees, leaves_per_call=leaves, logits=True,
                                   config=config)

    run(1, 16)
    run(trees, sims)
    perf_control("enable")
    for _ in range(runs):
        run(trees, sims)
    perf_control("disable")
    write_perf_map()
    Path(os.environ["PROFILE_ENGINE_PID_FILE"]).write_text(str(os.getpid()))


def perf_control(command: str) -> None:
    """Tell the perf recording this process (``enable`` / ``disable`` sampling) and wait
    for its acknowledgement."""
    control, ack = os.environ["PROFILE_ENGINE_FIFOS"].split(",")
    with open(control, "w") as out:
        out.write(command + "\n")
    with open(ack) as reply:
        reply.readline()


def write_perf_map() -> int:
    """``/tmp/perf-<pid>.map``: start, size and name of every function numba compiled in this
    process (a function's size runs to the next one's start). Returns how many."""
    from numba.core.registry import CPUDispatcher

    starts: dict[int, str] = {}
    for dispatcher in (o for o in gc.get_objects() if isinstance(o, CPUDispatcher)):
        for result in dispatcher.overloads.values():
            library = result.library
            try:
                names = [f.name for f in library._final_module.functions if not f.is_declaration]
            except Exception:  # loaded from numba's cache: no module to read names from
                names = [result.fndesc.llvm_func_name]
            for name in names:
                address = library.get_pointer_to_function(name)
                if address:
                    starts[address] = name
    ordered = sorted(starts)
    with open(f"/tmp/perf-{os.getpid()}.map", "w") as out:
        for here, after in zip(ordered, [*ordered[1:], ordered[-1] + 4096], strict=True):
            out.write(f"{here:x} {min(after - here, 1 << 20):x} {starts[here]}\n")
    return len(ordered)


def readable(symbol: str) -> str:
    """``kernels.select_tree`` from numba's mangled
    ``_ZN10mcts_agent6engine7kernels11select_treeB3v85…``."""
    if not symbol.startswith("_ZN"):
        return symbol
    parts, i = [], 3
    while i < len(symbol) and symbol[i].isdigit():
        j = i
        while symbol[j].isdigit():
            j += 1
        size = int(symbol[i:j])
        parts.append(symbol[j:j + size])
        i = j + size
    return ".".join(parts[-2:]) if parts else symbol


def profile(side: str, trees: int, sims: int, runs: int, stepwise: bool,
            state: bool, leaves: int) -> dict[str, float]:
    """ns per simulation of each compiled function, libm / libc call and page fault for one
    side (and of the rest, :data:`REST`) over ``runs`` searches."""
    per_sim = 1e9 / FREQUENCY / (runs * trees * sims)
    spent = {name: count * per_sim for name, count in
             samples(side, trees, sims, runs, stepwise, state, leaves).items()}
    return {name: round(ns, 1) for name, ns in sorted(spent.items(), key=lambda x: -x[1])
            if ns >= 1.0}


def samples(side: str, trees: int, sims: int, runs: int, stepwise: bool,
            state: bool, leaves: int) -> dict[str, int]:
    """perf samples per function of a child process (see :func:`child`)."""
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "perf.data"
        pid_file = Path(scratch) / "pid"
        fifos = [Path(scratch) / name for name in ("control", "ack")]
        for fifo in fifos:
            os.mkfifo(fifo)
        env = {**os.environ, "NUMBA_CACHE_DIR": str(Path(scratch) / "numba"),
               "OPENBLAS_NUM_THREADS": "1", "PROFILE_ENGINE_PID_FILE": str(pid_file),
               "PROFILE_ENGINE_FIFOS": ",".join(map(str, fifos))}
        command = ["perf", "record", "-q", "-F", str(FREQUENCY), "-o", str(data),
                   "--delay=-1", f"--control=fifo:{fifos[0]},{fifos[1]}", "--",
                   sys.executable, __file__, "--child", side, "--trees", str(trees),
                   "--sims", str(sims), "--runs", str(runs)] + ["--stepwise"] * stepwise \
            + ["--no-state"] * (not state) + ["--leaves", str(leaves)]
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
        report = subprocess.run(["perf", "report", "-i", str(data), "--no-children",
                                 "--sort", "sym", "-F", "sample,sym", "--stdio"],
                                capture_output=True, text=True, check=True).stdout
        Path(f"/tmp/perf-{pid_file.read_text()}.map").unlink(missing_ok=True)
    counts: dict[str, int] = {}
    for line in report.splitlines():
        match = re.match(r"\s*(\d+)\s+\[[.k]\]\s+(\S+)", line)
        if match:
            name = readable(match.group(2)) if KEEP.match(match.group(2)) else REST
            counts[name] = counts.get(name, 0) + int(match.group(1))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trees", type=int, default=64)
    parser.add_argument("--sims", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--stepwise", action="store_true",
                        help="one leaf per tree per wave, each wave a return to Python "
                             "(engine.search beside dense_puct.stepwise)")
    parser.add_argument("--no-state", action="store_true",
                        help="our forests without the game's state word per node (the "
                             "evaluator walks up each leaf's path; bench/engine.py's *_no_state)")
    parser.add_argument("--leaves", type=int, default=1,
                        help="our leaves per tree per wave (the reference always takes one)")
    parser.add_argument("--child", choices=("ours", "reference"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.trees, args.sims, args.runs, args.stepwise, not args.no_state,
              args.leaves)
        return
    if shutil.which("perf") is None:
        sys.exit("perf is not installed: `apt-get install linux-perf` (Debian) or your "
                 "distribution's perf package")
    from rich.console import Console
    from rich.table import Table

    sides = {side: profile(side, args.trees, args.sims, args.runs, args.stepwise,
                           not args.no_state, args.leaves)
             for side in ("ours", "reference")}
    kind = ("step-wise" if args.stepwise else "fused") + f", ours at K={args.leaves}"
    table = Table(title=f"{kind} search, {args.trees} trees x {args.sims} simulations: "
                        "ns per simulation")
    for column in ("ours", "ns", "reference", "ns "):
        table.add_column(column, justify="right" if column.startswith("ns") else "left")
    rows = [list(side.items()) for side in sides.values()]
    for i in range(max(len(r) for r in rows)):
        cells = []
        for side in rows:
            cells += [side[i][0], f"{side[i][1]:,.0f}"] if i < len(side) else ["", ""]
        table.add_row(*cells)
    table.add_row("[b]all", f"[b]{sum(sides['ours'].values()):,.0f}",
                  "[b]all", f"[b]{sum(sides['reference'].values()):,.0f}")
    Console().print(table)
    print(json.dumps(sides))


if __name__ == "__main__":
    main()
