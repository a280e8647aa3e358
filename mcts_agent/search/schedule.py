"""How rounds of tree work are scheduled: all together in waves, or each on its own.

A *round* is a generator. It does its tree work (selection, expansion, backup) in the thread that
drives it, and yields a :class:`Call` whenever it needs outside work (the policy, the environment,
the critic), receiving that call's results. The round logic is written once; two schedulers run it:

* :func:`lockstep` (the wave driver) advances every tree's round together and merges the calls of
  one kind into ONE batched call, so a batch-per-call backend sees every leaf of every tree;
* :class:`Overlap` (the asynchronous driver) sends each round's call on its own, from a thread of
  its own, and resumes that round the moment its results are back while the others still wait:
  a tree never waits for another tree's slowest leaf, and a backend that batches continuously
  across callers (vLLM, an OpenAI-compatible server) keeps everything in flight in one batch.

A round's results depend only on its own calls, so both schedulers build the same trees.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from typing import Any, Literal

CallKind = Literal["propose", "steps", "assess", "score"]


@dataclass(frozen=True)
class Call:
    """Outside work a round waits for: one batched call of ``kind`` on ``items``, whose results
    (one per item, in order) are sent back into the round."""

    kind: CallKind
    items: list


Round = Generator[Call, list, None]
Work = Callable[[CallKind, list], list]
"""Runs one call: ``work(kind, items)`` returns one result per item, in order."""


def advance(round: Round, results: list | None) -> Call | None:
    """Send ``results`` into ``round`` and run it to its next call with items (calls with none
    are answered at once); None when the round has ended."""
    try:
        call = round.send(results)
        while not call.items:
            call = round.send([])
        return call
    except StopIteration:
        return None


def lockstep(rounds: Iterable[Round], work: Work) -> None:
    """Run ``rounds`` to their ends together: at each step, the pending calls of one kind are
    merged into one ``work`` call and its results handed back to the rounds that asked."""
    waiting = [(r, call) for r in rounds if (call := advance(r, None)) is not None]
    while waiting:
        results: list[list] = [[] for _ in waiting]
        for kind in dict.fromkeys(call.kind for _, call in waiting):
            askers = [i for i, (_, call) in enumerate(waiting) if call.kind == kind]
            out = iter(work(kind, [item for i in askers for item in waiting[i][1].items]))
            for i in askers:
                results[i] = list(itertools.islice(out, len(waiting[i][1].items)))
        waiting = [(r, call) for (r, _), res in zip(waiting, results, strict=True)
                   if (call := advance(r, res)) is not None]


class Overlap:
    """Many rounds in flight, each call on a thread of its own."""

    def __init__(self, work: Work) -> None:
        self._work = work
        self._returned: queue.Queue[tuple[Any, Round, list | None, BaseException | None]] = (
            queue.Queue())
        self.in_flight = 0

    def start(self, key: Any, round: Round) -> bool:
        """Run ``round`` to its first call and send it; False if it ended without one."""
        return self._send(key, round, None)

    def next_ended(self) -> Any:
        """Wait for calls to return, resuming their rounds, until a round ends; return its key.

        An error raised by a call is raised here (that round is closed)."""
        while True:
            key, round, results, error = self._returned.get()
            self.in_flight -= 1
            if error is not None:
                round.close()
                raise error
            if not self._send(key, round, results):
                return key

    def drain(self) -> None:
        """Wait for every call still out and drop its results (a run that stops early lets its
        calls finish rather than leave threads inside a model as the interpreter exits)."""
        while self.in_flight:
            _, round, _, _ = self._returned.get()
            self.in_flight -= 1
            round.close()

    def _send(self, key: Any, round: Round, results: list | None) -> bool:
        call = advance(round, results)
        if call is None:
            return False
        self.in_flight += 1
        threading.Thread(target=self._call, args=(key, round, call), daemon=True,
                         name=f"mcts-{call.kind}").start()
        return True

    def _call(self, key: Any, round: Round, call: Call) -> None:
        try:
            results: Any = self._work(call.kind, call.items)
            self._returned.put((key, round, results, None))
        except BaseException as err:  # raised in the driving thread
            self._returned.put((key, round, None, err))
