# -*- test-case-name: txstore.test.unit.test_container_server -*-
"""
An LRU of open database brokers, one per database file.

A broker keeps a few SQLite connections open. Every object PUT into a container updates that
container's database, so the container server keeps the brokers of busy databases here, and
a busy container opens its file once rather than once per request. The cache also caps how many
files stay open: an evicted broker is closed.

Closing goes through the device's I/O pool: closing the last connection of a WAL database
checkpoints it, which writes to the disk. The cache itself is used only on the reactor thread
(building a broker opens nothing). If a request in a pool thread is still using a broker when
the cache evicts it, ``close`` closes only the idle connections. The connection in use goes
back to the evicted broker and is closed when the request drops that broker.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from attrs import define, field
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.logger import Logger

from txstore.interfaces import IBlockingRunner
from txstore.storage.db import DatabaseBroker

B = TypeVar("B", bound=DatabaseBroker)

DEFAULT_CAPACITY = 256


def _positive(_inst: object, _attr: object, value: int) -> None:
    if value < 1:
        raise ValueError(f"a broker cache holds at least one broker, not {value}")


@define
class BrokerCache(Generic[B]):
    """Brokers by database path, least recently used evicted first (and closed)."""

    runner: IBlockingRunner
    capacity: int = field(default=DEFAULT_CAPACITY, validator=_positive)
    _entries: OrderedDict[Path, tuple[str, B]] = field(factory=OrderedDict, init=False)
    log = Logger()

    def get(self, device: str, path: Path, factory: Callable[[Path], B]) -> B:
        """The broker for ``path``, made with ``factory(path)`` if not cached (``device`` picks the pool)."""
        entry = self._entries.get(path)
        if entry is not None:
            self._entries.move_to_end(path)
            return entry[1]
        broker = factory(path)
        self._entries[path] = (device, broker)
        while len(self._entries) > self.capacity:
            _, (old_device, old) = self._entries.popitem(last=False)
            self._close(old_device, old)
        return broker

    def discard(self, path: Path) -> Deferred:
        """Forget and close the broker of ``path``: its file was quarantined or replaced."""
        entry = self._entries.pop(path, None)
        if entry is None:
            return succeed(None)
        return self._close(*entry)

    def close(self) -> Deferred:
        """Close every cached broker (when the node stops, before the I/O pools stop)."""
        entries, self._entries = self._entries, OrderedDict()
        return gatherResults([self._close(device, broker) for device, broker in entries.values()])

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, path: object) -> bool:
        return path in self._entries

    def _close(self, device: str, broker: B) -> Deferred:
        closing = self.runner.run(device, broker.close)
        closing.addErrback(lambda f: self.log.failure("closing the broker of {path}", f, path=str(broker.path)))
        return closing

