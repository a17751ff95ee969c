# -*- test-case-name: txstore.test.integration.test_ec_proxy -*-
"""
What a process that encodes or decodes needs: one codec per EC policy (pyeclib's setup is
not free, and a codec is reused for every request) and one thread pool, sized to the cores,
where encodes and decodes run: pyeclib's C work on a 1 MiB segment takes milliseconds that
the reactor must not spend. A segment of at most `INLINE_MAX` bytes (a small object's only
segment) is coded in place instead: that takes 4 to 100 µs, less than the pool's round trip
(a queue, a thread woken, the reactor woken again), which also waits behind large segments.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from txstore.common.policies import StoragePolicy
from txstore.ec.codec import ECCodec


INLINE_MAX = 16 * 1024  # bytes of a segment coded without the pool


class ECStopped(RuntimeError):
    """The EC pool was stopped (the process is shutting down); the call did not run."""


@define
class ECService:
    """The codecs of the cluster's EC policies, and the pool they run in (started lazily)."""

    reactor: Any
    threads: int = field(factory=lambda: max(1, os.cpu_count() or 1))
    _codecs: dict[int, ECCodec] = field(factory=dict, init=False)
    _pool: ThreadPool | None = field(default=None, init=False)
    _stopped: bool = field(default=False, init=False)

    def codec(self, policy: StoragePolicy) -> ECCodec:
        if policy.ec is None:
            raise ValueError(f"policy {policy.name} is not erasure-coded")
        codec = self._codecs.get(policy.index)
        if codec is None:
            codec = self._codecs[policy.index] = ECCodec(policy.ec)
        return codec

    def run(self, function: Callable[..., Any], *args: Any) -> Deferred:
        """``function(*args)`` in the pool: a Deferred of its result."""
        if self._pool is None:
            if self._stopped:
                return fail(ECStopped(f"the EC pool is stopped; not running {function!r}"))
            self._pool = ThreadPool(minthreads=0, maxthreads=self.threads, name="ec")
            self._pool.start()
            self.reactor.addSystemEventTrigger("during", "shutdown", self.stop)
        return deferToThreadPool(self.reactor, self._pool, function, *args)

    def run_segment(self, size: int, function: Callable[..., Any], *args: Any) -> Deferred:
        """``function(*args)``, the coding of a segment of ``size`` bytes: in place when small, else `run`."""
        if size <= INLINE_MAX and not self._stopped:
            return maybeDeferred(function, *args)
        return self.run(function, *args)

    def stop(self) -> None:
        self._stopped = True
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()
