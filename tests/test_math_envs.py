"""reasoning-gym and dataset-file environments: real generators, real scorers, real math-verify,
and a short real search on each with the shipped tiny reasoner."""

from __future__ import annotations

import json
import logging
import threading

import pytest
from typer.testing import CliRunner

from critics import VerifierCritic
from environments.math.dataset import JsonlMathEnvironment, final_answer, math_equal
from environments.math.gym import ReasoningGymEnvironment
from mcts_agent.cli import app
from mcts_agent.contracts import Task
from mcts_agent.errors import ConfigError
from mcts_agent.registry import environments
from mcts_agent.search import SearchConfig, TreeSearch


def finish(env, task, answer):
    """The state after answering ``answer`` straight away."""
    return env.step(env.reset(task), f"Answer: {answer}").state


# ----------------------------------------------------------------------------- reasoning-gym


@pytest.mark.parametrize("dataset", ["chain_sum", "basic_arithmetic"])
def test_gym_tasks_are_deterministic_and_held_out(dataset):
    env = environments.create("gym", dataset=dataset)
    assert isinstance(env, ReasoningGymEnvironment) and env.name == f"gym:{dataset}"
    test = env.tasks(8)
    assert test == env.tasks(8, split="test")  # same seed, same tasks
    assert len({t.id for t in test}) == len({t.problem for t in test}) == 8
    train = env.tasks(8, split="train")
    assert {t.problem for t in train}.isdisjoint(t.problem for t in test)
    other_seed = env.tasks(8, seed=1)
    assert [t.problem for t in other_seed] != [t.problem for t in test]
    assert {t.problem for t in env.tasks(8, split="train", seed=1)}.isdisjoint(
        t.problem for t in other_seed)
    assert json.loads(json.dumps(test[0].reference)) == test[0].reference


@pytest.mark.parametrize("dataset", ["chain_sum", "basic_arithmetic"])
def test_gym_scores_with_the_datasets_own_scorer(dataset):
    env = environments.create("gym", dataset=dataset)
    for task in env.tasks(3):
        answer = task.reference["answer"]
        assert env.prompt(env.reset(task)) == f"Q: {task.problem}\n"
        assert env.score(finish(env, task, answer), task) == 1.0
        assert env.score(finish(env, task, f"{answer}1"), task) == 0.0
        assert env.score(finish(env, task, "no idea"), task) == 0.0
        assert env.score(env.reset(task), task) == 0.0  # unfinished: no answer
        foreign = Task("x", task.problem, task.reference)  # no metadata: scored by reference
        assert env.score(finish(env, foreign, answer), foreign) == 1.0


def test_gym_partial_credit_is_opt_in():
    strict = ReasoningGymEnvironment("chain_sum")
    lenient = ReasoningGymEnvironment("chain_sum", partial_credit=True)
    task = strict.tasks(1)[0]
    guess = finish(strict, task, f"{task.reference['answer']}9")  # contains the answer
    assert strict.score(guess, task) == 0.0
    assert 0.0 < lenient.score(guess, task) < 1.0


def test_gym_settings_and_errors_are_clear():
    small = ReasoningGymEnvironment("chain_sum", min_terms=2, max_terms=2, max_digits=1)
    assert all(t.problem.count("+") + t.problem.count("-") <= 3 for t in small.tasks(5))
    with pytest.raises(ValueError, match="Did you mean 'chain_sum'"):
        environments.create("gym", dataset="chain_summ")
    with pytest.raises(ValueError, match="max_valu"):
        ReasoningGymEnvironment("chain_sum", max_valu=3)
    with pytest.raises(ValueError, match="raise size="):
        ReasoningGymEnvironment("chain_sum", size=20).tasks(50)
    with pytest.raises(ConfigError, match="'train' or 'test'"):
        small.tasks(1, split="dev")


# ----------------------------------------------------------------------------- math-verify


def test_final_answers_and_math_verify_equivalences():
    assert final_answer("She sells 16 - 3 - 4 = 9 eggs.\n#### 1,008") == "1008"
    assert final_answer("1, 2") == "1, 2"  # a pair, not a thousands separator
    assert math_equal("0.5", "\\frac{1}{2}") and math_equal("\\frac{1}{2}", "0.5")
    assert math_equal("$3$", "3") and math_equal("3", "$3$")
    assert math_equal("\\boxed{7}", "Add them.\n#### 7")
    assert math_equal("1,008", "1008")
    assert not math_equal("41", "42")
    assert not math_equal("}{garbage", "42")
    assert not math_equal("", "42")


def test_math_equal_off_the_main_thread_uses_the_plain_check():
    seen = []
    worker = threading.Thread(target=lambda: seen.extend(
        [math_equal("0.5", "\\frac{1}{2}"), math_equal("9**9**9**9", "7"),
         math_equal("$1,008$", "1008"), math_equal("2", "3")]))
    worker.start()
    worker.join(timeout=10)
    assert seen == [True, False, True, False]  # math-verify would raise (signals) or hang


# ----------------------------------------------------------------------------- dataset files


@pytest.fixture
def problems(tmp_path):
    path = tmp_path / "problems.jsonl"
    rows = [
        json.dumps({"question": "What is 2+3?", "answer": "Work: 2+3=5\n#### 5", "id": "a"}),
        "{not json",
        json.dumps({"question": "", "answer": "1", "id": "e"}),
        json.dumps({"answer": "7", "id": "f"}),
        "",
        json.dumps({"question": "Half of 1?", "answer": "\\frac{1}{2}", "id": "b"}),
        json.dumps(["a", "list"]),
        json.dumps({"question": 12, "answer": "1", "id": "g"}),
        json.dumps({"question": "Three?", "answer": 3, "id": "c"}),
    ]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_jsonl_skips_and_counts_malformed_lines(problems, caplog):
    with caplog.at_level(logging.WARNING):
        env = environments.create("jsonl", path=problems, id_field="id")
    tasks = env.tasks()
    assert [t.id for t in tasks] == ["a", "b", "c"] and env.skipped == 5
    for line in (2, 3, 4, 7, 8):
        assert f"{problems}:{line}" in caplog.text
    assert "not JSON" in caplog.text
    assert tasks[0].reference == "5" and tasks[0].metadata["solution"].endswith("#### 5")
    assert env.score(finish(env, tasks[0], "5"), tasks[0]) == 1.0
    assert env.score(finish(env, tasks[1], "0.5"), tasks[1]) == 1.0
    assert env.score(finish(env, tasks[1], "2"), tasks[1]) == 0.0
    assert env.score(finish(env, tasks[2], "$3$"), tasks[2]) == 1.0
    assert env.tasks(2) == tasks[:2] and env.tasks(1, split="test") == tasks[:1]
    # without id_field: each row's own "id", else a hash of its content (never its line)
    assert [t.id for t in JsonlMathEnvironment(problems).tasks()] == ["a", "b", "c"]


def test_prompt_templates(problems):
    env = environments.create("jsonl", path=problems, system_prompt="Solve step by step.",
                              few_shot="Q: 1+1?\nStep 1: 1+1=2\nAnswer: 2\n",
                              prompt_template="Question: {problem}\n")
    assert env.prompt(env.reset(env.tasks(1)[0])) == (
        "Solve step by step.\nQ: 1+1?\nStep 1: 1+1=2\nAnswer: 2\nQuestion: What is 2+3?\n")
    with pytest.raises(ValueError, match=r"only use \{problem\}"):
        JsonlMathEnvironment(problems, prompt_template="Q: {question}\n")


def test_dataset_errors_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="no dataset at"):
        environments.create("jsonl", path=tmp_path / "missing.jsonl")
    useless = tmp_path / "bad.jsonl"
    useless.write_text('nope\n{}\n{"question": "x"}\n')
    with pytest.raises(ValueError, match=r"no usable row \(3 skipped\).*question_field="):
        environments.create("jsonl", path=useless)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"unknown format '\.txt'"):
        JsonlMathEnvironment(tmp_path / "notes.txt")


def test_csv_parquet_and_saved_datasets(tmp_path):
    datasets = pytest.importorskip("datasets")
    csv_file = tmp_path / "gsm.csv"
    csv_file.write_text('q,a\nHalf?,"\\frac{1}{2}"\n,5\nBig?,"so\n#### 1,008"\n')
    env = JsonlMathEnvironment(csv_file, question_field="q", answer_field="a")
    assert [t.reference for t in env.tasks()] == ["\\frac{1}{2}", "1008"] and env.skipped == 1
    rows = datasets.Dataset.from_list([{"q": "One?", "a": "#### 1"}, {"q": "Two?", "a": None}])
    rows.to_parquet(str(tmp_path / "rows.parquet"))
    env = JsonlMathEnvironment(tmp_path / "rows.parquet", question_field="q", answer_field="a")
    assert [t.reference for t in env.tasks()] == ["1"] and env.skipped == 1
    datasets.DatasetDict({"train": rows, "test": rows.select([0])}).save_to_disk(
        str(tmp_path / "saved"))
    env = JsonlMathEnvironment(tmp_path / "saved", question_field="q", answer_field="a")
    assert sorted(env.splits) == ["test", "train"] and len(env.tasks(split="test")) == 1
    with pytest.raises(ConfigError, match="has splits"):
        env.tasks(split="validation")


# ----------------------------------------------------------------------------- search


@pytest.mark.parametrize("name,kwargs", [("gym", {"dataset": "chain_sum"}), ("jsonl", None)])
def test_tree_search_runs_on_each(name, kwargs, problems, policy):
    env = environments.create(name, **(kwargs or {"path": problems}))
    config = SearchConfig(simulations=4, expand_n=2, max_depth=4, max_step_tokens=16)
    tasks = env.tasks(2)
    results = list(TreeSearch(env, policy, VerifierCritic(), config).run(tasks))
    assert sorted(r.task.id for r in results) == sorted(t.id for t in tasks)
    for result in results:  # the tiny model knows another format: well-formed, not solved
        assert result.nodes[0].parent is None and len(result.nodes) > 1
        assert result.stats.expansions >= 1
        assert result.solved in (True, False, None)


def test_cli_search_on_a_jsonl_file(problems, tmp_path):
    result = CliRunner(env={"COLUMNS": "240"}).invoke(app, [
        "search", "--env", "jsonl", "--env-arg", f"path={problems}", "--tasks", "2",
        "--simulations", "2", "--expand-n", "2", "--rollouts", "1", "--no-baselines",
        "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "run" / "trees.jsonl").read_text().splitlines()) == 2
