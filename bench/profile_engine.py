"""Where a fused search spends its time, function by function: ours beside the dense-row reference.

    python bench/profile_engine.py                 # 64 trees x 1,024 simulations, 20 runs each
    python bench/profile_engine.py --runs 5 --trees 8

Each side runs in a child process under ``perf record`` (Linux ``perf``; the machine must allow
it: ``perf_event_paranoid`` <= 2 for your own processes). numba's compiled code is invisible to
perf by default, so the child compiles everything afresh (into a temporary ``NUMBA_CACHE_DIR``:
code loaded from numba's cache carries no function names) and writes ``/tmp/perf-<pid>.map``,
the map perf reads for JIT code, from every compiled function's address. Samples in Python and
in LLVM are left out, and a second child that only imports and compiles (one tiny search) is
profiled too and its samples subtracted (libc, libm and page faults happen while compiling as
well); the table gives nanoseconds per simulation for each compiled function, libm and libc call
and kernel page fault, at perf's sampling frequency.

The last line printed is one JSON object: ``{"ours": {function: ns}, "reference": {...}}``.
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
KEEP = re.compile(r"^(_ZN|__ieee754|exp@|log@|numba_|NRT_|clear_page|exc_page_fault|"
                  r"do_huge_pmd|memset|__memset|__memmove)")


def child(side: str, trees: int, sims: int, runs: int) -> None:
    """Compile with a tiny search, run the search ``runs`` times, then write the perf map."""
    for path in (ROOT, ROOT / "bench"):
        sys.path.insert(0, str(path))
    import dense_puct

    import mcts_agent.engine as engine
    from mcts_agent.engine.synthetic import evaluate_kernel

    game = engine.SyntheticGame(seed=0, branching=8, max_depth=20, terminal_prob=0.0)
    def run(trees: int, sims: int):
        if side == "ours":
            return engine.search_fused(evaluate_kernel, game, game.branching, sims,
                                       num_trees=trees, leaves_per_call=1, logits=True)
        return dense_puct.fused(game, trees, sims)

    run(1, 16)
    for _ in range(runs):
        run(trees, sims)
    write_perf_map()
    Path(os.environ["PROFILE_ENGINE_PID_FILE"]).write_text(str(os.getpid()))


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


def profile(side: str, trees: int, sims: int, runs: int) -> dict[str, float]:
    """ns per simulation of each compiled function, libm / libc call and page fault for one
    side: the samples of ``runs`` searches less those of compiling alone."""
    searched, compiled = samples(side, trees, sims, runs), samples(side, trees, sims, 0)
    per_sim = 1e9 / FREQUENCY / (runs * trees * sims)
    spent = {name: (count - compiled.get(name, 0)) * per_sim for name, count in searched.items()}
    return {name: round(ns, 1) for name, ns in sorted(spent.items(), key=lambda x: -x[1])
            if ns >= 1.0}


def samples(side: str, trees: int, sims: int, runs: int) -> dict[str, int]:
    """perf samples per function of a child process (see :func:`child`)."""
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "perf.data"
        pid_file = Path(scratch) / "pid"
        env = {**os.environ, "NUMBA_CACHE_DIR": str(Path(scratch) / "numba"),
               "OPENBLAS_NUM_THREADS": "1", "PROFILE_ENGINE_PID_FILE": str(pid_file)}
        command = ["perf", "record", "-q", "-F", str(FREQUENCY), "-o", str(data), "--",
                   sys.executable, __file__, "--child", side, "--trees", str(trees),
                   "--sims", str(sims), "--runs", str(runs)]
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
        report = subprocess.run(["perf", "report", "-i", str(data), "--no-children",
                                 "--sort", "sym", "-F", "sample,sym", "--stdio"],
                                capture_output=True, text=True, check=True).stdout
        Path(f"/tmp/perf-{pid_file.read_text()}.map").unlink(missing_ok=True)
    counts: dict[str, int] = {}
    for line in report.splitlines():
        match = re.match(r"\s*(\d+)\s+\[[.k]\]\s+(\S+)", line)
        if match and KEEP.match(match.group(2)):
            name = readable(match.group(2))
            counts[name] = counts.get(name, 0) + int(match.group(1))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trees", type=int, default=64)
    parser.add_argument("--sims", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--child", choices=("ours", "reference"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.trees, args.sims, args.runs)
        return
    if shutil.which("perf") is None:
        sys.exit("perf is not installed: `apt-get install linux-perf` (Debian) or your "
                 "distribution's perf package")
    from rich.console import Console
    from rich.table import Table

    sides = {side: profile(side, args.trees, args.sims, args.runs)
             for side in ("ours", "reference")}
    table = Table(title=f"fused search, {args.trees} trees x {args.sims} simulations: "
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
