# -*- test-case-name: txstore.test.unit.test_auditor -*-
"""
Pacing a daemon's pass: items (files, databases, expired objects) and bytes per second, by
waiting on the reactor between the pass's thread calls.

Every daemon that must not take the whole disk (the object auditor, the expirer, the database
auditors) paces with this one `Pacer`. Waiting on the reactor, not sleeping in a device
thread, keeps the device's threads for requests, and lets a node that stops end a pass at
once: `Pacer.stop` cancels the wait under way, and that wait and every later one raise
`PassStopped`.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import deferLater


class PassStopped(Exception):
    """The daemon was stopped (the node is stopping) while a pass was under way."""


class Pacer:
    """
    Keeps files and bytes under their rates by waiting on the reactor (0: no limit). `stop`
    cancels the wait under way; that wait and every later one raise `PassStopped`.
    """

    def __init__(self, reactor: Any, files_per_second: float, bytes_per_second: float) -> None:
        self._reactor = reactor
        self._files_rate = files_per_second
        self._bytes_rate = bytes_per_second
        self._started = reactor.seconds()
        self._files = 0
        self._bytes = 0
        self._waiting: Deferred | None = None
        self.stopped = False

    async def file_done(self) -> None:
        self._files += 1
        await self._wait(self._files / self._files_rate if self._files_rate else 0)

    async def bytes_read(self, count: int) -> None:
        self._bytes += count
        await self._wait(self._bytes / self._bytes_rate if self._bytes_rate else 0)

    async def _wait(self, due: float) -> None:
        if self.stopped:
            raise PassStopped()
        ahead = due - (self._reactor.seconds() - self._started)
        if ahead <= 0:
            return
        self._waiting = deferLater(self._reactor, ahead, lambda: None)
        try:
            await self._waiting
        except CancelledError:
            raise PassStopped() from None
        finally:
            self._waiting = None

    def stop(self) -> None:
        self.stopped = True
        if self._waiting is not None:
            self._waiting.cancel()
