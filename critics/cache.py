"""Assessments cached by state, shared by every critic that pays for its values.

A state is keyed by (task id, ``repr(state)``): text-reasoning states are immutable values whose
repr is their content, so the same prefix reached twice (a revisit, a resumed run, another
critic in a hybrid asking again) costs nothing the second time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from mcts_agent.contracts import Assessment, CriticInput

Key = tuple[str, str, bool]


class StateCache:
    """A bounded map (task, state, done) → assessment; the oldest entries go first."""

    def __init__(self, max_size: int = 100_000) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self.max_size = max_size
        self.entries: dict[Key, Assessment] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self.entries)

    @staticmethod
    def key(node: CriticInput) -> Key:
        return node.task.id, repr(node.state), node.done

    def get(self, node: CriticInput) -> Assessment | None:
        found = self.entries.get(self.key(node))
        self._count(found is not None)
        return found

    def put(self, node: CriticInput, assessment: Assessment) -> None:
        """Remember ``assessment`` as a hit will return it: nothing generated, nothing to
        graft (``tokens`` 0, no ``completions``), marked ``details["cached"]``."""
        self._store(self.key(node), assessment)

    def evaluate(
        self,
        nodes: Sequence[CriticInput],
        compute: Callable[[list[CriticInput]], list[Assessment]],
    ) -> list[Assessment]:
        """Cached assessments where known; ``compute`` is called ONCE on the distinct rest. A
        state that appears twice in one call pays once: its later copies are cache hits."""
        keys = [self.key(n) for n in nodes]  # repr(state) once per node
        out: list[Assessment | None] = []
        todo: dict[Key, list[int]] = {}
        for i, key in enumerate(keys):
            found = self.entries.get(key)
            self._count(found is not None)
            out.append(found)
            if found is None:
                todo.setdefault(key, []).append(i)
        if todo:
            firsts = [nodes[places[0]] for places in todo.values()]
            for (key, places), assessment in zip(todo.items(), compute(firsts), strict=True):
                cached = self._store(key, assessment)
                out[places[0]] = assessment
                for i in places[1:]:
                    out[i] = cached
        return out  # type: ignore[return-value]

    def _count(self, hit: bool) -> None:
        if hit:
            self.hits += 1
        else:
            self.misses += 1

    def _store(self, key: Key, assessment: Assessment) -> Assessment:
        self.entries[key] = cached = as_cached(assessment)
        while len(self.entries) > self.max_size:
            del self.entries[next(iter(self.entries))]
        return cached


def as_cached(assessment: Assessment) -> Assessment:
    """The assessment as a cache hit returns it: value, feedback and disagreement kept; it
    cost nothing now and has nothing new to graft."""
    return replace(assessment, tokens=0, completions=(),
                   details={**assessment.details, "cached": True})
