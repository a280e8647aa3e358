"""A run folder's identity: what a resumed run may add to it, what it must refuse, and how
trees that could not be grown are recorded (never as "finished").

Searches use a scripted policy (answers known in advance) so every rule is visible."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from critics import VerifierCritic
from environments.math.arith import solve
from environments.math.arith_env import ArithEnvironment
from mcts_agent.contracts import Task
from mcts_agent.errors import RunMismatchError
from mcts_agent.llm.base import Candidate, GenerationRequest
from mcts_agent.registry import PluginSpec
from mcts_agent.search import ResultFile, SearchConfig, TreeSearch
from mcts_agent.search.baselines import Attempt, TaskBaseline, read_baselines
from mcts_agent.search.run import run_search


class Solver:
    """The right next line for every prompt; prompts longer than ``context`` characters get
    what a backend returns for a prompt that does not fit (``prompt_too_long``)."""

    name = "solver"

    def __init__(self, context: int = 10_000):
        self.context = context

    def propose(self, requests: list[GenerationRequest]) -> list[list[Candidate]]:
        return [self._one(r) for r in requests]

    def _one(self, request: GenerationRequest) -> list[Candidate]:
        if len(request.prompt) > self.context:
            return [Candidate("", 0.0, 0, "prompt_too_long", None, ())] * request.n
        lines = request.prompt.splitlines()
        steps, answer = solve(re.match(r"Q: (.*)=\?", lines[0]).group(1))
        done = len(lines) - 1
        text = f"Step {done + 1}: {steps[done]}" if done < len(steps) else f"Answer: {answer}"
        return [Candidate(text, -1.0, 3, "stop", "\n", (1, 2, 3))] * request.n


def search(out, tasks, baselines=False, **settings):
    env = ArithEnvironment(max_operand=9)
    config = SearchConfig(**{"simulations": 4, "expand_n": 2, **settings})
    return run_search(env, tasks=tasks, env_spec=PluginSpec("arith", {"max_operand": 9}),
                      policy=Solver(), config=config, critic=VerifierCritic(), out_dir=out,
                      baselines=baselines, cache=False)


@pytest.fixture
def tasks():
    return ArithEnvironment(max_operand=9).tasks(3)


def test_resume_with_the_same_settings_adds_nothing(tmp_path, tasks):
    search(tmp_path, tasks[:2])
    summary, results = search(tmp_path, tasks)
    assert [r.task.id for r in results] == [t.id for t in tasks]
    assert summary.searched == 1 and summary.tasks == 3  # only the new task was searched
    assert len(ResultFile(tmp_path / "trees.jsonl").read()) == 3


def test_resume_with_other_settings_is_refused(tmp_path, tasks):
    search(tmp_path, tasks[:2], seed=0)
    with pytest.raises(RunMismatchError, match=r"search.seed 0 → 1.*--allow-changed"):
        search(tmp_path, tasks, seed=1)
    assert len(ResultFile(tmp_path / "trees.jsonl").read()) == 2  # nothing was added


def test_speed_only_settings_may_change(tmp_path, tasks):
    search(tmp_path, tasks[:2], max_trees_in_flight=64)
    search(tmp_path, tasks, max_trees_in_flight=2)


def test_a_folder_from_a_version_with_fewer_settings_resumes(tmp_path, tasks):
    """Settings added since (a new engine field, say) were not recorded by older versions;
    what is recorded must still match."""
    search(tmp_path, tasks[:2])
    record_file = tmp_path / "config.yaml"
    record = yaml.safe_load(record_file.read_text())
    del record["search"]["engine"]["node_state"]
    record_file.write_text(yaml.safe_dump(record, sort_keys=False))
    summary, _ = search(tmp_path, tasks)
    assert summary.searched == 1
    with pytest.raises(RunMismatchError, match=r"search.engine.seed 0 → 3"):
        search(tmp_path, tasks, engine={"seed": 3})


def test_allow_changed_keeps_the_earlier_settings(tmp_path, tasks):
    search(tmp_path, tasks[:2], simulations=4)
    env = ArithEnvironment(max_operand=9)
    run_search(env, tasks=tasks, env_spec=PluginSpec("arith", {"max_operand": 9}),
               policy=Solver(),
               config=SearchConfig(simulations=6, expand_n=2), critic=VerifierCritic(),
               out_dir=tmp_path, baselines=False, cache=False, allow_changed=True)
    record = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert record["search"]["simulations"] == 6
    assert record["history"][0]["search"]["simulations"] == 4


def test_config_records_the_environment_arguments_and_every_critic(tmp_path, tasks):
    search(tmp_path, tasks[:1])
    record = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert record["environment"] == {"name": ArithEnvironment(max_operand=9).name,
                                     "args": {"max_operand": 9}}
    assert record["critic"]["name"] == "verifier" and record["policy"] == "solver"


def test_a_changed_task_under_the_same_id_is_refused(tmp_path, tasks):
    search(tmp_path, tasks[:1])
    changed = Task(tasks[0].id, "1+1", "2")  # same id, other problem: the source changed
    with pytest.raises(RunMismatchError, match="differs"):
        search(tmp_path, [changed])


def test_an_undecodable_line_is_skipped_and_its_tree_regrown(tmp_path, tasks):
    search(tmp_path, tasks)
    trees = tmp_path / "trees.jsonl"
    lines = trees.read_bytes().splitlines(keepends=True)
    trees.write_bytes(lines[0] + b'{"task": "\xff\xfe"}\n' + lines[2])
    file = ResultFile(trees)
    assert [r.task.id for r in file.read()] == [tasks[0].id, tasks[2].id]
    assert 2 in file.skipped and "not UTF-8" in file.skipped[2]
    summary, results = search(tmp_path, tasks)
    assert summary.searched == 1 and {r.task.id for r in results} == {t.id for t in tasks}


def test_a_prompt_that_does_not_fit_is_its_own_outcome(tasks):
    """R1 at the driver: a task whose prompt leaves no room in the context is recorded as
    context_overflow (counted), and the other trees of the same waves grow as usual."""
    env = ArithEnvironment(max_operand=9)
    huge = Task("huge", "1+" * 20_000 + "1", str(20_001))
    results = {r.task.id: r for r in TreeSearch(
        env, Solver(context=5_000), VerifierCritic(), SearchConfig(simulations=16, expand_n=2),
    ).run([*tasks, huge])}
    assert results["huge"].status == "context_overflow"
    assert results["huge"].stats.counts["context_overflow"] >= 1
    assert not results["huge"].solved
    for task in tasks:
        assert results[task.id].status == "finished" and results[task.id].solved


# ----------------------------------------------------------------------------- baselines.jsonl


def test_each_tasks_baselines_are_written_beside_the_summary(tmp_path, tasks):
    summary, _ = search(tmp_path, tasks, baselines=True)
    rows, skipped = read_baselines(tmp_path / "baselines.jsonl")
    assert skipped == 0 and sorted(rows) == sorted(t.id for t in tasks)
    assert sum(r.greedy_correct for r in rows.values()) == summary.greedy_solved
    assert sum(r.best_correct for r in rows.values()) == summary.best_of_n_solved
    assert sum(r.best_tokens for r in rows.values()) == summary.baseline_tokens
    assert "per_task" not in json.loads((tmp_path / "summary.json").read_text())


def test_best_of_n_answers_with_a_verified_sample_in_data_mode_and_the_vote_otherwise():
    env, task = ArithEnvironment(), Task("t", "1+1")
    greedy = Attempt(task, ["x"], ["3"], [0.0], 4)
    sampled = Attempt(task, ["a", "b", "c"], ["3", "2", "3"], [0.0, 1.0, 0.0], 12)
    data = TaskBaseline.of(greedy, sampled, env, "data")
    assert (data.best_answer, data.best_correct, data.samples) == ("2", True, 3)
    vote = TaskBaseline.of(greedy, sampled, env, "inference")
    assert (vote.best_answer, vote.best_correct) == ("3", False)
    assert (vote.greedy_answer, vote.greedy_correct, vote.greedy_tokens) == ("3", False, 4)


def test_unreadable_baseline_lines_are_skipped_and_counted(tmp_path):
    good = TaskBaseline("t1", "2", True, 3, 2, "2", True, 6)
    path = tmp_path / "baselines.jsonl"
    path.write_text("\n".join([json.dumps(good.__dict__), "{not json", json.dumps(
        {**good.__dict__, "samples": "two"}), ""]))
    rows, skipped = read_baselines(path)
    assert rows == {"t1": good} and skipped == 2
    assert read_baselines(tmp_path / "missing.jsonl") == ({}, 0)
