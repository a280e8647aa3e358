import sys
from pathlib import Path

import pytest
import torch

# The plain-Python reference MCTS lives beside the tests, not in the package.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="module")
def policy():
    """The shipped tiny reasoner, on one thread (tiny batches: more threads only contend with
    pytest's own process)."""
    from mcts_agent.search.run import load_policy

    torch.set_num_threads(1)
    return load_policy()
