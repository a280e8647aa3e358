"""Agents in the search driver: batched episodes, invalid replies, inference-mode choice of
the final trajectory (the discriminator), and the diversity term."""

from __future__ import annotations

import pytest

pytest.importorskip("minigrid")

from states import ValidActionPolicy

from environments.agent.babyai_game import babyai
from mcts_agent.engine import EngineConfig, Forest
from mcts_agent.episodes import play_episodes
from mcts_agent.llm.base import Candidate
from mcts_agent.search import SearchConfig
from mcts_agent.search.baselines import sample_solutions
from mcts_agent.search.run import run_search


@pytest.fixture(scope="module")
def env():
    return babyai()


class CountingPolicy(ValidActionPolicy):
    def __init__(self):
        self.calls = 0

    def propose(self, requests):
        self.calls += 1
        return super().propose(requests)


def test_episodes_take_one_batched_call_per_turn(env):
    tasks = env.tasks(3, split="test")
    policy = CountingPolicy()
    groups = play_episodes(env, policy, [(t, env.reset(t)) for t in tasks], n=[1, 2, 3],
                           max_turns=5, max_step_tokens=8, temperature=1.0)
    assert [len(g) for g in groups] == [1, 2, 3]
    assert policy.calls <= 5
    for group in groups:
        for episode in group:
            assert len(episode.replies) == len(episode.state.turns) <= 5
            assert episode.text.count("\n") == len(episode.replies)
    again = play_episodes(env, ValidActionPolicy(), [(t, env.reset(t)) for t in tasks],
                          n=[1, 2, 3], max_turns=5, max_step_tokens=8, temperature=1.0)
    assert [[e.replies for e in g] for g in again] == [[e.replies for e in g] for g in groups]


def test_baselines_play_agents_turn_by_turn(env):
    tasks = env.tasks(2, split="test")
    attempts = sample_solutions(env, ValidActionPolicy(), tasks, 3, temperature=1.0,
                                max_tokens=64, max_turns=6, max_step_tokens=8)
    assert [len(a.texts) for a in attempts] == [3, 3]
    assert all(s in (0.0, 1.0) for a in attempts for s in a.scores)
    with pytest.raises(ValueError, match="max_turns"):
        sample_solutions(env, ValidActionPolicy(), tasks, 1, temperature=0.0, max_tokens=64)


class Garbling(ValidActionPolicy):
    """Every other candidate is a reply no game takes."""

    def propose(self, requests):
        out = super().propose(requests)
        return [[c if i % 2 else Candidate("Action: fly to the moon", -1.0, 4, "stop", "\n")
                 for i, c in enumerate(cands)] for cands in out]


def test_inference_search_picks_a_finished_trajectory_and_counts_invalid_replies(env):
    tasks = env.tasks(2, split="test")
    config = SearchConfig(mode="inference", simulations=12, expand_n=2, leaves_per_tree=2,
                          max_depth=6)
    _, results = run_search(env, tasks=tasks, policy=Garbling(), config=config, rollouts=1,
                            baselines=False)
    for result in results:
        assert result.stats.counts.get("invalid_actions", 0) > 0
        chosen = result.stats.chosen_node
        if chosen is None:
            assert result.solved is None
            continue
        node = result.nodes[chosen]
        assert node.terminal
        assert result.solved == (node.score == 1.0 if node.score is not None
                                 else result.solved)


def test_diversity_weight_sets_each_childs_novelty(env, monkeypatch):
    seen = []
    original = Forest.set_novelty

    def spy(self, nodes, values):
        seen.append(list(values))
        return original(self, nodes, values)

    monkeypatch.setattr(Forest, "set_novelty", spy)
    tasks = env.tasks(1, split="test")
    plain = SearchConfig(simulations=4, expand_n=3, leaves_per_tree=1, max_depth=4)
    run_search(env, tasks=tasks, policy=ValidActionPolicy(), config=plain, rollouts=1,
               baselines=False)
    assert not seen
    diverse = plain.model_copy(update={"engine": EngineConfig(
        widen_c=1.0, widen_alpha=0.5, diversity_weight=0.5, depth_weight=0.05)})
    run_search(env, tasks=tasks, policy=ValidActionPolicy(), config=diverse, rollouts=1,
               baselines=False)
    assert seen and all(0.0 <= v <= 1.0 for values in seen for v in values)
