# -*- test-case-name: txstore.test.unit.test_row_batches -*-
"""
Group commit of object rows: the container updates that arrive for one database while a
commit of it is under way go to SQLite together, in one transaction (one WAL fsync).

Every object PUT and DELETE sends its row to each container replica; with many uploads into
one container, those rows came one transaction each, and each transaction is an fsync and a
thread-pool round trip. Here a row for a database with no commit under way is committed at
once (alone: no added latency when idle); rows arriving meanwhile wait for it, then go
together in the next. Each caller's Deferred fires only after the transaction that holds its
row has committed, so a 2xx still means the row is durable. If a batch of several rows fails,
each row is tried again on its own, so that one bad row cannot fail the others.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

K = TypeVar("K")

# commit(key, rows) -> Deferred firing once ``rows`` are committed to the database ``key``.
Commit = Callable[[Any, list[Any]], Deferred]


class RowBatcher(Generic[K]):
    def __init__(self, commit: Commit, max_batch: int = 512) -> None:
        self._commit = commit
        self.max_batch = max_batch
        self._pending: dict[K, list[tuple[Any, Deferred]]] = {}
        self._busy: set[K] = set()
        self.commits = 0  # transactions started (for tests and figures)

    def add(self, key: K, row: Any) -> Deferred:
        """Fires (with None) when ``row`` is committed, or fails as its commit did."""
        done: Deferred = Deferred()
        self._pending.setdefault(key, []).append((row, done))
        if key not in self._busy:
            self._next(key)
        return done

    def _next(self, key: K) -> None:
        pending = self._pending.get(key)
        if not pending:
            self._pending.pop(key, None)
            self._busy.discard(key)
            return
        batch, rest = pending[: self.max_batch], pending[self.max_batch :]
        if rest:
            self._pending[key] = rest
        else:
            del self._pending[key]
        self._busy.add(key)
        self._run(key, batch).addBoth(lambda _: self._next(key))

    def _run(self, key: K, batch: list[tuple[Any, Deferred]]) -> Deferred:
        self.commits += 1
        committing = self._commit(key, [row for row, _ in batch])

        def committed(_result: object) -> None:
            for _row, done in batch:
                done.callback(None)

        def failed(failure: Failure) -> Deferred | None:
            if len(batch) == 1:
                batch[0][1].errback(failure)
                return None
            return self._one_by_one(key, batch)

        return committing.addCallbacks(committed, failed)

    def _one_by_one(self, key: K, batch: list[tuple[Any, Deferred]]) -> Deferred:
        async def each() -> None:
            for entry in batch:
                await self._run(key, [entry])

        return Deferred.fromCoroutine(each())
