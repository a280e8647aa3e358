"""Tree search with a language model from Python: the shipped tiny reasoner on arithmetic.

    python examples/search_arith.py

Builds the pieces by name (environment, critics) the way a plug-in user would, searches a few
held-out problems in data mode and prints each tree's verdict and cost.
"""

from __future__ import annotations

from mcts_agent.registry import critics, environments
from mcts_agent.search import SearchConfig, TreeSearch
from mcts_agent.search.run import load_policy


def main(num_tasks: int = 4) -> None:
    env = environments.create("arith", max_operand=20, num_operands=(3, 3))
    policy = load_policy()  # HFPolicy on mcts_agent/models/tiny-arith
    critic = critics.create("verifier", fallback=critics.create("rollout", policy=policy, k=2))
    config = SearchConfig(simulations=8, expand_n=3, max_depth=6, max_step_tokens=20)
    for result in TreeSearch(env, policy, critic, config).run(env.tasks(num_tasks)):
        print(f"{result.task.problem} = {result.task.reference}: answer {result.answer}, "
              f"solved {result.solved}, {result.stats.nodes} nodes, "
              f"{result.stats.tokens} tokens")


if __name__ == "__main__":
    main()
