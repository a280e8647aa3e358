"""LLM tree search: the wave driver and its settings. Finished trees are
:class:`~mcts_agent.trees.TreeRecord` s in a :class:`~mcts_agent.trees.ResultFile`."""

from ..trees import ResultFile, TreeRecord
from .config import SearchConfig
from .driver import TreeSearch, choose_answer

__all__ = ["ResultFile", "SearchConfig", "TreeRecord", "TreeSearch", "choose_answer"]
