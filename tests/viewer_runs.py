"""Small real runs and report folders for the viewer's tests, and the browser that opens them.

Searches use scripted policies (answers known in advance), so each folder takes a second or
two to make; records are only ever written and read through the typed loaders.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from test_search_driver import ScriptedPolicy

from critics import VerifierCritic
from environments.math.arith_env import ArithEnvironment
from mcts_agent.contracts import Task
from mcts_agent.critic_eval import score_values, write_report
from mcts_agent.data import PairConfig, mine_rows, write_rows
from mcts_agent.registry import PluginSpec
from mcts_agent.search import SearchConfig
from mcts_agent.search.run import run_search
from mcts_agent.trees import NodeRecord, ResultFile, TreeRecord, TreeStats

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_executable() -> str | None:
    """``$MCTS_AGENT_CHROMIUM``, else the first Chromium on the PATH (Debian's ``chromium``)."""
    given = os.environ.get("MCTS_AGENT_CHROMIUM")
    if given:
        return given
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


def launch_browser(playwright):
    """Headless Chromium driven by Playwright, or a skip that says what is missing."""
    executable = chromium_executable()
    if executable is None:
        pytest.skip("no Chromium executable found (apt-get install chromium, or set "
                    "MCTS_AGENT_CHROMIUM): the viewer's browser tests need one")
    return playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])


# ----------------------------------------------------------------------------- runs


def arith_run(folder: Path, tasks: int = 4) -> Path:
    """A data-mode arith run (scripted: right and wrong steps, duplicates, empty ones) with
    its baselines and the preference pairs mined from it in ``folder/data``."""
    env = ArithEnvironment(max_operand=9)
    config = SearchConfig(simulations=12, expand_n=4, leaves_per_tree=2,
                          stop_when_solved=False)
    _, records = run_search(env, tasks=env.tasks(tasks),
                            env_spec=PluginSpec("arith", {"max_operand": 9}),
                            policy=ScriptedPolicy(), config=config, critic=VerifierCritic(),
                            out_dir=folder, baselines=True, cache=False)
    rows, stats = mine_rows("pairs", records, env, PairConfig(min_margin=0.1))
    write_rows(rows, folder / "data", "pairs", stats=stats)
    return folder


def code_run(folder: Path) -> Path:
    """A code-gen run folder with one hand-built tree: a program written line by line, a
    wrong branch whose tests fail (with the verifier's feedback), a dead end (a syntax error)
    and a grafted rollout line."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(
        {"environment": {"name": "code-gen", "args": {}}, "split": "test"}))
    nodes = (
        _node(None, "", 0, 6, 0.67),
        _node(0, "    y = x * 2", 1, 4, 0.75),
        _node(1, "    return y + 3  # add three", 2, 2, 1.0, terminal=True, score=1.0,
              answer="def f(x):\n    y = x * 2\n    return y + 3", critic=0.9),
        _node(1, "    return y - 3", 2, 1, 0.0, terminal=True, score=0.0, answer="def f(x): …",
              feedback="assert f(2) == 7 failed: got 1"),
        _node(0, "    y = (x *", 1, 1, 0.0, terminal=True),
        _node(0, "    return x + 'a'", 1, 1, 0.0, terminal=True, score=0.0, tokens=0,
              answer="def f(x):\n    return x + 'a'"),
    )
    task = Task("codegen-demo", "# mul 2, add 3\n# f(2) == 7\ndef f(x):",
                reference={"tests": ["assert f(2) == 7"]})
    ResultFile(folder / "trees.jsonl").append(TreeRecord(
        task, "data", nodes, answer=nodes[2].answer, solved=True,
        stats=TreeStats(nodes=len(nodes), expansions=3, tokens=60, waves=2,
                        counts={"grafted_steps": 1})))
    return folder


def _node(parent, action, depth, visits, value, *, terminal=False, tokens=9, **optional):
    return NodeRecord(parent, action, depth, visits, value, 0.5, -1.5, tokens, 0.0, terminal,
                      **optional)


def agent_run(folder: Path) -> Path:
    """A BabyAI search (a random policy among the valid actions) and one splice row written
    beside it: the bad prefix ends at a lost leaf, the good continuation leaves the same
    branch point."""
    from states import ValidActionPolicy

    from environments.agent.babyai_game import babyai

    env = babyai()
    config = SearchConfig(simulations=6, expand_n=3, leaves_per_tree=3, max_depth=5,
                          max_step_tokens=16, stop_when_solved=False)
    _, records = run_search(env, tasks=env.tasks(1, split="test"),
                            env_spec=PluginSpec("babyai", {}), policy=ValidActionPolicy(),
                            config=config, critic=VerifierCritic(), out_dir=folder,
                            baselines=False, cache=False)
    record = records[0]
    children = record.children()
    first, second = children[0][:2]
    leaf = lambda i: i if not children[i] else leaf(children[i][0])  # noqa: E731
    row = {"prompt": [], "completion": [], "task_id": record.task.id, "branch_node": 0,
           "bad_node": leaf(first), "good_node": leaf(second), "bad_turns": 1,
           "bad_value": 0.0, "good_value": 1.0,
           "revision": "I realize my approach was flawed; let me go back."}
    write_rows([row], folder / "data", "spliced")
    return folder


def iterate_folder(folder: Path, round_trees: Path) -> Path:
    """An ``iterate`` folder as the loop leaves it after two rounds: ``rounds.json`` (its
    columns) and round 1's trees."""
    rows = []
    for r, (greedy, k_acc, loss, mined) in enumerate([(0.30, 0.55, None, 0),
                                                       (0.38, 0.62, 0.69, 40),
                                                       (0.45, 0.66, 0.52, 52)]):
        rows.append({"round": r, "model": f"round_{r}/model", "tasks": 20, "k": 4,
                     "greedy_acc": greedy, "pass_at_1": greedy - 0.05, "pass_at_k": k_acc,
                     "distinct_correct": 1.2 + r / 4, "diversity": 0.8 - r / 20,
                     "pick_acc": greedy + 0.02, "exploitation": 0.7 + r / 20,
                     "tokens": 9000, "rows": mined, "search_tokens": 12000 * bool(r),
                     "solved": f"{10 + r}/20", "train_loss": loss})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rounds.json").write_text(json.dumps(rows))
    search = folder / "round_1" / "search"
    search.mkdir(parents=True)
    shutil.copy(round_trees / "trees.jsonl", search / "trees.jsonl")
    return folder


def critics_folder(folder: Path) -> Path:
    """An ``eval-critic`` report of two critics on the same 40 labelled nodes."""
    labels = [i % 3 != 0 for i in range(40)]
    good = [0.8 if y else 0.25 for y in labels]
    poor = [0.5 + 0.01 * (i % 7) for i in range(40)]
    finished = [i % 4 == 0 for i in range(40)]
    write_report({"rollout": score_values("rollout", good, labels, finished),
                  "reward-model": score_values("reward-model", poor, labels, finished)},
                 folder, {"run": "test"})
    return folder
