"""Critics on real inputs: the arith environment and the shipped tiny reasoner."""

from __future__ import annotations

import pytest
from states import critic_input

from critics import RolloutCritic, VerifierCritic
from environments.math.arith_env import ArithEnvironment
from mcts_agent.contracts import Assessment


@pytest.fixture
def env():
    return ArithEnvironment()


def test_verifier_scores_finished_states_and_delegates_the_rest(env):
    task = env.tasks(1)[0]
    steps = [f"Step {i}: {s}" for i, s in enumerate(task.metadata["steps"], 1)]
    right = critic_input(env, task, [*steps, f"Answer: {task.reference}"], done=True)
    wrong = critic_input(env, task, [f"Answer: {task.reference + 1}"], done=True)

    class Half:
        name = "half"

        def evaluate(self, nodes):
            return [Assessment(0.25) for _ in nodes]

    values = [a.value for a in VerifierCritic(fallback=Half()).evaluate(
        [right, wrong, critic_input(env, task)])]
    assert values == [1.0, 0.0, 0.25]
    assert VerifierCritic().evaluate([critic_input(env, task)])[0].value == 0.5


@pytest.mark.parametrize("mode", ["data", "inference"])
def test_rollouts_value_states_in_one_batch_and_cache_them(policy, env, mode):
    tasks = env.tasks(3)
    critic = RolloutCritic(policy, k=4, mode=mode, max_tokens=64)
    first = critic.evaluate([critic_input(env, t) for t in tasks])
    assert all(0.0 <= a.value <= 1.0 for a in first)
    assert all(a.tokens > 0 and len(a.details["answers"]) == 4 for a in first)
    assert all(isinstance(a.completions, tuple) and "tokens" not in a.details for a in first)
    again = critic.evaluate([critic_input(env, t) for t in tasks])
    assert [a.value for a in again] == [a.value for a in first]
    assert all(a.details["cached"] and a.tokens == 0 and a.completions == () for a in again)


def test_rollout_cache_is_bounded(policy, env):
    tasks = env.tasks(3)
    critic = RolloutCritic(policy, k=1, max_cache=2)
    critic.evaluate([critic_input(env, t) for t in tasks])
    assert len(critic.cache) == 2


def test_a_finished_failure_is_worth_nothing_in_inference_mode(policy, env):
    task = env.tasks(1)[0]
    critic = RolloutCritic(policy, k=2, mode="inference")
    # false arithmetic ends the episode
    failed = critic_input(env, task, ["Step 1: 1+1=3"], done=True)
    assert env.answer(failed.state) is None
    assert critic.evaluate([failed])[0].value == 0.0


def test_without_the_reference_the_verifier_decides_only_failed_episodes(env):
    task = env.tasks(1)[0]
    failed = critic_input(env, task, ["Step 1: 1+1=3"], done=True)  # false arithmetic: no answer
    # a wrong answer, which nobody can know without the reference
    answered = critic_input(env, task, ["Step 1: 1+1=2", "Answer: 2"], done=True)

    class Quarter:
        name = "quarter"

        def evaluate(self, nodes):
            return [Assessment(0.25) for _ in nodes]

    verifier = VerifierCritic(fallback=Quarter(), reference=False)
    assert [a.value for a in verifier.evaluate([failed, answered, critic_input(env, task)])] == [
        0.0, 0.25, 0.25]


def test_without_an_answer_notion_nothing_counts_as_failed(env):
    class NoAnswers:  # an environment that ends episodes but has no notion of an answer
        name, step_delimiter = "no-answers", "\n"
        reset, step, prompt, score = env.reset, env.step, env.prompt, env.score

    task = env.tasks(1)[0]
    finished = critic_input(NoAnswers(), task, ["Step 1: 1+1=3"], done=True)
    assert VerifierCritic(reference=False).evaluate([finished])[0].value == 0.5  # neutral
