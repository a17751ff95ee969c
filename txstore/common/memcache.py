# -*- test-case-name: txstore.test.unit.test_memcache -*-
"""
The proxy's memcached client: what several proxies (or workers) of one cluster share, as
Swift's proxies share it: account and container info, tempauth's tokens, ratelimit's counters.

Twisted's own protocol (`twisted.protocols.memcache.MemCacheProtocol`) speaks to each server
over one connection, requests pipelined on it. Keys are spread over the servers by a hash ring
with virtual points (`HashRing`, as ketama: each server at ``POINTS`` places on the ring, a key
served by the first server after its place), so adding or removing a server moves only the
keys that land on it. A key is sent as the md5 of its text (Swift's choice: any text, always a
valid memcached key); a value as JSON with flags 2 (Swift's JSON flag), never pickle.

Failures, as Swift's ``MemcacheRing``:

- every exchange has a deadline: ``connect_timeout`` for a connection, ``io_timeout`` for an
  answer (a connection that gives none in time is dropped and made again on the next call);
- a server with ``error_limit`` failures within ``error_interval`` seconds is left alone for
  ``error_interval`` seconds: calls go straight to the next server of the key on the ring, or
  answer at once when there is none (at most ``tries`` servers are asked per call); after it
  the next call connects again;
- reads and writes never fail to the caller: ``get`` answers None (a miss; ``unreachable``
  when no server could be asked), ``set`` and ``delete`` False, each failure logged. A
  server that answers with an error (a value over its item size) has not failed: only that
  call is refused. Counters
  (``incr``, ``decr``) fail with `MemcacheUnavailable`, so a caller knows it counted nothing
  (ratelimit then lets the request through).
- a call its caller cancels (a request whose client went away) fails with ``CancelledError``
  and is no failure of the server: the connection other calls wait on stays.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from collections.abc import Callable, Iterator
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint, connectProtocol
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.protocols.memcache import ClientError, MemCacheProtocol, NoSuchCommand, ServerError
from zope.interface import implementer

from txstore.common import config as c
from txstore.interfaces import IMemcache

Server = tuple[str, int]

POINTS = 160  # ring points per server: ketama's 160 keep each server's share within a few per cent
JSON_FLAG = 2  # Swift's flag for a JSON value
MAX_RELATIVE_TTL = 30 * 24 * 3600  # memcached takes a longer expiry as a Unix time
CONNECT_TIMEOUT = 0.3  # Swift's defaults
IO_TIMEOUT = 2.0
ERROR_LIMIT = 10
ERROR_INTERVAL = 60.0
TRIES = 3


class MemcacheUnavailable(Exception):
    """No memcached server of the key answered."""


def servers(raw: str, _base: Any = None) -> tuple[Server, ...]:
    """``host:port[, host:port ...]`` (``[v6]:port`` for IPv6), as Swift's ``memcache_servers``."""
    found = []
    for item in raw.replace(",", " ").split():
        host, _, port = item.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise c.BadValue(f"{item!r} is not host:port")
        if not (isIPAddress(host) or isIPv6Address(host)):
            try:
                host.encode("idna")
            except UnicodeError:
                raise c.BadValue(f"{host!r} is not a host name") from None
        found.append((host, int(port)))
    if len(set(found)) != len(found):
        raise c.BadValue("a server is named twice")
    return tuple(found)


def _point(text: bytes) -> int:
    return int.from_bytes(hashlib.md5(text).digest()[:4], "big")


class HashRing:
    """Servers placed ``points`` times each on a 32-bit ring; a key goes to the next one."""

    def __init__(self, servers: tuple[Server, ...], points: int = POINTS) -> None:
        placed = sorted((_point(f"{host}:{port}-{n}".encode()), (host, port))
                        for host, port in servers for n in range(points))
        self._places = [place for place, _ in placed]
        self._servers = [server for _, server in placed]
        self._count = len(set(servers))

    def servers_for(self, digest: bytes) -> Iterator[Server]:
        """The servers of a key (its md5 ``digest``) in the order to try them, each once."""
        if not self._servers:
            return
        at = bisect.bisect(self._places, int.from_bytes(digest[:4], "big"))
        seen: set[Server] = set()
        for n in range(len(self._servers)):
            server = self._servers[(at + n) % len(self._servers)]
            if server not in seen:
                seen.add(server)
                yield server
                if len(seen) == self._count:
                    return


class _Protocol(MemCacheProtocol):
    """Twisted's protocol, its timer on our clock, with a Deferred that fires when it is closed."""

    def __init__(self, reactor, timeout: float) -> None:
        super().__init__(timeOut=timeout)
        self.callLater = reactor.callLater
        self.closed: Deferred = Deferred()

    def connectionLost(self, reason) -> None:
        self.setTimeout(None)  # Twisted's leaves the answer timer running when requests were pending
        super().connectionLost(reason)
        self.closed.callback(None)


class _Health:
    """One server's connection and recent failures."""

    def __init__(self) -> None:
        self.protocol: _Protocol | None = None
        self.connecting: Deferred | None = None
        self.waiters: list[Deferred] | None = None  # callers waiting for ``connecting``
        self.errors: list[float] = []
        self.last_error: Exception | None = None
        self.down_until = 0.0


def _endpoint(reactor, host: str, port: int, timeout: float):
    if isIPAddress(host):
        return TCP4ClientEndpoint(reactor, host, port, timeout=timeout)
    if isIPv6Address(host):
        return TCP6ClientEndpoint(reactor, host, port, timeout=timeout)
    return HostnameEndpoint(reactor, host.encode("idna"), port, timeout=timeout)


@implementer(IMemcache)
class MemcacheClient:
    """memcached over ``servers``; see the module's docstring for how it fails."""

    log = Logger()

    def __init__(
        self, reactor, servers: tuple[Server, ...], *, connect_timeout: float = CONNECT_TIMEOUT,
        io_timeout: float = IO_TIMEOUT, error_limit: int = ERROR_LIMIT, error_interval: float = ERROR_INTERVAL,
        tries: int = TRIES, points: int = POINTS, endpoint_for: Callable[..., Any] = _endpoint,
    ) -> None:
        if not servers:
            raise ValueError("memcached needs at least one server")
        self.reactor = reactor
        self.servers = tuple(servers)
        self.connect_timeout, self.io_timeout = connect_timeout, io_timeout
        self.error_limit, self.error_interval, self.tries = error_limit, error_interval, tries
        self.ring = HashRing(self.servers, points)
        self._endpoint_for = endpoint_for
        self._health = {server: _Health() for server in self.servers}
        self._closed = False  # after `close`: calls miss at once instead of connecting again

    # -- what callers use ---------------------------------------------------------------------

    def get(self, key: str, unreachable: Any = None) -> Deferred:
        """The value of ``key``; None when absent (or not JSON), ``unreachable`` when no server answered."""
        return Deferred.fromCoroutine(self._get(key, unreachable))

    def set(self, key: str, value: Any, ttl: float) -> Deferred:
        """Store ``value`` (JSON) for ``ttl`` seconds: True, or False when no server took it (logged)."""
        data = json.dumps(value, separators=(",", ":")).encode()
        return Deferred.fromCoroutine(self._quiet(
            "set", key, lambda p, name: p.set(name, data, flags=JSON_FLAG, expireTime=self._expiry(ttl))))

    def delete(self, key: str) -> Deferred:
        """Forget ``key``: True when it was there, False when not or when no server answered (logged)."""
        return Deferred.fromCoroutine(self._quiet("delete", key, lambda p, name: p.delete(name)))

    def incr(self, key: str, delta: int, ttl: float, initial: int | None = None) -> Deferred:
        """
        Add ``delta`` to a counter: its new value. A missing counter is created at ``initial``
        (``delta`` when None) for ``ttl`` seconds, by memcached's ``add`` so that of several
        callers at once only one creates it. Fails with `MemcacheUnavailable`.
        """
        return Deferred.fromCoroutine(self._incr(key, delta, ttl, initial))

    def decr(self, key: str, delta: int, ttl: float) -> Deferred:
        """Take ``delta`` from a counter (not below 0; a missing one is 0). Fails with `MemcacheUnavailable`."""
        return Deferred.fromCoroutine(self._call(key, self._decr_on(delta)))

    def close(self) -> Deferred:
        """Drop every connection, and make none after (a write still in flight at stop); fires once they are closed."""
        self._closed = True
        waits = []
        for health in self._health.values():
            if health.connecting is not None:
                health.connecting.cancel()
            if health.protocol is not None and not health.protocol._disconnected:
                waits.append(health.protocol.closed)
                health.protocol.transport.loseConnection()
            health.protocol = None
        return defer.gatherResults(waits).addCallback(lambda _: None)

    def is_down(self, server: Server) -> bool:
        """Whether ``server`` is being left alone after too many failures."""
        return self._health[server].down_until > self.reactor.seconds()

    # -- the exchanges -----------------------------------------------------------------------

    async def _get(self, key: str, unreachable: Any) -> Any:
        try:
            found = await self._call(key, lambda p, name: p.get(name))
        except MemcacheUnavailable:
            return unreachable
        data = found[1]
        if data is None:
            return None
        try:
            return json.loads(data)
        except ValueError:
            self.log.warn("memcached: the value of {key!r} is not JSON; taken as a miss", key=key)
            return None

    async def _quiet(self, what: str, key: str, action) -> bool:
        try:
            return bool(await self._call(key, action))
        except MemcacheUnavailable as err:
            self.log.warn("memcached: {what} {key!r} not done: {error}", what=what, key=key, error=err)
            return False

    async def _incr(self, key: str, delta: int, ttl: float, initial: int | None) -> int:
        start = delta if initial is None else initial

        async def increment(protocol, name: bytes) -> int:
            for _ in range(3):
                value = await protocol.increment(name, delta)
                if value is not False:
                    return int(value)
                if await protocol.add(name, b"%d" % start, expireTime=self._expiry(ttl)):
                    return start
            raise MemcacheUnavailable(f"the counter {key!r} kept appearing and vanishing")

        return await self._call(key, increment)

    @staticmethod
    def _decr_on(delta: int):
        async def decrement(protocol, name: bytes) -> int:
            value = await protocol.decrement(name, delta)
            return 0 if value is False else int(value)

        return decrement

    async def _call(self, key: str, action) -> Any:
        """``action(protocol, name)`` on the first server of ``key`` that answers (at most ``tries``)."""
        if self._closed:
            raise MemcacheUnavailable("the client is closed")
        digest = hashlib.md5(key.encode("utf-8", "surrogateescape")).digest()
        name = digest.hex().encode()
        last: Exception | None = None
        tried = 0
        for server in self.ring.servers_for(digest):
            if tried >= self.tries:
                break
            if self.is_down(server):
                continue
            tried += 1
            try:
                protocol = await self._connection(server)
                return await _timed(action(protocol, name), self.io_timeout, self.reactor)
            except (ClientError, ServerError, NoSuchCommand) as err:  # it answered, with a refusal
                raise MemcacheUnavailable(f"memcached {server[0]}:{server[1]} refused it: {err!r}") from None
            except defer.CancelledError:
                # Our caller gave up (its client went away): no failure of the server, and the
                # connection others wait on stays (a late answer is matched to its command).
                raise
            except Exception as err:  # refused, timed out, lost, or an answer we cannot read
                last = err
                self._failed(server, err)
        raise MemcacheUnavailable(f"no memcached server answered ({last or 'all marked down'})")

    async def _connection(self, server: Server) -> _Protocol:
        health = self._health[server]
        if health.protocol is not None and not health.protocol._disconnected:
            return health.protocol
        health.protocol = None
        waiter: Deferred = Deferred()
        if health.waiters is not None:  # a connection is on its way: wait for it with the others
            health.waiters.append(waiter)
            return await waiter
        # Made before a connection counts as on its way: one that cannot be made (a name IDNA
        # refuses) fails this call only, rather than leave later calls waiting for ever.
        endpoint = self._endpoint_for(self.reactor, server[0], server[1], self.connect_timeout)
        health.waiters = [waiter]
        health.connecting = connectProtocol(endpoint, _Protocol(self.reactor, self.io_timeout))
        health.connecting.addTimeout(self.connect_timeout, self.reactor)
        health.connecting.addBoth(self._connected, health)
        return await waiter

    @staticmethod
    def _connected(result, health: _Health) -> None:
        """Hand a connection (or why there is none) to every caller that waited for it."""
        waiters, health.waiters, health.connecting = health.waiters or [], None, None
        if isinstance(result, Failure) and result.check(defer.CancelledError):
            # `close` gave the attempt up: a miss for the waiters, not a cancellation of theirs
            result = Failure(MemcacheUnavailable("the client was closed while connecting"))
        if isinstance(result, _Protocol):
            health.protocol = result
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    def _failed(self, server: Server, error: Exception) -> None:
        health = self._health[server]
        if error is health.last_error:
            return  # one failed connection or exchange fails every call waiting on it: counted once
        health.last_error = error
        now = self.reactor.seconds()
        health.errors = [at for at in health.errors if at > now - self.error_interval] + [now]
        protocol = health.protocol
        if protocol is not None and not protocol._disconnected and _is_timeout(error):
            protocol.transport.loseConnection()  # no answer in time: the next call connects anew
        self.log.warn("memcached {host}:{port}: {error!r}", host=server[0], port=server[1], error=error)
        if len(health.errors) >= self.error_limit:
            health.errors = []
            health.down_until = now + self.error_interval
            self.log.error("memcached {host}:{port} left alone for {seconds:.0f} s after {count} failures",
                           host=server[0], port=server[1], seconds=self.error_interval, count=self.error_limit)

    def _expiry(self, ttl: float) -> int:
        seconds = max(1, int(-(-ttl // 1)))
        return seconds if seconds <= MAX_RELATIVE_TTL else int(self.reactor.seconds()) + seconds


def _is_timeout(error: Exception) -> bool:
    return isinstance(error, (defer.TimeoutError, TimeoutError))


async def _timed(result, timeout: float, reactor) -> Any:
    """Await a protocol call (a Deferred or a coroutine), failing past ``timeout``."""
    if not isinstance(result, Deferred):
        result = Deferred.fromCoroutine(result)
    return await result.addTimeout(timeout, reactor)


class ClosedAtStop(Service):
    """A service that closes a client's connections when the proxy stops."""

    def __init__(self, client: IMemcache) -> None:
        self.client = client

    def stopService(self):
        super().stopService()
        return self.client.close()
