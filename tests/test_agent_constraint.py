"""Constrained decoding of agent replies: ``GenerationRequest.allowed``, the HF policy's
prefix-trie constraint, the environment's admissible replies and :class:`AdmissiblePolicy`,
on an untrained tiny Llama (whose free replies are garbage) and a scripted corridor game."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from environments.agent import AdmissiblePolicy, AgentEnvironment, Transition
from mcts_agent.contracts import Task
from mcts_agent.episodes import play_episodes
from mcts_agent.llm.base import Candidate, GenerationRequest, constrains_replies
from mcts_agent.llm.hf import HFPolicy, _Constraint, _TokenTrie
from mcts_agent.models.tiny_agent import build_model, build_tokenizer

ROOMS = 3  # the corridor: go east ROOMS times to win
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ beside the package


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def policy() -> HFPolicy:
    """An untrained byte-level Llama: left free, it writes anything."""
    texts = ["user: Goal: reach the end\n\nYou are in room 0.\nValid actions: go east, look",
             "Action: go east\n", "Action: go west\n", "Thought: Wrong move. Action: look\n"]
    tokenizer = build_tokenizer(texts * 20, vocab_size=300)
    model = build_model(tokenizer, hidden_size=32, layers=1, seed=0)
    return HFPolicy(model, tokenizer, device="cpu")


@dataclass
class Corridor:
    """A scripted game: rooms in a row; ``go east`` moves on, ``go west`` back, ``look``
    stays; the last room wins."""

    name: str = "corridor"
    can_copy: bool = False

    def start(self, task: Task) -> tuple[Corridor.Sim, Transition]:
        sim = Corridor.Sim(int(task.id[1:]) % ROOMS)  # task "c1" starts in room 1
        return sim, sim.transition()

    class Sim:
        def __init__(self, room: int = 0) -> None:
            self.room = room

        @property
        def policy_commands(self) -> tuple[str, ...]:  # the game's own optimal plan
            return ("go east",) * (ROOMS - self.room)

        def close(self) -> None:
            pass

        def transition(self, text: str = "") -> Transition:
            won = self.room == ROOMS
            valid = None if won else tuple(
                a for a in ("go east", "go west", "look") if a != "go west" or self.room)
            return Transition(f"{text}You are in room {self.room}.", float(won), won, won, valid)

        def step(self, action: str) -> Transition:
            self.room += {"go east": 1, "go west": -1}.get(action, 0)
            return self.transition()


def corridor(**kwargs: object) -> AgentEnvironment:
    return AgentEnvironment(Corridor(), instructions=None, max_history=2, **kwargs)


TASK = Task(id="c0", problem="reach the end")


def test_requests_validate_allowed():
    assert GenerationRequest("x").allowed is None
    assert GenerationRequest("x", allowed=["a", "b"]).allowed == ("a", "b")
    assert GenerationRequest("x", allowed="a").allowed == ("a",)
    for bad in ((), ("a", ""), ("a", 3)):
        with pytest.raises(ValueError, match="allowed"):
            GenerationRequest("x", allowed=bad)


def test_token_trie_finds_prefixes_and_overshoots():
    trie = _TokenTrie({0: "Ac", 1: "A", 2: "tion", 3: "\n", 4: "\nx", 5: "go", 6: "Action"})
    assert sorted(trie.continuing("Action: go", overshoot=False)) == [0, 1, 6]
    assert sorted(trie.continuing("\n", overshoot=False)) == [3]
    assert sorted(trie.continuing("\n", overshoot=True)) == [3, 4]  # past a stop: cut later
    assert trie.continuing("zzz", overshoot=True) == []


def test_constraint_follows_the_text_and_allows_eos_at_the_end():
    trie = _TokenTrie({0: "go ", 1: "east", 2: "west", 3: "\n", 4: "g"})
    eos = frozenset({99})
    constraint = _Constraint(["go east", "go west"], ["\n"])
    assert constraint.tokens(trie, eos) == {0, 4}
    constraint.text = "go "
    assert constraint.tokens(trie, eos) == {1, 2}
    constraint.text = "go east"
    assert constraint.tokens(trie, eos) == {3, 99}  # the stop string or EOS ends it
    constraint.text = "go east\n"
    assert constraint.tokens(trie, eos) == set()


def test_hf_policy_declares_the_capability(policy):
    assert constrains_replies(policy)
    assert not constrains_replies(object())


def unconstrained_logprob(policy: HFPolicy, prompt: str, ids: Sequence[int]) -> float:
    prompt_ids = policy.encode_prompt(prompt)
    full = torch.tensor([prompt_ids + list(ids)])
    with torch.no_grad():
        logits = policy.model(full).logits[0].double()
    logprobs = torch.log_softmax(logits, dim=-1)
    return float(sum(logprobs[len(prompt_ids) - 1 + k, t] for k, t in enumerate(ids)))


def test_constrained_candidates_are_allowed_texts(policy):
    allowed = ("Action: go east", "Action: go west", "Thought: Wrong move. Action: look")
    prompt = "user: You are in room 1.\nassistant: "
    free = policy.propose([GenerationRequest(prompt, n=8, max_tokens=40, stop=("\n",),
                                             seed=3)])[0]
    assert not all(c.text in allowed for c in free)  # the untrained model left free
    requests = [GenerationRequest(prompt, n=8, max_tokens=40, stop=("\n",), seed=3,
                                  allowed=allowed),
                GenerationRequest(prompt, temperature=0, max_tokens=40, stop=("\n",),
                                  allowed=allowed),
                GenerationRequest(prompt, n=4, max_tokens=40, seed=5, allowed=allowed),
                GenerationRequest(prompt, n=2, max_tokens=40, stop=("\n",), seed=1)]
    sampled, greedy, no_stop, plain = policy.propose(requests)
    for c in sampled + greedy:
        # a complete allowed text ends with the stop string or EOS, whichever the model picks
        assert c.text in allowed and c.finish_reason in ("stop", "eos")
        assert c.num_tokens == len(c.token_ids)
        # the recorded log-probability is the model's own, not the renormalised one
        assert c.logprob == pytest.approx(unconstrained_logprob(policy, prompt, c.token_ids),
                                          abs=1e-4)
    assert len({c.text for c in sampled}) > 1  # sampling still samples among allowed texts
    for c in no_stop:  # without a stop string the text ends with EOS
        assert c.text in allowed and c.finish_reason == "eos"
    # an unconstrained request in the same batch is not constrained
    alone = policy.propose([requests[3]])[0]
    assert [c.token_ids for c in plain] == [c.token_ids for c in alone]


def test_a_text_no_token_spells_ends_the_row(policy):
    [[c]] = policy.propose([GenerationRequest("x", temperature=0, max_tokens=8,
                                              allowed=("\u2603\u2603",))])
    assert c.finish_reason == "eos" and c.text == ""


def test_environment_lists_admissible_replies():
    env = corridor(reply_thoughts=("Wrong move.",))
    state = env.reset(TASK)
    assert env.allowed_replies(state) == (
        "Action: go east", "Action: look", "Thought: Wrong move. Action: go east",
        "Thought: Wrong move. Action: look")
    for reply in env.allowed_replies(state):  # every admissible reply is accepted
        assert not env.step(state, reply).info.get("invalid_action")
    prompt = env.prompt(state)
    assert env.allowed_for_prompt(prompt) == env.allowed_replies(state)
    assert env.allowed_for_prompt([{"role": "user", "content": "unseen"}]) is None
    won = env.play(TASK, ["go east"] * ROOMS)
    assert won.won and env.allowed_replies(won) is None


class Recorder:
    """A scripted policy that records its requests and answers with their first allowed
    text (or nonsense when free)."""

    name = "recorder"
    constrained_decoding = True

    def __init__(self) -> None:
        self.requests: list[GenerationRequest] = []

    def propose(self, requests: Sequence[GenerationRequest]) -> list[list[Candidate]]:
        self.requests += requests
        return [[Candidate(r.allowed[0] if r.allowed else "dance", 0.0, 1, "stop", "\n")]
                * r.n for r in requests]


def test_admissible_policy_fills_allowed_from_the_prompt():
    env = corridor()
    inner = Recorder()
    wrapped = AdmissiblePolicy(inner, env)
    assert wrapped.name == "recorder+admissible" and constrains_replies(wrapped)
    state = env.reset(TASK)
    own = GenerationRequest("free text", allowed=("Action: x",))
    wrapped.propose([GenerationRequest(env.prompt(state)), GenerationRequest("free text"), own])
    first, free, kept = inner.requests
    assert first.allowed == env.allowed_replies(state)
    assert free.allowed is None and kept is own
    assert (wrapped.constrained, wrapped.free) == (1, 1)
    with pytest.raises(ValueError, match="allowed"):
        AdmissiblePolicy(type("Plain", (), {"name": "p", "propose": None})(), env)


def test_constrained_episodes_only_send_valid_replies(policy):
    env = corridor()
    tasks = [TASK, Task(id="c1", problem="reach the end")]

    def play(p: object) -> list:
        groups = play_episodes(env, p, [(t, env.reset(t)) for t in tasks], n=3, max_turns=6,
                               max_step_tokens=16, temperature=1.0, seed=0)
        return [e.state for group in groups for e in group]

    free = play(policy)
    constrained = play(AdmissiblePolicy(policy, env))
    replies = lambda states: sum(len(s.turns) for s in states)  # noqa: E731
    assert sum(s.invalid for s in free) > 0.5 * replies(free)  # garbage when free
    assert sum(s.invalid for s in constrained) == 0 and replies(constrained) > 0
    assert all(t.message.startswith("Action: ") for s in constrained for t in s.turns)


def test_paired_standard_errors():
    from mcts_agent.metrics import paired_difference, paired_ratio_difference

    diff, se = paired_difference([1, 0.5, 0, 1], [0.5, 0.5, 0, 0])
    d = np.array([0.5, 0, 0, 1])
    assert diff == pytest.approx(d.mean()) and se == pytest.approx(d.std(ddof=1) / 2)
    # a ratio of sums; its linearised se shrinks with more units and is 0 when arms agree
    num, den = [1, 2, 0, 3], [2, 2, 1, 4]
    assert paired_ratio_difference(num, den, num, den) == (0.0, 0.0)
    diff, se = paired_ratio_difference([2, 2, 1, 3], den, num, den)
    assert diff == pytest.approx(8 / 9 - 6 / 9) and 0 < se < diff
    rng = np.random.default_rng(0)
    wrong = rng.integers(1, 5, size=400)
    won_a, won_b = rng.binomial(wrong, 0.6), rng.binomial(wrong, 0.4)
    diff, se = paired_ratio_difference(won_a, wrong, won_b, wrong)
    assert diff == pytest.approx(0.2, abs=0.05) and se == pytest.approx(
        np.sqrt(0.24 / wrong.sum() * 2), rel=0.3)  # close to the binomial se


def test_injected_wrong_moves_and_wrong_move_counts():
    from bench.agents import injected_starts, wrong_moves
    from mcts_agent.episodes import Episode

    env = corridor()
    # room 0: "go east" helps and "look" changes nothing, so no wrong move to inject;
    # room 1: "go west" lengthens the plan
    starts = injected_starts(env, [TASK, Task(id="c1", problem="reach the end")], seed=0)
    assert [(task.id, state.commands) for task, state in starts] == [("c1", ("go west",))]
    task = Task(id="c1", problem="reach the end")
    state = env.play(task, ["Action: go west", "Action: look", "nonsense", "Action: go east"])
    assert wrong_moves(env, Episode(task, state)) == 3  # west, look, the rejected reply
