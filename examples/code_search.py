"""Tree search over programs: the shipped tiny code model on generated function-writing tasks.

    python examples/code_search.py

A step is one line of code; finished programs run their tests in the sandbox. Inference mode
judges programs only by the example shown in the prompt, then grades the chosen program on the
hidden tests; data mode uses the hidden tests during the search.
"""

from __future__ import annotations

from mcts_agent.models.tiny_code import TINY_CODE_DIR
from mcts_agent.registry import critics, environments
from mcts_agent.search import SearchConfig, TreeSearch
from mcts_agent.search.run import load_policy


def main(num_tasks: int = 3) -> None:
    env = environments.create("code-gen")  # knobs: max_ops, max_operand, cond_prob, list_prob
    policy = load_policy(TINY_CODE_DIR)  # HFPolicy on mcts_agent/models/tiny-code
    tasks = env.tasks(num_tasks, split="test", seed=7)
    for mode in ("inference", "data"):
        critic = critics.create("verifier", reference=mode == "data")
        config = SearchConfig(mode=mode, simulations=8, expand_n=4, max_depth=8,
                              max_step_tokens=48)
        for result in TreeSearch(env, policy, critic, config).run(tasks):
            first = result.task.problem.splitlines()[0]
            print(f"[{mode}] {first}: solved {result.solved}, {result.stats.nodes} nodes, "
                  f"{result.stats.tokens} tokens")
            if result.answer:
                print("    " + result.answer.rstrip().replace("\n", "\n    "))


if __name__ == "__main__":
    main()
