"""Task suites for mcts-agent: problem generators, renderers and verifiers (math, code, agents)."""
