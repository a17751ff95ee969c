# -*- test-case-name: txstore.test.unit.test_info_cache -*-
"""
Account and container info cached in the proxy for a few seconds.

Every object request needs its container's existence, ACLs and policy; asking the container
servers each time would double the cost of a small GET. The cache is an `IInfoCache`:

- `InMemoryInfoCache`, the default: this process's memory, for one proxy;
- `SharedInfoCache`, with ``memcache_servers`` in ``[filter:cache]``: memcached, which every
  proxy of the cluster reads and writes, behind a short-lived layer in this process's memory
  (``local_ttl``, 1 s by default) so that a hot container costs one memcached round trip a
  second, not one per request.

The hot path stays synchronous: `IInfoCache.get` answers from this process's memory at once
(no Deferred), and only a miss there asks `IInfoCache.fetch`, which goes to memcached.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import attrs
from twisted.internet.defer import Deferred, succeed
from zope.interface import Interface, implementer

from txstore.interfaces import IMemcache


class IInfoCache(Interface):
    def get(key: str) -> Any:
        """The value held in this process, or None: answered at once, no I/O."""

    def fetch(key: str) -> Deferred:
        """
        After a miss of `get`: a Deferred of the value held where the proxies share it
        (memcached), or None when absent or unreachable (never a failure).
        """

    def set(key: str, value: Any, ttl: float) -> None:
        """Cache ``value`` for ``ttl`` seconds."""

    def delete(key: str) -> None:
        """Forget ``key`` (after a write changed what it described), everywhere it is shared."""


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

    def fetch(self, key: str) -> Deferred:
        return succeed(None)  # nothing is held beyond this process

    def set(self, key: str, value: Any, ttl: float) -> None:
        self._entries[key] = (self._clock() + ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def delete(self, key: str) -> None:
        self._entries.pop(key, None)


class AttrsCodec:
    """
    Values of the given attrs classes to JSON and back: ``{"t": class name, "v": fields}``
    (the info records hold only text, numbers, None and dicts of text). An entry that names
    no known class, or fields the class no longer has, reads as a miss.
    """

    def __init__(self, classes: Iterable[type]) -> None:
        self._classes = {cls.__name__: cls for cls in classes}

    def encode(self, value: Any) -> dict[str, Any]:
        return {"t": type(value).__name__, "v": attrs.asdict(value, recurse=False)}

    def decode(self, data: Any) -> Any:
        try:
            return self._classes[data["t"]](**data["v"])
        except (KeyError, TypeError):
            return None


@implementer(IInfoCache)
class SharedInfoCache:
    """
    Info in memcached, shared by every proxy, with this process's memory in front for
    ``local_ttl`` seconds. A write through any proxy deletes the entry from memcached and from
    that proxy's memory, so every other proxy reads the new info within ``local_ttl``. Writes
    to memcached are not waited for (their failures are logged by the client); memcached gone,
    every miss goes to the nodes as with one proxy, and the local layer still spares the
    repeats within ``local_ttl``.
    """

    def __init__(self, memcache: IMemcache, local: InMemoryInfoCache, codec: AttrsCodec,
                 local_ttl: float = 1.0) -> None:
        self.memcache, self.local, self.codec, self.local_ttl = memcache, local, codec, local_ttl

    def get(self, key: str) -> Any:
        return self.local.get(key)

    def fetch(self, key: str) -> Deferred:
        return self.memcache.get(key).addCallback(self._fetched, key)

    def _fetched(self, data: Any, key: str) -> Any:
        if data is None:
            return None
        value = self.codec.decode(data)
        if value is not None:
            self.local.set(key, value, self.local_ttl)
        return value

    def set(self, key: str, value: Any, ttl: float) -> None:
        self.local.set(key, value, min(ttl, self.local_ttl))
        self.memcache.set(key, self.codec.encode(value), ttl)

    def delete(self, key: str) -> None:
        self.local.delete(key)
        self.memcache.delete(key)
