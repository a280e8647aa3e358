"""Multi-step integer arithmetic: a seeded problem generator with difficulty knobs.

A problem is an expression such as ``3+9*3``. Its reference solution reduces the expression one
binary operation per step, in the order a person would: the innermost parentheses first, then
``*`` before ``+``/``-``, each from left to right. The text format (one step per line, so the step
delimiter is ``"\\n"``) is::

    Q: 3+9*3=?
    Step 1: 9*3=27
    Step 2: 3+27=30
    Answer: 30

The first line is the prompt (:func:`render_prompt`); the rest is the solution
(:func:`render_solution`). A negative right operand is written in parentheses (``3-(-4)=7``) so
that a step line never contains two adjacent operators.

Problems are split into *train* and *test* by a hash of the question text, so a held-out question
can never be drawn for training, whatever the seed or the number of problems drawn.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import ConfigDict, Field, model_validator

from mcts_agent.errors import ConfigError
from mcts_agent.settings import Settings

__all__ = [
    "SPLITS",
    "STEP_DELIMITER",
    "ArithConfig",
    "ArithProblem",
    "Split",
    "check_split",
    "check_step",
    "generate",
    "is_correct",
    "iter_problems",
    "parse_answer",
    "render_prompt",
    "render_solution",
    "solve",
    "split_of",
]

STEP_DELIMITER = "\n"
"""Each reasoning step (and the final answer) is one line."""

Split = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")
Token = int | str

MAX_REJECTED_DRAWS = 20_000
"""Draws in a row that may miss the asked split (or the sign rule) before the generator gives
up (about a second): with 0.1 % held out, a streak this long has probability e**-20."""

_OPS = "+-*"
_QUESTION_TOKEN = re.compile(r"\d+|[-+*()]")
_NUMBER = r"(-?\d+|\(-\d+\))"
_STEP_LINE = re.compile(rf"^(?:Step\s+\d+:)?\s*{_NUMBER}\s*([-+*])\s*{_NUMBER}\s*=\s*(-?\d+)\s*$")
_ANSWER_LINE = re.compile(r"^\s*Answer:\s*(-?\d+)\s*$")
_STEP_RESULT = re.compile(r"^Step\s+\d+:.*=\s*(-?\d+)\s*$")


class ArithConfig(Settings):
    """Difficulty knobs of the generator. Immutable; unknown fields are rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    num_operands: tuple[int, int] = (3, 3)
    """Inclusive range of the number of operands; one problem takes ``num_operands - 1`` steps."""
    min_operand: int = Field(0, ge=0)
    max_operand: int = Field(20, ge=0)
    """Operands are drawn uniformly from ``[min_operand, max_operand]``."""
    operators: str = "+-*"
    """The operators that may appear, any non-empty subset of ``+-*``."""
    paren_prob: float = Field(0.0, ge=0.0, le=1.0)
    """Probability that a problem with 3 or more operands gets one parenthesised sub-expression."""
    allow_negative: bool = True
    """If false, problems with a negative intermediate or final result are redrawn."""
    held_out_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    """Share of all possible questions that belong to the test split (by question hash)."""
    seed: int = 0
    """Default seed of :func:`generate` and :func:`iter_problems`."""
    step_order: Literal["first", "random"] = "first"
    """Which multiplication a reference solution works out next when there are several: the
    leftmost, or one drawn at random (solutions of one problem then differ from their first
    line on, as a model trained on them samples them). Additions and subtractions always go
    left to right. Any order of the multiplications is correct; only the reference differs."""

    @model_validator(mode="after")
    def _check(self) -> ArithConfig:
        lo, hi = self.num_operands
        if not 2 <= lo <= hi:
            raise ValueError(f"num_operands must satisfy 2 <= min <= max, got {self.num_operands}")
        if self.min_operand > self.max_operand:
            raise ValueError("min_operand must not exceed max_operand")
        if not self.operators or set(self.operators) - set(_OPS):
            raise ValueError(f"operators must be a non-empty subset of {_OPS!r}")
        if len(set(self.operators)) != len(self.operators):
            raise ValueError("operators must not repeat")
        return self


@dataclass(frozen=True)
class ArithProblem:
    """One problem with its reference solution.

    ``steps`` holds one binary operation per entry, without the ``Step i:`` prefix
    (e.g. ``("9*3=27", "3+27=30")``).
    """

    id: str
    question: str
    answer: int
    steps: tuple[str, ...]
    split: Split


# ---------------------------------------------------------------------------- solving


def _apply(a: int, op: str, b: int) -> int:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    return a * b


def _fmt_step(a: int, op: str, b: int, c: int) -> str:
    right = f"({b})" if b < 0 else str(b)
    return f"{a}{op}{right}={c}"


def _tokenize(question: str) -> list[Token]:
    compact = question.replace(" ", "")
    tokens = _QUESTION_TOKEN.findall(compact)
    if "".join(tokens) != compact:
        raise ValueError(f"not an arithmetic expression: {question!r}")
    return [int(t) if t.isdigit() else t for t in tokens]


def _reduce(tokens: Sequence[Token], rng: np.random.Generator | None = None
            ) -> tuple[list[tuple[int, str, int, int]], int]:
    """Reduce a token list one operation at a time; return the operations and the result.
    The leftmost multiplication goes first, or (``rng``) a random one."""
    toks = list(tokens)
    ops: list[tuple[int, str, int, int]] = []
    while len(toks) > 1:
        if ")" in toks:
            # The first ')' closes the innermost group: its '(' is the last one before it.
            close = toks.index(")")
            opens = [i for i in range(close) if toks[i] == "("]
            if not opens:
                raise ValueError("unbalanced parentheses")
            lo, hi = opens[-1] + 1, close
            if hi - lo == 1:  # the group is down to one number: drop its parentheses
                toks[lo - 1 : hi + 1] = [toks[lo]]
                continue
        elif "(" in toks:
            raise ValueError("unbalanced parentheses")
        else:
            lo, hi = 0, len(toks)
        seg = toks[lo:hi]
        if len(seg) % 2 == 0 or not all(isinstance(t, int) for t in seg[::2]):
            raise ValueError("malformed expression")
        if not all(isinstance(t, str) and t in _OPS for t in seg[1::2]):
            raise ValueError("malformed expression")
        mul = [i for i in range(1, len(seg), 2) if seg[i] == "*"]
        i = (mul[int(rng.integers(len(mul)))] if rng is not None else mul[0]) if mul else 1
        a, op, b = seg[i - 1], seg[i], seg[i + 1]
        assert isinstance(a, int) and isinstance(b, int) and isinstance(op, str)
        c = _apply(a, op, b)
        ops.append((a, op, b, c))
        toks[lo + i - 1 : lo + i + 2] = [c]
    if not toks or not isinstance(toks[0], int):
        raise ValueError("malformed expression")
    return ops, toks[0]


def solve(question: str) -> tuple[tuple[str, ...], int]:
    """Reference solution of an expression: the step strings (``"9*3=27"``) and the result.

    Raises ``ValueError`` if ``question`` is not a well-formed expression over non-negative
    integers, ``+ - *`` and parentheses.
    """
    ops, result = _reduce(_tokenize(question))
    return tuple(_fmt_step(*op) for op in ops), result


# ---------------------------------------------------------------------------- generation


def split_of(question: str, held_out_fraction: float = 0.1) -> Split:
    """The split a question belongs to, from a hash of its text (independent of any seed)."""
    digest = hashlib.sha256(question.encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    return "test" if u < held_out_fraction else "train"


def _problem_id(question: str) -> str:
    return "arith-" + hashlib.sha1(question.encode()).hexdigest()[:12]


def _sample_tokens(config: ArithConfig, rng: np.random.Generator) -> list[Token]:
    lo, hi = config.num_operands
    k = int(rng.integers(lo, hi + 1))
    nums = rng.integers(config.min_operand, config.max_operand + 1, size=k)
    ops = rng.integers(0, len(config.operators), size=k - 1)
    tokens: list[Token] = [int(nums[0])]
    for o, n in zip(ops, nums[1:], strict=True):
        tokens += [config.operators[int(o)], int(n)]
    if k >= 3 and rng.random() < config.paren_prob:
        # Wrap 2..k-1 consecutive operands (never the whole expression, which would be redundant).
        span = int(rng.integers(2, k))
        start = int(rng.integers(0, k - span + 1))
        end = start + span - 1
        tokens.insert(2 * end + 1, ")")
        tokens.insert(2 * start, "(")
    return tokens


def check_split(split: object) -> Split | None:
    """``split`` if it is one of :data:`SPLITS` or None (both), else a one-line
    :class:`~mcts_agent.errors.ConfigError`: an unknown split would match no problem, and the
    generator would draw forever."""
    if split is None or split in SPLITS:
        return split  # type: ignore[return-value]
    raise ConfigError(f"arith has no split {split!r}; use one of {', '.join(SPLITS)} "
                      "(--split on the command line, split= in Python)")


def iter_problems(
    config: ArithConfig, seed: int | None = None, split: Split | None = "train"
) -> Iterator[ArithProblem]:
    """An endless, seeded stream of problems from one split (``None``: both); may repeat.

    Raises :class:`~mcts_agent.errors.ConfigError` at once for an unknown split, and while
    drawing when :data:`MAX_REJECTED_DRAWS` draws in a row miss the split or the sign rule (the
    knobs leave that split empty, e.g. ``held_out_fraction=0`` and ``split="test"``)."""
    check_split(split)  # here, not in the generator: a bad split fails before the first draw
    if split == "test" and config.held_out_fraction == 0:
        raise _empty_split(config, split)
    return _stream(config, np.random.default_rng(config.seed if seed is None else seed), split)


def _stream(config: ArithConfig, rng: np.random.Generator,
            split: Split | None) -> Iterator[ArithProblem]:
    misses = 0
    while True:
        problem = _draw(config, rng, split)
        if problem is not None:
            misses = 0
            yield problem
            continue
        misses += 1
        if misses >= MAX_REJECTED_DRAWS:
            raise _empty_split(config, split)


def _draw(config: ArithConfig, rng: np.random.Generator,
          split: Split | None) -> ArithProblem | None:
    """One random problem, or None when it misses ``split`` or the sign rule."""
    tokens = _sample_tokens(config, rng)
    question = "".join(str(t) for t in tokens)
    part = split_of(question, config.held_out_fraction)
    if split is not None and part != split:
        return None
    ops, answer = _reduce(tokens, rng if config.step_order == "random" else None)
    if not config.allow_negative and any(c < 0 for *_, c in ops):
        return None
    steps = tuple(_fmt_step(*op) for op in ops)
    return ArithProblem(_problem_id(question), question, answer, steps, part)


def _empty_split(config: ArithConfig, split: Split | None) -> ConfigError:
    part = f"split {split!r}" if split else "either split"
    return ConfigError(
        f"arith: no problem of {part} could be drawn with held_out_fraction="
        f"{config.held_out_fraction}, allow_negative={config.allow_negative}, operators="
        f"{config.operators!r}, num_operands={config.num_operands}; widen these knobs (e.g. "
        "held_out_fraction > 0 for the test split)")


def generate(
    config: ArithConfig,
    n: int,
    seed: int | None = None,
    split: Split | None = "train",
    unique: bool = True,
) -> list[ArithProblem]:
    """Draw ``n`` problems; the same config, seed and split always give the same list.

    ``seed`` defaults to ``config.seed``. With ``unique`` (the default) no question repeats; a
    :class:`~mcts_agent.errors.ConfigError` (a ``ValueError``) says so when the configured
    problem space is too small for ``n``, or the split is unknown or empty.
    """
    if n < 0:
        raise ConfigError(f"arith: the number of problems must be >= 0, got {n}")
    out: list[ArithProblem] = []
    seen: set[str] = set()
    misses = 0
    for problem in iter_problems(config, seed, split):
        if len(out) == n:
            break
        if unique and problem.question in seen:
            misses += 1
            # Many duplicates in a row: the space is (almost) exhausted.
            if misses > 1000 + 20 * n:
                raise ConfigError(f"arith: found only {len(out)} distinct problems, {n} "
                                  "requested; widen the knobs (max_operand, num_operands)")
            continue
        misses = 0
        seen.add(problem.question)
        out.append(problem)
    return out


# ---------------------------------------------------------------------------- text format


def render_prompt(problem: ArithProblem) -> str:
    """The prompt the policy sees, e.g. ``"Q: 3+9*3=?\\n"``."""
    return f"Q: {problem.question}=?\n"


def render_solution(problem: ArithProblem) -> str:
    """The reference completion: one ``Step i: a op b=c`` line per step, then ``Answer: N``."""
    lines = [f"Step {i}: {s}\n" for i, s in enumerate(problem.steps, start=1)]
    return "".join(lines) + f"Answer: {problem.answer}\n"


def parse_answer(text: str) -> int | None:
    """The integer on the first ``Answer: N`` line of ``text``; ``None`` if there is none."""
    if not isinstance(text, str):
        return None
    for line in text.splitlines():
        m = _ANSWER_LINE.match(line)
        if m:
            try:
                return int(m.group(1))
            except ValueError:  # absurdly long digit strings exceed int() limits
                return None
    return None


def is_correct(problem: ArithProblem, completion_text: str) -> bool:
    """Whether the completion's ``Answer:`` line equals the reference answer."""
    return parse_answer(completion_text) == problem.answer


def _number(tok: str) -> int:
    return int(tok.strip("()"))


def check_step(state_text: str, step_line: str) -> bool:
    """Whether one new line of a solution is locally valid (a cheap process-reward signal).

    - A step line ``[Step k:] a op b=c`` is valid iff ``a op b`` really equals ``c``.
    - An ``Answer: N`` line is valid iff ``N`` equals the result of the last step in
      ``state_text`` (the prompt plus the steps so far).
    - Anything else, including several lines at once, is invalid.

    It checks arithmetic and consistency, not that the step follows the reference order.
    """
    line = step_line.removesuffix("\n")
    if "\n" in line:
        return False
    m = _STEP_LINE.match(line)
    if m:
        a, op, b, c = m.groups()
        try:
            return _apply(_number(a), op, _number(b)) == int(c)
        except ValueError:
            return False
    m = _ANSWER_LINE.match(line)
    if m:
        results = [r.group(1) for r in map(_STEP_RESULT.match, state_text.splitlines()) if r]
        if not results:
            return False
        try:
            return int(results[-1]) == int(m.group(1))
        except ValueError:
            return False
    return False
