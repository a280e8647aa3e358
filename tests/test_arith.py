"""The arithmetic problem generator: determinism, knobs, reference solutions, text format."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from environments.math.arith import (
    ArithConfig,
    ArithProblem,
    check_step,
    generate,
    is_correct,
    iter_problems,
    parse_answer,
    render_prompt,
    render_solution,
    solve,
    split_of,
)

OPERAND = re.compile(r"\d+")


def test_same_seed_same_problems_other_seed_other_problems():
    cfg = ArithConfig(num_operands=(2, 5), paren_prob=0.3)
    assert generate(cfg, 50, seed=7) == generate(cfg, 50, seed=7)
    assert generate(cfg, 50, seed=7) != generate(cfg, 50, seed=8)
    # The config's seed is the default.
    assert generate(cfg.model_copy(update={"seed": 7}), 50) == generate(cfg, 50, seed=7)


def test_the_format_of_the_field_notes():
    p = ArithProblem("x", "3+9*3", 30, ("9*3=27", "3+27=30"), "train")
    assert render_prompt(p) == "Q: 3+9*3=?\n"
    assert render_solution(p) == "Step 1: 9*3=27\nStep 2: 3+27=30\nAnswer: 30\n"
    assert solve("3+9*3") == (("9*3=27", "3+27=30"), 30)


@pytest.mark.parametrize(
    ("question", "steps"),
    [
        ("2*3+4*5", ("2*3=6", "4*5=20", "6+20=26")),  # * first, left to right
        ("10-4-3", ("10-4=6", "6-3=3")),  # - is left-associative
        ("1-5*3+2", ("5*3=15", "1-15=-14", "-14+2=-12")),
        ("(2+3)*4", ("2+3=5", "5*4=20")),  # parentheses first
        ("3-(1-5)", ("1-5=-4", "3-(-4)=7")),  # a negative right operand is bracketed
        ("2*(3+4*(1+1))", ("1+1=2", "4*2=8", "3+8=11", "2*11=22")),  # nested
    ],
)
def test_evaluation_order(question, steps):
    assert solve(question) == (steps, eval(question))


@pytest.mark.parametrize("bad", ["", "3+", "(3+4", "3+4)", "3++4", "3/4", "a+1", "()"])
def test_solve_rejects_malformed_expressions(bad):
    with pytest.raises(ValueError):
        solve(bad)


@settings(max_examples=60, deadline=None)
@given(
    lo=st.integers(2, 5),
    extra=st.integers(0, 2),
    max_operand=st.integers(1, 30),
    operators=st.sampled_from(["+", "-", "*", "+-", "+*", "-*", "+-*"]),
    paren_prob=st.sampled_from([0.0, 0.5, 1.0]),
    allow_negative=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_problems_respect_the_knobs_and_are_solved_right(
    lo, extra, max_operand, operators, paren_prob, allow_negative, seed
):
    cfg = ArithConfig(num_operands=(lo, lo + extra), max_operand=max_operand, operators=operators,
                      paren_prob=paren_prob, allow_negative=allow_negative)
    for p in generate(cfg, 20, seed=seed, split=None, unique=False):
        operands = [int(x) for x in OPERAND.findall(p.question)]
        assert lo <= len(operands) <= lo + extra
        assert all(0 <= x <= max_operand for x in operands)
        assert set(re.sub(r"[\d()]", "", p.question)) <= set(operators)
        if paren_prob == 0.0 or len(operands) == 2:
            assert "(" not in p.question
        elif paren_prob == 1.0:
            assert "(" in p.question
        assert p.answer == eval(p.question)  # Python agrees on precedence and parentheses
        assert len(p.steps) == len(operands) - 1  # one binary operation per step
        assert all(check_step("", s) for s in p.steps)
        assert p.steps[-1].endswith(f"={p.answer}")
        assert (p.steps, p.answer) == solve(p.question)
        if not allow_negative:
            assert all(not s.split("=")[-1].startswith("-") for s in p.steps)
        assert p.split == split_of(p.question, cfg.held_out_fraction)


def test_random_step_order_varies_the_multiplications_only_and_stays_correct():
    config = ArithConfig(num_operands=(5, 7), max_operand=9, step_order="random")
    moved = 0
    for p in generate(config, 300, seed=1):
        reference, answer = solve(p.question)  # leftmost multiplication first
        assert p.answer == answer
        assert all(check_step("", s) for s in p.steps)
        assert is_correct(p, render_solution(p))
        assert len(p.steps) == len(reference)
        products = sum("*" in s for s in p.steps)
        assert all("*" in s for s in p.steps[:products])  # the products first, in some order,
        assert p.steps[products:] == reference[products:]  # then the rest left to right
        moved += p.steps != reference
    assert 60 < moved < 240  # a problem with two or more products is often, not always, moved


def test_parentheses_probability_is_roughly_respected():
    problems = generate(ArithConfig(num_operands=(4, 4), paren_prob=0.3), 1000, seed=0)
    share = sum("(" in p.question for p in problems) / len(problems)
    assert 0.25 < share < 0.35


def test_splits_are_disjoint_and_the_held_out_share_is_respected():
    cfg = ArithConfig()
    train = generate(cfg, 3000, seed=0, split="train")
    test = generate(cfg, 300, seed=0, split="test")
    assert {p.split for p in train} == {"train"} and {p.split for p in test} == {"test"}
    assert not {p.question for p in train} & {p.question for p in test}
    # Whatever the seed, the training stream never yields a held-out question.
    held_out = {p.question for p in test}
    stream = iter_problems(cfg, seed=123, split="train")
    assert not any(next(stream).question in held_out for _ in range(3000))
    mixed = generate(cfg, 2000, seed=1, split=None)
    assert 0.07 < sum(p.split == "test" for p in mixed) / len(mixed) < 0.13


def test_unique_problems_and_an_exhausted_space():
    problems = generate(ArithConfig(), 500, seed=3)
    assert len({p.question for p in problems}) == 500
    assert len({p.id for p in problems}) == 500
    tiny = ArithConfig(num_operands=(2, 2), max_operand=1, operators="+")  # 4 questions
    assert len(generate(tiny, 4, split=None)) == 4
    with pytest.raises(ValueError, match="distinct"):
        generate(tiny, 5, split=None)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_operands": (1, 3)},
        {"num_operands": (4, 3)},
        {"operators": ""},
        {"operators": "+/"},
        {"operators": "++"},
        {"paren_prob": 1.5},
        {"min_operand": 5, "max_operand": 2},
        {"held_out_fraction": 1.0},
        {"unknown": 1},
    ],
)
def test_invalid_configs_are_rejected(kwargs):
    with pytest.raises(ValidationError):
        ArithConfig(**kwargs)


def test_config_is_frozen():
    with pytest.raises(ValidationError):
        ArithConfig().max_operand = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Step 1: 9*3=27\nStep 2: 3+27=30\nAnswer: 30\n", 30),
        ("Answer: -12", -12),
        ("  Answer:  7  \nAnswer: 8\n", 7),  # the first answer line counts
        ("", None),
        ("Answer:", None),
        ("Answer: 3x", None),
        ("Answer: 3+4", None),
        ("Step 1: 9*3=27\nAns", None),
        ("\x00\xff garbage ((((", None),
        ("Answer: " + "9" * 5000, None),  # beyond int()'s digit limit: garbage, not a crash
        (None, None),
    ],
)
def test_parse_answer(text, expected):
    assert parse_answer(text) == expected


def test_is_correct():
    p = generate(ArithConfig(), 1, seed=0)[0]
    assert is_correct(p, render_solution(p))
    assert is_correct(p, render_prompt(p) + render_solution(p))
    assert not is_correct(p, render_solution(p).replace(f"Answer: {p.answer}",
                                                        f"Answer: {p.answer + 1}"))
    assert not is_correct(p, "no answer here")


@pytest.mark.parametrize(
    ("line", "ok"),
    [
        ("Step 1: 9*3=27", True),
        ("Step 1: 9*3=27\n", True),
        ("9*3=27", True),
        ("Step 2: -14+2=-12", True),
        ("Step 2: 3-(-4)=7", True),
        ("Step 2: 2*(-6)=-12", True),
        ("Step 1: 9*3=28", False),
        ("Step 1: 9*3", False),
        ("Step 1: 9*3=27\nStep 2: 3+27=30", False),  # one line at a time
        ("Step 1: 1+2+3=6", False),  # one operation per step
        ("hello", False),
        ("", False),
    ],
)
def test_check_step_arithmetic(line, ok):
    assert check_step("Q: 3+9*3=?\n", line) is ok


def test_check_step_answer_line_must_match_the_last_step():
    state = "Q: 3+9*3=?\nStep 1: 9*3=27\nStep 2: 3+27=30\n"
    assert check_step(state, "Answer: 30\n")
    assert not check_step(state, "Answer: 27\n")
    assert not check_step("Q: 3+9*3=?\n", "Answer: 30\n")  # no step yet
