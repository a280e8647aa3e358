"""Tree search over programs: the shipped tiny code model on generated function-writing tasks.

    python examples/code_search.py

A step is one line of code; finished programs run their tests in the sandbox. Inference mode
judges programs only by the example shown in the prompt, then grades the chosen program on the
hidden tests; data mode uses the hidden tests during the search. The last search makes a step a
whole program (``steps="program"``) and shows each new attempt, as comments above the program,
how the earlier ones failed their tests (Reflexion style; a chat model reads them, the tiny
model was not trained to).
"""

from __future__ import annotations

from collections.abc import Iterable

from mcts_agent.models.tiny_code import TINY_CODE_DIR
from mcts_agent.registry import critics, environments
from mcts_agent.search import SearchConfig, TreeRecord, TreeSearch
from mcts_agent.search.run import load_policy


def main(num_tasks: int = 3) -> None:
    env = environments.create("code-gen")  # knobs: max_ops, max_operand, cond_prob, list_prob
    policy = load_policy(TINY_CODE_DIR)  # HFPolicy on mcts_agent/models/tiny-code
    tasks = env.tasks(num_tasks, split="test", seed=7)
    for mode in ("inference", "data"):
        critic = critics.create("verifier", reference=mode == "data")
        config = SearchConfig(mode=mode, simulations=8, expand_n=4, max_depth=8,
                              max_step_tokens=48)
        show(mode, TreeSearch(env, policy, critic, config).run(tasks))
    programs = environments.create("code-gen", steps="program")
    config = SearchConfig(mode="inference", simulations=4, expand_n=2, sibling_feedback=2,
                          max_step_tokens=160)
    show("programs", TreeSearch(programs, policy, critics.create("verifier", reference=False),
                                config).run(tasks))


def show(label: str, results: Iterable[TreeRecord]) -> None:
    for result in results:
        first = result.task.problem.splitlines()[0]
        print(f"[{label}] {first}: solved {result.solved}, {result.stats.nodes} nodes, "
              f"{result.stats.tokens} tokens")
        if result.answer:
            print("    " + result.answer.rstrip().replace("\n", "\n    "))


if __name__ == "__main__":
    main()
