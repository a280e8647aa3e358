"""The asynchronous driver: each tree advances on its own, and grows the wave driver's trees.

Reference: the wave driver (``driver="wave"``), already held to its own specification in
``test_search_driver.py``. The scripted policy here answers after a random delay, so calls
return in an order unrelated to the order they were sent; the trees must not notice. Real
backends (vLLM, the OpenAI-compatible server through the faulty proxy) repeat the comparison in
their own test modules.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest
from pydantic import ValidationError
from test_search_driver import Flat, ScriptedPolicy

from critics import VerifierCritic
from environments.math.arith_env import ArithEnvironment
from mcts_agent.search import ResultFile, SearchConfig, TreeSearch


class Jittery:
    """A policy that answers after a random delay (a server under load), counting how many of
    its calls are in flight at once."""

    name = "jittery"

    def __init__(self, inner=None, slow: str | None = None, fail_after: int | None = None,
                 error: type[BaseException] = RuntimeError) -> None:
        self.inner = inner or ScriptedPolicy(wide=True)
        self.slow, self.fail_after, self.error = slow, fail_after, error
        self.calls = self.in_flight = self.most_in_flight = 0
        self._lock = threading.Lock()
        self._rng = random.Random(0)

    def propose(self, requests):
        with self._lock:
            self.calls += 1
            if self.fail_after is not None and self.calls > self.fail_after:
                raise self.error("the model server went away")
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            delay = self._rng.uniform(0, 0.004)
        if self.slow and any(self.slow in r.prompt for r in requests):
            delay = 0.25
        time.sleep(delay)
        try:
            return self.inner.propose(requests)
        finally:
            with self._lock:
                self.in_flight -= 1


def search(env, policy, tasks, results=None, critic=None, **settings):
    config = SearchConfig(**{"simulations": 12, "expand_n": 3, "leaves_per_tree": 2,
                             "max_trees_in_flight": 4, **settings})
    return list(TreeSearch(env, policy, critic or VerifierCritic(), config).run(tasks, results))


def trees(results) -> dict:
    return {r.task.id: (r.nodes, r.answer, r.solved, r.stats.expansions, r.stats.tokens,
                        r.stats.waves, r.stats.counts) for r in results}


@pytest.fixture
def env():
    return ArithEnvironment(max_operand=9)


@pytest.mark.parametrize("settings", [
    {},
    {"leaves_per_tree": 1, "stop_when_solved": False},
    {"leaves_per_tree": 3, "stop_when_solved": False, "simulations": 20},
    {"mode": "inference", "max_tokens": 200},
])
def test_async_grows_the_wave_trees_whatever_the_order_of_arrival(env, settings):
    tasks = env.tasks(7)
    wave = search(env, ScriptedPolicy(wide=True), tasks, driver="wave", **settings)
    jittery = Jittery()
    asynchronous = search(env, jittery, tasks, driver="async", **settings)
    assert trees(asynchronous) == trees(wave)
    assert jittery.most_in_flight > 1  # trees really overlapped their calls


def test_a_slow_tree_does_not_hold_the_others_back(env):
    tasks = env.tasks(4)
    slow = tasks[0]
    for driver in ("wave", "async"):
        policy = Jittery(slow=slow.problem)
        finished = [r.task.id for r in search(env, policy, tasks, driver=driver,
                                              stop_when_solved=False)]
        if driver == "async":  # the others finish while the slow one waits for its calls
            assert finished[-1] == slow.id
            assert policy.most_in_flight >= 3
        else:  # the wave driver waits for the slowest tree in every wave
            assert policy.most_in_flight == 1


def test_async_resumes_and_a_failing_model_stops_the_run_with_finished_trees_kept(env, tmp_path):
    tasks = env.tasks(8)
    want = trees(search(env, ScriptedPolicy(wide=True), tasks, stop_when_solved=False))
    file = ResultFile(tmp_path / "trees.jsonl")
    for error, calls in ((KeyboardInterrupt, 30), (RuntimeError, 6)):  # Ctrl-C; a lost server
        with pytest.raises(error):
            search(env, Jittery(fail_after=calls, error=error), tasks, file, driver="async",
                   stop_when_solved=False)
    kept = [r.task.id for r in file]
    assert 0 < len(kept) < len(tasks) and len(kept) == len(set(kept))
    search(env, Jittery(), tasks, file, driver="async", stop_when_solved=False)
    resumed = list(file)
    assert sorted(r.task.id for r in resumed) == sorted(t.id for t in tasks)  # each once
    assert trees(resumed) == want


def test_async_and_the_critic_flow_together(env):
    """A critic whose calls wait too (a judge, rollouts on a server): its work overlaps the
    other trees' calls and the trees are still the wave driver's."""

    class SlowFlat(Flat):
        def evaluate(self, nodes):
            time.sleep(random.uniform(0, 0.003))
            return super().evaluate(nodes)

    tasks = env.tasks(6)
    wave = search(env, ScriptedPolicy(wide=True), tasks, critic=Flat(), stop_when_solved=False)
    asynchronous = search(env, Jittery(), tasks, critic=SlowFlat(), driver="async",
                          stop_when_solved=False)
    assert trees(asynchronous) == trees(wave)


def test_clear_refusals():
    with pytest.raises(ValidationError, match="async driver already overlaps"):
        SearchConfig(driver="async", cohorts=2)

    class Game(ArithEnvironment):  # a simulator: one world, stepped turn by turn
        interactive = True

    game = Game(max_operand=9)
    with pytest.raises(ValueError, match="interactive agent environments"):
        search(game, ScriptedPolicy(), game.tasks(1), driver="async")


def test_the_cli_searches_with_either_driver_into_one_run(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from mcts_agent import cli

    monkeypatch.setattr(cli, "load_policy", lambda *a, **k: Jittery())
    common = ["search", "--env-arg", "max_operand=9", "--simulations", "8", "--critic",
              "verifier", "--no-baselines", "--no-cache"]

    def invoke(*args: str):
        result = CliRunner().invoke(cli.app, [*common, *args])
        assert result.exit_code == 0, result.stderr
        return {r.task.id: r.nodes for r in ResultFile(Path(args[-1]) / "trees.jsonl")}

    wave = invoke("--tasks", "4", "--driver", "wave", "--out", str(tmp_path / "wave"))
    invoke("--tasks", "2", "--driver", "async", "--out", str(tmp_path / "mixed"))
    # the driver changes speed, not trees: a run resumes with the other one
    mixed = invoke("--tasks", "4", "--driver", "wave", "--out", str(tmp_path / "mixed"))
    assert mixed == wave


def test_the_response_cache_serves_an_async_rerun_without_the_model(env, tmp_path):
    from mcts_agent.llm.cache import CachedPolicy

    tasks = env.tasks(5)
    first = CachedPolicy(Jittery(), tmp_path / "responses.sqlite")
    want = trees(search(env, first, tasks, driver="async", stop_when_solved=False))
    model = Jittery(fail_after=0)  # any call to the model itself fails the run
    again = CachedPolicy(model, tmp_path / "responses.sqlite")
    assert trees(search(env, again, tasks, driver="async", stop_when_solved=False)) == want
    assert again.stats["misses"] == 0 and again.stats["hits"] == first.stats["misses"]


def test_auto_picks_async_where_the_policy_batches_continuously(env):
    class Served(Jittery):
        continuous_batching = True  # declared by vLLM and OpenAI-compatible backends

    class Game(ArithEnvironment):
        interactive = True

    def driver(policy, environment=env, **settings):
        return TreeSearch(environment, policy, VerifierCritic(), SearchConfig(**settings)).driver

    assert driver(Served()) == "async"
    assert driver(Jittery()) == "wave"  # one batch per call: the wave is its batch
    assert driver(Served(), Game(max_operand=9)) == "wave"
    assert driver(Served(), cohorts=2) == "wave"
    assert driver(Jittery(), driver="async") == "async"  # asked for: always honoured


def test_ctrl_c_stops_an_async_cli_run_with_every_finished_tree_saved(tmp_path):
    """A real SIGINT to ``mcts-agent search --driver async`` on the tiny reasoner: exit 130,
    every finished tree on disk, and the same command resumes to exactly one tree per task."""
    import json
    import os
    import signal
    import subprocess
    import sys

    out = tmp_path / "run"
    command = [sys.executable, "-m", "mcts_agent", "search", "--driver", "async", "--tasks",
               "40", "--simulations", "24", "--env-arg", "max_operand=50", "--critic",
               "verifier", "--no-baselines", "--no-cache", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # a test run in the background inherits an ignored SIGINT; the CLI must see Ctrl-C
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    trees_file = out / "trees.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if trees_file.exists() and trees_file.read_text().count("\n") >= 1:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    saved = [json.loads(line)["task"]["id"] for line in trees_file.read_text().splitlines()]
    assert process.returncode == 130, stderr[-2000:]
    assert "interrupted; finished trees are saved" in stderr
    assert 1 <= len(saved) < 40 and len(saved) == len(set(saved))
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    ids = [json.loads(line)["task"]["id"] for line in trees_file.read_text().splitlines()]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 40 and ids[:len(saved)] == saved
