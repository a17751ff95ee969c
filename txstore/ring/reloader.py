# -*- test-case-name: txstore.test.unit.test_ring_reloader -*-
"""
Keeping a server's rings current without touching the disk on the reactor thread.

A `Ring` used by a tool checks its file when it is used (a stat at most once per interval, a
read and a parse when the file changed). In a server that would be a stat, and now and then a
read and parse of several megabytes, in the middle of serving requests, on the reactor thread.
Servers load their rings with ``auto_reload=False`` and run a `RingReloader`: every interval it
checks each ring's file in a thread (`Ring.read_if_changed`) and installs a changed table on
the reactor thread (`Ring.install`), between requests. A SIGHUP makes it check at once (the
operator's "reload": connections are not touched).
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from txstore.ring.ring import Ring


class RingReloader(Service):
    """Checks ``rings`` every ``interval`` seconds in a thread; installs changed tables."""

    log = Logger()

    def __init__(
        self, rings: Iterable[Ring], reactor: Any, interval: float = 15.0,
        run_in_thread: Callable[[Callable[[], Any]], Deferred] | None = None, *, on_sighup: bool = False,
    ) -> None:
        self._rings = list(rings)
        self._reactor = reactor
        self.interval = interval
        self._run_in_thread = run_in_thread or (
            lambda function: deferToThreadPool(reactor, reactor.getThreadPool(), function)
        )
        self._loop: LoopingCall | None = None
        self._pass: Deferred | None = None
        self._on_sighup = on_sighup
        self._previous_handler: Any = None

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self.check)
        self._loop.clock = self._reactor
        self._loop.start(self.interval, now=False)
        if self._on_sighup:
            # An operator's SIGHUP checks the rings now (it would otherwise end the process).
            self._previous_handler = signal.signal(signal.SIGHUP, self._sighup)

    def _sighup(self, _signum: int, _frame: Any) -> None:
        # Only this in the handler itself: it runs between any two bytecodes of the reactor's
        # thread, perhaps inside the very code it would call.
        self._reactor.callFromThread(self._check_now)

    def _check_now(self) -> None:
        self.log.info("SIGHUP: checking the ring files now")
        if self._pass is None or self._pass.called:
            self.check()

    def stopService(self) -> Deferred | None:
        super().stopService()
        if self._on_sighup and self._previous_handler is not None:
            signal.signal(signal.SIGHUP, self._previous_handler)
            self._previous_handler = None
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._pass is not None and not self._pass.called:
            return self._pass  # a thread is reading a ring file: let it finish
        return None

    def check(self) -> Deferred:
        """One pass over every ring; never fails (a pass that fails would stop the loop)."""
        self._pass = Deferred.fromCoroutine(self._check_all())
        return self._pass

    async def _check_all(self) -> None:
        for ring in self._rings:
            try:
                loaded = await self._run_in_thread(ring.read_if_changed)
                ring.install(loaded)
            except Exception:
                self.log.failure("Checking the ring file {path} failed", path=ring.path)
