"""Small language models that run anywhere, for tests and experiments without a model hub.

``load_tiny_reasoner()`` returns the shipped char-level arithmetic model and its tokenizer.
Names are imported lazily so that ``import mcts_agent.models`` stays cheap (torch and
transformers load on first use) and ``python -m mcts_agent.models.tiny`` runs without warnings.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mcts_agent.models.tiny import (
        TINY_ARITH_DIR,
        build_tokenizer,
        evaluate,
        evaluate_model,
        load_tiny_reasoner,
        train,
    )

__all__ = [
    "TINY_ARITH_DIR",
    "build_tokenizer",
    "evaluate",
    "evaluate_model",
    "load_tiny_reasoner",
    "train",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(import_module("mcts_agent.models.tiny"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
