"""The engine at a git revision against the working tree's, timed in turn.

    python bench/ab_engine.py                           # HEAD against the working tree, fused
    python bench/ab_engine.py --rev HEAD~2 --leaves 1,8 --rounds 15
    python bench/ab_engine.py --stepwise                # search(): one compiled call a wave
    python bench/ab_engine.py --parallel                # search_fused(parallel=True)

Runs of ``bench/engine.py`` a few minutes apart differ by up to ±8 % on a shared 2-core VM:
more than most engine changes are worth. Here the two versions run side by side: REV's
``mcts_agent`` (``git archive``, unpacked into a folder of the temp dir kept per commit, so
numba's disk cache serves the next run) and the working tree's each serve searches in a child
process of their own (two engines in one process confuse numba's typing of the fused loop's
evaluator), and each round times REV, the working tree and the dense-row reference
(``bench/dense_puct.py``, in this process) one after the other, on the synthetic game of
``bench/engine.py``. Printed: each one's median and minimum wall time, and the reference's
time over it (> 1: faster than the reference); the last line is one JSON object. Both versions
must build the reference's trees (root visits compared at one leaf per tree per wave; exit
status 1 if not).

REV's engine must have the calls this script makes (``search_fused``, ``search``,
``EngineConfig(node_state=...)``, ``synthetic.evaluate_kernel`` / ``evaluator``).
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "passive")  # before numba starts threads
ROOT = Path(__file__).resolve().parents[1]


def checkout(rev: str) -> tuple[str, Path]:
    """REV's commit id and a folder holding its ``mcts_agent`` package (made once per commit)."""
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=12", rev],
                         capture_output=True, text=True, check=True).stdout.strip()
    home = Path(tempfile.gettempdir()) / "mcts_agent_ab"
    folder = home / sha
    if not folder.exists():
        home.mkdir(exist_ok=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", sha, "mcts_agent"],
                                 capture_output=True, check=True).stdout
        staging = Path(tempfile.mkdtemp(dir=home))
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(staging, filter="data")
        try:
            staging.rename(folder)  # whole, or not at all
        except OSError:  # another run made it meanwhile
            shutil.rmtree(staging)
    return sha, folder


def serve(args: argparse.Namespace) -> None:
    """A child's loop: one search per line ``k`` read, its seconds (and root visits) written."""
    import mcts_agent.engine as engine
    from mcts_agent.engine import synthetic

    game = engine.SyntheticGame(seed=0, branching=8, max_depth=20, terminal_prob=0.0)
    config = engine.EngineConfig(node_state=not args.no_state)
    for line in sys.stdin:
        k = int(line)
        gc.collect()
        start = time.perf_counter()
        if args.stepwise:
            forest = engine.search(synthetic.evaluator(game), args.sims, num_trees=args.trees,
                                   leaves_per_call=k, logits=True, config=config)
        else:
            forest = engine.search_fused(synthetic.evaluate_kernel, game, game.branching,
                                         args.sims, num_trees=args.trees, leaves_per_call=k,
                                         logits=True, config=config, parallel=args.parallel)
        seconds = time.perf_counter() - start
        visits = [forest.root_visits(t).tolist() for t in range(args.trees)]
        print(json.dumps({"seconds": seconds, "visits": visits}), flush=True)


class Server:
    """A child process serving searches with the ``mcts_agent`` found in ``folder``."""

    def __init__(self, folder: Path, argv: list[str]) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(folder), os.environ.get("PYTHONPATH", "")])}
        self.process = subprocess.Popen([sys.executable, __file__, "--serve", *argv], env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, cwd=tempfile.gettempdir())

    def __call__(self, k: int) -> dict[str, Any]:
        self.process.stdin.write(f"{k}\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the search server stopped (exit {self.process.wait()})")
        return json.loads(line)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def reference(args: argparse.Namespace) -> Any:
    """The dense-row reference's search, timed here: seconds and root visits."""
    sys.path.insert(0, str(ROOT / "bench"))
    import dense_puct

    from mcts_agent.engine import SyntheticGame

    game = SyntheticGame(seed=0, branching=8, max_depth=20, terminal_prob=0.0)
    drive = dense_puct.stepwise if args.stepwise else dense_puct.fused

    def run(_k: int) -> dict[str, Any]:
        gc.collect()
        start = time.perf_counter()
        visits = drive(game, args.trees, args.sims)
        return {"seconds": time.perf_counter() - start, "visits": visits.tolist()}

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", default="HEAD", help="the git revision to compare against")
    parser.add_argument("--leaves", default="1", help="leaves per tree per wave, e.g. 1,8")
    parser.add_argument("--trees", type=int, default=64)
    parser.add_argument("--sims", type=int, default=1024, help="simulations per tree")
    parser.add_argument("--rounds", type=int, default=11, help="timed runs of each")
    parser.add_argument("--stepwise", action="store_true", help="search() instead of fused")
    parser.add_argument("--parallel", action="store_true", help="fused, trees in threads")
    parser.add_argument("--no-state", action="store_true", help="forests without state words")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stepwise and args.parallel:
        parser.error("--parallel is a fused search's option; drop --stepwise or --parallel")
    if args.serve:
        serve(args)
        return 0
    try:
        sha, folder = checkout(args.rev)
    except subprocess.CalledProcessError as error:
        parser.error(f"--rev {args.rev}: git could not give that revision's engine "
                     f"({(error.stderr or b'').strip()[-200:]!r}); pass a commit, tag or branch")
    passed = list(argv if argv is not None else sys.argv[1:])
    servers = {"rev": Server(folder, passed), "tree": Server(ROOT, passed)}
    leaves = [int(x) for x in args.leaves.split(",")]
    runs = {f"{who}_k{k}": (server, k) for k in leaves for who, server in servers.items()}
    runs["reference"] = (reference(args), 1)
    try:
        warm = {name: run(k) for name, (run, k) in runs.items()}  # compile, first touch
        identical = all(warm[name]["visits"] == warm["reference"]["visits"]
                        for name in runs if name.endswith("_k1"))
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name, (run, k) in runs.items():
                times[name].append(run(k)["seconds"])
    finally:
        for server in servers.values():
            server.close()
    report(args, sha, times, identical)
    return 0 if identical else 1


def report(args: argparse.Namespace, sha: str, times: dict[str, list[float]],
           identical: bool) -> None:
    median = {name: statistics.median(t) for name, t in times.items()}
    best = {name: min(t) for name, t in times.items()}
    mode = "step-wise" if args.stepwise else "fused, parallel" if args.parallel else "fused"
    print(f"{mode}, {args.trees} trees x {args.sims} simulations, {args.rounds} rounds; "
          f"rev = {args.rev} ({sha}), tree = the working tree")
    for name in times:
        print(f"{name:10s} median {1e3 * median[name]:8.2f} ms  min {1e3 * best[name]:8.2f} ms"
              f"  reference / this: median {median['reference'] / median[name]:.3f}, "
              f"min {best['reference'] / best[name]:.3f}")
    if not identical:
        print("root visits differ from the reference's", file=sys.stderr)
    print(json.dumps({
        "rev": sha, "mode": mode, "trees": args.trees, "sims": args.sims, "rounds": args.rounds,
        "median_ms": {name: 1e3 * m for name, m in median.items()},
        "min_ms": {name: 1e3 * m for name, m in best.items()},
        "vs_reference": {name: median["reference"] / m for name, m in median.items()},
        "identical_root_visits": identical,
    }))


if __name__ == "__main__":
    sys.exit(main())
