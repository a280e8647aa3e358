"""B-STaR's balance score and its per-round choices of temperature and pair threshold."""

from __future__ import annotations

import json

import pytest
import torch
from test_data import ENV, example
from test_iterate import small

from mcts_agent.data import PairConfig
from mcts_agent.metrics import balance_score, paired_difference
from mcts_agent.train.balance import BalanceConfig, choose_margin
from mcts_agent.train.iterate import iterate


def test_balance_score_is_b_stars_formula():
    # (distinct correct selected, correct selected, selected) per query; n* = 2
    queries = [(2, 3, 4), (1, 1, 1), (0, 0, 0)]
    expected = (1.0 * 3 / 4 + 0.5 * 1 / 1 + 0.0) / 3  # nothing selected counts 0
    assert balance_score(queries, n_star=2) == pytest.approx(expected)
    assert balance_score([(8, 8, 8)], n_star=4) == 1.0  # exploration saturates at n*
    assert balance_score([], 4) == 0.0
    with pytest.raises(ValueError):
        balance_score(queries, n_star=0)


def test_paired_difference_and_its_standard_error():
    mean, se = paired_difference([1, 1, 0, 1], [0, 1, 0, 0])
    assert mean == pytest.approx(0.5)
    assert se == pytest.approx(((0.25 + 0.25 + 0.25 + 0.25) / 3) ** 0.5 / 2)  # d = 1,0,0,1
    with pytest.raises(ValueError):
        paired_difference([1], [0, 1])


def test_the_pair_threshold_with_the_best_balance_is_chosen():
    # example(): a confirmed root pair (1 → a verified answer; 2 never finished, so not
    # confirmed as wrong) and confirmed answer pairs under node 3 (5 right vs 7 wrong)
    config = BalanceConfig(margins=(0.9, 0.1), n_star=1)
    chosen, rows, counts, scores = choose_margin([example()], ENV, PairConfig(z=0), config)
    low = [r for r in rows if r["margin"] >= 0.1]
    assert set(scores) == {0.9, 0.1} and chosen.min_margin in (0.9, 0.1)
    assert scores[chosen.min_margin] == max(scores.values())
    # at 0.9 only exact answer pairs pass, all confirmed: precision 1
    assert scores[0.9] == pytest.approx(1.0)
    assert chosen.min_margin == 0.9 and len(rows) <= len(low) and counts["pairs"] == len(rows)


def test_iterate_with_balance_records_its_choices_and_resumes(tmp_path):
    torch.set_num_threads(1)
    config = small(rounds=1, balance=BalanceConfig(temperatures=(0.5, 1.0), margins=(0.1, 0.5),
                                                   probe_tasks=3, samples=2))
    lines: list[str] = []
    rows = iterate(config, tmp_path, report=lines.append)
    choice = json.loads((tmp_path / "round_1" / "balance.json").read_text())
    assert choice["temperature"] in (0.5, 1.0) and set(choice["scores"]) == {"0.5", "1.0"}
    assert rows[1]["temperature"] == choice["temperature"]
    assert rows[1]["min_margin"] in (0.1, 0.5)
    assert any("B-STaR temperature" in line for line in lines)
    assert any("B-STaR pair threshold" in line for line in lines)
    lines.clear()
    again = iterate(config, tmp_path, report=lines.append)  # nothing redone
    assert again[1]["temperature"] == rows[1]["temperature"]
    assert not any("B-STaR" in line for line in lines)
