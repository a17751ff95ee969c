# -*- test-case-name: txstore.test.unit.test_error_limiter -*-
"""
Node error limiting: a node that keeps failing is skipped for a while.

Without it every request pays a dead node's timeout. After ``limit`` errors (connection
refused, 5xx, 507), or one timeout, a node is suppressed for ``interval`` seconds: reads and
writes go straight to the next replica or handoff. A success clears its count.
"""

from __future__ import annotations

from collections.abc import Callable

from attrs import define, field


@define
class ErrorLimiter:
    clock: Callable[[], float]
    limit: int = 10
    interval: float = 60.0
    _errors: dict[tuple, int] = field(factory=dict, init=False)
    _suppressed_until: dict[tuple, float] = field(factory=dict, init=False)

    @staticmethod
    def key(node) -> tuple:
        return (node.ip, node.port, node.device_name)

    def is_limited(self, node) -> bool:
        key = self.key(node)
        until = self._suppressed_until.get(key)
        if until is None:
            return False
        if until <= self.clock():
            del self._suppressed_until[key]
            self._errors.pop(key, None)
            return False
        return True

    def error(self, node) -> None:
        key = self.key(node)
        count = self._errors.get(key, 0) + 1
        self._errors[key] = count
        if count >= self.limit:
            self._suppressed_until[key] = self.clock() + self.interval

    def limit_now(self, node) -> None:
        """
        Suppress ``node`` at once: it timed out. A node that stopped answering (a stopped
        process, a hung disk) would otherwise cost ``limit`` more requests the whole timeout.
        """
        key = self.key(node)
        self._errors[key] = max(self._errors.get(key, 0), self.limit)
        self._suppressed_until[key] = self.clock() + self.interval

    def limited_count(self) -> int:
        """How many nodes are skipped now (for the metrics)."""
        now = self.clock()
        return sum(1 for until in self._suppressed_until.values() if until > now)

    def success(self, node) -> None:
        key = self.key(node)
        self._errors.pop(key, None)
        self._suppressed_until.pop(key, None)
