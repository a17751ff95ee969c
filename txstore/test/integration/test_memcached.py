"""
The memcached client and the ratelimit counters against a real memcached (Debian's package,
started on a free port and stopped in cleanup; skipped without it): the conformance suites of
`txstore.test.unit.test_memcache` and `txstore.test.unit.test_ratelimit` (run there on the fakes),
expiry in whole seconds, two proxies sharing one server, a dead port a miss in time, a server
killed (SIGKILL) and started again, keys of a dead server handed to the other, refusals.
"""

from __future__ import annotations

import time

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from txstore.common.memcache import MemcacheClient, MemcacheUnavailable
from txstore.middleware.ratelimit import MemcachedCounters
from txstore.test.memcached_process import free_port, memcached_for
from txstore.test.unit.test_memcache import MemcacheConformance, owner
from txstore.test.unit.test_ratelimit import CountersConformance


def sleep(seconds: float) -> Deferred:
    return deferLater(reactor, seconds, lambda: None)


class RealMemcacheTests(MemcacheConformance, TestCase):
    def setUp(self) -> None:
        self.server = memcached_for(self)
        self.memcache = self.client()

    def client(self, *names, **options) -> MemcacheClient:
        client = MemcacheClient(reactor, names or (("127.0.0.1", self.server.port),), **options)
        self.addCleanup(client.close)
        return client

    async def test_shared_by_two_proxies(self) -> None:
        other = self.client()
        self.assertTrue(await self.memcache.set("shared", {"from": "a"}, 60))
        self.assertEqual(await other.get("shared"), {"from": "a"})
        self.assertEqual(await self.memcache.incr("n", 10, 60), 10)
        self.assertEqual(await other.incr("n", 10, 60), 20)

    async def test_expiry(self) -> None:
        self.assertTrue(await self.memcache.set("short", 1, 1))
        self.assertEqual(await self.memcache.get("short"), 1)
        await sleep(2.1)  # memcached counts whole seconds
        self.assertIsNone(await self.memcache.get("short"))

    async def test_a_dead_port_is_a_miss_in_time(self) -> None:
        gone = self.client(("127.0.0.1", free_port()), io_timeout=0.5)
        started = time.monotonic()
        self.assertIsNone(await gone.get("k"))
        self.assertIs(await gone.get("k", unreachable=gone), gone)
        self.assertFalse(await gone.set("k", 1, 60))
        self.assertFalse(await gone.delete("k"))
        with self.assertRaises(MemcacheUnavailable):
            await gone.incr("k", 1, 60)
        self.assertLess(time.monotonic() - started, 1.0)

    async def test_killed_then_started_again(self) -> None:
        client = self.client(error_limit=3, error_interval=1.0)
        self.assertTrue(await client.set("k", "v", 60))
        self.server.kill()
        started = time.monotonic()
        for _ in range(5):  # misses, never errors; after 3 failures the server is left alone
            self.assertIsNone(await client.get("k"))
            self.assertFalse(await client.set("k", "w", 60))
        self.assertLess(time.monotonic() - started, 1.0)
        self.assertTrue(client.is_down(("127.0.0.1", self.server.port)))
        self.server.start()
        self.assertIsNone(await client.get("k"))  # still left alone: not even asked
        await sleep(1.1)
        self.assertTrue(await client.set("k", "again", 60))  # connected anew
        self.assertEqual(await client.get("k"), "again")

    async def test_a_refusal_is_not_a_failure_of_the_server(self) -> None:
        client = self.client(error_limit=1)
        self.assertFalse(await client.set("big", "x" * (2 * 1024 * 1024), 60))  # over memcached's 1 MiB items
        self.assertFalse(client.is_down(("127.0.0.1", self.server.port)))
        self.assertTrue(await client.set("small", "x", 60))

    async def test_a_dead_server_of_two_hands_its_keys_to_the_other(self) -> None:
        dead = ("127.0.0.1", free_port())
        live = ("127.0.0.1", self.server.port)
        client = self.client(live, dead, error_limit=1)
        keys = [f"key{n}" for n in range(40)]
        theirs = [k for k in keys if owner(client.ring, k) == dead]
        self.assertTrue(theirs)  # both servers have keys
        for key in keys:
            self.assertTrue(await client.set(key, key, 60))
            self.assertEqual(await client.get(key), key)
        self.assertTrue(client.is_down(dead))
        client_one = self.client(live, tries=1, error_limit=1)
        self.assertEqual(await client_one.get(theirs[0]), theirs[0])  # kept on the live one

    async def test_counters_spread_keys_over_servers(self) -> None:
        second = memcached_for(self)
        pair = (("127.0.0.1", self.server.port), ("127.0.0.1", second.port))
        client = self.client(*pair)
        for n in range(40):
            self.assertEqual(await client.incr(f"c{n}", 1, 60), 1)
        alone = [self.client(server, tries=1) for server in pair]
        held = [sum([await a.get(f"c{n}") is not None for n in range(40)]) for a in alone]
        self.assertEqual(sum(held), 40)
        self.assertTrue(all(held), held)


class MemcachedCountersTests(CountersConformance, TestCase):
    def setUp(self) -> None:
        self.server = memcached_for(self)
        self.counters = MemcachedCounters(self.client(self.server.port))

    def client(self, port: int, **options) -> MemcacheClient:
        client = MemcacheClient(reactor, (("127.0.0.1", port),), **options)
        self.addCleanup(client.close)
        return client

    async def test_shared_by_two_proxies(self) -> None:
        other = MemcachedCounters(self.client(self.server.port))
        self.assertEqual(await self.counters.incr("shared", 10, 60), 10)
        self.assertEqual(await other.incr("shared", 10, 60), 20)

    async def test_an_unreachable_server_fails_in_time(self) -> None:
        gone = MemcachedCounters(self.client(free_port(), io_timeout=0.5))
        with self.assertRaises(Exception):
            await gone.incr("k", 1, 60)
