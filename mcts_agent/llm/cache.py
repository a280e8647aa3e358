"""A response cache: a policy whose reproducible answers are kept on disk.

A request is reproducible when it is greedy or seeded: the same model, prompt, sampling
parameters and seed give the same candidates. :class:`CachedPolicy` keys such requests by
exactly those, answers the ones it has seen from an SQLite file, and sends the rest to the
wrapped policy in ONE ``propose`` call, so a re-run, or a resumed run re-growing the trees that
were in flight when it stopped, does not pay for the same generations twice. Unseeded sampled
requests are random by intent and always go to the model.

The model's identity in the key is the policy's ``name`` (its folder or served model name):
write retrained weights to a new folder, as ``iterate`` does, or use a new cache file.

The cache is only ever a saving: a file SQLite cannot read (garbage, truncated, damaged) is
moved aside to ``<name>.corrupt-<timestamp>`` (with its ``-wal``/``-shm``) with a warning, and
the run continues with an empty cache. A file that cannot be written is a :class:`UserError`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from ..errors import UserError
from .base import Candidate, GenerationRequest, Policy, check_requests

log = logging.getLogger(__name__)

_LOOKUP_CHUNK = 500  # SQLite's bound on the number of "?" in one statement is 999 or more
_CORRUPT_CODES = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB (primary codes)
_UNWRITABLE_CODES = (3, 8, 14)  # SQLITE_PERM, SQLITE_READONLY, SQLITE_CANTOPEN
_SIDE_FILES = ("-wal", "-shm")
T = TypeVar("T")


def request_key(model: str, request: GenerationRequest) -> str:
    """The cache key of ``request`` sent to ``model``: a hash of everything that decides its
    answer."""
    fields = [model, request.prompt if isinstance(request.prompt, str) else
              [dict(m) for m in request.prompt], request.n, request.max_tokens,
              float(request.temperature), float(request.top_p), list(request.stop),
              request.seed]
    if request.allowed is not None:  # constrained: another answer (unconstrained keys unchanged)
        fields.append(list(request.allowed))
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def cacheable(request: GenerationRequest) -> bool:
    """Whether ``request``'s answer is reproducible (greedy, or sampled with a seed)."""
    return request.greedy or request.seed is not None


class CachedPolicy:
    """``policy`` with its reproducible answers cached in the SQLite file ``path``.

    Attributes the wrapped policy has (``encode_prompt``, ``metrics``, ``reload`` …) are
    reachable through this one; ``stats`` counts hits, misses and uncacheable requests.
    Safe to share between threads (one connection, serialised).

    Raises:
        UserError: ``path`` or its folder cannot be written.
    """

    def __init__(self, policy: Policy, path: str | Path) -> None:
        self.policy = policy
        self.path = Path(path)
        self._lock = threading.Lock()
        self.stats: Counter = Counter()
        _check_writable(self.path)
        try:
            self._db = _connect(self.path)
        except _Unreadable as err:
            self._db = self._start_over(err)

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
        def lookup(db: sqlite3.Connection) -> dict[str, list[Candidate]]:
            found: dict[str, list[Candidate]] = {}
            for start in range(0, len(keys), _LOOKUP_CHUNK):
                chunk = keys[start:start + _LOOKUP_CHUNK]
                rows = db.execute(
                    f"SELECT key, candidates FROM responses WHERE key IN "
                    f"({','.join('?' * len(chunk))})", chunk).fetchall()
                found.update((key, _decode(text)) for key, text in rows)
            return found

        return self._run(lookup)

    def _store(self, entries: list[tuple[str | None, list[Candidate]]]) -> None:
        """Write answers in one transaction, committed before they are used: a crash later
        in the wave keeps them."""
        rows = [(key, _encode(c)) for key, c in entries]

        def store(db: sqlite3.Connection) -> None:
            with db:
                db.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?)", rows)

        self._run(store)

    def entries(self) -> int:
        """How many answers the file holds."""
        return self._run(
            lambda db: int(db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]))

    def close(self) -> None:
        """Close the file (the wrapped policy stays usable)."""
        with self._lock:
            self._db.close()

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work(connection)`` under the lock; damage found on the way (a file broken while
        the run was going) sets the file aside and does the work again on a fresh one."""
        with self._lock:
            try:
                return work(self._db)
            except sqlite3.DatabaseError as err:
                if not _is_corrupt(err):
                    raise
                self._db.close()
                self._db = self._start_over(_Unreadable(str(err)))
                return work(self._db)

    def _start_over(self, why: _Unreadable) -> sqlite3.Connection:
        """Move the unreadable file (and its WAL files) aside and open an empty cache."""
        moved = _free_name(self.path.with_name(
            f"{self.path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}"))
        try:
            for suffix in ("", *_SIDE_FILES):
                source = self.path.with_name(self.path.name + suffix)
                if source.exists():
                    source.rename(moved.with_name(moved.name + suffix))
        except OSError as err:
            raise _unwritable(self.path, err) from err
        log.warning("response cache %s is unreadable (%s): moved it to %s; the cache starts "
                    "again empty (--no-cache turns it off)", self.path, why, moved)
        return _connect(self.path)


class _Unreadable(Exception):
    """The cache file is not a database SQLite can read (garbage, truncated, damaged)."""


def _connect(path: Path) -> sqlite3.Connection:
    """Open the cache file (created if missing), checked readable; _Unreadable if it is not."""
    db = sqlite3.connect(path, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")  # readers never block the one writer
        db.execute("CREATE TABLE IF NOT EXISTS responses "
                   "(key TEXT PRIMARY KEY, candidates TEXT NOT NULL)")
        # quick_check reads every page once: a cut file shows here, not mid-run
        problems = [row[0] for row in db.execute("PRAGMA quick_check")]
    except sqlite3.DatabaseError as err:
        db.close()
        if _is_corrupt(err):
            raise _Unreadable(str(err)) from err
        if (getattr(err, "sqlite_errorcode", 0) & 0xFF) in _UNWRITABLE_CODES:
            raise _unwritable(path, err) from err
        raise
    if problems != ["ok"]:
        db.close()
        raise _Unreadable(f"quick_check: {problems[0]}")
    return db


def _is_corrupt(err: sqlite3.DatabaseError) -> bool:
    """Whether SQLite says the file is damaged or not a database at all."""
    code = getattr(err, "sqlite_errorcode", None)  # Python >= 3.11
    if code is not None:
        return (code & 0xFF) in _CORRUPT_CODES
    return "malformed" in str(err) or "not a database" in str(err)


def _check_writable(path: Path) -> None:
    """Raise UserError unless the cache file can be created or written at ``path``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _unwritable(path, err) from err
    # SQLite also writes path-wal and path-shm beside the file: the folder must be writable
    if not os.access(path.parent, os.W_OK | os.X_OK) or (
            path.exists() and not os.access(path, os.W_OK)):
        raise _unwritable(path, "read-only")


def _unwritable(path: Path, why: object) -> UserError:
    return UserError(f"cannot write the response cache {path} ({why}): make its folder "
                     "writable, choose another --out, or turn the cache off with --no-cache")


def _free_name(path: Path) -> Path:
    """``path``, or ``path-2``, ``path-3`` … whichever does not exist yet."""
    candidate, count = path, 1
    while candidate.exists():
        count += 1
        candidate = path.with_name(f"{path.name}-{count}")
    return candidate


def _encode(candidates: list[Candidate]) -> str:
    return json.dumps([asdict(c) for c in candidates])


def _decode(text: str) -> list[Candidate]:
    return [Candidate(**{**c, "token_ids": tuple(c["token_ids"])}) for c in json.loads(text)]
