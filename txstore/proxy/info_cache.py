# -*- test-case-name: txstore.test.test_proxy_controllers -*-
"""
Account and container info cached in the proxy for a few seconds.

Every object request needs its container's existence, ACLs and policy; asking the container
servers each time would double the cost of a small GET. The cache is behind `IInfoCache` so
several proxies can later share memcached; this one lives in the process.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from zope.interface import Interface, implementer


class IInfoCache(Interface):
    def get(key: str) -> Any:
        """The cached value, or None when absent or expired."""

    def set(key: str, value: Any, ttl: float) -> None:
        """Cache ``value`` for ``ttl`` seconds."""

    def delete(key: str) -> None:
        """Forget ``key`` (after a write changed what it described)."""


@implementer(IInfoCache)
class InMemoryInfoCache:
    def __init__(self, clock: Callable[[], float], max_entries: int = 100_000) -> None:
        self._clock = clock
        self._max = max_entries
        self._entries: OrderedDict[str, tuple[float, Any]] = OrderedDict()

    def get(self, key: str) -> Any:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires <= self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def set(self, key: str, value: Any, ttl: float) -> None:
        self._entries[key] = (self._clock() + ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def delete(self, key: str) -> None:
        self._entries.pop(key, None)
