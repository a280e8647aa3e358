"""Any `reasoning-gym` generator as a search environment, scored by the dataset's own scorer.

reasoning-gym 0.1.25 builds item ``i`` of a dataset from ``random.Random(seed + i)``, so two
datasets whose seeds differ by less than their size share items (seed 1's item 0 is seed 0's
item 1), and small generators repeat questions under any seed. Train and test are therefore
not told apart by seed: one stream of items is drawn per seed and each *question text* belongs
to exactly one split by a hash of it, so a held-out question can never be drawn for training,
whatever seeds either side uses. For the same reason a seed is spread by a hash before it
reaches the generator, so seeds 0 and 1 give unrelated streams rather than shifted copies.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import math
import os
from collections.abc import Iterator, Mapping
from typing import Any

from environments.math.stepwise import MathState, StepwiseMath
from mcts_agent.contracts import Task
from mcts_agent.errors import ConfigError

SPLITS = ("train", "test")

# Scorers whose module runs Python on strings (eval / exec / sympy's parse_expr, which evals):
# the model's answer — or a crafted reference in a replayed trees.jsonl — would run in this
# process. They score in the sandbox instead (tests/test_sandbox_hostile.py re-scans
# reasoning_gym's source so a new such scorer cannot slip past this list).
EXECUTING_SCORERS = frozenset({
    "binary_matrix", "bitwise_arithmetic", "codeio", "composite", "countdown", "dice",
    "intermediate_integration", "n_queens", "number_sorting", "polynomial_multiplication",
    "propositional_logic", "puzzle24", "simple_integration", "spiral_matrix",
    "string_insertion"})

_SANDBOXED_SCORER = """
import json, sys
request = json.loads(sys.stdin.read())
import reasoning_gym
scorer = reasoning_gym.create_dataset(request["dataset"], size=1, seed=0, **request["kwargs"])
__result__ = float(scorer.score_answer(request["answer"], request["entry"]))
"""


@functools.lru_cache(maxsize=1)
def _scoring_sandbox() -> Any:
    """A sandbox sized for importing reasoning-gym (sympy, numpy) once per answer."""
    from mcts_agent.sandbox import Limits, Sandbox

    return Sandbox(Limits(cpu_seconds=30, wall_seconds=60, memory_mb=4096),
                   require_isolation=os.environ.get("MCTS_AGENT_SANDBOX_REQUIRE_ISOLATION") == "1")


@functools.lru_cache(maxsize=4096)
def sandboxed_score(dataset: str, kwargs_json: str, answer: str, entry_json: str) -> float:
    """``score_answer`` of ``dataset`` run in the sandbox; 0.0 when it gives no number."""
    request = json.dumps({"dataset": dataset, "kwargs": json.loads(kwargs_json),
                          "answer": answer, "entry": json.loads(entry_json)})
    run = _scoring_sandbox().run_python([_SANDBOXED_SCORER], [request], site_packages=True)[0]
    result = (run.verdict or {}).get("result")
    return float(result) if isinstance(result, (int, float)) else 0.0


def split_of(question: str) -> str:
    """``"test"`` for about half of all question texts, ``"train"`` for the rest (by hash)."""
    return "test" if hashlib.sha256(question.encode()).digest()[0] < 128 else "train"


def stream_seed(seed: int) -> int:
    """The generator seed behind ``seed``: far from every other seed's, so item streams of
    nearby seeds do not overlap (reasoning-gym seeds item ``i`` with ``seed + i``)."""
    return int.from_bytes(hashlib.sha256(f"mcts-agent/{seed}".encode()).digest()[:6], "big")


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON data (tuples become lists, unknown objects their ``str``)."""
    return json.loads(json.dumps(value, default=str))


def _create(name: str, **kwargs: Any) -> Any:
    """``reasoning_gym.create_dataset`` with errors that name the dataset and what to fix."""
    import reasoning_gym
    from reasoning_gym.factory import DATASETS

    if name not in DATASETS:
        close = difflib.get_close_matches(name, DATASETS, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ConfigError(f"unknown reasoning-gym dataset {name!r}.{hint} "
                         f"{len(DATASETS)} exist: see reasoning_gym.factory.DATASETS")
    try:
        return reasoning_gym.create_dataset(name, **kwargs)
    except Exception as err:  # config dataclasses raise TypeError / AssertionError / ValueError
        settings = {k: v for k, v in kwargs.items() if k != "seed"}
        raise ConfigError(f"reasoning-gym could not build {name!r} with {settings}: {err}; "
                         "check the dataset's config class for valid settings") from err


class ReasoningGymEnvironment(StepwiseMath):
    """A reasoning-gym dataset (chain_sum, basic_arithmetic, gsm_symbolic, countdown …),
    reasoned line by line and ended by an ``Answer: …`` line.

    Args:
        dataset: reasoning-gym dataset name.
        size: how many items of the generator's stream :meth:`tasks` may scan per call (items
            are generated lazily; only a tiny generator runs out).
        seed: the default stream seed of :meth:`tasks`.
        prompt_template: renders ``{problem}`` (the dataset's question).
        partial_credit: keep the scorer's value in [0, 1] as the score. Off by default: the
            base scorer gives ``len(answer) / len(guess)`` to any guess *containing* the answer
            ("15" scores 0.5 against "5"), so the score is 1.0 for an exact answer, else 0.0.
        **dataset_kwargs: the dataset's own settings (``min_terms=``, ``max_value=`` …).

    Answers must fit on the ``Answer:`` line, so datasets whose answers span several lines
    (grids, boards) cannot be solved in this format.
    """

    name = "gym"
    splits = SPLITS

    def __init__(
        self,
        dataset: str = "chain_sum",
        size: int = 10_000,
        seed: int = 0,
        prompt_template: str = "Q: {problem}\n",
        partial_credit: bool = False,
        **dataset_kwargs: Any,
    ) -> None:
        super().__init__(prompt_template)
        if size < 1:
            raise ConfigError(f"gym: size must be at least 1, got {size}")
        self.name = f"gym:{dataset}"
        self.dataset, self.size, self.seed = dataset, size, seed
        self.partial_credit = partial_credit
        self.dataset_kwargs = dataset_kwargs
        self._streams: dict[int, Any] = {}
        self._scorer = self._stream(seed)  # bad names or settings fail here, not mid-search

    def _stream(self, seed: int) -> Any:
        """The generator for ``seed`` (built once; items are made on demand)."""
        if seed not in self._streams:
            self._streams[seed] = _create(self.dataset, size=self.size, seed=stream_seed(seed),
                                          **self.dataset_kwargs)
        return self._streams[seed]

    def tasks(self, n: int, split: str = "test", seed: int | None = None) -> list[Task]:
        """The first ``n`` distinct questions of ``split`` in the stream of ``seed`` (default
        the environment's seed): the same tasks for the same arguments, and never a question
        of the other split."""
        if split not in SPLITS:  # a question belongs to train or test by its hash, no other
            raise ConfigError(f"{self.name} has no split {split!r}; use 'train' or 'test' "
                              "(--split on the command line, split= in Python)")
        seed = self.seed if seed is None else seed
        picked = list(self._scan(n, split, seed))
        if len(picked) < n:
            raise ConfigError(
                f"only {len(picked)} distinct {split} questions of {self.dataset!r} in the first "
                f"{self.size} items of seed {seed}, {n} asked: raise size= or widen the "
                "generator's settings")
        return [self._task(entry, index, split, seed) for index, entry in picked]

    def _scan(self, n: int, split: str, seed: int) -> Iterator[tuple[int, dict[str, Any]]]:
        """(index, entry) of up to ``n`` distinct questions of ``split``, in stream order."""
        stream, seen = self._stream(seed), set()
        for index in range(self.size):
            if len(seen) == n:
                return
            entry = stream[index]
            question = entry["question"]
            if question not in seen and split_of(question) == split:
                seen.add(question)
                yield index, entry

    def _task(self, entry: Mapping[str, Any], index: int, split: str, seed: int) -> Task:
        # the entry is the scorer's reference, JSON-safe so results files can hold it; the
        # metadata lets :meth:`score` regenerate the exact original item
        return Task(f"{self.dataset}-{split}-s{seed}-{index}", entry["question"],
                    json_safe(entry),
                    {"dataset": self.dataset, "split": split, "seed": seed, "index": index})

    def entry(self, task: Task) -> Mapping[str, Any] | None:
        """The dataset item behind ``task``: regenerated when the task came from this
        generator (some scorers, e.g. arc_agi's, need the tuples that JSON turns into lists),
        else ``task.reference``."""
        meta = task.metadata
        if meta.get("dataset") == self.dataset and isinstance(meta.get("index"), int) \
                and isinstance(meta.get("seed"), int):
            item = self._stream(meta["seed"])[meta["index"]]
            if item["question"] == task.problem:  # same generator settings
                return item
        return task.reference

    def score(self, state: MathState, task: Task) -> float | None:
        """The dataset's ``score_answer`` on the ``Answer:`` line (see ``partial_credit``);
        0.0 without an answer or when the scorer fails on it, None without a reference."""
        entry = self.entry(task)
        if entry is None:
            return None
        answer = self.answer(state)
        if answer is None:
            return 0.0
        try:
            raw = float(self._score_answer(answer, entry))
        except Exception:  # a scorer that chokes on a garbled answer: not correct
            return 0.0
        if math.isnan(raw):
            return 0.0
        if not self.partial_credit:
            return 1.0 if raw >= 1.0 else 0.0
        return min(max(raw, 0.0), 1.0)

    def _score_answer(self, answer: str, entry: Mapping[str, Any]) -> float:
        """The dataset's scorer: in the sandbox when it executes strings (see
        ``EXECUTING_SCORERS``), else here."""
        if self.dataset not in EXECUTING_SCORERS:
            return self._scorer.score_answer(answer, entry)
        return sandboxed_score(self.dataset, json.dumps(json_safe(self.dataset_kwargs),
                                                        sort_keys=True),
                               answer, json.dumps(json_safe(entry), sort_keys=True))
