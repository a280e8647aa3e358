"""The engine benchmark still runs and reports its figures (no speed is asserted here)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[1] / "bench" / "engine.py"
FIELDS = {"numba_stepwise_sims_per_s_b64", "python_sims_per_s_b64", "stepwise_speedup_b64",
          "numba_fused_sims_per_s_b64", "bytes_per_node", "jit_warmup_s"}


def test_engine_benchmark_quick_run_prints_its_json_line():
    done = subprocess.run([sys.executable, str(BENCH), "--quick"], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]  # 1 = the implementations disagree
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures.keys() >= FIELDS
    assert figures["cross_check"]["identical_root_visits"]
    assert figures["bytes_per_node"] <= 64


def test_engine_ab_small_run_times_a_revision_beside_the_working_tree():
    root = Path(__file__).parents[1]
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("bench/ab_engine.py reads a revision from git: needs git and a clone")
    bench = root / "bench" / "ab_engine.py"
    done = subprocess.run([sys.executable, str(bench), "--rev", "HEAD", "--trees", "2",
                           "--sims", "16", "--rounds", "2", "--leaves", "1,4"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]  # 1 = a version left the reference's trees
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["identical_root_visits"]
    assert set(figures["median_ms"]) == {"rev_k1", "tree_k1", "rev_k4", "tree_k4", "reference"}
    assert figures["vs_reference"]["reference"] == 1.0


def test_search_benchmark_small_run_prints_its_json_line():
    bench = Path(__file__).parents[1] / "bench" / "search.py"
    done = subprocess.run([sys.executable, str(bench), "--tasks", "3", "--simulations", "2",
                           "--rollouts", "1"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    for mode in ("data", "inference"):
        assert {"greedy_solved", "best_of_n_solved", "mcts_solved", "tasks", "tokens",
                "seconds"} <= figures[mode].keys()
        assert figures[mode]["tasks"] == 3


def test_self_improvement_benchmark_small_run_prints_its_json_line(tmp_path):
    bench = Path(__file__).parents[1] / "bench" / "self_improve.py"
    done = subprocess.run(
        [sys.executable, str(bench), "--tasks", "4", "--rounds", "1", "--eval-tasks", "4",
         "--simulations", "3", "--epochs", "1", "--threads", "1", "--out", str(tmp_path / "runs"),
         "--results", str(tmp_path / "results.md")],
        capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"start_acc", "step_dpo_acc", "outcome_dpo_acc", "sft_acc", "rounds"} <= figures.keys()
    assert figures["rounds"] == 1 and len(figures["per_round"]["sft"]) == 2
    assert "| round |" in (tmp_path / "results.md").read_text()


def test_self_improvement_late_errors_small_run_measures_where_outcome_pairs_differ(tmp_path):
    bench = Path(__file__).parents[1] / "bench" / "self_improve.py"
    done = subprocess.run(
        [sys.executable, str(bench), "--setting", "late-errors", "--tasks", "4", "--rounds", "1",
         "--eval-tasks", "4", "--eval-k", "2", "--simulations", "4", "--epochs", "1",
         "--threads", "1", "--methods", "first_error,corrupted,outcome_dpo,sft",
         "--replicate", "6", "--seeds", "1", "--ablate", "--out", str(tmp_path / "runs")],
        capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["setting"] == "late-errors" and figures["eval_tasks"] == 4
    assert figures["step_dpo_method"] in ("first_error", "corrupted")
    assert {"outcome_dpo", "sft"} == set(figures["vs"]) and figures["se"] is not None
    # round 1's search is shared: every method searched the same tokens
    assert len({tokens[0] for tokens in figures["search_tokens"].values()}) == 1
    # outcome pairs from the trees and from independent samples, both located
    assert figures["outcome_localisation"]["pairs"] >= 0
    assert set(figures["independent_localisation"]) == set(figures["outcome_localisation"])
    # the replication tests every final model on fresh problems, none of the evaluation's
    replication = figures["replication"]
    assert replication["tasks"] == 6 and replication["picked"] == figures["step_dpo_method"]
    assert {m for m in replication["greedy_acc"] if "@" not in m} == {
        "start", "first_error", "corrupted", "outcome_dpo", "sft"}
    assert {"first_error_vs_outcome_dpo", "corrupted_vs_sft"} <= set(replication["vs"])
    # --seeds: each final round trained once more with another seed, and tested too
    seeds = replication["final_round_seeds"]
    assert set(seeds) == {"first_error", "corrupted", "outcome_dpo", "sft"}
    assert all(len(accs) == 2 for accs in seeds.values())
    assert set(replication["seed_mean_vs"]) == set(replication["vs"])
    # --ablate: each DPO method's round 1 again without its NLL term and with a vanishing beta
    ablation = figures["preference_ablation"]
    assert set(ablation) == {"first_error", "corrupted", "outcome_dpo"}
    assert all(set(row["greedy_acc"]) == {"full", "dpo_only", "nll_only"}
               and {"dpo_only_vs_full", "nll_only_vs_full"} <= set(row)
               for row in ablation.values())


def test_critics_benchmark_small_run_prints_its_json_line(tmp_path):
    bench = Path(__file__).parents[1] / "bench" / "critics.py"
    done = subprocess.run(
        [sys.executable, str(bench), "--rm-tasks", "16", "--fit-tasks", "8", "--test-tasks", "6",
         "--simulations", "6", "--rm-epochs", "1", "--nodes-per-tree", "6", "--threads", "1",
         "--out", str(tmp_path / "runs"), "--results", str(tmp_path / "results.md")],
        capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"greedy_acc", "majority_acc", "mcts_rollout_acc", "mcts_rm_acc", "mcts_hybrid_acc",
            "auroc"} <= figures.keys()
    assert set(figures["auroc"]) == {"rollout", "reward-model", "hybrid"}
    assert "critics:begin" in (tmp_path / "results.md").read_text()
