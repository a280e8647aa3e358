"""The wave driver's mechanics, with a scripted policy whose answers are known in advance.

The real policy (the shipped tiny reasoner through HFPolicy) is exercised end to end in
``tests/test_search_tiny.py``; here every candidate is chosen so that each rule of the driver
(dedup, empty steps, crashes, dead ends, early stop, resume) has a visible effect.
"""

from __future__ import annotations

import json
import re

import pytest

from critics import VerifierCritic
from environments.math.arith import solve
from environments.math.arith_env import ArithEnvironment
from mcts_agent.contracts import Assessment
from mcts_agent.llm.base import Candidate, GenerationRequest
from mcts_agent.search import ResultFile, SearchConfig, TreeRecord, TreeSearch


class ScriptedPolicy:
    """Proposes, for each prompt, the correct next line, a wrong one, a duplicate and an empty
    one (cycled to fill ``n``); ``wrong_only`` makes every answer line wrong."""

    name = "scripted"

    def __init__(self, wrong_only: bool = False, empty_only: bool = False, wide: bool = False):
        self.wrong_only, self.empty_only, self.wide = wrong_only, empty_only, wide
        self.calls: list[int] = []

    def propose(self, requests: list[GenerationRequest]) -> list[list[Candidate]]:
        self.calls.append(len(requests))
        return [self._candidates(r) for r in requests]

    def _candidates(self, request: GenerationRequest) -> list[Candidate]:
        lines = request.prompt.splitlines()
        question = re.match(r"Q: (.*)=\?", lines[0]).group(1)
        steps, answer = solve(question)
        done = len(lines) - 1
        good = f"Step {done + 1}: {steps[done]}" if done < len(steps) else f"Answer: {answer}"
        if self.wrong_only and good.startswith("Answer"):
            good = f"Answer: {answer + 1}"
        bad = f"Answer: {answer + 7}"
        pool = [good, bad, good, ""] if not self.empty_only else [""]
        if self.wide:  # the right step and distinct wrong ones: the tree keeps growing
            pool = [good] + [f"Step {done + 1}: 1+1={j}" for j in range(request.n - 1)]
        texts = [pool[i % len(pool)] for i in range(request.n)]
        return [Candidate(t, -1.0 if t == good else -4.0, max(len(t), 1), "stop", "\n",
                          tuple(range(max(len(t), 1)))) for t in texts]


class CrashingArith(ArithEnvironment):
    def step(self, state, action):
        if action.startswith("Answer") and "7" in action:
            raise RuntimeError("simulator fell over")
        return super().step(state, action)


@pytest.fixture
def env():
    return ArithEnvironment(max_operand=9)


def run(env, policy, tasks, results=None, **settings):
    config = SearchConfig(**{"simulations": 24, "expand_n": 4, "leaves_per_tree": 2, **settings})
    return list(TreeSearch(env, policy, VerifierCritic(), config).run(tasks, results))


def test_data_mode_finds_and_verifies_the_solution(env):
    tasks = env.tasks(5)
    results = run(env, ScriptedPolicy(), tasks)
    assert sorted(r.task.id for r in results) == sorted(t.id for t in tasks)
    for result in results:
        assert result.solved and result.answer == str(result.task.reference)
        verified = [i for i, n in enumerate(result.nodes) if n.score == 1.0]
        text = result.solution_text(verified[0])
        assert text.endswith(f"Answer: {result.task.reference}\n")
        counts = result.stats.counts
        assert counts.get("duplicate_steps", 0) > 0 and counts.get("empty_steps", 0) > 0
        assert result.stats.tokens > 0 and result.stats.nodes == len(result.nodes)
        # sibling actions are distinct
        for i in range(len(result.nodes)):
            kids = [n.action for n in result.nodes if n.parent == i]
            assert len(kids) == len(set(kids))


def test_one_policy_call_per_wave_covers_every_tree(env):
    results = run(ArithEnvironment(max_operand=9), policy := ScriptedPolicy(wide=True),
                  env.tasks(6), leaves_per_tree=2, stop_when_solved=False)
    assert policy.calls[0] == 6  # the six roots in one call
    assert max(policy.calls) > 6  # later waves: several leaves of every tree in one call
    assert len(policy.calls) == max(r.stats.waves for r in results)


class Flat:
    """A critic that knows nothing: visits and priors steer the search."""

    name = "flat"

    def evaluate(self, nodes):
        return [Assessment(0.5) for _ in nodes]


def test_stop_when_solved_saves_budget(env):
    tasks = env.tasks(3)

    def search(stop):
        config = SearchConfig(simulations=24, expand_n=4, stop_when_solved=stop)
        return list(TreeSearch(env, ScriptedPolicy(wide=True), Flat(), config).run(tasks))

    early, full = search(True), search(False)
    assert all(r.solved for r in early + full)  # data mode verifies, whatever the critic
    assert sum(r.stats.expansions for r in early) < sum(r.stats.expansions for r in full)


def test_wrong_answers_are_not_solved(env):
    results = run(env, ScriptedPolicy(wrong_only=True), env.tasks(3), simulations=12)
    assert not any(r.solved for r in results)


def test_inference_mode_picks_an_answer_without_the_reference(env):
    config = SearchConfig(mode="inference", simulations=16, expand_n=2)
    results = list(TreeSearch(env, ScriptedPolicy(), Flat(), config).run(env.tasks(3)))
    for result in results:
        assert result.answer is not None
        assert all(n.score is None for n in result.nodes)  # the verifier was never asked
        assert result.solved == (result.answer == str(result.task.reference))


def test_environment_crashes_cost_a_branch_not_the_run():
    env = CrashingArith(max_operand=9)
    results = run(env, ScriptedPolicy(), env.tasks(3))
    assert all(r.solved for r in results)
    assert sum(r.stats.counts.get("environment_errors", 0) for r in results) > 0


def test_a_policy_that_returns_nothing_usable_ends_in_dead_ends(env):
    results = run(env, ScriptedPolicy(empty_only=True), env.tasks(2), simulations=5)
    assert all(not r.solved and r.answer is None for r in results)
    assert all(r.nodes[0].terminal for r in results)


def test_results_are_written_as_trees_finish_and_runs_resume(env, tmp_path):
    tasks = env.tasks(6)
    file = ResultFile(tmp_path / "trees.jsonl")
    config = SearchConfig(simulations=16, max_trees_in_flight=2)
    search = TreeSearch(env, ScriptedPolicy(), VerifierCritic(), config)
    first = []
    for result in search.run(tasks, file):
        first.append(result.task.id)
        if len(first) == 3:
            break  # interrupted: the trees in flight are lost, the finished ones are on disk
    assert [r.task.id for r in file] == first
    # a crash mid-write leaves half a line; the next run drops it
    with (tmp_path / "trees.jsonl").open("a") as f:
        f.write('{"task": {"id": "half')
    policy = ScriptedPolicy()
    rest = [r.task.id for r in TreeSearch(env, policy, VerifierCritic(), config).run(tasks, file)]
    assert sorted(first + rest) == sorted(t.id for t in tasks)
    lines = (tmp_path / "trees.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["task"]["id"] for line in lines) == sorted(t.id for t in tasks)


def test_search_result_round_trip_and_graph(env):
    result = run(env, ScriptedPolicy(), env.tasks(1))[0]
    again = TreeRecord.from_json(json.loads(json.dumps(result.to_json())))
    assert again == result
    graph = result.to_networkx()
    assert graph.number_of_nodes() == len(result.nodes)
    assert graph.number_of_edges() == len(result.nodes) - 1
    assert graph.nodes[0]["visits"] == result.nodes[0].visits
