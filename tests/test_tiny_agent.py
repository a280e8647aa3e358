"""The tiny TextWorld agent: shipped checkpoint, its environment, batched evaluation, training."""

import json

import pytest

pytest.importorskip("textworld")
pytest.importorskip("transformers")

import torch

from environments.agent.tiny_textworld import ENVIRONMENT_SETTINGS, GAME_SETTINGS
from mcts_agent.llm.base import GenerationRequest
from mcts_agent.llm.hf import HFPolicy, render_prompt
from mcts_agent.models.tiny_agent import (
    TINY_AGENT_DIR,
    evaluate,
    tiny_agent_environment,
    train,
)
from mcts_agent.react import parse_action
from mcts_agent.registry import environments


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("textworld-cache")


@pytest.fixture(scope="module")
def env(cache):
    env = tiny_agent_environment(cache_dir=cache)
    yield env
    env.close()


@pytest.fixture(scope="module")
def tasks(env):
    return env.tasks(2, split="test")


@pytest.fixture(scope="module")
def policy():
    return HFPolicy.from_pretrained(TINY_AGENT_DIR, device="cpu")


def test_environment_is_the_trained_configuration(env, cache):
    assert env.instructions == ENVIRONMENT_SETTINGS["instructions"]
    assert env.max_history == ENVIRONMENT_SETTINGS["max_history"]
    assert env.show_valid_actions and env.step_delimiter == "\n"
    assert {k: getattr(env.game, k) for k in GAME_SETTINGS} == GAME_SETTINGS
    assert env.game.folder.parent == cache
    other = tiny_agent_environment(cache_dir=cache, quest_length=4, pool_size=8)
    assert other.game.quest_length == 4 and other.pool_size == 8
    registered = environments.create("textworld-tiny", cache_dir=cache)  # the entry point
    assert type(registered) is type(env) and registered.max_history == env.max_history


def test_checkpoint_is_small_and_documented():
    files = {p.name: p.stat().st_size for p in TINY_AGENT_DIR.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "training.json"} <= set(files)
    assert sum(files.values()) < 10_000_000
    report = json.loads((TINY_AGENT_DIR / "training.json").read_text())
    assert report["game"] == GAME_SETTINGS and report["environment"] == ENVIRONMENT_SETTINGS
    assert 0.0 < report["eval"]["greedy_success"] < 1.0


def test_tokenizer_round_trips_unseen_words_and_newlines(policy):
    tok = policy.tokenizer
    text = "Action: take Zyxwvut-42 über the ©frobnitz\n"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert tok.decode(tok("\n", add_special_tokens=False)["input_ids"]) == "\n"
    assert not policy.use_chat_template


def test_prompts_fit_the_context(policy, env, tasks):
    state = env.reset(tasks[0])
    text, add_special = render_prompt(policy.tokenizer, env.prompt(state),
                                      use_chat_template=False)
    assert add_special and text.endswith("assistant: ")
    context = policy.model.config.max_position_embeddings
    assert len(policy.encode_prompt(env.prompt(state))) < context


def test_plays_a_generated_game(policy, env, tasks):
    state = env.reset(tasks[0])
    parsed = []
    for turn in range(8):
        if state.done:
            break
        request = GenerationRequest(env.prompt(state), n=1, max_tokens=48, temperature=1.0,
                                    stop=("\n",), seed=turn)
        reply = policy.propose([request])[0][0]
        assert reply.finish_reason == "stop"
        parsed.append(parse_action(reply.text).action is not None)  # the ReAct format
        state = env.step(state, reply.text).state
    assert state.done or len(state.turns) == 8
    # the format is learnt; naming a valid action is what it gets right only sometimes
    # (about a quarter of replies: training.json), which is where search and splices come in
    assert sum(parsed) >= 0.75 * len(parsed)


class CountingPolicy:
    def __init__(self, policy):
        self.policy, self.calls, self.name = policy, 0, policy.name

    def propose(self, requests):
        self.calls += 1
        return self.policy.propose(requests)


def test_evaluate_batches_one_call_per_turn(policy, env, tasks):
    counting = CountingPolicy(policy)
    greedy = evaluate(counting, env, tasks, max_turns=4)
    assert counting.calls <= 4 and greedy["tasks"] == 2
    assert 0 <= greedy["valid_reply_rate"] <= 1 and 0 <= greedy["success"] <= 1
    counting.calls = 0
    sampled = evaluate(counting, env, tasks, samples=2, temperature=1.0, max_turns=3, seed=1)
    assert counting.calls <= 3 and len(sampled["won"]) == 2
    assert sampled == evaluate(policy, env, tasks, samples=2, temperature=1.0, max_turns=3,
                               seed=1)
    with pytest.raises(ValueError, match="greedy"):
        evaluate(policy, env, tasks, samples=2)


def test_training_runs_and_saves_a_loadable_agent(tmp_path, cache):
    out = tmp_path / "agent"
    report = train(out, steps=2, train_games=1, demos=2, batch_size=4, hidden_size=32,
                   layers=1, vocab_size=300, eval_games=1, eval_samples=1, threads=1,
                   log_every=0, cache_dir=cache)
    assert report["data"]["examples"] >= 3 and report["steps"] == 2
    saved = json.loads((out / "training.json").read_text())
    assert saved["eval"]["games"] == 1 and "success@1_t1" in saved["eval"]
    assert saved["game"] == GAME_SETTINGS and saved["environment"] == ENVIRONMENT_SETTINGS
    loaded = HFPolicy.from_pretrained(out, device="cpu")
    assert loaded.tokenizer.decode(loaded.tokenizer("a\nb", add_special_tokens=False)
                                   ["input_ids"]) == "a\nb"
