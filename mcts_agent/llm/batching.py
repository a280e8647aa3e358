"""Group commit for backends that batch per call: calls from several threads share batches.

The asynchronous search driver calls ``propose`` from many threads, a few requests at a time. A
backend that batches continuously (vLLM, a server) merges them itself; one that runs one batch
per call (transformers) would run many small batches one after another. :class:`Coalescer` puts
them back together: while a batch runs, later calls queue, and the next batch takes every call
queued by then.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .base import Candidate, GenerationRequest, check_requests

Batch = Callable[[list[GenerationRequest]], list[list[Candidate]]]


@dataclass
class _Ticket:
    requests: list[GenerationRequest]
    results: list[list[Candidate]] = field(default_factory=list)
    error: BaseException | None = None
    done: bool = False


class Coalescer:
    """``propose`` for callers in several threads over a one-batch-at-a-time ``run``: each call
    joins the next batch; one of its callers runs it, the others wait for their share."""

    def __init__(self, run: Batch) -> None:
        self._run = run
        self._changed = threading.Condition()
        self._queue: list[_Ticket] = []
        self._busy = False
        self.batches = 0  # batches run so far (for tests and benchmarks)

    def __call__(self, requests: Sequence[GenerationRequest]) -> list[list[Candidate]]:
        ticket = _Ticket(check_requests(requests))  # a bad call fails alone, before any batch
        with self._changed:
            self._queue.append(ticket)
            while self._busy and not ticket.done:
                self._changed.wait()
            if not ticket.done:  # this caller runs the next batch: every call queued by now
                batch, self._queue, self._busy = self._queue, [], True
        if not ticket.done:
            self._run_batch(batch)
        if ticket.error is not None:
            raise ticket.error
        return ticket.results

    def _run_batch(self, batch: list[_Ticket]) -> None:
        try:
            out = iter(self._run([r for ticket in batch for r in ticket.requests]))
            for ticket in batch:
                ticket.results = list(itertools.islice(out, len(ticket.requests)))
        except BaseException as err:  # every caller of the batch sees why it failed
            for ticket in batch:
                ticket.error = err
        finally:
            with self._changed:
                for ticket in batch:
                    ticket.done = True
                self.batches += 1
                self._busy = False
                self._changed.notify_all()
