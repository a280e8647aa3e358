"""A third-party plug-in package, written into a folder as pip would install it (the module
and a real ``.dist-info`` with its entry points), for tests that run the CLI as a plug-in
author's user would. ``variant`` plants one mistake a plug-in author can make."""

from __future__ import annotations

import textwrap
from pathlib import Path

SOURCE = '''
from mcts_agent.contracts import Assessment, Step, Task


class ToyEnvironment:
    """Add two numbers; the tiny reasoner's prompt format. A line is a step, "Answer: N" ends."""

    name = "toy"
    step_delimiter = "\\n"
    splits = ("train", "test")

    def __init__(self, offset: int = 0, template: str = "Q: {problem}=?\\n"):
        self.offset, self.template = offset, template

    def tasks(self, n, split="test", seed=None):
        base = 10 if split == "test" else 50
        return [Task(f"toy-{i}", f"{base + i}+{self.offset + i}", str(base + self.offset + 2 * i))
                for i in range(n)]

    def reset(self, task):
        return (self.template.format(problem=task.problem), ())

    def step(self, state, action):
        prompt, steps = state
        return Step((prompt, (*steps, action)), done=action.startswith("Answer:"))

    def prompt(self, state):
        return state[0] + "".join(s + "\\n" for s in state[1])

    def answer(self, state):
        last = state[1][-1] if state[1] else ""
        return last.removeprefix("Answer:").strip() if last.startswith("Answer:") else None

    def score(self, state, task):
        return float(self.answer(state) == task.reference)


class ToyCritic:
    """Values every state at ``level``."""

    name = "toy-critic"

    def __init__(self, level: float = 0.5):
        self.level = level

    def evaluate(self, nodes):
        return [Assessment(self.level) for _ in nodes]
'''

MISTAKES = {
    "no-prompt": "del ToyEnvironment.prompt",
    "dict-tasks": ("ToyEnvironment.tasks = lambda self, n, split='test', seed=None: "
                   "[{'id': 'a', 'problem': '1+1'}]"),
    "bad-score": "ToyEnvironment.score = lambda self, state, task: 7.0",
    "crashing-step": ("def _step(self, state, action):\n    raise RuntimeError('simulator fell "
                      "over')\nToyEnvironment.step = _step"),
    "no-evaluate": "del ToyCritic.evaluate",
}


def install_plugin(site: Path, variant: str | None = None) -> Path:
    """Write the package ``toy_plugin`` (with ``variant``'s mistake) and its dist-info into
    ``site`` (put ``site`` on PYTHONPATH); returns ``site``."""
    package = site / "toy_plugin"
    package.mkdir(parents=True, exist_ok=True)
    source = SOURCE + ("\n" + MISTAKES[variant] + "\n" if variant else "")
    (package / "__init__.py").write_text(textwrap.dedent(source))
    info = site / "toy_plugin-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[mcts_agent.environments]\ntoy = toy_plugin:ToyEnvironment\n\n"
        "[mcts_agent.critics]\ntoy-critic = toy_plugin:ToyCritic\n")
    (info / "RECORD").write_text("")
    return site
