# -*- test-case-name: txstore.test.unit.test_io -*-
"""
Blocking work off the reactor: one bounded thread pool per device.

The reactor thread must never wait for a disk. Each device gets its own small pool, so a
failing or saturated disk slows only its own requests; the total thread count stays bounded
by ``threads_per_device`` × devices. Hand whole chunks (64 KiB-1 MiB) to a thread: the
per-call cost is a few microseconds of queueing, which small writes would pay many times.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred, succeed, fail
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from txstore.interfaces import IBlockingRunner


class PoolsStopped(RuntimeError):
    """The pools were stopped (the process is shutting down); the call did not run."""


@implementer(IBlockingRunner)
@define
class DeviceThreadPools:
    """Per-device thread pools, started lazily and stopped with the reactor."""

    reactor: Any
    threads_per_device: int = 4
    _pools: dict[str, ThreadPool] = field(factory=dict, init=False)
    _stopped: bool = field(default=False, init=False)

    def run(self, key: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred:
        pool = self._pools.get(key)
        if pool is None:
            if self._stopped:
                # A late caller after shutdown must not start threads nobody will stop.
                return fail(PoolsStopped(f"the I/O pools are stopped; not running {function!r}"))
            pool = ThreadPool(minthreads=0, maxthreads=self.threads_per_device, name=f"io-{key}")
            pool.start()
            self._pools[key] = pool
        return deferToThreadPool(self.reactor, pool, function, *args, **kwargs)

    def load(self) -> dict[str, tuple[int, int]]:
        """Per pool: calls waiting for a thread, and threads at work (for the metrics)."""
        return {key: (pool.q.qsize(), len(pool.working)) for key, pool in list(self._pools.items())}

    def stop(self) -> None:
        """Stop every pool (waits for calls under way, so commit steps finish)."""
        self._stopped = True
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.stop()


@implementer(IBlockingRunner)
class SynchronousRunner:
    """Runs the call at once on the calling thread: for unit tests only."""

    def run(self, key: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred:
        try:
            return succeed(function(*args, **kwargs))
        except BaseException:
            return fail()
