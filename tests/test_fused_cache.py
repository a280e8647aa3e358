"""The fused search loop takes its evaluator as a first-class function, so numba's disk cache
keeps one compiled loop for every evaluator of the same argument types: a new process loads
it instead of compiling it again (what made a new process's first fused search cost ~2.5 s)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numba import njit

from mcts_agent.engine import SyntheticGame, kernels, search_fused
from mcts_agent.engine.synthetic import evaluate_kernel

ROOT = Path(__file__).resolve().parents[1]

# A tiny fused search (serial, then parallel) in a new process; prints how numba got each loop.
FUSED_RUN = """
import json
from mcts_agent.engine import SyntheticGame, kernels, search_fused
from mcts_agent.engine.synthetic import evaluate_kernel
game = SyntheticGame(seed=1, branching=3, max_depth=4)
for parallel in (False, True):
    search_fused(evaluate_kernel, game, 3, 6, num_trees=2, leaves_per_call=2, logits=True,
                 parallel=parallel)
print(json.dumps({"parallel" if parallel else "serial":
                  {"hits": sum(loop.stats.cache_hits.values()),
                   "misses": sum(loop.stats.cache_misses.values())}
                  for (_, parallel), loop in kernels._compiled_loops.items()}))
"""


def fused_run() -> dict:
    done = subprocess.run([sys.executable, "-c", FUSED_RUN], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_new_process_loads_the_fused_loops_from_the_disk_cache():
    fused_run()  # compiles what no earlier process left in the cache
    assert fused_run() == {"serial": {"hits": 1, "misses": 0},
                           "parallel": {"hits": 1, "misses": 0}}


@njit
def flat_evaluator(nodes, leaves, game, priors, values, terminal, rewards):
    """Equal logits for every action, every value 0.25: nothing like the synthetic game."""
    priors[:, :] = 0.0
    values[:] = 0.25


def test_one_compiled_loop_serves_every_evaluator_of_the_same_types():
    game = SyntheticGame(seed=2, branching=4, max_depth=5)
    synthetic = search_fused(evaluate_kernel, game, 4, 30, num_trees=2, logits=True)
    loops = dict(kernels._compiled_loops)
    flat = search_fused(flat_evaluator, game, 4, 30, num_trees=2, logits=True)
    assert kernels._compiled_loops == loops  # no new loop for the second evaluator
    # and each search called its own evaluator
    np.testing.assert_allclose(flat.mean_value(flat.roots), 0.25)
    assert not np.allclose(synthetic.mean_value(synthetic.roots), 0.25)


def test_a_python_evaluator_is_refused_with_the_way_out():
    def evaluate(nodes, leaves, context, priors, values, terminal, rewards):
        values[:] = 0.0

    with pytest.raises(TypeError, match=r"@njit evaluator.*search\(\) takes a Python one"):
        search_fused(evaluate, None, 2, 4, num_trees=1)
