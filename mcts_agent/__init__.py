"""mcts-agent: agentic tree search and self-reflection with language models."""

__version__ = "0.1.0"

