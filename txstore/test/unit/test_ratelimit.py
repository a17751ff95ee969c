"""
ratelimit on a `Clock`: requests spaced by their rate (waits are reactor delays), bursts after
a quiet spell, 498 past max_sleep_time_seconds (the refused request not counted), account and
container limits (interpolated by size) and listing limits, allow and deny lists and the
account's global-write sysmeta, reads untouched, a store that fails letting requests through,
/info. Then one conformance suite for `IRateCounters`, run here against the in-memory counters
and in `txstore.test.integration.test_memcached` against memcached.
"""

from __future__ import annotations

import time

from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from txstore.interfaces import IRateCounters
from txstore.middleware.ratelimit import (
    OPTIONS, PATTERNS, Limits, MemoryCounters, RateLimit, info_of,
)
from txstore.proxy.controllers.base import AccountInfo, ContainerInfo
from txstore.proxy.messages import HeaderMap, SwiftRequest, SwiftResponse

A = "/v1/AUTH_a"
START = 1_800_000_000.0


def settings(**overrides) -> dict:
    found = {option.name: option.default for option in OPTIONS}
    found.update(overrides)
    for name in overrides:
        assert name in found or any(p.matches(name) for p in PATTERNS), name
    return found


class Answering:
    """The pipeline below: answers every request at once and counts them."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, request: SwiftRequest):
        self.seen.append((request.method, request.path))
        return succeed(SwiftResponse.empty(201 if request.method == "PUT" else 204))


class Case(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.app = Answering()
        self.object_counts: dict[str, int] = {}
        self.account_sysmeta: dict[str, str] = {}
        self.build()

    def build(self, **overrides) -> None:
        async def containers(request, account, container):
            return ContainerInfo(200, object_count=self.object_counts.get(container, 0))

        async def accounts(request, account):
            return AccountInfo(204, dict(self.account_sysmeta))

        self.counters = MemoryCounters(self.clock.seconds)
        self.limiter = RateLimit(self.app, settings(**overrides), self.counters, containers, accounts, self.clock)

    def send(self, method: str, path: str) -> Deferred:
        """The answer's Deferred; ``.answer`` holds the answer once it came."""
        sent = ensureDeferred(_call(self.limiter, SwiftRequest(method, path, HeaderMap(), trans_id="tx")))
        sent.answer = None

        def came(response):
            sent.answer = response
            return response
        sent.addCallback(came)
        return sent

    def statuses(self, pending: list[Deferred]) -> list[int | None]:
        return [d.answer.status if d.answer is not None else None for d in pending]


async def _call(app, request):
    return await app(request)


class LimiterTests(Case):
    def test_requests_are_spaced_by_the_rate(self) -> None:
        self.build(account_ratelimit=2.0)  # container PUT/DELETE: 2 per second
        pending = [self.send("PUT", f"{A}/c{n}") for n in range(4)]
        self.assertEqual(self.statuses(pending), [201, None, None, None])
        self.clock.advance(0.5)
        self.assertEqual(self.statuses(pending), [201, 201, None, None])
        self.clock.advance(1.0)
        self.assertEqual(self.statuses(pending), [201, 201, 201, 201])
        # objects and reads are not limited by account_ratelimit
        self.assertEqual(self.statuses([self.send("PUT", f"{A}/c/o"), self.send("GET", f"{A}/c")]), [201, 204])

    def test_a_burst_after_a_quiet_spell_and_498_past_the_max_sleep(self) -> None:
        self.build(account_ratelimit=1.0, max_sleep_time_seconds=3.0, rate_buffer_seconds=5)
        pending = [self.send("DELETE", f"{A}/c{n}") for n in range(3)]  # waits 0, 1, 2 s
        refused = self.send("DELETE", f"{A}/c3")  # would wait 3 s: refused at once
        response = refused.answer
        self.assertEqual((response.status, response.body), (498, b"Slow down"))
        self.clock.advance(2)
        self.assertEqual(self.statuses(pending), [204, 204, 204])
        self.assertEqual(len(self.app.seen), 3)  # the refused one never went down
        self.assertEqual(self.statuses([self.send("DELETE", f"{A}/c4")]), [None])  # its slot was given back
        self.clock.advance(1)
        # after a long quiet spell the next requests go at once again
        self.clock.advance(60)
        self.assertEqual(self.statuses([self.send("PUT", f"{A}/x")]), [201])

    def test_container_limits_by_size(self) -> None:
        self.build(container_ratelimit_10=4.0, container_ratelimit_100=1.0)
        limits = Limits(settings(container_ratelimit_10=4.0, container_ratelimit_100=1.0), "container_ratelimit_")
        self.assertEqual([limits.rate(size) for size in (0, 9, 10, 40, 100, 10 ** 6)], [None, None, 4.0, 3.0, 1.0, 1.0])
        self.object_counts.update(small=5, big=1000)
        pending = [self.send("PUT", f"{A}/small/o{n}") for n in range(3)]
        self.assertEqual(self.statuses(pending), [201, 201, 201])
        pending = [self.send(method, f"{A}/big/o") for method in ("PUT", "POST", "DELETE")]
        self.assertEqual(self.statuses(pending), [201, None, None])
        self.clock.advance(2)
        self.assertEqual(self.statuses(pending), [201, 204, 204])
        self.assertEqual(self.statuses([self.send("GET", f"{A}/big/o")]), [204])

    def test_listing_limits(self) -> None:
        self.build(container_listing_ratelimit_1=1.0)
        self.object_counts["c"] = 3
        pending = [self.send("GET", f"{A}/c") for _ in range(2)] + [self.send("GET", f"{A}/c/o")]
        self.assertEqual(self.statuses(pending), [204, None, 204])
        self.clock.advance(1)
        self.assertEqual(self.statuses(pending), [204, 204, 204])

    def test_lists_and_the_accounts_own_setting(self) -> None:
        self.build(account_ratelimit=1.0, account_whitelist=frozenset({"AUTH_a"}),
                   account_blacklist=frozenset({"AUTH_bad"}))
        self.assertEqual(self.statuses([self.send("PUT", f"{A}/c{n}") for n in range(5)]), [201] * 5)
        refused = self.send("GET", "/v1/AUTH_bad/c/o")
        self.assertNoResult(refused)  # Swift's one-second delay first
        self.clock.advance(1)
        response = refused.answer
        self.assertEqual((response.status, response.body), (497, b"Your account has been blacklisted"))
        self.build(account_ratelimit=1.0)
        self.account_sysmeta["global-write-ratelimit"] = "WHITELIST"
        self.assertEqual(self.statuses([self.send("PUT", f"{A}/c{n}") for n in range(3)]), [201] * 3)
        self.account_sysmeta["global-write-ratelimit"] = "BLACKLIST"
        refused = self.send("POST", f"{A}/c/o")
        self.clock.advance(1)
        self.assertEqual(refused.answer.status, 497)
        self.account_sysmeta["global-write-ratelimit"] = "0.5"
        pending = [self.send("POST", f"{A}/c/o{n}") for n in range(2)]
        self.assertEqual(self.statuses(pending), [204, None])
        self.clock.advance(2)
        self.assertEqual(self.statuses(pending), [204, 204])

    def test_reads_and_other_paths_are_not_touched(self) -> None:
        self.build(account_ratelimit=1.0, container_ratelimit_0=1.0)
        for method, path in (("GET", f"{A}/c/o"), ("HEAD", f"{A}/c"), ("GET", A), ("GET", "/info"),
                             ("PUT", "/auth/v1.0")):
            request = SwiftRequest(method, path, HeaderMap(), trans_id="tx")
            self.assertIsInstance(self.limiter(request), Deferred)  # the stage below's own answer
        self.assertEqual(self.counters._values, {})

    def test_counters_that_fail_let_requests_through(self) -> None:
        class Broken:
            def incr(self, key, delta, ttl, initial=None):
                return fail(ConnectionRefusedError())

        self.build(account_ratelimit=1.0)
        self.limiter.counters = Broken()
        self.assertEqual(self.statuses([self.send("PUT", f"{A}/c{n}") for n in range(3)]), [201] * 3)
        self.flushLoggedErrors(ConnectionRefusedError)

    def test_a_request_given_up_while_counting_goes_no_further(self) -> None:
        # Its client went away while memcached was asked: that is no counter failure, and the
        # request must not go on down the pipeline as if it had been let through.
        class Waiting:
            def incr(self, key, delta, ttl, initial=None):
                return Deferred()

        self.build(account_ratelimit=1.0)
        self.limiter.counters = Waiting()
        sent = self.send("PUT", f"{A}/c")
        sent.cancel()
        self.failureResultOf(sent, CancelledError)
        self.assertEqual(self.app.seen, [])

    def test_info(self) -> None:
        self.assertEqual(info_of(settings(account_ratelimit=2.0, container_ratelimit_10=4.0,
                                          container_listing_ratelimit_0=5.0)),
                         {"account_ratelimit": 2.0, "max_sleep_time_seconds": 60.0,
                          "container_ratelimits": [[10, 4.0]], "container_listing_ratelimits": [[0, 5.0]]})


class CountersConformance:
    """What every `IRateCounters` does (run against each implementation)."""

    counters: IRateCounters

    async def test_increment_set_and_decrement(self) -> None:
        self.assertTrue(verifyObject(IRateCounters, self.counters))
        key = f"ratelimit/AUTH_x/{time.time()}"
        self.assertEqual(await self.counters.incr(key, 5, 60), 5)
        self.assertEqual(await self.counters.incr(key, 7, 60), 12)
        await self.counters.set(key, 1000, 60)
        self.assertEqual(await self.counters.incr(key, 1, 60), 1001)
        self.assertEqual(await self.counters.decr(key, 1, 60), 1000)
        self.assertEqual(await self.counters.decr(key + "-missing", 1, 60), 0)
        other = key + "/other"
        self.assertEqual(await self.counters.incr(other, 3, 60), 3)  # keys apart
        fresh = key + "/fresh"
        self.assertEqual(await self.counters.incr(fresh, 3, 60, 1000), 1000)  # created at initial
        self.assertEqual(await self.counters.incr(fresh, 3, 60, 1000), 1003)


class MemoryCountersTests(CountersConformance, TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.counters = MemoryCounters(self.clock.seconds)

    async def test_keys_expire(self) -> None:
        await self.counters.incr("k", 5, 10)
        self.clock.advance(11)
        self.assertEqual(await self.counters.incr("k", 1, 10), 1)
        for n in range(3000):
            await self.counters.incr(f"idle{n}", 1, 10)
        self.clock.advance(11)
        for n in range(5000):
            await self.counters.incr(f"new{n}", 1, 10)
        self.assertLessEqual(len(self.counters._values), 5000)  # the idle ones were swept
