"""LLM tree search: the wave driver, its settings, and the records of finished trees."""

from .config import SearchConfig
from .driver import TreeSearch, choose_answer
from .results import ResultFile, SearchResult

__all__ = ["ResultFile", "SearchConfig", "SearchResult", "TreeSearch", "choose_answer"]
