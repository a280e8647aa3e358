"""The two schedulers of rounds: lockstep merges calls, Overlap sends each on its own.

A round here asks for the squares of its numbers, then the negations of the squares; the
reference is what the round would compute by itself.
"""

from __future__ import annotations

import threading
import time

import pytest

from mcts_agent.search.schedule import Call, Overlap, lockstep


def round_of(numbers: list[int], out: dict[int, list[int]], key: int):
    squares = yield Call("propose", numbers)
    nothing = yield Call("steps", [])  # a call with no items is answered at once
    assert nothing == []
    out[key] = (yield Call("assess", squares))


class Worker:
    def __init__(self, delay=None):
        self.calls: list[tuple[str, list]] = []
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, kind, items):
        with self.lock:
            self.calls.append((kind, list(items)))
        if self.delay:
            time.sleep(self.delay(items))
        return [x * x for x in items] if kind == "propose" else [-x for x in items]


def test_lockstep_merges_each_kind_into_one_call_and_routes_results_back():
    out: dict[int, list[int]] = {}
    worker = Worker()
    lockstep([round_of([1, 2], out, 0), round_of([3], out, 1), round_of([], out, 2)], worker)
    assert out == {0: [-1, -4], 1: [-9], 2: []}
    assert worker.calls == [("propose", [1, 2, 3]), ("assess", [1, 4, 9])]


def test_overlap_sends_each_call_alone_and_resumes_rounds_as_they_return():
    out: dict[int, list[int]] = {}
    worker = Worker(delay=lambda items: 0.05 if 10 in items or 100 in items else 0.0)
    overlap = Overlap(worker)
    for key, numbers in enumerate([[10], [1], [2]]):
        assert overlap.start(key, round_of(numbers, out, key))
    ended = [overlap.next_ended() for _ in range(3)]
    assert ended[-1] == 0  # the slow round ends last; the fast ones did not wait for it
    assert out == {0: [-100], 1: [-1], 2: [-4]}
    assert len(worker.calls) == 6 and overlap.in_flight == 0


def test_overlap_raises_a_call_error_in_the_driving_thread():
    def broken(kind, items):
        raise RuntimeError("server went away")

    overlap = Overlap(broken)
    overlap.start(0, round_of([1], {}, 0))
    with pytest.raises(RuntimeError, match="went away"):
        overlap.next_ended()
