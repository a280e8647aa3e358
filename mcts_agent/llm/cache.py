"""A response cache: a policy whose reproducible answers are kept on disk.

A request is reproducible when it is greedy or seeded: the same model, prompt, sampling
parameters and seed give the same candidates. :class:`CachedPolicy` keys such requests by
exactly those, answers the ones it has seen from an SQLite file, and sends the rest to the
wrapped policy in ONE ``propose`` call, so a re-run, or a resumed run re-growing the trees that
were in flight when it stopped, does not pay for the same generations twice. Unseeded sampled
requests are random by intent and always go to the model.

The model's identity in the key is the policy's ``name`` (its folder or served model name):
write retrained weights to a new folder, as ``iterate`` does, or use a new cache file.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .base import Candidate, GenerationRequest, Policy, check_requests

_LOOKUP_CHUNK = 500  # SQLite's bound on the number of "?" in one statement is 999 or more


def request_key(model: str, request: GenerationRequest) -> str:
    """The cache key of ``request`` sent to ``model``: a hash of everything that decides its
    answer."""
    fields = [model, request.prompt if isinstance(request.prompt, str) else
              [dict(m) for m in request.prompt], request.n, request.max_tokens,
              float(request.temperature), float(request.top_p), list(request.stop),
              request.seed]
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def cacheable(request: GenerationRequest) -> bool:
    """Whether ``request``'s answer is reproducible (greedy, or sampled with a seed)."""
    return request.greedy or request.seed is not None


class CachedPolicy:
    """``policy`` with its reproducible answers cached in the SQLite file ``path``.

    Attributes the wrapped policy has (``encode_prompt``, ``metrics``, ``reload`` …) are
    reachable through this one; ``stats`` counts hits, misses and uncacheable requests.
    Safe to share between threads (one connection, serialised).
    """

    def __init__(self, policy: Policy, path: str | Path) -> None:
        self.policy = policy
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")  # readers never block the one writer
        self._db.execute("CREATE TABLE IF NOT EXISTS responses "
                         "(key TEXT PRIMARY KEY, candidates TEXT NOT NULL)")
        self._lock = threading.Lock()
        self.stats: Counter = Counter()

    @property
    def name(self) -> str:
        return self.policy.name

    def __getattr__(self, attribute: str) -> Any:
        if attribute == "policy":  # not set yet (unpickling): no recursion
            raise AttributeError(attribute)
        return getattr(self.policy, attribute)

    def propose(self, requests: Sequence[GenerationRequest]) -> list[list[Candidate]]:
        """Cached answers where there are some; one ``propose`` call for the rest."""
        requests = check_requests(requests)
        model = self.policy.name
        keys = [request_key(model, r) if cacheable(r) else None for r in requests]
        found = self._lookup([k for k in keys if k is not None])
        results: list[list[Candidate] | None] = [found.get(k) if k else None for k in keys]
        missing = [i for i, r in enumerate(results) if r is None]
        self.stats["hits"] += len(requests) - len(missing)
        self.stats["misses"] += sum(keys[i] is not None for i in missing)
        self.stats["uncacheable"] += sum(keys[i] is None for i in missing)
        if missing:
            fresh = self.policy.propose([requests[i] for i in missing])
            for i, candidates in zip(missing, fresh, strict=True):
                results[i] = candidates
            self._store([(keys[i], candidates) for i, candidates in zip(missing, fresh,
                                                                        strict=True)
                         if keys[i] is not None])
        return [r for r in results if r is not None]

    def _lookup(self, keys: list[str]) -> dict[str, list[Candidate]]:
        found: dict[str, list[Candidate]] = {}
        with self._lock:
            for start in range(0, len(keys), _LOOKUP_CHUNK):
                chunk = keys[start:start + _LOOKUP_CHUNK]
                rows = self._db.execute(
                    f"SELECT key, candidates FROM responses WHERE key IN "
                    f"({','.join('?' * len(chunk))})", chunk).fetchall()
                found.update((key, _decode(text)) for key, text in rows)
        return found

    def _store(self, entries: list[tuple[str | None, list[Candidate]]]) -> None:
        """Write answers in one transaction, committed before they are used: a crash later
        in the wave keeps them."""
        with self._lock, self._db:
            self._db.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?)",
                                 [(key, _encode(c)) for key, c in entries])

    def entries(self) -> int:
        """How many answers the file holds."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        """Close the file (the wrapped policy stays usable)."""
        with self._lock:
            self._db.close()


def _encode(candidates: list[Candidate]) -> str:
    return json.dumps([asdict(c) for c in candidates])


def _decode(text: str) -> list[Candidate]:
    return [Candidate(**{**c, "token_ids": tuple(c["token_ids"])}) for c in json.loads(text)]
