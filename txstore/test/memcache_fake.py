"""
`FakeMemcache`: memcached in a dict on a clock, for unit tests of what shares state through
it (the info cache, tempauth's tokens). ``reachable = False`` is memcached gone. The
conformance suite in ``test_memcache`` runs against it and against the real client.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from txstore.common.memcache import MemcacheUnavailable
from txstore.interfaces import IMemcache


@implementer(IMemcache)
class FakeMemcache:
    def __init__(self, clock) -> None:
        self.clock = clock
        self.reachable = True
        self.values: dict[str, tuple[float, bytes]] = {}
        self.calls: list[tuple[str, str]] = []

    def _live(self, key: str) -> bytes | None:
        held = self.values.get(key)
        if held is None or held[0] <= self.clock.seconds():
            self.values.pop(key, None)
            return None
        return held[1]

    def get(self, key: str, unreachable: Any = None) -> Deferred:
        self.calls.append(("get", key))
        if not self.reachable:
            return succeed(unreachable)
        data = self._live(key)
        return succeed(None if data is None else json.loads(data))

    def set(self, key: str, value: Any, ttl: float) -> Deferred:
        self.calls.append(("set", key))
        if not self.reachable:
            return succeed(False)
        self.values[key] = (self.clock.seconds() + ttl, json.dumps(value).encode())
        return succeed(True)

    def delete(self, key: str) -> Deferred:
        self.calls.append(("delete", key))
        if not self.reachable:
            return succeed(False)
        return succeed(self.values.pop(key, None) is not None)

    def incr(self, key: str, delta: int, ttl: float, initial: int | None = None) -> Deferred:
        self.calls.append(("incr", key))
        if not self.reachable:
            return fail(MemcacheUnavailable("fake memcached unreachable"))
        data = self._live(key)
        if data is None:
            value = delta if initial is None else initial
            self.values[key] = (self.clock.seconds() + ttl, b"%d" % value)
            return succeed(value)
        value = int(data) + delta
        self.values[key] = (self.values[key][0], b"%d" % value)
        return succeed(value)

    def decr(self, key: str, delta: int, ttl: float) -> Deferred:
        self.calls.append(("decr", key))
        if not self.reachable:
            return fail(MemcacheUnavailable("fake memcached unreachable"))
        data = self._live(key)
        if data is None:
            return succeed(0)
        value = max(0, int(data) - delta)
        self.values[key] = (self.values[key][0], b"%d" % value)
        return succeed(value)

    def close(self) -> Deferred:
        return succeed(None)
