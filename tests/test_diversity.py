"""Novelty of a step among its siblings (the input of the engine's diversity term)."""

from __future__ import annotations

import pytest

from mcts_agent.search.diversity import features, novelty, sibling_novelty, similarity


def test_no_siblings_is_fully_novel():
    assert novelty("Step 1: 3*4=12", []) == 1.0
    assert sibling_novelty(["only child"]) == [1.0]
    assert sibling_novelty([]) == []


def test_the_same_step_up_to_case_and_spacing_is_not_novel():
    assert novelty("Step 1: 3*4=12", ["step 1 :  3 * 4 = 12"]) == 0.0
    assert novelty("", [""]) == 0.0


def test_nothing_shared_is_fully_novel():
    assert novelty("add the tens first", ["multiply 7 by 9"]) == 1.0
    assert novelty("", ["something"]) == 1.0


def test_arithmetic_splits_into_numbers_and_operators():
    # 3 * 4 = 12 vs 3 * 4 = 13: 4 of 5 unigrams and 3 of 4 bigrams shared -> 7 of 11
    assert features("3*4=12") == {"3", "*", "4", "=", "12",
                                  ("3", "*"), ("*", "4"), ("4", "="), ("=", "12")}
    assert novelty("3*4=12", ["3*4=13"]) == pytest.approx(1 - 7 / 11)


def test_word_order_counts_through_bigrams():
    # same unigrams {a, -, b}; bigrams (a,-),(-,b) vs (b,-),(-,a): 3 shared of 7
    assert novelty("a-b", ["b-a"]) == pytest.approx(4 / 7)


def test_the_closest_sibling_decides():
    step = "Step 2: 12+2=14"
    near, far = "Step 2: 12+2=15", "Answer: 14"
    assert novelty(step, [far, near]) == novelty(step, [near]) < novelty(step, [far])
    assert 0.0 < novelty(step, [near]) < 1.0


def test_similarity_is_symmetric_and_bounded():
    a, b = features("compute 5*2 first"), features("first compute 5*2 again")
    assert similarity(a, b) == similarity(b, a)
    assert 0.0 < similarity(a, b) < 1.0
    assert similarity(a, a) == 1.0


def test_sibling_novelty_matches_novelty_among_the_others():
    steps = ["Step 1: 3*4=12", "Step 1: 3*4=13", "Step 1: 2+3=5", "Answer: 14",
             "Step 1: 3*4=12 "]
    expected = [novelty(s, steps[:i] + steps[i + 1:]) for i, s in enumerate(steps)]
    assert sibling_novelty(steps) == pytest.approx(expected)
    assert sibling_novelty(steps)[0] == 0.0  # its duplicate (trailing space) is a sibling
    assert all(0.0 <= v <= 1.0 for v in sibling_novelty(steps))
