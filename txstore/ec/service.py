# -*- test-case-name: txstore.test.integration.test_ec_proxy -*-
"""
What a process that encodes or decodes needs: one codec per EC policy (pyeclib's setup is
not free, and a codec is reused for every request) and one thread pool, sized to the cores,
where every encode and decode runs: pyeclib's C work on a 1 MiB segment takes milliseconds
that the reactor must not spend.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred, fail
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from txstore.common.policies import StoragePolicy
from txstore.ec.codec import ECCodec


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

    def stop(self) -> None:
        self._stopped = True
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()
