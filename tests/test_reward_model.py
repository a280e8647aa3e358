"""Reward model: trained from the tiny reasoner on stepwise rows whose right labels are known,
then used as a critic on held-out problems."""

from __future__ import annotations

import json
import random
import re

import numpy as np
import pytest
import torch

from critics.reward_model import META_FILE, RewardModelCritic
from environments.math.arith_env import ArithEnvironment
from mcts_agent.contracts import CriticInput
from mcts_agent.metrics import auroc
from mcts_agent.models.tiny import TINY_ARITH_DIR
from mcts_agent.train.reward_model import (
    RewardModelConfig,
    predict_steps,
    train_reward_model,
)

ENV = ArithEnvironment()


def left_to_right(question: str) -> tuple[list[str], int]:
    """Valid arithmetic in the wrong order: left to right, ``*`` not first."""
    tokens = re.findall(r"\d+|[-+*]", question)
    a, steps = int(tokens[0]), []
    for op, b in zip(tokens[1::2], map(int, tokens[2::2]), strict=True):
        c = a + b if op == "+" else a - b if op == "-" else a * b
        steps.append(f"{a}{op}{b}={c}")
        a = c
    return steps, a


def rows_for(task, rng: random.Random) -> list[dict]:
    """The reference path (all right), the reference steps with a false answer line (wrong at
    the end), and, where it differs, the left-to-right path (wrong from its first step)."""
    prompt = ENV.prompt(ENV.reset(task))
    ref = [f"Step {i}: {s}" for i, s in enumerate(task.metadata["steps"], 1)]
    false_answer = task.reference + rng.choice([-3, -2, -1, 1, 2, 3])
    paths = [([*ref, f"Answer: {task.reference}"], [1.0] * (len(ref) + 1)),
             ([*ref, f"Answer: {false_answer}"], [1.0] * len(ref) + [0.0])]
    steps, result = left_to_right(task.problem)
    if steps[0] != task.metadata["steps"][0] and result != task.reference:
        wrong = [f"Step {i}: {s}" for i, s in enumerate(steps, 1)] + [f"Answer: {result}"]
        paths.append((wrong, [0.0] * len(wrong)))
    return [{"prompt": prompt, "completions": c, "values": v, "labels": [x == 1.0 for x in v],
             "task_id": task.id} for c, v in paths]


def prefix_nodes(row: dict, task) -> list[CriticInput]:
    """Each step prefix of ``row`` as the search would reach it (through the environment)."""
    state, nodes = ENV.reset(task), []
    for line in row["completions"]:
        step = ENV.step(state, line)
        state = step.state
        nodes.append(CriticInput(task, ENV, state, step.done))
    return nodes


MALFORMED = [
    None,
    {"prompt": "Q: 1+1=?\n", "completions": ["Step 1: 1+1=2"], "task_id": "x"},  # no values
    {"prompt": "Q: 1+1=?\n", "completions": [], "values": [], "task_id": "x"},
    {"prompt": "Q: 1+1=?\n", "completions": ["Step 1: 1+1=2"], "values": [1.0, 0.0],
     "task_id": "x"},
    {"prompt": "Q: 1+1=?\n", "completions": ["Step 1: 1+1=2"], "values": [2.0], "task_id": "x"},
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    rng = random.Random(0)
    rows = [r for t in ENV.tasks(200, split="train") for r in rows_for(t, rng)]
    out = tmp_path_factory.mktemp("rm")
    report = train_reward_model(rows + MALFORMED, out, config=RewardModelConfig(
        epochs=4, learning_rate=2e-3, batch_size=16, seed=0))
    return out, report


@pytest.fixture(scope="module")
def critic(trained):
    return RewardModelCritic(trained[0])


@pytest.fixture(scope="module")
def held_out():
    rng = random.Random(1)
    tasks = ENV.tasks(40, split="test")
    return [(r, t) for t in tasks for r in rows_for(t, rng)]


def test_training_reports_and_saves_a_finished_folder(trained):
    out, report = trained
    assert report.steps == 4 * -(-report.rows // 16)  # epochs × batches per epoch
    assert report.skipped == {"missing_keys": 2, "empty_completions": 1,
                              "length_mismatch": 1, "bad_targets": 1}
    assert report.val_rows > 0 and report.val_prefixes > 0 and report.truncated == 0
    assert report.val_auroc > 0.8 and report.val_brier < 0.15
    meta = json.loads((out / META_FILE).read_text())
    assert meta["delimiter"] == "\n" and meta["base_model"] == str(TINY_ARITH_DIR)
    assert meta["report"]["prefixes"] == report.prefixes and meta["config"]["target"] == "values"


def test_the_critic_ranks_right_prefixes_above_wrong_ones_on_held_out_problems(critic,
                                                                               held_out):
    nodes, labels = [], []
    for row, task in held_out:
        nodes += prefix_nodes(row, task)
        labels += [v == 1.0 for v in row["values"]]
    values = np.array([a.value for a in critic.evaluate(nodes)])
    assert ((values >= 0) & (values <= 1)).all()
    assert auroc(values, labels) >= 0.85  # measured 0.94 (0.93-0.95 over seeds)
    assert any(n.done for n in nodes)  # finished states (answers) are scored too


def test_a_prefix_alone_gets_the_value_training_reads_in_the_whole_path(critic, held_out):
    sample = held_out[:12]  # paths of different lengths, padded together in both reads
    in_paths = predict_steps(critic.model, critic.tokenizer, [r for r, _ in sample])
    alone = RewardModelCritic(critic.path, batch_size=5).evaluate(
        [n for r, t in sample for n in prefix_nodes(r, t)])
    np.testing.assert_allclose([v for row in in_paths for v in row],
                               [a.value for a in alone], atol=1e-5)


def test_the_critic_caches_states_and_batches_the_rest(trained, held_out):
    critic = RewardModelCritic(trained[0], batch_size=8)
    calls = []
    critic.model.register_forward_hook(lambda *_: calls.append(1))
    nodes = [n for r, t in held_out[:6] for n in prefix_nodes(r, t)]
    distinct = len({(n.task.id, repr(n.state)) for n in nodes})
    first = critic.evaluate(nodes + nodes[:3])  # repeats inside a call cost nothing either
    assert len(calls) == -(-distinct // 8)
    assert all(a.tokens == 0 and "tokens" not in a.details for a in first)
    again = critic.evaluate(nodes)
    assert len(calls) == -(-distinct // 8)
    assert [a.value for a in again] == [a.value for a in first[:len(nodes)]]


def test_a_folder_that_is_not_a_reward_model_is_refused_clearly(tmp_path):
    for folder in (tmp_path, TINY_ARITH_DIR):
        with pytest.raises(FileNotFoundError, match=r"not a reward model.*train-rm"):
            RewardModelCritic(folder)
    (tmp_path / META_FILE).write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="does not describe a reward model"):
        RewardModelCritic(tmp_path)


def test_no_usable_rows_is_an_error_not_a_crash(tmp_path):
    with pytest.raises(ValueError, match="no usable stepwise rows"):
        train_reward_model(MALFORMED, tmp_path / "rm")
    assert not (tmp_path / "rm" / META_FILE).exists()
