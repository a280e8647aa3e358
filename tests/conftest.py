import sys
from pathlib import Path

import pytest
import torch

# The plain-Python reference MCTS lives beside the tests, not in the package.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread for a module, then as it was: a tiny model on a shared 2-core box
    runs ~40× faster on one thread than on two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def policy():
    """The shipped tiny reasoner, on one thread (tiny batches: more threads only contend with
    pytest's own process)."""
    from mcts_agent.search.run import load_policy

    torch.set_num_threads(1)
    return load_policy()
