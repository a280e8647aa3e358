"""Critics on real inputs: the arith environment and the shipped tiny reasoner."""

from __future__ import annotations

import pytest
import torch

from critics import RolloutCritic, VerifierCritic
from environments.math.arith_env import ArithEnvironment
from mcts_agent.contracts import Assessment, CriticInput
from mcts_agent.search.run import load_policy


@pytest.fixture(scope="module")
def policy():
    torch.set_num_threads(1)
    return load_policy()


@pytest.fixture
def env():
    return ArithEnvironment()


def node(env, task, lines=(), done=False):
    state = env.reset(task)
    for line in lines:
        state = env.step(state, line).state
    return CriticInput(task, env, state, done)


def test_verifier_scores_finished_states_and_delegates_the_rest(env):
    task = env.tasks(1)[0]
    right = node(env, task, [f"Step {i}: {s}" for i, s in enumerate(task.metadata["steps"], 1)]
                 + [f"Answer: {task.reference}"], done=True)
    wrong = node(env, task, [f"Answer: {task.reference + 1}"], done=True)

    class Half:
        name = "half"

        def evaluate(self, nodes):
            return [Assessment(0.25) for _ in nodes]

    values = [a.value for a in VerifierCritic(fallback=Half()).evaluate(
        [right, wrong, node(env, task)])]
    assert values == [1.0, 0.0, 0.25]
    assert VerifierCritic().evaluate([node(env, task)])[0].value == 0.5


@pytest.mark.parametrize("mode", ["data", "inference"])
def test_rollouts_value_states_in_one_batch_and_cache_them(policy, env, mode):
    tasks = env.tasks(3)
    critic = RolloutCritic(policy, k=4, mode=mode, max_tokens=64)
    first = critic.evaluate([node(env, t) for t in tasks])
    assert all(0.0 <= a.value <= 1.0 for a in first)
    assert all(a.details["tokens"] > 0 and len(a.details["answers"]) == 4 for a in first)
    again = critic.evaluate([node(env, t) for t in tasks])
    assert [a.value for a in again] == [a.value for a in first]
    assert all(a.details["cached"] and a.details["tokens"] == 0 for a in again)


def test_rollout_cache_is_bounded(policy, env):
    tasks = env.tasks(3)
    critic = RolloutCritic(policy, k=1, max_cache=2)
    critic.evaluate([node(env, t) for t in tasks])
    assert len(critic.cache) == 2


def test_a_finished_failure_is_worth_nothing_in_inference_mode(policy, env):
    task = env.tasks(1)[0]
    critic = RolloutCritic(policy, k=2, mode="inference")
    failed = node(env, task, ["Step 1: 1+1=3"], done=True)  # false arithmetic ends the episode
    assert env.answer(failed.state) is None
    assert critic.evaluate([failed])[0].value == 0.0


def test_without_the_reference_the_verifier_decides_only_failed_episodes(env):
    task = env.tasks(1)[0]
    failed = node(env, task, ["Step 1: 1+1=3"], done=True)  # false arithmetic: no answer
    answered = node(env, task, ["Step 1: 1+1=2", "Answer: 2"], done=True)  # wrong, unknown here

    class Quarter:
        name = "quarter"

        def evaluate(self, nodes):
            return [Assessment(0.25) for _ in nodes]

    verifier = VerifierCritic(fallback=Quarter(), reference=False)
    assert [a.value for a in verifier.evaluate([failed, answered, node(env, task)])] == [
        0.0, 0.25, 0.25]
