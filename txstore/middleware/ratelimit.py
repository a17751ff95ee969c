# -*- test-case-name: txstore.test.unit.test_ratelimit -*-
"""
ratelimit: Swift's rate limits on writes, so that one account or one busy container cannot
swamp the cluster's databases.

What is limited (requests per second), as Swift's ``ratelimit``:

- ``account_ratelimit``: container PUT and DELETE in an account;
- ``container_ratelimit_<size>``: object PUT, DELETE, POST and COPY in a container holding at
  least ``<size>`` objects (between two sizes the rate is interpolated on the line between
  their rates; an empty container is not limited);
- ``container_listing_ratelimit_<size>``: container GETs (listings), likewise;
- an account's ``X-Account-Sysmeta-Global-Write-Ratelimit``: all its writes (a number), or
  ``WHITELIST`` / ``BLACKLIST``;
- ``account_whitelist`` is never limited; ``account_blacklist`` is refused with ``497`` (after a
  1 s delay, as Swift).

The limiter is Swift's: each key keeps the running time (in 1/``clock_accuracy`` s) at which
its next request is due, advanced by ``1/rate`` per request with one atomic increment; a
request due later than now sleeps the difference (a reactor delay, never a blocking sleep), up
to ``rate_buffer_seconds`` of burst is let through at once after a quiet spell, and a request
that would sleep ``max_sleep_time_seconds`` or more is refused at once with ``498 Slow down``
(its increment taken back). The counters are an `IRateCounters`: in the proxy's memory
(`MemoryCounters`), or in memcached (`MemcachedCounters`: the proxy's ``[filter:cache]``
``memcache_servers``, or this filter's own) so that every proxy counts together. A store that cannot be reached lets requests through (logged), as
Swift's does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.task import deferLater
from twisted.logger import Logger
from zope.interface import implementer

from txstore.common import config as c
from txstore.common.memcache import ClosedAtStop, MemcacheClient, servers
from txstore.common.paths import BadPath
from txstore.interfaces import IApp, IMemcache, IRateCounters
from txstore.middleware.base import CachedContainers, Middleware
from txstore.proxy.messages import HeaderMap, SwiftRequest, SwiftResponse

log = Logger()

HANDLED = "swift.ratelimit.handled"
WRITES = frozenset({"PUT", "DELETE", "POST", "COPY"})
BLACKLIST_DELAY = 1.0
CONTAINER_PREFIX, LISTING_PREFIX = "container_ratelimit_", "container_listing_ratelimit_"
GLOBAL_SYSMETA = "global-write-ratelimit"


def names(raw: str, _base: Any) -> frozenset[str]:
    return frozenset(n.strip() for n in raw.split(",") if n.strip())


OPTIONS = (
    c.Option("clock_accuracy", c.integer(1), 1000, doc="Ticks per second the limiter counts in."),
    c.Option("max_sleep_time_seconds", c.number(0), 60.0,
             doc="A request that would wait this long or longer is refused (498)."),
    c.Option("log_sleep_time_seconds", c.number(0), 0.0, doc="Log waits longer than this (0: none)."),
    c.Option("rate_buffer_seconds", c.integer(0), 5, doc="Seconds of burst let through after a quiet spell."),
    c.Option("account_ratelimit", c.number(0), 0.0, doc="Container PUT/DELETE per second per account (0: off)."),
    c.Option("account_whitelist", names, frozenset(), doc="Accounts never limited, comma-separated."),
    c.Option("account_blacklist", names, frozenset(), doc="Accounts refused (497), comma-separated."),
    c.Option("memcache_servers", servers, (),
             doc="memcached host:port to keep the counters in, shared by every proxy (empty: the proxy's"
                 " [filter:cache] memcache_servers, else this proxy's memory)."),
)
PATTERNS = (
    c.Pattern(r"container_ratelimit_\d+", c.number(0), doc="Object writes per second for containers of this size."),
    c.Pattern(r"container_listing_ratelimit_\d+", c.number(0), doc="Listings per second for containers of this size."),
)


class Limits:
    """Rates by container size: Swift's interpolation between the configured sizes."""

    def __init__(self, settings: Mapping[str, Any], prefix: str) -> None:
        self.points = sorted((int(name[len(prefix):]), float(rate)) for name, rate in settings.items()
                             if re.fullmatch(re.escape(prefix) + r"\d+", name))

    def rate(self, size: int) -> float | None:
        """The rate for a container of ``size`` objects; None: not limited."""
        if not size:
            return None
        found = None
        for at, (point, rate) in enumerate(self.points):
            if size < point:
                break
            if at + 1 < len(self.points):
                next_point, next_rate = self.points[at + 1]
                found = rate + (size - point) * (next_rate - rate) / (next_point - point)
            else:
                found = rate
        return found or None

    def info(self) -> list[list[float]]:
        return [[point, rate] for point, rate in self.points]


class SleepTooLong(Exception):
    """The request would wait max_sleep_time_seconds or more."""


@implementer(IRateCounters)
class MemoryCounters:
    """Counters in this proxy's memory: each key forgotten ``ttl`` seconds after its last change."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._values: dict[str, tuple[int, float]] = {}
        self._sweep_at = 1024

    def _current(self, key: str, now: float) -> int | None:
        held = self._values.get(key)
        if held is None or held[1] <= now:
            return None
        return held[0]

    def _store(self, key: str, value: int, now: float, ttl: float) -> int:
        self._values[key] = (value, now + ttl)
        if len(self._values) > self._sweep_at:  # drop the expired, so idle keys cost nothing
            self._values = {k: v for k, v in self._values.items() if v[1] > now}
            self._sweep_at = max(1024, 2 * len(self._values))
        return value

    def incr(self, key: str, delta: int, ttl: float, initial: int | None = None) -> Deferred:
        now = self.clock()
        current = self._current(key, now)
        value = (delta if initial is None else initial) if current is None else current + delta
        return succeed(self._store(key, value, now, ttl))

    def decr(self, key: str, delta: int, ttl: float) -> Deferred:
        now = self.clock()
        return succeed(self._store(key, max(0, (self._current(key, now) or 0) - delta), now, ttl))

    def set(self, key: str, value: int, ttl: float) -> Deferred:
        now = self.clock()
        self._store(key, value, now, ttl)
        return succeed(None)


@implementer(IRateCounters)
class MemcachedCounters:
    """
    Counters in memcached (Swift's choice for sharing them among proxies), through the proxy's
    memcached client (`txstore.common.memcache`: keys spread over the servers by a hash ring,
    every exchange timed out); a counter that cannot be reached fails its Deferred.
    """

    def __init__(self, memcache: IMemcache) -> None:
        self.memcache = memcache

    def incr(self, key: str, delta: int, ttl: float, initial: int | None = None) -> Deferred:
        return self.memcache.incr(key, delta, ttl, initial)

    def decr(self, key: str, delta: int, ttl: float) -> Deferred:
        return self.memcache.decr(key, delta, ttl)

    def set(self, key: str, value: int, ttl: float) -> Deferred:
        return self.memcache.set(key, value, ttl)


@implementer(IApp)
class RateLimit:
    def __init__(self, app, settings: Mapping[str, Any], counters, containers, accounts, reactor) -> None:
        self.app = app
        self.counters = counters
        self.containers, self.accounts = containers, accounts
        self.reactor = reactor
        self.accuracy = settings["clock_accuracy"]
        self.max_sleep = settings["max_sleep_time_seconds"]
        self.log_sleep = settings["log_sleep_time_seconds"]
        self.buffer = settings["rate_buffer_seconds"]
        self.account_rate = settings["account_ratelimit"]
        self.whitelist, self.blacklist = settings["account_whitelist"], settings["account_blacklist"]
        self.container_limits = Limits(settings, CONTAINER_PREFIX)
        self.listing_limits = Limits(settings, LISTING_PREFIX)
        self.ttl = self.max_sleep + self.buffer + 60  # past it, a key would be reset anyway

    def __call__(self, request: SwiftRequest):
        if request.environ.get(HANDLED):
            return self.app(request)
        try:
            version, account, container, obj = request.split(1, 4)
        except BadPath:
            return self.app(request)
        if version != "v1" or not account:
            return self.app(request)
        if account in self.blacklist:
            return self._blacklisted(request, account)
        if account in self.whitelist:
            return self.app(request)
        method = request.method
        if method not in WRITES and not (method == "GET" and container and obj is None and self.listing_limits.points):
            return self.app(request)  # reads are never limited: no cost for them
        return self._limited(request, account, container, obj)

    async def _blacklisted(self, request: SwiftRequest, account: str) -> SwiftResponse:
        log.error("{trans_id}: returning 497 because of blacklisting: {account}", trans_id=request.trans_id,
                  account=account)
        request.discard_body()
        await deferLater(self.reactor, BLACKLIST_DELAY, lambda: None)
        return _text(497, "Your account has been blacklisted")

    async def _keys(self, request: SwiftRequest, account: str, container: str | None,
                    obj: str | None) -> list[tuple[str, float]] | SwiftResponse:
        method = request.method
        keys: list[tuple[str, float]] = []
        if self.account_rate and container and obj is None and method in ("PUT", "DELETE"):
            keys.append((f"ratelimit/{account}", self.account_rate))
        if container and obj is not None and method in WRITES and self.container_limits.points:
            rate = self.container_limits.rate((await self.containers(request, account, container)).object_count)
            if rate:
                keys.append((f"ratelimit/{account}/{container}", rate))
        if container and obj is None and method == "GET" and self.listing_limits.points:
            rate = self.listing_limits.rate((await self.containers(request, account, container)).object_count)
            if rate:
                keys.append((f"ratelimit_listing/{account}/{container}", rate))
        if method in WRITES:
            value = ((await self.accounts(request, account)).sysmeta.get(GLOBAL_SYSMETA) or "").strip()
            if value.upper() == "BLACKLIST":
                return await self._blacklisted(request, account)
            if value.upper() == "WHITELIST":
                return []
            try:
                rate = float(value) if value else 0.0
            except ValueError:
                rate = 0.0
            if rate > 0:
                keys.append((f"ratelimit/global-write/{account}", rate))
        return keys

    async def _limited(self, request: SwiftRequest, account: str, container: str | None,
                       obj: str | None) -> SwiftResponse:
        request.environ[HANDLED] = True
        keys = await self._keys(request, account, container, obj)
        if isinstance(keys, SwiftResponse):
            return keys
        for key, rate in keys:
            try:
                wait = await self._wait_for(key, rate)
            except SleepTooLong as err:
                log.error("{trans_id}: returning 498 for {method} to {path}: ratelimit (max sleep) {error}",
                          trans_id=request.trans_id, method=request.method, path=request.decoded_path, error=err)
                request.discard_body()
                return _text(498, "Slow down")
            except CancelledError:
                raise  # the client went away: nothing to let through
            except Exception:
                log.failure("{trans_id}: ratelimit counters unreachable; not limiting", trans_id=request.trans_id)
                continue
            if self.log_sleep and wait > self.log_sleep:
                log.warn("{trans_id}: ratelimit sleep {wait:.3f}s for {path}", trans_id=request.trans_id, wait=wait,
                         path=request.decoded_path)
            if wait > 0:
                await deferLater(self.reactor, wait, lambda: None)
        return await self.app(request)

    async def _wait_for(self, key: str, rate: float) -> float:
        """Seconds the next request of ``key`` waits (Swift's running-time arithmetic)."""
        now = int(round(self.reactor.seconds() * self.accuracy))
        per_request = int(round(self.accuracy / rate))
        # A new key starts at now (created atomically: requests arriving together over several
        # proxies queue up behind the first instead of each resetting it, as Swift's would).
        running = await self.counters.incr(key, per_request, self.ttl, now + per_request)
        wait = 0
        if now - running > self.buffer * self.accuracy:
            await self.counters.set(key, now + per_request, self.ttl)
        else:
            wait = max(running - now - per_request, 0)
        if self.max_sleep * self.accuracy - wait <= self.accuracy * 0.01:
            await self.counters.decr(key, per_request, self.ttl)
            raise SleepTooLong(f"Max Sleep Time Exceeded: {wait / self.accuracy:.2f}")
        return wait / self.accuracy


def _text(status: int, body: str) -> SwiftResponse:
    return SwiftResponse(status, HeaderMap({"Content-Type": "text/plain"}), body.encode("utf-8"))


class CachedAccounts:
    """The proxy's cached account info, as a callable (tests give a fake)."""

    def __init__(self, context) -> None:
        self.context = context

    async def __call__(self, request: SwiftRequest, account: str):
        from txstore.proxy.controllers.base import account_info  # the middlewares import the proxy late

        return await account_info(self.context, account, request.trans_id)


def info_of(settings: Mapping[str, Any]) -> dict[str, Any]:
    """What ``/info`` lists under ``ratelimit``, as Swift does."""
    return {"account_ratelimit": settings["account_ratelimit"],
            "max_sleep_time_seconds": settings["max_sleep_time_seconds"],
            "container_ratelimits": Limits(settings, CONTAINER_PREFIX).info(),
            "container_listing_ratelimits": Limits(settings, LISTING_PREFIX).info()}


def _build(app, settings: dict[str, Any], proxy) -> RateLimit:
    proxy.info.register("ratelimit", **info_of(settings))
    reactor = proxy.reactor
    if settings["memcache_servers"]:  # this filter's own servers (before the proxy had [filter:cache])
        counters = MemcachedCounters(MemcacheClient(reactor, settings["memcache_servers"]))
        proxy.background.append(ClosedAtStop(counters.memcache))
    elif proxy.context.memcache is not None:  # the proxy's, as Swift's ratelimit takes swift.cache
        counters = MemcachedCounters(proxy.context.memcache)
    else:
        counters = MemoryCounters(reactor.seconds)
    return RateLimit(app, settings, counters, CachedContainers(proxy.context), CachedAccounts(proxy.context),
                     reactor)


middleware = Middleware("ratelimit", _build, options=OPTIONS, patterns=PATTERNS)
