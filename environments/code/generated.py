"""`code-gen`: our own small function-writing tasks, in a compact format a char-level model learns.

A task is a terse description, one visible example and a signature; the solution is one short
line per operation, ending in a ``return`` at the body's level (which ends the episode)::

    # add 3, mul 2                       # if x > 4 add 3 else neg
    # f(2) == 10                         # f(7) == 10
    def f(x):                            def f(x):
        x = x + 3                            if x > 4:
        x = x * 2                                return x + 3
        return x                             return -x

    # each add 2, keep odd, sum
    # f([1, 4]) == 3
    def f(xs):
        xs = [v + 2 for v in xs]
        xs = [v for v in xs if v % 2 == 1]
        return sum(xs)

Difficulty knobs (:class:`CodeGenConfig`): operations per task, operand range, which operations,
the share of conditional and of list tasks, visible and hidden test counts. A task is a pure
function of its description (its examples and hidden tests are drawn from a hash of it), so ids
are stable; the train/test split is a hash of the description too (``held_out_fraction``), and
the same seed gives the same tasks. Expected outputs are computed here from the operations'
meaning; model programs run only in the sandbox.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from environments.code.base import CodeEnvironment, Runner
from environments.math.arith import SPLITS, split_of
from mcts_agent.contracts import Task
from mcts_agent.episodes import play_text
from mcts_agent.errors import ConfigError

# name → (takes an operand, expression template on {v} and {k}, meaning)
OPS: dict[str, tuple[bool, str, Callable[[int, int], int]]] = {
    "add": (True, "{v} + {k}", lambda v, k: v + k),
    "sub": (True, "{v} - {k}", lambda v, k: v - k),
    "mul": (True, "{v} * {k}", lambda v, k: v * k),
    "mod": (True, "{v} % {k}", lambda v, k: v % k),
    "div": (True, "{v} // {k}", lambda v, k: v // k),
    "neg": (False, "-{v}", lambda v, k: -v),
    "square": (False, "{v} * {v}", lambda v, k: v * v),
    "abs": (False, "abs({v})", lambda v, k: abs(v)),
}
# condition name → (description, code on {v} and {k}, meaning)
CONDITIONS: dict[str, tuple[str, str, Callable[[int, int], bool]]] = {
    "gt": ("> {k}", "{v} > {k}", lambda v, k: v > k),
    "lt": ("< {k}", "{v} < {k}", lambda v, k: v < k),
    "even": ("even", "{v} % 2 == 0", lambda v, k: v % 2 == 0),
    "odd": ("odd", "{v} % 2 == 1", lambda v, k: v % 2 == 1),
}
REDUCERS = {"sum": ("sum", sum), "count": ("len", len), "list": (None, list)}


@dataclass(frozen=True)
class CodeGenConfig:
    """Difficulty knobs of the generator."""

    min_ops: int = 1
    max_ops: int = 3
    max_operand: int = 9
    ops: tuple[str, ...] = ("add", "sub", "mul", "mod", "div", "neg", "square", "abs")
    cond_prob: float = 0.3
    list_prob: float = 0.3
    visible: int = 1
    hidden: int = 6
    held_out_fraction: float = 0.1

    def __post_init__(self) -> None:
        unknown = set(self.ops) - set(OPS)
        if unknown or not self.ops:
            raise ConfigError(f"code-gen: unknown ops {sorted(unknown)}; use some of "
                              f"{', '.join(OPS)}")
        if not 0 <= self.min_ops <= self.max_ops or self.max_ops < 1:
            raise ConfigError("code-gen: need 0 <= min_ops <= max_ops and max_ops >= 1")
        if self.max_operand < 2 or self.hidden < 1 or self.visible < 0:
            raise ConfigError("code-gen: need max_operand >= 2, hidden >= 1, visible >= 0")


@dataclass(frozen=True)
class Op:
    name: str
    k: int = 0

    def text(self) -> str:
        return f"{self.name} {self.k}" if OPS[self.name][0] else self.name

    def code(self, var: str) -> str:
        return OPS[self.name][1].format(v=var, k=self.k)

    def __call__(self, v: int) -> int:
        return OPS[self.name][2](v, self.k)


@dataclass(frozen=True)
class Cond:
    name: str
    k: int = 0

    def text(self) -> str:
        return CONDITIONS[self.name][0].format(k=self.k)

    def code(self, var: str) -> str:
        return CONDITIONS[self.name][1].format(v=var, k=self.k)

    def __call__(self, v: int) -> bool:
        return CONDITIONS[self.name][2](v, self.k)


@dataclass(frozen=True)
class Spec:
    """One function: scalar ``ops`` then an optional branch (``cond``, ``then``, ``other``),
    or over a list: ``ops`` mapped over it, an optional ``keep`` filter and a ``reducer``."""

    ops: tuple[Op, ...]
    is_list: bool = False
    cond: Cond | None = None
    then: Op | None = None
    other: Op | None = None
    keep: Cond | None = None
    reducer: str = "list"
    lines: tuple[str, ...] = field(default=(), compare=False)

    def description(self) -> str:
        parts = [op.text() for op in self.ops]
        if self.is_list:
            parts = [f"each {p}" for p in parts]
            parts += [f"keep {self.keep.text()}"] if self.keep else []
            parts += [self.reducer] if self.reducer != "list" else []
        elif self.cond is not None:
            parts.append(f"if x {self.cond.text()} {self.then.text()} else {self.other.text()}")
        return ", ".join(parts)

    def body(self) -> list[str]:
        """The reference solution, one line per operation (indented one level)."""
        if self.is_list:
            lines = [f"xs = [{op.code('v')} for v in xs]" for op in self.ops]
            lines += [f"xs = [v for v in xs if {self.keep.code('v')}]"] if self.keep else []
            fn = REDUCERS[self.reducer][0]
            lines.append(f"return {fn}(xs)" if fn else "return xs")
            return ["    " + line for line in lines]
        lines = ["    " + f"x = {op.code('x')}" for op in self.ops]
        if self.cond is None:
            return [*lines, "    return x"]
        return [*lines, f"    if {self.cond.code('x')}:", f"        return {self.then.code('x')}",
                f"    return {self.other.code('x')}"]

    def __call__(self, arg: Any) -> Any:
        if self.is_list:
            values = [v for v in (self._chain(v) for v in arg) if not self.keep or self.keep(v)]
            return REDUCERS[self.reducer][1](values)
        x = self._chain(arg)
        if self.cond is None:
            return x
        return self.then(x) if self.cond(x) else self.other(x)

    def _chain(self, v: int) -> int:
        for op in self.ops:
            v = op(v)
        return v


def _op(rng: random.Random, config: CodeGenConfig) -> Op:
    name = rng.choice(config.ops)
    low = 2 if name in ("mod", "div", "mul") else 1  # no x % 1, x // 1 or x * 1
    return Op(name, rng.randint(low, config.max_operand) if OPS[name][0] else 0)


def _cond(rng: random.Random, config: CodeGenConfig) -> Cond:
    return Cond(rng.choice(list(CONDITIONS)), rng.randint(0, config.max_operand))


def draw_spec(rng: random.Random, config: CodeGenConfig) -> Spec:
    """One random function under ``config``."""
    if rng.random() < config.list_prob:
        ops = tuple(_op(rng, config) for _ in range(rng.randint(max(1, config.min_ops) - 1,
                                                                 config.max_ops - 1)))
        keep = _cond(rng, config) if rng.random() < 0.6 or not ops else None
        return Spec(ops, True, keep=keep, reducer=rng.choice(list(REDUCERS)))
    if rng.random() < config.cond_prob:
        ops = tuple(_op(rng, config) for _ in range(rng.randint(0, config.max_ops - 1)))
        return Spec(ops, cond=_cond(rng, config), then=_op(rng, config), other=_op(rng, config))
    count = rng.randint(max(1, config.min_ops), config.max_ops)
    return Spec(tuple(_op(rng, config) for _ in range(count)))


def _inputs(spec: Spec, rng: random.Random, n: int) -> list[Any]:
    if spec.is_list:
        return [[rng.randint(-5, 12) for _ in range(rng.randint(1, 4))] for _ in range(n)]
    return rng.sample(range(-10, 21), n)


def make_task(spec: Spec, config: CodeGenConfig) -> Task:
    """The task of ``spec``: prompt, hidden tests (reference) and visible examples."""
    description = spec.description()
    rng = random.Random(int(hashlib.sha256(description.encode()).hexdigest()[:16], 16))
    inputs = _inputs(spec, rng, config.visible + config.hidden)
    asserts = [f"assert f({arg!r}) == {spec(arg)!r}" for arg in inputs]
    examples = [f"# f({arg!r}) == {spec(arg)!r}\n" for arg in inputs[: config.visible]]
    signature = "def f(xs):\n" if spec.is_list else "def f(x):\n"
    prompt = f"# {description}\n" + "".join(examples) + signature
    ident = "codegen-" + hashlib.sha1(prompt.encode()).hexdigest()[:12]
    return Task(ident, prompt, {"setup": "", "tests": asserts[config.visible:]},
                {"entry_point": "f", "visible_tests": asserts[: config.visible],
                 "solution": spec.body(), "description": description,
                 "split": split_of(description, config.held_out_fraction)})


def iter_tasks(config: CodeGenConfig, seed: int | None = None,
               split: str | None = "train") -> Iterator[Task]:
    """An endless, seeded stream of tasks of ``split`` (None: both); may repeat."""
    rng = random.Random(seed)
    misses = 0
    while True:
        spec = draw_spec(rng, config)
        if split is not None and split_of(spec.description(), config.held_out_fraction) != split:
            misses += 1
            if misses > 20_000:
                raise ConfigError(f"code-gen: no task of split {split!r} in 20000 draws; "
                                  "check held_out_fraction")
            continue
        misses = 0
        yield make_task(spec, config)


class CodeGenEnvironment(CodeEnvironment):
    """Generated function-writing tasks (see the module docstring); knobs as in
    :class:`CodeGenConfig` (``--env-arg max_ops=4``). Also serves the tiny code model's
    training: :meth:`task_stream`, :meth:`solution`, :meth:`is_correct`, :attr:`settings`."""

    name = "code-gen"
    splits = SPLITS

    def __init__(self, config: CodeGenConfig | None = None, max_lines: int = 12,
                 runner: Runner | None = None, sandbox: Any = None, steps: str = "line",
                 **knobs: Any) -> None:
        super().__init__(max_lines=max_lines, runner=runner, sandbox=sandbox, steps=steps)
        if "ops" in knobs:
            knobs["ops"] = tuple(knobs["ops"])
        unknown = set(knobs) - set(CodeGenConfig.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"code-gen has no knob {', '.join(sorted(unknown))}; use "
                              f"{', '.join(CodeGenConfig.__dataclass_fields__)}")
        self.config = config or CodeGenConfig(**knobs)

    def tasks(self, n: int, split: str = "test", seed: int | None = None) -> list[Task]:
        """``n`` distinct tasks of ``split`` (held out: ``"test"``), the same for one seed."""
        if split not in SPLITS:
            raise ConfigError(f"code-gen has no split {split!r}; use 'train' or 'test'")
        out: dict[str, Task] = {}
        stream = iter_tasks(self.config, seed=seed, split=split)
        for _ in range(50 * n + 1000):  # a narrow config has few distinct tasks
            if len(out) >= n:
                break
            task = next(stream)
            out.setdefault(task.id, task)
        return list(out.values())

    def task_stream(self, split: str | None = "train", seed: int | None = None
                    ) -> Iterator[Task]:
        """An endless stream of tasks of ``split`` (training data)."""
        return iter_tasks(self.config, seed=seed, split=split)

    @property
    def settings(self) -> dict[str, Any]:
        return asdict(self.config)

    def solution(self, task: Task) -> str:
        """The reference completion after the prompt, each line ending in a newline."""
        return "".join(line + "\n" for line in task.metadata["solution"])

    def is_correct(self, task: Task, completion: str) -> bool:
        """Whether the program prompt + ``completion`` passes every hidden test (sandbox)."""
        return bool(self.grade_completions([(task, completion)])[0])

    def grade_completions(self, pairs: list[tuple[Task, str]]) -> list[float]:
        """Hidden-test scores of whole completions, replayed line by line as the search
        would write them (so a line past the end is ignored), in one sandbox call."""
        programs = [self.answer(self.write(task, completion)) for task, completion in pairs]
        runnable = [(p, t) for p, (t, _) in zip(programs, pairs, strict=True) if p is not None]
        reports = iter(self.grade(runnable) if runnable else [])
        return [float(next(reports).score) if p is not None else 0.0 for p in programs]

    def write(self, task: Task, completion: str) -> Any:
        """The state after writing ``completion`` line by line from ``reset(task)``."""
        return play_text(self, self.reset(task), completion)[0]
