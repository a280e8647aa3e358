"""Code environments: programs written line by line, graded by unit tests in the sandbox."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from mcts_agent.contracts import Task, check_environment, load_tasks
from mcts_agent.registry import critics, environments
from mcts_agent.sandbox import run_tests
from mcts_agent.trees import ResultFile

CORRECT = ["x = x + 3", "x = x * 2", "return x"]


# ------------------------------------------------------------------ helpers


def code_gen():
    return environments.create("code-gen", max_ops=2, cond_prob=0.0, list_prob=0.0,
                               ops=["add", "mul"])


def add_then_double() -> Task:
    prompt = "# add 3, mul 2\n# f(2) == 10\ndef f(x):\n"
    tests = [f"assert f({x}) == {(x + 3) * 2}" for x in (0, 1, 5, -4)]
    return Task("t1", prompt, {"setup": "", "tests": tests},
                {"visible_tests": ["assert f(2) == 10"]})


def write(env, task, lines):
    state = env.reset(task)
    step = None
    for line in lines:
        step = env.step(state, line)
        state = step.state
    return state, step


# ------------------------------------------------------------------ environments


def test_each_code_environment_keeps_the_contract(tmp_path):
    rows = tmp_path / "p.jsonl"
    rows.write_text(json.dumps({"text": "add two numbers", "test_list": [
        "assert add(1, 2) == 3"]}) + "\n")
    for env in (code_gen(), environments.create("humaneval"),
                environments.create("code-jsonl", path=str(rows))):
        caps = check_environment(env)
        assert caps.tasks and caps.answers and not caps.interactive
        assert env.step_delimiter == "\n" and env.splits
        tasks = load_tasks(env, 3, split="test")
        assert tasks and all(t.metadata["visible_tests"] for t in tasks[:1])
        assert env.prompt(env.reset(tasks[0])).startswith(tasks[0].problem.rstrip("\n"))


def test_code_gen_is_deterministic_and_split_by_hash():
    env = code_gen()
    a, b = env.tasks(20, "test", seed=1), env.tasks(20, "test", seed=1)
    assert [t.id for t in a] == [t.id for t in b]
    train = {t.metadata["description"] for t in env.tasks(100, "train", seed=0)}
    assert not train & {t.metadata["description"] for t in a}
    assert all(len(t.reference["tests"]) >= 5 for t in a)
    assert {"code-gen", "humaneval", "code-jsonl"} <= set(environments.names())


def test_a_correct_program_scores_one_a_wrong_one_partial_and_says_why():
    env, task = code_gen(), add_then_double()
    state, step = write(env, task, CORRECT)  # stripped lines, indented like an editor would
    assert step.done and state.text.endswith("    x = x * 2\n    return x\n")
    assert env.answer(state) is not None and env.score(state, task) == 1.0
    assert env.visible_score(state, task) == 1.0 and env.feedback(state, task) is None
    wrong, _ = write(env, task, ["x = x * 2", "x = x + 3", "return x"])  # (x*2)+3
    score = env.score(wrong, task)
    assert 0.0 <= score < 1.0
    assert "assert f(" in env.feedback(wrong, task)  # the failing assert, for the critic


def test_partial_credit_is_the_share_of_tests_passed():
    env, task = code_gen(), add_then_double()
    # right for x = 1 and 5 only (both > 0 odd) → 2 of 4 hidden tests
    state, _ = write(env, task, ["if x % 2 == 1:", "return (x + 3) * 2", "return 0"])
    assert env.score(state, task) == pytest.approx(0.5)


def test_a_syntax_error_ends_the_branch_but_an_open_block_does_not():
    env, task = code_gen(), add_then_double()
    state, step = write(env, task, ["if x > 3:"])
    assert not step.done  # incomplete, more lines can fix it
    state, step = write(env, task, ["y = (x +"])
    assert not step.done
    state, step = write(env, task, ["x = = 3"])
    assert step.done and step.info["invalid_step"] and env.answer(state) is None
    assert "SyntaxError" in step.info["feedback"] and env.score(state, task) == 0.0
    assert "SyntaxError" in env.feedback(state, task)
    state, step = write(env, task, ["y = 1", "# end"])  # the end marker line
    assert step.done and env.answer(state).endswith("    y = 1\n")
    state, step = write(env, task, ["y = 1"] * env.max_lines)
    assert step.done and env.answer(state) is None  # cut: no answer


def test_indentation_kept_when_given_and_dedent_after_return():
    env, task = code_gen(), add_then_double()
    state, step = write(env, task, ["if x > 3:", "return 1", "return 2"])
    assert state.lines == ("    if x > 3:", "        return 1", "    return 2") and step.done
    state, _ = write(env, task, ["    for i in range(2):", "        x = x + 1", "    x = x * 2"])
    assert state.lines[-1] == "    x = x * 2"


def test_the_models_own_indentation_is_kept_so_code_can_dedent_two_levels():
    from mcts_agent.episodes import play_text

    env = code_gen()
    body = "    total = 0\n    for x in xs:\n        if x > 0:\n            total += x\n" \
           "    return total\n"  # the return leaves two blocks: no editor rule could guess it
    task = Task("sum", "def f(xs):\n", {"setup": "", "tests": [
        "assert f([1, -2, 3]) == 4", "assert f([]) == 0"]}, {})
    state, done = play_text(env, env.reset(task), body)
    assert done and state.text == "def f(xs):\n" + body and env.score(state, task) == 1.0


def test_a_program_step_writes_a_whole_program():
    env = environments.create("code-gen", steps="program")
    task = add_then_double()
    assert env.step_delimiter == "# end"  # the model writes until its end of text
    step = env.step(env.reset(task), "    x = x + 3\n    x = x * 2\n    return x\n")
    assert step.done and env.score(step.state, task) == 1.0
    open_end = env.step(env.reset(task), "    y = x\n    x = y + 3")  # text ends, body open
    assert open_end.done and env.answer(open_end.state) is not None
    broken = env.step(env.reset(task), "    return (x")
    assert broken.done and broken.state.status == "syntax"
    with pytest.raises(Exception, match="'line' or a whole 'program'"):
        environments.create("code-gen", steps="block")


class Reflecting:
    """Writes a wrong program first and the right one only after reading, in comments above
    the program, how an earlier attempt failed (what Reflexion asks of a model)."""

    name = "reflecting"

    def __init__(self):
        self.prompts = []

    def propose(self, requests):
        from mcts_agent.llm.base import Candidate

        self.prompts += [r.prompt for r in requests]
        out = []
        for r in requests:
            read = "# " in r.prompt.split("def f")[0] and "AssertionError" in r.prompt
            text = "    return (x + 3) * 2" if read else "    return x + 3"
            out.append([Candidate(text, -1.0, 9, "eos")] * r.n)
        return out


def test_program_steps_with_sibling_feedback_refine_after_failed_tests():
    from critics import VerifierCritic
    from mcts_agent.search import SearchConfig, TreeSearch

    env = environments.create("code-gen", steps="program")
    task = add_then_double()
    blind = Task(task.id, task.problem, None, task.metadata)
    policy = Reflecting()
    config = SearchConfig(mode="inference", simulations=6, expand_n=1, sibling_feedback=2,
                          max_step_tokens=64, seed=0)
    [tree] = TreeSearch(env, policy, VerifierCritic(reference=False), config).run([blind])
    programs = [n.answer for n in tree.nodes if n.terminal and n.answer]
    assert any("return x + 3" in p for p in programs)  # the first try fails f(2) == 10 ...
    assert "return (x + 3) * 2" in tree.answer  # ... and its failure, read back, fixes it
    noted = [p for p in policy.prompts if p.startswith("# ")]
    assert noted and all(line.startswith("# ") for p in noted
                         for line in p.split("# add 3")[0].splitlines())
    plain = config.model_copy(update={"sibling_feedback": 0})  # the guard: no feedback, no fix
    [tree] = TreeSearch(env, Reflecting(), VerifierCritic(reference=False), plain).run([blind])
    assert "(x + 3) * 2" not in (tree.answer or "")


def test_prefetch_grades_a_wave_in_one_batched_call():
    env, task = code_gen(), add_then_double()
    calls = []

    def counting(jobs):
        calls.append(len(jobs))
        return run_tests(jobs)

    env.runner = counting
    states = [write(env, task, lines)[0] for lines in (CORRECT, ["return x"], ["return x"])]
    env.prefetch([(s, task) for s in states])
    assert calls == [2]  # two distinct programs, one call
    assert next(env.score(s, task) for s in states) == 1.0 and calls == [2]  # cached


def test_the_verifier_passes_feedback_and_uses_visible_tests_in_inference():
    from mcts_agent.contracts import CriticInput

    env, task = code_gen(), add_then_double()
    wrong, _ = write(env, task, ["return x"])
    right, _ = write(env, task, CORRECT)
    blind = Task(task.id, task.problem, None, task.metadata)  # no reference
    data = critics.create("verifier").evaluate([CriticInput(task, env, wrong, True)])
    assert data[0].value < 1 and "assert f(" in data[0].feedback
    inference = critics.create("verifier", reference=False).evaluate(
        [CriticInput(blind, env, wrong, True), CriticInput(blind, env, right, True)])
    assert [a.value for a in inference] == [0.0, 1.0]
    assert "assert f(2) == 10" in inference[0].feedback


def test_inference_picks_the_program_passing_most_visible_tests_not_the_most_visited():
    from mcts_agent.search.discriminator import FinishedTrajectory, VisibleTestsDiscriminator

    env, task = code_gen(), add_then_double()
    blind = Task(task.id, task.problem, None, task.metadata)  # the pick reads no reference
    wrong, _ = write(env, task, ["return x"])
    right, _ = write(env, task, CORRECT)
    also_right, _ = write(env, task, ["x = (x + 3) * 2", "return x"])
    candidates = [FinishedTrajectory(blind, env, state, node, value, visits)
                  for node, (state, value, visits) in enumerate(
                      [(wrong, 0.9, 12), (right, 0.4, 2), (also_right, 0.4, 5)])]
    # the visible test fails the most visited; of the two passing, the more visited wins ...
    assert VisibleTestsDiscriminator().choose(candidates) == 2
    # ... unless the policy was surer of the other (mean log-probability per token)
    sure = [replace(c, logprob=-1.0 if c.node == 1 else -9.0, tokens=10) for c in candidates]
    assert VisibleTestsDiscriminator().choose(sure) == 1
    # a task that shows no tests: a complete program beats a broken one the policy was surer of
    unshown = Task(task.id, task.problem, None, {})
    broken, _ = write(env, task, ["x = = 1"])
    assert broken.status == "syntax"
    pair = [FinishedTrajectory(unshown, env, broken, 0, 0.5, 3, logprob=-1.0, tokens=10),
            FinishedTrajectory(unshown, env, wrong, 1, 0.5, 3, logprob=-9.0, tokens=10)]
    assert VisibleTestsDiscriminator().choose(pair) == 1


class Rolling:
    """A policy that finishes every program the same ways (rollouts), counting its calls."""

    name = "rolling"

    def __init__(self, endings):
        self.endings, self.calls = endings, 0

    def propose(self, requests):
        from mcts_agent.llm.base import Candidate

        self.calls += 1
        return [[Candidate(self.endings[i % len(self.endings)], -1.0, 4, "eos")
                 for i in range(r.n)] for r in requests]


def test_rollouts_on_code_are_judged_by_visible_tests_in_one_sandbox_call():
    from critics.rollout import RolloutCritic
    from mcts_agent.contracts import CriticInput

    env, task = code_gen(), add_then_double()
    blind = Task(task.id, task.problem, None, task.metadata)
    calls = []
    env.runner = lambda jobs: calls.append(len(jobs)) or run_tests(jobs)
    policy = Rolling(["x = x * 2\nreturn x", "return 10", "return 0"])  # after x = x + 3
    started, _ = write(env, task, ["x = x + 3"])
    critic = RolloutCritic(policy, k=3, mode="inference")
    [out] = critic.evaluate([CriticInput(blind, env, started, False)])
    # two of three rolled-out programs pass the visible f(2) == 10 (the second by rote); the
    # vote over programs, all distinct, would say nothing
    assert out.value == pytest.approx(2 / 3) and len(out.completions) == 3
    assert calls == [3] and policy.calls == 1
    data = RolloutCritic(policy, k=3, mode="data").evaluate(
        [CriticInput(task, env, started, False)])
    assert data[0].value == pytest.approx(1 / 3)  # the hidden tests unmask "return 10"


def test_best_of_n_picks_like_the_tree_visible_tests_then_the_surest_program():
    from mcts_agent.llm.base import Candidate
    from mcts_agent.search.baselines import sample_solutions

    env, task = code_gen(), add_then_double()

    class Sampling:
        name = "sampling"

        def __init__(self, programs):
            self.programs = programs

        def propose(self, requests):
            return [[Candidate(text, logprob, 10, "eos") for text, logprob in self.programs]
                    for _ in requests]

    wrong, rote, right = "    return x", "    return 10", "    return (x + 3) * 2"
    sure_of_right = Sampling([(wrong, -1.0), (rote, -8.0), (right, -3.0)])
    [attempt] = sample_solutions(env, sure_of_right, [task], 3, temperature=1.0, max_tokens=40)
    assert attempt.scores == [0.0, 0.0, 1.0] and attempt.picked_correct(env)
    sure_of_rote = Sampling([(wrong, -1.0), (rote, -2.0), (right, -3.0)])
    [attempt] = sample_solutions(env, sure_of_rote, [task], 3, temperature=1.0, max_tokens=40)
    assert attempt.any_correct and not attempt.picked_correct(env)  # the visible test is fooled


def test_humaneval_canonical_solutions_score_one():
    env = environments.create("humaneval")
    tasks = env.tasks(None, split="all")
    assert len(tasks) == 164 and len(env.tasks(None, "test")) + len(env.tasks(None, "train")) == 164
    sample = tasks[::33]  # 5 problems; all 164 belong in bench/code.py
    for task in sample:
        body = env.canonical(task)[len(task.problem):]
        state = env.reset(task)
        for line in (ln for ln in body.splitlines() if ln.strip()):
            if state.status != "open":
                break
            state = env.step(state, line).state  # unstripped lines keep their indentation
        if state.status == "open":
            state = env.step(state, "# end").state
        assert env.score(state, task) == 1.0, task.id
    visible = env.grade([(env.canonical(t), t) for t in sample], visible=True)
    assert all(r is None or r.solved for r in visible)  # the examples agree with the solution
    wrong = env.grade([(t.problem + "    return None\n", t) for t in sample])
    assert not any(r.solved for r in wrong)
    assert "assert" in wrong[0].feedback or wrong[0].error


def test_humaneval_checks_are_split_into_asserts_for_partial_credit():
    env = environments.create("humaneval")
    task = next(t for t in env.tasks(None, split="all") if t.id == "HumanEval/0")
    assert len(task.reference["tests"]) == 7 and "candidate = has_close_elements" in (
        task.reference["setup"])
    always = env.grade([(task.problem + "    return True\n", task)])[0]
    assert 0 < always.score < 1  # right on the close pairs only
    looped = next(t for t in env.tasks(None, split="all")
                  if t.reference["tests"][0].startswith("check("))  # a check with a loop
    assert env.grade([(env.canonical(looped), looped)])[0].solved


def test_code_jsonl_reads_both_styles_and_counts_malformed_rows(tmp_path, caplog):
    path = tmp_path / "problems.jsonl"
    rows = [
        json.dumps({"task_id": "mbpp/1", "text": "Add two numbers.", "test_list": [
            "assert add(1, 2) == 3", "assert add(0, 0) == 0"]}),
        "{not json",
        json.dumps({"prompt": "def sq(x):\n", "test": "def check(c):\n    assert c(3) == 9\n",
                    "entry_point": "sq"}),
        json.dumps({"prompt": "def g(x):\n", "test": "def check(c): pass"}),  # no entry point
        json.dumps({"prompt": "def h():\n"}),  # no tests
    ]
    path.write_text("\n".join(rows) + "\n")
    with caplog.at_level(logging.WARNING):
        env = environments.create("code-jsonl", path=str(path))
    assert env.skipped == 3
    assert f"{path}:2" in caplog.text and f"{path}:4" in caplog.text
    mbpp, check = env.tasks()
    assert mbpp.id == "mbpp/1" and mbpp.problem.startswith("# Add two numbers.\n# assert add")
    assert mbpp.metadata["visible_tests"] == ["assert add(1, 2) == 3"]
    state, _ = write(env, mbpp, ["def add(a, b):", "return a + b"])
    assert env.answer(state) is None  # base level is top level: the end marker ends it
    state, _ = write(env, mbpp, ["def add(a, b):", "return a + b", "# end"])
    assert env.score(state, mbpp) == 1.0
    state, _ = write(env, check, ["return x * x"])
    assert env.score(state, check) == 1.0
    assert check.id.startswith("code-")  # a content hash without an id field


# ------------------------------------------------------------------ search end to end


def _search(tmp_path, mode, tasks=2, **settings):
    from mcts_agent.models.tiny_code import TINY_CODE_DIR
    from mcts_agent.registry import PluginSpec
    from mcts_agent.search import SearchConfig
    from mcts_agent.search.run import load_policy, run_search

    env = environments.create("code-gen")
    config = SearchConfig(**{"simulations": 4, "expand_n": 3, "max_depth": 8,
                             "max_step_tokens": 40, "mode": mode, **settings})
    critic = critics.create("verifier", reference=mode == "data")
    out = tmp_path / mode
    summary, results = run_search(env, tasks=env.tasks(tasks, "test", seed=3),
                                  env_spec=PluginSpec("code-gen", {}),
                                  policy=load_policy(TINY_CODE_DIR), config=config,
                                  critic=critic, out_dir=out, baselines=False)
    return out, summary, results


@pytest.mark.parametrize("mode", ["data", "inference"])
def test_search_with_the_tiny_code_model_writes_records(tmp_path, mode):
    out, summary, _ = _search(tmp_path, mode)
    records = list(ResultFile(out / "trees.jsonl"))
    assert len(records) == 2 and summary.tasks == 2
    finished = [n for r in records for n in r.nodes if n.terminal and n.answer]
    assert finished and all(n.answer.startswith("# ") for n in finished)
    judged = [n for r in records for n in r.nodes if n.terminal and n.critic is not None]
    assert judged  # finished programs were run (hidden tests in data mode, visible ones else)
    if mode == "inference":
        assert all(r.solved is not None for r in records if r.answer)


def test_pairs_on_a_code_run(tmp_path):
    from mcts_agent.cli import app

    out, _, _ = _search(tmp_path, "data", tasks=3, simulations=10, expand_n=4,
                        stop_when_solved=False)
    settings = tmp_path / "pairs.yaml"
    settings.write_text("z: 0.0\nmin_margin: 0.05\n")
    result = CliRunner().invoke(app, ["pairs", str(out), "--config", str(settings)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "data" / "pairs.jsonl").read_text().splitlines()]
    assert rows
    for row in rows:  # a line of code carries no end of text; a finished program does
        for side in ("chosen", "rejected"):
            ends = row[side].strip().startswith("return") or row[side].strip() == "# end"
            assert not row[f"{side}_terminal"] or ends, row


def test_best_of_n_keeps_the_samples_that_fit_the_trees_tokens():
    from mcts_agent.search.baselines import Attempt

    task = add_then_double()
    drawn = Attempt(task, ["a", "b", "c", "d"], [None] * 4, [0.0, 0.0, 1.0, 1.0], 100,
                    [None] * 4, [-1.0] * 4, [30, 40, 20, 10])
    fitted = drawn.within(95)  # 30 + 40 + 20 fit; the fourth would pass the budget
    assert fitted.texts == ["a", "b", "c"] and fitted.tokens == 90 and fitted.any_correct
    assert drawn.within(5).texts == ["a"]  # at least one sample, whatever it cost
