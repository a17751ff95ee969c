# -*- test-case-name: txstore.test.test_expirer -*-
"""
A rate limiter that sleeps in the calling thread (a device pool thread).

Used by the expirer and the database auditors, whose per-item work is one blocking call. Its
drawback: a node stopping waits for a sleep under way (at most one item's interval). The
object auditor paces on the reactor instead (`txstore.daemons.auditor.Pacer`), which a stop
cancels at once; these two should follow it.
"""

from __future__ import annotations

import time


class ThreadPacer:
    """Sleeps so that items stay under ``per_second`` (0: no limit)."""

    def __init__(self, per_second: float, _bytes_per_second: float = 0, clock=time.monotonic, sleep=time.sleep):
        self._rate = per_second
        self._clock = clock
        self._sleep = sleep
        self._started = clock()
        self._done = 0

    def file_done(self) -> None:
        self._done += 1
        if self._rate:
            ahead = self._done / self._rate - (self._clock() - self._started)
            if ahead > 0:
                self._sleep(ahead)
