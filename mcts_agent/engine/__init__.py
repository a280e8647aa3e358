"""The tree engine: a forest of search trees in numpy arrays, driven by numba kernels.

It knows nothing of text or models: leaves go out, priors and values come back. See
:class:`Forest` for the wave-at-a-time API the LLM driver uses, :func:`search` /
:func:`search_fused` for whole searches from numpy callbacks, and :class:`AskTell` for a search
driven by the caller's own model loop (leaves handed out, evaluations told back in any order).
"""

from .asktell import AskTell, Leaf
from .config import EngineConfig
from .forest import Evaluation, Forest, Selection
from .gumbel import GumbelPolicy, gumbel_search
from .search import numba_evaluator, search, search_fused
from .storage import BYTES_PER_NODE, NodeArrays
from .synthetic import SyntheticGame

__all__ = [
    "BYTES_PER_NODE",
    "AskTell",
    "EngineConfig",
    "Evaluation",
    "Forest",
    "GumbelPolicy",
    "Leaf",
    "NodeArrays",
    "Selection",
    "SyntheticGame",
    "gumbel_search",
    "numba_evaluator",
    "search",
    "search_fused",
]

