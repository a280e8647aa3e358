"""reasoning-gym and JSONL environments: real generators, real scorers, real math-verify."""

from __future__ import annotations

import json
import logging

import pytest
from typer.testing import CliRunner

from critics import VerifierCritic
from environments.math.jsonl_env import final_answer, math_equal
from mcts_agent.cli import app
from mcts_agent.registry import environments
from mcts_agent.search import SearchConfig, TreeSearch
from mcts_agent.search.run import load_policy


def finish(env, task, answer):
    state = env.reset(task)
    return env.step(state, f"Answer: {answer}").state


@pytest.mark.parametrize("dataset", ["chain_sum", "basic_arithmetic"])
def test_reasoning_gym_tasks_and_scorer(dataset):
    env = environments.create("gym", dataset=dataset)
    tasks = env.tasks(5)
    assert tasks == env.tasks(5)  # deterministic
    assert {t.problem for t in env.tasks(5, split="train")}.isdisjoint({t.problem for t in tasks})
    task = tasks[0]
    assert env.prompt(env.reset(task)).startswith("Q: ")
    right = finish(env, task, task.reference["answer"])
    assert env.score(right, task) == 1.0
    assert env.score(finish(env, task, "no idea"), task) < 1.0
    assert env.score(env.reset(task), task) == 0.0  # unfinished: no answer


def test_reasoning_gym_unknown_dataset_is_a_clear_error():
    with pytest.raises(ValueError, match="no_such_dataset"):
        environments.create("gym", dataset="no_such_dataset")


def test_gsm8k_answers_and_math_verify():
    assert final_answer("She sells 16 - 3 - 4 = 9 eggs.\n#### 1,008") == "1008"
    assert math_equal("0.5", "\\frac{1}{2}")
    assert math_equal("$3$", "3")
    assert not math_equal("41", "42")
    assert not math_equal("}{garbage", "42")


@pytest.fixture
def problems(tmp_path):
    path = tmp_path / "problems.jsonl"
    rows = [
        json.dumps({"question": "What is 2+3?", "answer": "Work: 2+3=5\n#### 5", "id": "a"}),
        "{not json",
        json.dumps({"question": "", "answer": "1"}),
        json.dumps({"answer": "7"}),
        "",
        json.dumps({"question": "Half of 1?", "answer": "\\frac{1}{2}", "id": "b"}),
        json.dumps(["a", "list"]),
    ]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_jsonl_skips_and_counts_malformed_lines(problems, caplog):
    env = environments.create("jsonl", path=problems, id_field="id")
    with caplog.at_level(logging.WARNING):
        tasks = env.tasks()
    assert [t.id for t in tasks] == ["a", "b"] and env.skipped == 4
    assert f"{problems}:2" in caplog.text and f"{problems}:4" in caplog.text
    assert tasks[0].reference == "5"
    assert env.score(finish(env, tasks[0], "5"), tasks[0]) == 1.0
    assert env.score(finish(env, tasks[1], "0.5"), tasks[1]) == 1.0
    assert env.score(finish(env, tasks[1], "2"), tasks[1]) == 0.0
    assert len(env.tasks(1)) == 1


def test_jsonl_prompt_templates(problems):
    env = environments.create("jsonl", path=problems, system_prompt="Solve step by step.\n",
                              few_shot="Q: 1+1?\nStep 1: 1+1=2\nAnswer: 2\n",
                              prompt_template="Q: {problem}\n")
    prompt = env.prompt(env.reset(env.tasks(1)[0]))
    assert prompt == ("Solve step by step.\nQ: 1+1?\nStep 1: 1+1=2\nAnswer: 2\n"
                      "Q: What is 2+3?\n")


def test_jsonl_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no dataset file"):
        environments.create("jsonl", path=tmp_path / "missing.jsonl")
    empty = tmp_path / "bad.jsonl"
    empty.write_text("nope\n{}\n")
    with pytest.raises(ValueError, match="no usable line"):
        environments.create("jsonl", path=empty).tasks()


def test_cli_search_on_a_jsonl_file(problems, tmp_path):
    result = CliRunner(env={"COLUMNS": "240"}).invoke(app, [
        "search", "--env", "jsonl", "--env-arg", f"path={problems}", "--tasks", "2",
        "--simulations", "2", "--expand-n", "2", "--rollouts", "1", "--no-baselines",
        "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "run" / "trees.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize("name,kwargs", [("gym", {"dataset": "chain_sum"}), ("jsonl", None)])
def test_tree_search_runs_on_each(name, kwargs, problems):
    env = environments.create(name, **(kwargs or {"path": problems}))
    config = SearchConfig(simulations=3, expand_n=2, max_depth=4, max_step_tokens=16)
    results = list(TreeSearch(env, load_policy(), VerifierCritic(), config).run(env.tasks(2)))
    assert len(results) == 2
    for result in results:  # the tiny model knows another format: well-formed, not solved
        assert result.nodes[0]["parent"] is None and result.stats["expansions"] >= 1
