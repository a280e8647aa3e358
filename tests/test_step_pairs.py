"""Step-level pair strategies where errors surface late (``arith`` without its calculator):
first-error pairs (Step-DPO) and error-injected negatives (RISE)."""

from __future__ import annotations

import random

import pytest
from test_data import tree

from environments.math.arith import check_step
from environments.math.arith_env import ArithEnvironment
from environments.math.stepwise import MathState
from mcts_agent.data import PairConfig, mine_pairs

LATE = ArithEnvironment(check_steps=False)  # a false line does not end the episode
ROOT = "Q: 3+9*3=?\n"
S1, S1_SLIP = "Step 1: 9*3=27", "Step 1: 9*3=26"
FIRST = PairConfig(strategy="first_error", min_margin=0.0)


def late_tree():
    """A wrong first step followed by locally correct steps (2 → 7 → 8), and a wrong second
    step under a correct first one (1 → 4 → 6); one verified solution (1 → 3 → 5)."""
    return tree(
        (0, S1, 10, 0.6),                   # 1
        (0, S1_SLIP, 6, 0.0),               # 2  the first error on the path to 8
        (1, "Step 2: 3+27=30", 5, 1.0),     # 3
        (1, "Step 2: 3+27=31", 4, 0.0),     # 4  the first error on the path to 6
        (3, "Answer: 30", 5, 1.0, 1.0),     # 5
        (4, "Answer: 31", 4, 0.0, 0.0),     # 6
        (2, "Step 2: 3+26=29", 5, 0.0),     # 7  locally correct, after the error
        (7, "Answer: 29", 5, 0.0, 0.0),     # 8
    )


def test_first_error_pairs_the_first_wrong_step_with_a_step_that_leads_to_a_solution():
    rows, counts = mine_pairs([late_tree()], LATE, FIRST)
    assert {(r["parent_node"], r["chosen_node"], r["rejected_node"]) for r in rows} == {
        (0, 1, 2), (1, 3, 4)}
    by_parent = {r["parent_node"]: r for r in rows}
    assert by_parent[0]["prompt"] == ROOT
    assert (by_parent[0]["chosen"], by_parent[0]["rejected"]) == (S1 + "\n", S1_SLIP + "\n")
    assert by_parent[1]["prompt"] == ROOT + S1 + "\n"
    # the locally correct steps after an error are never the rejected side
    assert all(r["rejected_node"] not in (7, 8) for r in rows)
    assert counts["pairs"] == 2 and all(r["strategy"] == "first_error" for r in rows)


def test_first_error_needs_a_verified_solution_from_the_same_prefix():
    unsolved = tree((0, S1_SLIP, 3, 0.0), (1, "Answer: 26", 3, 0.0, 0.0))
    rows, counts = mine_pairs([unsolved], LATE, FIRST)
    assert rows == [] and counts["no_correct"] == 1


def test_first_error_skips_a_wrong_step_the_tree_valued_higher():
    misled = tree(
        (0, S1, 4, 0.25),                   # 1  leads to the solution, but rated low
        (0, S1_SLIP, 8, 0.5),               # 2  rated higher, fails everywhere it was played
        (1, "Answer: 27", 1, 1.0, 1.0),     # 3  (a made-up verified answer)
        (2, "Answer: 26", 1, 0.0, 0.0),     # 4
    )
    rows, counts = mine_pairs([misled], LATE, FIRST)
    assert rows == [] and counts["value_disagrees"] == 1


def test_corrupted_pairs_break_each_step_of_the_verified_solution():
    rows, counts = mine_pairs([late_tree()], LATE, PairConfig(strategy="corrupted",
                                                              min_margin=0.0))
    assert [r["chosen_node"] for r in rows] == [1, 3, 5]
    assert all(r["rejected_node"] is None and r["rejected_visits"] == 0 for r in rows)
    for row in rows:
        chosen, rejected = row["chosen"].removesuffix("\n"), row["rejected"].removesuffix("\n")
        assert (chosen != rejected and rejected.rsplit("=", 1)[0] == chosen.rsplit("=", 1)[0]) \
            or rejected.startswith("Answer:")
        assert check_step(row["prompt"], chosen) and not check_step(row["prompt"], rejected)
        assert row["rejected_value"] == 0.0
        # an edited answer ends the text like the answer it copies; an edited step does not
        assert row["rejected_terminal"] is row["chosen_terminal"] is (row is rows[-1])
    again, _ = mine_pairs([late_tree()], LATE, PairConfig(strategy="corrupted", min_margin=0.0))
    assert again == rows  # seeded per tree
    assert counts["pairs"] == 3


def test_corrupted_needs_an_environment_that_can_break_a_step():
    class NoCorruption(ArithEnvironment):
        corrupt_step = None  # type: ignore[assignment]

    with pytest.raises(ValueError, match="corrupt_step"):
        mine_pairs([late_tree()], NoCorruption(check_steps=False),
                   PairConfig(strategy="corrupted"))


def test_arith_corrupt_step_is_a_checked_slip():
    state = MathState(ROOT, (S1,))
    rng = random.Random(0)
    edited = LATE.corrupt_step(state, "Step 2: 3+27=30", rng)
    assert edited is not None and edited.startswith("Step 2: 3+27=") and edited != "Step 2: 3+27=30"
    assert not check_step(state.text, edited)
    assert LATE.corrupt_step(state, "Step 2: 3+27=31", rng) is None  # already wrong
    answer = LATE.corrupt_step(MathState(ROOT, (S1, "Step 2: 3+27=30")), "Answer: 30", rng)
    assert answer is not None and answer.startswith("Answer: ") and answer != "Answer: 30"
