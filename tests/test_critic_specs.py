"""Critics as the core sees them: typed assessment fields through every wrapper, specs resolved
through the registry for any installed plug-in, what scored recorded, and the layering that
keeps plug-in packages out of the core."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from states import critic_input

from critics.cache import StateCache
from critics.hybrid import HybridCritic
from critics.judge import JudgeCritic, render_trajectory
from critics.rollout import RolloutCritic
from critics.verifier import VerifierCritic
from environments.math.arith_env import ArithEnvironment
from mcts_agent.contracts import Assessment, CriticInput, Step
from mcts_agent.errors import ConfigError, PluginError
from mcts_agent.hybrid import HybridWeights
from mcts_agent.llm.base import Candidate
from mcts_agent.registry import critics
from mcts_agent.search.config import SearchConfig
from mcts_agent.search.critic_specs import (
    CriticContext,
    build_component,
    build_critic,
    build_spec,
    describe_critic,
)

ENV = ArithEnvironment()
TASK = ENV.tasks(1)[0]


class Scripted:
    """A critic that returns fixed typed results (a user-written critic)."""

    name = "scripted"

    def __init__(self, value: float = 0.25, tokens: int = 3,
                 completions: tuple[str, ...] = ()) -> None:
        self.value, self.tokens, self.completions = value, tokens, completions

    def evaluate(self, nodes):
        return [Assessment(self.value, "note", tokens=self.tokens, completions=self.completions,
                           details={"raw": "x"}) for _ in nodes]


class Answering:
    """A policy that always answers the same text (a judge that says 8/10)."""

    name = "answering"

    def __init__(self, text: str = "Explanation: fine.\nFeedback: go on.\nScore: 8") -> None:
        self.text = text

    def propose(self, requests):
        return [[Candidate(self.text, -1.0, 7, "eos") for _ in range(r.n)] for r in requests]


# --------------------------------------------------------------------------- typed fields


def test_a_hybrid_sums_tokens_joins_completions_and_types_its_disagreement():
    node = critic_input(ENV, TASK)
    hybrid = HybridCritic({"a": Scripted(0.2, 3, ("x",)), "b": Scripted(0.8, 4, ("y", "z"))})
    [out] = hybrid.evaluate([node])
    assert out.tokens == 7 and out.completions == ("x", "y", "z")
    assert out.disagreement == pytest.approx(0.6)
    assert out.components == pytest.approx({"a": 0.2, "b": 0.8})
    assert not out.details  # nothing typed is left in details


def test_the_verifier_passes_its_fallbacks_results_through_unchanged():
    fallback = Scripted(0.25, 5, ("Step 1: 1+1=2",))
    [out] = VerifierCritic(fallback=fallback).evaluate([critic_input(ENV, TASK)])
    assert (out.value, out.tokens, out.completions) == (0.25, 5, ("Step 1: 1+1=2",))
    assert out.feedback == "note" and out.details == {"raw": "x"}


def test_a_cache_hit_costs_nothing_and_grafts_nothing_but_keeps_the_rest():
    cache = StateCache()
    node = critic_input(ENV, TASK)
    first = Assessment(0.4, "f", tokens=9, completions=("c",), disagreement=0.3,
                       details={"raw": 1})
    [computed] = cache.evaluate([node], lambda nodes: [first])
    [hit] = cache.evaluate([node], lambda nodes: pytest.fail("recomputed"))
    assert computed is first
    assert (hit.tokens, hit.completions, hit.disagreement) == (0, (), 0.3)
    assert hit.details == {"raw": 1, "cached": True}


def test_the_judge_counts_its_tokens_in_the_typed_field():
    [out] = JudgeCritic(Answering(), retries=0).evaluate([critic_input(ENV, TASK)])
    assert out.value == pytest.approx(0.8) and out.tokens == 7
    assert "tokens" not in out.details and out.details["scores"] == [8]
    [again] = JudgeCritic(Answering("junk"), retries=0).evaluate([critic_input(ENV, TASK)])
    assert again.details["unknown"] and again.tokens == 7


# --------------------------------------------------------------------------- capability probes


class BadScores:
    """An environment whose score() breaks the contract (a percentage, not [0, 1])."""

    name, step_delimiter = "bad-scores", "\n"
    reset, step, prompt, answer = ENV.reset, ENV.step, ENV.prompt, ENV.answer

    def score(self, state, task):
        return 100.0


def test_an_out_of_range_score_is_blamed_on_the_environment_not_the_critic():
    done = critic_input(BadScores(), TASK, ["Answer: 3"], done=True)
    with pytest.raises(PluginError, match="environment 'bad-scores': score"):
        VerifierCritic().evaluate([done])
    with pytest.raises(PluginError, match="environment 'bad-scores': score"):
        RolloutCritic(Answering(), k=1, mode="data").evaluate([done])


class Transcript:
    """Keeps a transcript (``messages``) but is no agent environment: text states."""

    name, step_delimiter, interactive = "transcript", "\n", False

    def reset(self, task):
        return "start"

    def step(self, state, action):
        return Step(state + action)

    def prompt(self, state):
        return f"PROMPT {state}"

    def score(self, state, task):
        return None

    def messages(self, state):
        return [{"role": "user", "content": "q"}, {"role": "assistant", "content": "HIST"}]


class Agent(Transcript):
    interactive = True


def test_the_judge_reads_a_whole_episode_only_from_interactive_environments():
    assert render_trajectory(CriticInput(TASK, Transcript(), "start", False)) == "PROMPT start"
    assert render_trajectory(CriticInput(TASK, Agent(), "start", False)) == "assistant: HIST"


# --------------------------------------------------------------------------- specs


class Threshold:
    """A third-party critic without from_spec: the generic rule builds it."""

    name = "threshold"

    def __init__(self, policy, cutoff: float = 0.5, label: str = "t", seed: int = 0) -> None:
        self.policy, self.cutoff, self.label, self.seed = policy, cutoff, label, seed

    def evaluate(self, nodes):
        return [Assessment(self.cutoff) for _ in nodes]

    def describe(self):
        return {"cutoff": self.cutoff, "label": self.label}


class Plain:
    name = "plain"

    def evaluate(self, nodes):
        return [Assessment(0.5) for _ in nodes]


class Strict(Plain):
    def __init__(self, level: int) -> None:
        if level > 3:
            raise ValueError(f"level must be at most 3, got {level}")


def not_a_critic(policy):
    return object()


@pytest.fixture
def plugins(monkeypatch):
    """Third-party critics as the registry holds them once installed."""
    for name, factory in (("threshold", Threshold), ("plain", Plain), ("strict", Strict),
                          ("broken", not_a_critic)):
        monkeypatch.setitem(critics._factories, name, factory)
    return Answering()


CONFIG = SearchConfig(mode="inference", seed=7, max_step_tokens=20, max_depth=5)


def test_an_installed_plugin_is_a_spec_with_the_policy_and_seed_injected(plugins):
    _, bare = build_component("threshold", plugins, CONFIG)
    assert isinstance(bare, Threshold) and bare.policy is plugins and bare.seed == 7
    assert bare.cutoff == 0.5
    _, one = build_component("threshold=0.7", plugins, CONFIG)
    assert one.cutoff == 0.7 and one.policy is plugins
    _, named = build_component("threshold=label=007,cutoff=0.25,seed=1", plugins, CONFIG)
    assert (named.label, named.cutoff, named.seed) == ("007", 0.25, 1)  # str keeps its text
    assert isinstance(build_component("plain", None, CONFIG)[1], Plain)  # nothing injected


@pytest.mark.parametrize(("spec", "message"), [
    ("treshold", r"unknown critic 'treshold'\. Did you mean 'threshold'\?.*Available: .*judge"),
    ("verifier=3", r"verifier takes no argument"),
    ("plain=3", r"'plain' takes no argument.*Plain\(\)"),
    ("reward-model", r"reward-model=DIR"),
    ("strict", r"'strict' cannot be built from `strict`: missing a required argument: 'level'"
               r".*:Strict\(level: int\)"),
    ("threshold=depth=3", r"'threshold' cannot be built.*unexpected keyword argument 'depth'"
                          r".*Threshold\(policy, cutoff: float = 0\.5"),
    ("strict=9", r"'strict' rejected `strict=9`: level must be at most 3"),
    ("threshold=cutoff=0.2,oops", r"write threshold=VALUE or threshold=KEY=VALUE"),
    ("rollout=many", r"rollout=K takes a whole number"),
    ("=3", r"has no name"),
])
def test_a_spec_that_cannot_be_used_is_refused_in_one_line(plugins, spec, message):
    with pytest.raises(ConfigError, match=message) as caught:
        build_critic([spec], plugins, CONFIG)
    assert "\n" not in str(caught.value)


def test_a_plugin_that_builds_no_critic_is_named(plugins):
    with pytest.raises(PluginError, match="critic 'broken'"):
        build_critic(["broken"], plugins, CONFIG)


def test_builtin_specs_read_the_search_settings(plugins):
    _, rollout = build_component("rollout=8", plugins, CONFIG, rollouts=3)
    assert (rollout.k, rollout.mode, rollout.seed) == (8, "inference", 7)
    assert (rollout.max_tokens, rollout.max_turns, rollout.step_tokens) == (100, 5, 20)
    assert build_component("rollout", plugins, CONFIG, rollouts=3)[1].k == 3
    assert build_component("verifier", None, CONFIG)[1].reference is False
    assert build_component("verifier", None, SearchConfig(mode="data"))[1].reference is True
    _, judge = build_component("judge", plugins, CONFIG)
    assert isinstance(judge, JudgeCritic) and judge.policy is plugins and judge.seed == 7


def test_a_hybrid_file_builds_its_components_plugins_included(plugins, tmp_path):
    weights = tmp_path / "w.json"
    HybridWeights(["rollout", "threshold"], [1.0, 0.5], 0.1,
                  specs={"rollout": "rollout=2", "threshold": "threshold=0.3"}).save(weights)
    critic = build_critic([f"hybrid={weights}"], plugins, CONFIG)
    assert isinstance(critic, VerifierCritic) and critic.reference is False
    hybrid = critic.fallback
    assert isinstance(hybrid, HybridCritic)
    assert hybrid.components["rollout"].k == 2 and hybrid.components["threshold"].cutoff == 0.3

    HybridWeights(["again"], [1.0], specs={"again": f"hybrid={weights.with_name('me.json')}"}
                  ).save(weights.with_name("me.json"))
    with pytest.raises(ConfigError, match="contains itself"):
        build_critic([f"hybrid={weights.with_name('me.json')}"], plugins, CONFIG)


def test_what_scored_is_described_with_every_spec(plugins, tmp_path):
    weights = tmp_path / "w.json"
    HybridWeights(["threshold", "judge"], [1.0, 1.0],
                  specs={"threshold": "threshold=0.3", "judge": "judge"}).save(weights)
    record = describe_critic(build_critic([f"hybrid={weights}"], plugins, CONFIG))
    assert record["name"] == "verifier" and record["spec"] == "verifier"
    assert record["settings"]["reference"] is False
    fallback = record["settings"]["fallback"]
    assert fallback["spec"] == f"hybrid={weights}"
    parts = fallback["settings"]["components"]
    assert parts["threshold"] == {"name": "threshold", "class": f"{__name__}.Threshold",
                                  "spec": "threshold=0.3",
                                  "settings": {"cutoff": 0.3, "label": "t"}}
    assert parts["judge"]["spec"] == "judge" and parts["judge"]["settings"]["policy"] == "answering"
    assert fallback["settings"]["weights"]["weights"] == [1.0, 1.0]
    assert json.loads(json.dumps(record)) == record
    # the same specs describe the same way (a resumed run compares the records)
    assert describe_critic(build_critic([f"hybrid={weights}"], plugins, CONFIG)) == record

    several = describe_critic(build_critic(["threshold", "plain"], plugins, CONFIG))
    components = several["settings"]["fallback"]["settings"]["components"]
    assert [c["spec"] for c in components.values()] == ["threshold", "plain"]
    weights = several["settings"]["fallback"]["settings"]["weights"]
    assert weights["specs"] == {"threshold": "threshold", "plain": "plain"}  # rebuildable
    hand_made = describe_critic(VerifierCritic(fallback=Scripted()))
    assert "spec" not in hand_made and hand_made["settings"]["fallback"] == {
        "name": "scripted", "class": f"{__name__}.Scripted"}


def test_the_context_is_the_search_settings():
    context = CriticContext.of(None, CONFIG, rollouts=6)
    assert (context.mode, context.seed, context.rollouts) == ("inference", 7, 6)
    assert (context.max_step_tokens, context.max_depth) == (20, 5)
    assert isinstance(context.build("verifier"), VerifierCritic)
    assert isinstance(build_spec("verifier", context), VerifierCritic)


# --------------------------------------------------------------------------- installed, layered


def test_core_modules_load_no_plugin_package_and_entry_points_are_specs(tmp_path):
    (tmp_path / "my_critics.py").write_text(textwrap.dedent("""
        from mcts_agent.contracts import Assessment, CriticInput, Step

        class Flat:
            name = "flat"

            def __init__(self, value: float = 0.5):
                self.value = value

            def evaluate(self, nodes):
                return [Assessment(self.value) for _ in nodes]
    """))
    info = tmp_path / "my_critics-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-critics\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[mcts_agent.critics]\nflat = my_critics:Flat\n")
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import mcts_agent.critic_eval, mcts_agent.train.reward_model
        import mcts_agent.search.critic_specs as specs
        from mcts_agent.search.config import SearchConfig
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("critics", "environments"))
        assert not loaded, loaded
        critic = specs.build_critic(["flat=0.75"], None, SearchConfig())
        print(specs.describe_critic(critic)["settings"]["fallback"])
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "'spec': 'flat=0.75'" in done.stdout and "my_critics.Flat" in done.stdout
