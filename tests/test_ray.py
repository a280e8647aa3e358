"""Search on a Ray cluster: the same trees as one process, whatever dies along the way.

One local cluster (2 CPUs, a small object store, no dashboard) serves the module; the search
workers hold the shipped tiny reasoner. The reference is a single-process run of the same
tasks with the same seed; trees are compared by :func:`mcts_agent.scale.compare.tree_differences`
(every step, visit and count exactly; log-probabilities to 1e-4, as the drivers are compared).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mcts_agent.cli import app
from mcts_agent.scale import RayConfig, ray_available
from mcts_agent.scale.compare import tree_differences
from mcts_agent.search import ResultFile, SearchConfig
from mcts_agent.search.run import run_search

pytestmark = pytest.mark.skipif(
    not ray_available(), reason="Ray is not installed (pip install -e '.[ray]'; .ci/run "
    "installs it with the test extra)")

CONFIG = SearchConfig(simulations=4, expand_n=2, max_depth=6, max_step_tokens=20)
TASKS = 6
SMALL = ["--simulations", "4", "--expand-n", "2", "--max-step-tokens", "20", "--rollouts", "2",
         "--no-baselines", "--no-cache"]
runner = CliRunner(env={"COLUMNS": "240"})


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster for this module, started as the runs start one (timed)."""
    import ray

    from mcts_agent.scale.ray_search import start_ray

    seconds = start_ray(RayConfig(workers=2, object_store_mb=200))
    assert seconds < 60
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, policy):
    """The single-process run's trees (the ones every Ray run must write)."""
    out = tmp_path_factory.mktemp("single")
    run_search("arith", tasks=TASKS, policy=policy, config=CONFIG, rollouts=2, out_dir=out,
               baselines=False, cache=False)
    return ResultFile(out / "trees.jsonl").read()


def ray_run(out: Path, **options):
    from mcts_agent.scale.ray_search import run_ray_search

    return run_ray_search("arith", tasks=TASKS, config=CONFIG, rollouts=2, out_dir=out,
                          baselines=False, **options)


def once_each(out: Path) -> list:
    records = ResultFile(out / "trees.jsonl").read()
    counts = Counter(r.task.id for r in records)
    assert len(counts) == TASKS and set(counts.values()) == {1}, counts
    return records


def test_importing_the_toolkit_never_imports_ray():
    code = ("import sys, mcts_agent, mcts_agent.cli, mcts_agent.scale, mcts_agent.train.iterate;"
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_two_workers_write_the_single_process_trees(cluster, reference, tmp_path):
    summary, results = ray_run(tmp_path, ray=RayConfig(workers=2))
    assert summary.searched == TASKS and len(results) == TASKS
    assert tree_differences(once_each(tmp_path), reference) == []
    settings = (tmp_path / "config.yaml").read_text()
    assert "tiny-arith" in settings and "rollout" in settings  # policy and critic recorded
    again, _ = ray_run(tmp_path, ray=RayConfig(workers=2))  # resumed: nothing to do
    assert again.searched == 0 and tree_differences(once_each(tmp_path), reference) == []


def test_a_single_process_run_resumes_on_the_cluster(cluster, policy, reference, tmp_path):
    run_search("arith", tasks=2, policy=policy, config=CONFIG, rollouts=2, out_dir=tmp_path,
               baselines=False, cache=False)
    summary, _ = ray_run(tmp_path, ray=RayConfig(workers=2))  # same settings record: accepted
    assert summary.searched == TASKS - 2
    assert tree_differences(once_each(tmp_path), reference) == []


def test_a_killed_worker_loses_only_its_trees_in_flight(cluster, reference, tmp_path):
    from mcts_agent.registry import PluginSpec
    from mcts_agent.scale.ray_search import WorkerJob, WorkerPool

    lines: list[str] = []
    job = WorkerJob(PluginSpec("arith", {}), rollouts=2, config=CONFIG, threads=1)
    pool = WorkerPool(job, RayConfig(workers=2, chunk=1), report=lines.append)
    victim = pool.pids()[1]
    killed = []

    def kill_once(record):
        if not killed:
            os.kill(victim, signal.SIGKILL)
            killed.append(record.task.id)

    try:
        summary, _ = ray_run(tmp_path, pool=pool, on_result=kill_once)
    finally:
        pool.close()
    assert killed and summary.tasks == TASKS
    assert tree_differences(once_each(tmp_path), reference) == []
    assert len(lines) == 1 and f"(pid {victim}) died" in lines[0], lines
    assert "grown again" in lines[0] and "replaces it" in lines[0]


def test_a_shared_policy_actor_serves_every_worker(cluster, reference, tmp_path):
    shared = RayConfig(workers=2, shared_policy=True, cpus_per_worker=0.5)
    summary, _ = ray_run(tmp_path, ray=shared)
    assert summary.searched == TASKS
    assert tree_differences(once_each(tmp_path), reference) == []


def test_a_judge_of_its_own_model_is_one_actor_for_every_worker(cluster, policy, tmp_path):
    from mcts_agent.errors import UserError
    from mcts_agent.models.tiny import TINY_ARITH_DIR
    from mcts_agent.search.critic_specs import build_critic

    critic = ["rollout", f"judge={TINY_ARITH_DIR}"]  # a judge with a model folder of its own
    single = tmp_path / "single"
    run_search("arith", tasks=3, policy=policy, config=CONFIG, rollouts=2, out_dir=single,
               critic=build_critic(critic, policy, CONFIG, 2), baselines=False, cache=False)
    shared = RayConfig(workers=1, shared_critics=[critic[1]])
    summary, _ = run_ray_search_of(tmp_path / "ray", 3, critic=critic, ray=shared)
    assert summary.searched == 3
    records = ResultFile(tmp_path / "ray" / "trees.jsonl").read()
    assert tree_differences(records, ResultFile(single / "trees.jsonl").read()) == []
    assert any(n.components for r in records for n in r.nodes)  # the judge did score
    # the settings say what scored, not where it ran: the two folders resume each other
    assert (yaml.safe_load((tmp_path / "ray" / "config.yaml").read_text())["critic"]
            == yaml.safe_load((single / "config.yaml").read_text())["critic"])
    with pytest.raises(UserError, match="not among the run's critics"):
        run_ray_search_of(tmp_path / "other", 3, critic=["rollout"], ray=shared)


def run_ray_search_of(out: Path, tasks: int, **options):
    from mcts_agent.scale.ray_search import run_ray_search

    return run_ray_search("arith", tasks=tasks, config=CONFIG, rollouts=2, out_dir=out,
                          baselines=False, **options)


def test_a_pool_the_cluster_cannot_hold_is_refused_at_once(cluster, tmp_path):
    from mcts_agent.errors import UserError

    with pytest.raises(UserError, match=r"cannot hold 3 workers: they need 3 CPUs \(it has 2\)"):
        ray_run(tmp_path, ray=RayConfig(workers=3))


def test_an_address_nothing_answers_at_is_refused_at_once():
    from mcts_agent.errors import UserError
    from mcts_agent.scale.ray_search import check_reachable

    started = time.perf_counter()
    with pytest.raises(UserError, match=r"nothing answers at 127\.0\.0\.1:1 .*ray start --head"):
        check_reachable("127.0.0.1:1")
    assert time.perf_counter() - started < 6


def test_a_worker_that_cannot_start_says_why_in_one_line(cluster, tmp_path):
    from mcts_agent.errors import UserError

    with pytest.raises(UserError, match=r"search worker failed to start: model folder .*nope"):
        ray_run(tmp_path / "run", ray=RayConfig(workers=1), model=tmp_path / "nope")


def test_a_killed_driver_resumes_with_the_same_command(cluster, reference, tmp_path):
    """Both drivers connect to the module's cluster by its address (as to a real cluster);
    the first one's workers die with it."""
    address = cluster.get_runtime_context().gcs_address
    out = tmp_path / "run"
    command = [sys.executable, "-m", "mcts_agent", "search", "--tasks", str(TASKS), *SMALL,
               "--ray", address, "--workers", "2", "--out", str(out)]
    env = {**os.environ, "COLUMNS": "240"}
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    trees = out / "trees.jsonl"
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline and first.poll() is None:
        if trees.exists() and trees.read_bytes().count(b"\n") >= 1:
            break
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    written = trees.read_bytes().count(b"\n")
    assert 1 <= written < TASKS, "the first run should die mid-run"
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert f"{written} done before" in " ".join(second.stdout.split())
    assert tree_differences(once_each(out), reference) == []


def test_cli_errors_are_one_line(tmp_path, monkeypatch):
    for command in ("search", "iterate"):
        result = runner.invoke(app, [command, "--workers", "2", "--out", str(tmp_path)])
        assert result.exit_code == 2 and "go with --ray" in result.output
    result = runner.invoke(app, ["search", "--ray", "local", "--gpus-per-worker", "1",
                                 "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--device cuda" in result.output
    monkeypatch.setattr("mcts_agent.scale.ray_available", lambda: False)
    result = runner.invoke(app, ["search", "--ray", "local", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "pip install 'mcts-agent[ray]'" in result.output


def test_iterate_searches_and_evaluates_on_the_cluster(cluster, tmp_path):
    from mcts_agent.data import PairConfig
    from mcts_agent.train.config import TrainConfig
    from mcts_agent.train.iterate import IterateConfig, iterate

    config = IterateConfig(
        rounds=1, tasks_per_round=4, eval_tasks=4, eval_k=2, rollouts=2,
        search=SearchConfig(simulations=4, expand_n=2, stop_when_solved=False,
                            max_step_tokens=20, max_depth=5),
        pairs=PairConfig(min_margin=0.1),
        train=TrainConfig(epochs=1, batch_size=4, learning_rate=1e-4, threads=1),
        ray=RayConfig(workers=2))
    lines: list[str] = []
    rows = iterate(config, tmp_path / "run", report=lines.append)
    assert [row["round"] for row in rows] == [0, 1]
    assert len(ResultFile(tmp_path / "run/round_1/search/trees.jsonl").read()) == 4
    assert json.loads((tmp_path / "run/round_1/eval.json").read_text())["tasks"] == 4
    assert not [line for line in lines if "died" in line]
