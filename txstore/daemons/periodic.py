# -*- test-case-name: txstore.test.unit.test_container_updater -*-
"""
A daemon that runs a pass every ``interval`` seconds inside the node process.

The first pass starts after a random part of the interval, so the nodes of a cluster started
together do not all work at once. A pass that fails is logged and the next one runs as usual:
a LoopingCall whose function raises stops for good, so this one never lets an error reach it.
Each pass's figures are kept for recon. At stop, the pass under way is waited for; a daemon
whose passes are long (the auditor) gives a ``stop_pass`` that makes its pass end early.
A pass's duration and end are on the reactor's clock, the one its timers run on.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from attrs import define, field
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger


@define(eq=False)
class PeriodicDaemon(Service):
    name: str
    _run_pass: Callable[[], Awaitable[dict[str, Any]]]
    interval: float
    _reactor: Any
    _jitter: Callable[[], float] = random.random
    _stop_pass: Callable[[], None] | None = None
    _metrics: Any = None  # a ServerMetrics: each pass's result, duration and figures
    _loop: LoopingCall | None = field(default=None, init=False)
    _first: Any = field(default=None, init=False)  # the delayed call of the first pass
    _current: Deferred | None = field(default=None, init=False)
    last_pass: dict[str, Any] = field(factory=dict, init=False)
    # The last few passes, newest last: a pass that ran long is often followed at once by a
    # short one, and whoever polls last_pass would miss it (recon's recent_passes).
    recent_passes: deque = field(factory=lambda: deque(maxlen=8), init=False)
    passes: int = field(default=0, init=False)
    log = Logger()

    def startService(self) -> None:
        super().startService()
        self._first = self._reactor.callLater(self._jitter() * self.interval, self._start_loop)

    def _start_loop(self) -> None:
        self._first = None
        self._loop = LoopingCall(self.run_once)
        self._loop.clock = self._reactor
        self._loop.start(self.interval, now=True)

    def run_once(self) -> Deferred:
        """One pass; never fails (errors are logged), so the loop goes on."""
        self._current = Deferred.fromCoroutine(self._guarded())
        return self._current

    async def _guarded(self) -> None:
        started = self._reactor.seconds()
        failed = False
        try:
            figures = await self._run_pass()
        except Exception:
            self.log.failure("{daemon} pass failed; the next runs in {interval}s", daemon=self.name,
                             interval=self.interval)
            figures = {"failed": True}
            failed = True
        finished = self._reactor.seconds()
        duration = finished - started
        self.passes += 1
        self.last_pass = {**figures, "duration": duration, "finished_at": finished}
        self.recent_passes.append(self.last_pass)
        if not failed:
            self.log.info("{daemon} pass done in {duration:.2f}s: {figures}", daemon=self.name,
                          duration=duration, figures=describe(figures))
        if self._metrics is not None:
            self._metrics.daemon_pass(self.name, figures, duration, failed)

    def stopService(self):
        super().stopService()
        if self._first is not None and self._first.active():
            self._first.cancel()
        self._first = None
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        current, self._current = self._current, None
        if current is not None and not current.called and self._stop_pass is not None:
            self._stop_pass()
        return current if current is not None and not current.called else None


def describe(figures: dict[str, Any]) -> str:
    """A pass's figures as one line for people: ``objects 12, failures 0, devices (d1 3, d2 9)``."""
    parts = []
    for name, value in figures.items():
        label = name.replace("_", " ")
        if isinstance(value, dict):
            parts.append(f"{label} ({describe(value)})" if value else f"{label} (none)")
        elif isinstance(value, float):
            parts.append(f"{label} {value:.2f}")
        elif isinstance(value, (list, tuple)):
            parts.append(f"{label} {len(value)}")
        else:
            parts.append(f"{label} {value}")
    return ", ".join(parts) if parts else "nothing to do"


async def run_jobs(
    jobs: list[tuple], concurrency: int, run_one: Callable[..., Awaitable[None]], stats: Any,
    stopping: Callable[[], bool] = lambda: False,
) -> None:
    """
    A pass's jobs (partitions, databases), ``run_one(*job)`` for each, ``concurrency`` at a
    time; once ``stopping()`` says so, the jobs not started yet are counted ``skipped``.
    ``run_one`` handles its own errors (one job's failure never stops the pass).
    """
    semaphore = DeferredSemaphore(concurrency)

    def start(*job: Any) -> Deferred:
        if stopping():
            stats["skipped"] += 1
            return succeed(None)
        return Deferred.fromCoroutine(run_one(*job))

    await gatherResults([semaphore.run(start, *job) for job in jobs], consumeErrors=True)
