"""Assessments cached by state, shared by every critic that pays for its values.

A state is keyed by (task id, ``repr(state)``): text-reasoning states are immutable values whose
repr is their content, so the same prefix reached twice (a revisit, a resumed run, another
critic in a hybrid asking again) costs nothing the second time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def put(self, node: CriticInput, assessment: Assessment) -> None:
        """Remember ``assessment`` as a hit will return it: nothing generated, nothing to
        graft (``tokens`` 0, no ``completions``), marked ``cached``."""
        self.entries[self.key(node)] = as_cached(assessment)
        while len(self.entries) > self.max_size:
            del self.entries[next(iter(self.entries))]

    def evaluate(
        self,
        nodes: Sequence[CriticInput],
        compute: Callable[[list[CriticInput]], list[Assessment]],
    ) -> list[Assessment]:
        """Cached assessments where known; ``compute`` is called ONCE on the distinct rest. A
        state that appears twice in one call pays once: its later copies are cache hits."""
        out: list[Assessment | None] = [self.get(n) for n in nodes]
        todo: dict[Key, list[int]] = {}
        for i, found in enumerate(out):
            if found is None:
                todo.setdefault(self.key(nodes[i]), []).append(i)
        if todo:
            firsts = [nodes[places[0]] for places in todo.values()]
            for node, places, assessment in zip(firsts, todo.values(), compute(firsts),
                                                strict=True):
                self.put(node, assessment)
                out[places[0]] = assessment
                for i in places[1:]:
                    out[i] = self.entries[self.key(node)]
        return out  # type: ignore[return-value]


def as_cached(assessment: Assessment) -> Assessment:
    details = dict(assessment.details)
    details.update(tokens=0, cached=True)
    if "completions" in details:
        details["completions"] = []
    return Assessment(assessment.value, assessment.feedback, details)
