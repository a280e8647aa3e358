"""Choosing the final trajectory among a tree's finished ones (SWE-Search's discriminator)."""

from __future__ import annotations

import pytest
from states import critic_input

from critics import VerifierCritic
from critics.judge import JudgeCritic
from environments.math.arith_env import ArithEnvironment
from mcts_agent.contracts import Assessment
from mcts_agent.llm.base import Candidate
from mcts_agent.search.discriminator import (
    Discriminator,
    FinishedTrajectory,
    JudgeDiscriminator,
    ValueDiscriminator,
    build_discriminator,
)

ENV = ArithEnvironment()
TASK = ENV.tasks(1, seed=3)[0]


def finished(lines: list[str], node: int, visits: int, value: float | None,
             critic: float | None = None) -> FinishedTrajectory:
    state = critic_input(ENV, TASK, lines, done=True).state
    return FinishedTrajectory(TASK, ENV, state, node, value, visits, critic)


def right_lines() -> list[str]:
    steps = [f"Step {i}: {s}" for i, s in enumerate(TASK.metadata["steps"], 1)]
    return [*steps, f"Answer: {TASK.reference}"]


def wrong_lines(offset: int) -> list[str]:
    return [f"Answer: {TASK.reference + offset}"]


class Recording:
    """A critic proxy that records its calls."""

    def __init__(self, critic) -> None:
        self.critic, self.name, self.calls = critic, critic.name, []

    def evaluate(self, nodes):
        self.calls.append(list(nodes))
        return self.critic.evaluate(nodes)


# ------------------------------------------------------------------ value


def test_value_discriminator_prefers_visits_then_value_then_lower_node():
    cands = [finished(wrong_lines(1), node=7, visits=3, value=0.9),
             finished(wrong_lines(2), node=5, visits=4, value=0.1),
             finished(wrong_lines(3), node=9, visits=4, value=0.6),
             finished(wrong_lines(4), node=2, visits=4, value=0.6),
             finished(wrong_lines(5), node=1, visits=4, value=None)]
    value = ValueDiscriminator()
    assert isinstance(value, Discriminator)
    assert value.order(cands) == [3, 2, 1, 4, 0]
    assert value.choose(cands) == 3
    assert value.choose(cands[:1]) == 0
    with pytest.raises(ValueError, match="no finished"):
        value.choose([])


# ------------------------------------------------------------------ judge


def test_judge_discriminator_picks_the_verified_answer_in_one_batched_call():
    # the wrong answers have the search's votes; the verifier knows better
    cands = [finished(wrong_lines(1), node=3, visits=9, value=0.8),
             finished(right_lines(), node=8, visits=2, value=0.4),
             finished(wrong_lines(2), node=5, visits=5, value=0.7)]
    critic = Recording(VerifierCritic())
    judge = JudgeDiscriminator(critic)
    assert isinstance(judge, Discriminator)
    assert ValueDiscriminator().choose(cands) == 0
    assert judge.choose(cands) == 1
    [call] = critic.calls
    assert [n.done for n in call] == [True] * 3
    assert [n.state for n in call] == [c.state for c in cands]
    assert [a.value for a in judge.last] == [0.0, 1.0, 0.0]


def test_judge_ties_follow_the_value_order():
    cands = [finished(wrong_lines(1), node=4, visits=1, value=0.2),
             finished(right_lines(), node=6, visits=2, value=0.3),
             finished(right_lines(), node=2, visits=5, value=0.1),
             finished(right_lines(), node=1, visits=2, value=0.3)]
    assert JudgeDiscriminator(VerifierCritic()).choose(cands) == 2  # most visited verified
    cands[2] = finished(wrong_lines(2), node=2, visits=5, value=0.1)
    assert JudgeDiscriminator(VerifierCritic()).choose(cands) == 3  # same visits, value: node


def test_a_critic_that_miscounts_is_an_error():
    class Short:
        name = "short"

        def evaluate(self, nodes):
            return [Assessment(0.5)]

    with pytest.raises(ValueError, match="1 assessments for 2"):
        JudgeDiscriminator(Short()).choose([finished(right_lines(), 1, 1, 0.5),
                                            finished(wrong_lines(1), 2, 1, 0.5)])


class Grader:
    """A stand-in judge model: rates a trajectory 9 when it ends on the reference answer, else 2
    (reads only the case to judge, not the few-shot examples)."""

    name = "grader"

    def __init__(self) -> None:
        self.calls = []

    def propose(self, requests):
        self.calls.append(list(requests))
        out = []
        for r in requests:
            case = r.prompt if isinstance(r.prompt, str) else r.prompt[-1]["content"]
            score = 9 if f"Answer: {TASK.reference}" in case else 2
            out.append([Candidate(f"Explanation: checked.\nScore: {score}", -1.0, 6, "eos")
                        for _ in range(r.n)])
        return out


def test_an_llm_judge_chooses_the_final_answer():
    policy = Grader()
    judge = build_discriminator("judge", policy, samples=2, seed=1)
    assert isinstance(judge, JudgeDiscriminator)
    assert isinstance(judge.critic, JudgeCritic)
    assert judge.critic.samples == 2 and judge.critic.policy is policy
    cands = [finished(wrong_lines(1), node=3, visits=9, value=0.8),
             finished(wrong_lines(2), node=5, visits=5, value=0.7),
             finished(right_lines(), node=8, visits=2, value=0.4)]
    assert judge.choose(cands) == 2
    assert len(policy.calls) == 1 and [r.n for r in policy.calls[0]] == [2, 2, 2]
    assert [a.details["score"] for a in judge.last] == [2, 2, 9]


def test_build_discriminator_specs():
    assert isinstance(build_discriminator("value", None), ValueDiscriminator)
    assert isinstance(build_discriminator(" value ", None), ValueDiscriminator)
    for bad in ("votes", "value=3", ""):
        with pytest.raises(ValueError, match="unknown discriminator"):
            build_discriminator(bad, None)
