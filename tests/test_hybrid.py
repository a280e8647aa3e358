"""The hybrid critic, its fit, verified node labels, critic quality reports, the critic specs
of the CLI, sibling feedback in expansion prompts and disagreement-gated pairs."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import yaml
from records import with_node
from states import critic_input
from typer.testing import CliRunner

from critics import HybridCritic, HybridWeights, RolloutCritic, VerifierCritic, fit_weights
from critics.cache import StateCache
from environments.math.arith_env import ArithEnvironment
from mcts_agent.cli import app
from mcts_agent.contracts import Assessment, Task, with_feedback
from mcts_agent.critic_eval import evaluate_critics, fit_hybrid, score_values
from mcts_agent.data import PairConfig, mine_pairs
from mcts_agent.data.labels import labelled_nodes
from mcts_agent.llm.base import GenerationRequest
from mcts_agent.search import ResultFile, SearchConfig, TreeSearch
from mcts_agent.search.critic_specs import build_critic, parse_spec
from mcts_agent.search.run import run_search
from tests.test_data import S1, S1_BAD, S2, S2_ALT, TASK, tree

ENV = ArithEnvironment()


class Constant:
    """A user-written critic: the same value (and feedback) for every state."""

    def __init__(self, name: str, value: float, feedback: str | None = None) -> None:
        self.name, self.value, self.feedback, self.calls = name, value, feedback, 0

    def evaluate(self, nodes):
        self.calls += 1
        return [Assessment(self.value, self.feedback, tokens=3) for _ in nodes]


# ----------------------------------------------------------------------------- hybrid


def test_fit_weights_recovers_a_known_logistic_model():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(20_000, 2)) * 1.5
    values = 1 / (1 + np.exp(-z))  # components whose logits are the features
    labels = rng.random(20_000) < 1 / (1 + np.exp(-(0.5 + 2.0 * z[:, 0] - 1.0 * z[:, 1])))
    weights, bias = fit_weights(values, labels, l2=0.0)
    assert weights == pytest.approx([2.0, -1.0], abs=0.1)
    assert bias == pytest.approx(0.5, abs=0.1)
    with pytest.raises(ValueError, match="both outcomes"):
        fit_weights(values[:10], np.ones(10, bool))


def test_hybrid_combines_batched_critics_and_measures_disagreement(policy):
    task = ENV.tasks(1)[0]
    first = f"Step 1: {task.metadata['steps'][0]}"
    nodes = [critic_input(ENV, task), critic_input(ENV, task, [first])]
    rollout = RolloutCritic(policy, k=3, mode="inference", max_tokens=64)
    judge = Constant("judge", 0.9, "looks fine")
    hybrid = HybridCritic({"rollout": rollout, "judge": judge})
    out = hybrid.evaluate(nodes)
    assert judge.calls == 1  # one batched call per component
    for a in out:
        parts = a.components
        assert a.value == pytest.approx((parts["rollout"] + 0.9) / 2)
        assert a.disagreement == pytest.approx(abs(parts["rollout"] - 0.9))
        assert a.feedback == "looks fine"
        assert a.tokens > 3  # rollout tokens + the judge's
    # the rollouts' finished texts are passed on, so the driver can graft them
    assert any(a.completions for a in out)

    fitted = HybridWeights(["rollout", "judge"], [1.0, 0.0], bias=0.0)
    again = HybridCritic({"rollout": rollout, "judge": judge}, fitted).evaluate(nodes)
    for a in again:  # weight 0 on the judge: the rollout value, through logit and back
        assert a.value == pytest.approx(np.clip(a.components["rollout"], 1e-4,
                                                1 - 1e-4), abs=1e-9)
    with pytest.raises(ValueError, match="not given"):
        HybridCritic({"rollout": rollout}, fitted)


def test_weights_files_round_trip_and_explain_errors(tmp_path):
    w = HybridWeights(["a", "b"], [0.5, 1.5], 0.1, specs={"a": "rollout", "b": "judge"})
    w.save(tmp_path / "w.json")
    assert HybridWeights.load(tmp_path / "w.json") == w
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="fit-hybrid"):
        HybridWeights.load(tmp_path / "bad.json")


def test_state_cache_computes_each_distinct_state_once():
    cache = StateCache(max_size=2)
    task = ENV.tasks(1)[0]
    a, b = critic_input(ENV, task), critic_input(ENV, task, ["Step 1: 1+1=2"])
    seen = []

    def compute(nodes):
        seen.append(len(nodes))
        return [Assessment(0.5) for _ in nodes]

    cache.evaluate([a, b, a], compute)
    cache.evaluate([b, a], compute)
    assert seen == [2] and cache.hits == 2 and cache.misses == 3


# ----------------------------------------------------------------------------- labels


def test_nodes_are_labelled_by_the_verified_outcomes_below_them():
    result = tree(
        (0, S1, 4, 0.7),                    # 1: a right answer below → True
        (0, S1_BAD, 2, 0.1),                # 2: only a wrong answer below → False
        (1, S2, 2, 1.0),                    # 3 → True
        (1, S2_ALT, 1, 0.5),                # 4: nothing finished below → unlabelled
        (3, "Answer: 30", 1, 1.0, 1.0),     # 5 → True
        (2, "Step 2: 12*3=36", 1, 0.0),     # 6
        (6, "Answer: 36", 1, 0.0, 0.0),     # 7 → False
    )
    counts = Counter()
    nodes = labelled_nodes([result], ENV, counts=counts)
    assert {n.node: n.label for n in nodes} == {1: True, 2: False, 3: True, 5: True,
                                                 6: False, 7: False}
    assert counts["unlabelled"] == 1
    assert [n.terminal for n in nodes if n.node in (5, 7)] == [True, True]
    assert len(labelled_nodes([result], ENV, max_per_tree=2)) == 2
    no_reference = tree((0, S1, 1, 0.5), task=Task("t2", "3+9*3", None))
    assert labelled_nodes([no_reference], ENV, counts=counts) == []
    assert counts["no_reference"] == 1


def test_scores_of_a_perfect_and_a_useless_critic():
    labels = [True, False] * 50
    perfect = score_values("p", [0.9 if y else 0.1 for y in labels], labels)
    assert perfect.auroc == 1.0 and perfect.brier == pytest.approx(0.01)
    flat = score_values("f", [0.5] * 100, labels)
    assert flat.auroc == 0.5 and flat.ece == pytest.approx(0.0)


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def inference_run(tmp_path_factory, policy):
    out = tmp_path_factory.mktemp("run")
    config = SearchConfig(mode="inference", simulations=6, seed=1)
    run_search(ENV, tasks=ENV.tasks(6, split="train"), policy=policy, config=config,
               rollouts=2, out_dir=out, baselines=False)
    return out


def test_eval_critic_and_fit_hybrid_commands(inference_run, tmp_path):
    runner = CliRunner()
    report = tmp_path / "report"
    result = runner.invoke(app, ["eval-critic", str(inference_run), "--critic", "rollout=2",
                                 "--critic", "verifier", "--out", str(report)])
    assert result.exit_code == 0, result.output
    data = json.loads((report / "critics.json").read_text())
    assert set(data["critics"]) == {"rollout", "verifier"}
    for score in data["critics"].values():
        assert score["nodes"] > 0 and 0 <= score["brier"] <= 1
    assert (report / "reliability.png").stat().st_size > 0
    assert "AUROC" in (report / "critics.md").read_text()

    weights = tmp_path / "hybrid.json"
    result = runner.invoke(app, ["fit-hybrid", str(inference_run), "--critic", "rollout=2",
                                 "--critic", "verifier", "--out", str(weights)])
    assert result.exit_code == 0, result.output
    fitted = HybridWeights.load(weights)
    assert fitted.specs == {"rollout": "rollout=2", "verifier": "verifier"}
    assert len(fitted.weights) == 2 and fitted.fitted_on["failed_left_out"] > 0
    again = runner.invoke(app, ["eval-critic", str(inference_run), "--critic",
                                f"hybrid={weights}", "--out", str(tmp_path / "r2")])
    assert again.exit_code == 0, again.output

    bad = runner.invoke(app, ["eval-critic", str(inference_run), "--critic", "oracle"])
    assert bad.exit_code != 0 and "unknown critic" in bad.output


def test_fitted_hybrid_is_at_least_as_good_as_its_parts_in_sample(inference_run, policy):
    results = list(ResultFile(inference_run / "trees.jsonl"))
    nodes = [n for n in labelled_nodes(results, ENV) if not n.failed]  # what fits are made on
    parts = {"rollout": RolloutCritic(policy, k=2, mode="inference", max_tokens=96),
             "verifier": VerifierCritic()}
    scores, values = evaluate_critics(parts, nodes)
    _, hybrid = fit_hybrid(values, nodes,
                           {"rollout": "rollout=2", "verifier": "verifier"}, l2=0.0)
    assert hybrid.log_loss <= min(scores[c].log_loss for c in parts) + 1e-6


def test_critic_specs():
    assert parse_spec("rollout=8") == ("rollout", "8")
    assert parse_spec("judge") == ("judge", None)
    with pytest.raises(ValueError, match="unknown critic"):
        parse_spec("oracle")
    with pytest.raises(ValueError, match="reward-model=DIR"):
        build_critic(["reward-model"], None, SearchConfig())  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- feedback


def test_feedback_goes_before_a_text_prompt_and_into_the_last_user_turn():
    assert with_feedback("Q: 1+1=?\n", None) == "Q: 1+1=?\n"
    assert with_feedback("Q: 1+1=?\n", "NOTE") == "NOTE\n\nQ: 1+1=?\n"
    chat = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    assert with_feedback(chat, "NOTE")[1]["content"] == "u\n\nNOTE"
    assert chat[1]["content"] == "u"  # the state's own prompt is not changed


def test_expansions_of_a_judged_node_carry_its_childrens_feedback(policy):
    class Recording:
        name = "recording"

        def __init__(self, inner):
            self.inner, self.prompts = inner, []

        def propose(self, requests: list[GenerationRequest]):
            self.prompts.extend(r.prompt for r in requests)
            return self.inner.propose(requests)

    recorder = Recording(policy)
    critic = Constant("judge", 0.4, "the product comes first")
    config = SearchConfig(mode="inference", simulations=12, expand_n=2, leaves_per_tree=1,
                          sibling_feedback=2, seed=0)
    [result] = TreeSearch(ENV, recorder, critic, config).run([TASK])
    noted = [p for p in recorder.prompts if "the product comes first" in p]
    assert noted, "no expansion saw its siblings' feedback"
    assert all(p.startswith(config.feedback_header) for p in noted)
    assert all(p.count("\n- ") <= 2 for p in noted)  # at most sibling_feedback notes
    assert any(n.feedback == "the product comes first" for n in result.nodes[1:])
    # without the option prompts are the environment's own
    plain = Recording(policy)
    TreeSearch(ENV, plain, critic, config.model_copy(update={"sibling_feedback": 0})).run(
        [TASK]).__next__()
    assert all(p.startswith("Q: ") for p in plain.prompts)


def test_a_searched_tree_keeps_each_components_value_and_the_judges_explanation(policy):
    class Explaining(Constant):
        def evaluate(self, nodes):
            return [Assessment(self.value, "try the product first", tokens=1,
                               explanation="the sum came before the product") for _ in nodes]

    critic = HybridCritic({"judge": Explaining("judge", 0.9), "plain": Constant("plain", 0.3)})
    config = SearchConfig(mode="inference", simulations=6, expand_n=2, seed=0)
    [result] = TreeSearch(ENV, policy, critic, config).run([TASK])
    scored = [n for n in result.nodes[1:] if n.critic is not None]
    assert scored
    for node in scored:
        assert node.components == pytest.approx({"judge": 0.9, "plain": 0.3})
        assert node.explanation == "the sum came before the product"
        assert node.disagreement == pytest.approx(0.6)
    again = type(result).from_json(json.loads(json.dumps(result.to_json())))
    assert again.nodes == result.nodes


# ----------------------------------------------------------------------------- pairs


def test_pairs_on_disputed_values_can_be_dropped():
    result = with_node(tree((0, S1, 30, 0.9), (0, S1_BAD, 30, 0.1)), 1, disagreement=0.8)
    kept, _ = mine_pairs([result], ENV, PairConfig())
    assert len(kept) == 1
    dropped, counts = mine_pairs([result], ENV, PairConfig(max_disagreement=0.5))
    assert dropped == [] and counts["disagreement"] == 1


def test_stepwise_labels_train_a_reward_model_that_the_search_uses(inference_run, tmp_path):
    runner = CliRunner()
    mined = runner.invoke(app, ["pairs", str(inference_run), "--kind", "stepwise", "--out",
                                str(tmp_path / "data")])
    assert mined.exit_code == 0, mined.output
    trained = runner.invoke(app, ["train-rm", str(tmp_path / "data"), "--out",
                                  str(tmp_path / "rm"), "--epochs", "1"])
    assert trained.exit_code == 0, trained.output
    assert (tmp_path / "rm" / "reward_model.json").exists()
    searched = runner.invoke(app, [
        "search", "--tasks", "2", "--simulations", "2", "--mode", "inference", "--critic",
        f"reward-model={tmp_path / 'rm'}", "--no-baselines", "--out", str(tmp_path / "run")])
    assert searched.exit_code == 0, searched.output
    record = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["critic"]
    # the reference-free verifier in front of the model, and the spec that built the model
    assert record["name"] == "verifier" and record["settings"]["reference"] is False
    assert record["settings"]["fallback"]["spec"] == f"reward-model={tmp_path / 'rm'}"
    missing = runner.invoke(app, ["train-rm", str(tmp_path / "nothing"), "--out", "x"])
    assert missing.exit_code == 2  # a usage error that names the path, not a traceback
