"""
The proxy's memcached client (`txstore.common.memcache`): the hash ring (spread, and how few
keys move when a server comes or goes), the conformance suite on the tests' fake, and timeouts
on a Clock. The same suite on the real client against a real memcached, and a server killed
(SIGKILL) and started again, are in `txstore.test.integration.test_memcached`.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransportWithDisconnection
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from txstore.common import config as c
from txstore.common.memcache import HashRing, MemcacheClient, MemcacheUnavailable, servers
from txstore.interfaces import IMemcache
from txstore.test.memcache_fake import FakeMemcache

FOUR = tuple(("10.0.0.%d" % n, 11211) for n in range(1, 5))


def owner(ring: HashRing, key: str):
    return next(ring.servers_for(hashlib.md5(key.encode()).digest()))


class HashRingTests(SynchronousTestCase):
    keys = [f"container/AUTH_test/c{n}" for n in range(20000)]

    def test_keys_spread_evenly(self) -> None:
        ring = HashRing(FOUR)
        shares = Counter(owner(ring, key) for key in self.keys)
        self.assertEqual(set(shares), set(FOUR))
        for server, count in shares.items():
            self.assertLess(abs(count / len(self.keys) - 0.25), 0.05, (server, count))

    def test_adding_a_server_moves_only_its_share_to_it(self) -> None:
        before = HashRing(FOUR)
        fifth = ("10.0.0.5", 11211)
        after = HashRing((*FOUR, fifth))
        moved = [key for key in self.keys if owner(before, key) != owner(after, key)]
        self.assertLess(abs(len(moved) / len(self.keys) - 0.2), 0.05)  # a fifth of them, not most
        self.assertEqual({owner(after, key) for key in moved}, {fifth})  # all to the new one

    def test_removing_a_server_moves_only_its_keys(self) -> None:
        before = HashRing(FOUR)
        after = HashRing(FOUR[1:])
        for key in self.keys:
            if owner(before, key) != FOUR[0]:
                self.assertEqual(owner(after, key), owner(before, key))

    def test_every_server_once_in_order(self) -> None:
        ring = HashRing(FOUR)
        order = list(ring.servers_for(hashlib.md5(b"k").digest()))
        self.assertEqual(sorted(order), sorted(FOUR))
        self.assertEqual(list(HashRing(()).servers_for(b"\0" * 16)), [])

    def test_servers_option(self) -> None:
        self.assertEqual(servers("127.0.0.1:11211, cache1:11212 [::1]:11213"),
                         (("127.0.0.1", 11211), ("cache1", 11212), ("::1", 11213)))
        self.assertEqual(servers(""), ())
        for bad in ("127.0.0.1", "host:port", ":11211", "h:0", "h:1,h:1", "a..b:11211"):
            self.assertRaises(c.BadValue, servers, bad)


class MemcacheConformance:
    """What every `IMemcache` does (the real client on a real memcached, and the fake)."""

    memcache: IMemcache

    async def test_values_are_json(self) -> None:
        self.assertTrue(verifyObject(IMemcache, self.memcache))
        key = f"k/{time.time()}"
        self.assertIsNone(await self.memcache.get(key))
        value = {"status": 200, "acl": None, "meta": {"ünïcode": "✓"}, "list": [1, 2.5, "x"]}
        self.assertTrue(await self.memcache.set(key, value, 60))
        self.assertEqual(await self.memcache.get(key), value)
        self.assertTrue(await self.memcache.set(key, "replaced", 60))
        self.assertEqual(await self.memcache.get(key), "replaced")
        self.assertTrue(await self.memcache.delete(key))
        self.assertFalse(await self.memcache.delete(key))
        self.assertIsNone(await self.memcache.get(key))

    async def test_any_text_is_a_key(self) -> None:
        for key in ("with space", "x" * 1000, "line\nbreak", "ü/ß", ""):
            self.assertTrue(await self.memcache.set(key, key, 60))
            self.assertEqual(await self.memcache.get(key), key)

    async def test_counters(self) -> None:
        key = f"counter/{time.time()}"
        self.assertEqual(await self.memcache.incr(key, 5, 60), 5)
        self.assertEqual(await self.memcache.incr(key, 7, 60), 12)
        self.assertEqual(await self.memcache.decr(key, 20, 60), 0)
        self.assertEqual(await self.memcache.decr(key + "-missing", 1, 60), 0)
        self.assertEqual(await self.memcache.incr(key + "/fresh", 3, 60, 1000), 1000)
        self.assertEqual(await self.memcache.incr(key + "/fresh", 3, 60, 1000), 1003)
        self.assertTrue(await self.memcache.set(key, 41, 60))  # a number set is a counter
        self.assertEqual(await self.memcache.incr(key, 1, 60), 42)
        self.assertEqual(await self.memcache.get(key), 42)


class FakeMemcacheTests(MemcacheConformance, TestCase):
    def setUp(self) -> None:
        self.memcache = FakeMemcache(Clock())

    async def test_unreachable(self) -> None:
        self.memcache.reachable = False
        self.assertIs(await self.memcache.get("k", unreachable=self), self)
        self.assertFalse(await self.memcache.set("k", 1, 60))
        with self.assertRaises(MemcacheUnavailable):
            await self.memcache.incr("k", 1, 60)


class HangingEndpoint:
    """Connects never (a server whose packets are dropped)."""

    def __init__(self) -> None:
        self.attempts = 0

    def connect(self, factory) -> Deferred:
        self.attempts += 1
        return Deferred(lambda d: None)


class SilentEndpoint:
    """Connects at once to a server that reads and never answers."""

    def __init__(self) -> None:
        self.transports: list[StringTransportWithDisconnection] = []

    def connect(self, factory) -> Deferred:
        protocol = factory.buildProtocol(None)
        transport = StringTransportWithDisconnection()
        transport.protocol = protocol
        protocol.makeConnection(transport)
        self.transports.append(transport)
        return succeed(protocol)


class TimeoutTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()

    def client(self, endpoint, **options) -> MemcacheClient:
        return MemcacheClient(self.clock, (("10.0.0.1", 11211),), connect_timeout=0.3, io_timeout=2.0,
                              error_limit=3, error_interval=60.0, endpoint_for=lambda *_: endpoint, **options)

    def test_a_connection_that_never_comes_is_a_miss_after_connect_timeout(self) -> None:
        endpoint = HangingEndpoint()
        client = self.client(endpoint)
        got = [client.get("k"), client.get("other")]  # both wait on the same attempt
        self.assertEqual(endpoint.attempts, 1)
        self.assertNoResult(got[0])
        self.clock.advance(0.3)
        self.assertEqual([self.successResultOf(d) for d in got], [None, None])
        self.assertFalse(client.is_down(("10.0.0.1", 11211)))  # one failure, counted once
        for _ in range(2):
            d = client.set("k", 1, 60)
            self.clock.advance(0.3)
            self.assertFalse(self.successResultOf(d))
        self.assertTrue(client.is_down(("10.0.0.1", 11211)))
        self.assertIsNone(self.successResultOf(client.get("k")))  # at once: left alone
        self.assertEqual(endpoint.attempts, 3)
        self.failureResultOf(client.incr("k", 1, 60), MemcacheUnavailable)
        self.clock.advance(60)
        self.assertNoResult(client.get("k"))  # asked again
        self.assertEqual(endpoint.attempts, 4)

    def test_an_answer_that_never_comes_is_a_miss_after_io_timeout(self) -> None:
        endpoint = SilentEndpoint()
        client = self.client(endpoint)
        got = client.get("k")
        self.assertIn(b"get ", endpoint.transports[0].value())
        self.clock.advance(1.9)
        self.assertNoResult(got)
        self.clock.advance(0.1)
        self.assertIsNone(self.successResultOf(got))
        self.assertFalse(endpoint.transports[0].connected)  # dropped: the next call connects anew
        stored = client.set("k", {"a": 1}, 10)
        self.assertEqual(len(endpoint.transports), 2)
        self.assertEqual(endpoint.transports[1].value(),
                         b"set " + hashlib.md5(b"k").hexdigest().encode() + b' 2 10 7\r\n{"a":1}\r\n')
        endpoint.transports[1].protocol.dataReceived(b"STORED\r\n")
        self.assertTrue(self.successResultOf(stored))
        self.assertEqual(self.clock.getDelayedCalls(), [])  # no timer left behind

    def test_a_caller_that_gives_up_is_no_failure_of_the_server(self) -> None:
        # A proxy cancels a request's work when its client goes away; the memcached call it was
        # waiting on must not count against the server nor drop the connection others share.
        endpoint = SilentEndpoint()
        client = self.client(endpoint)
        others = client.get("other")
        for _ in range(3):  # error_limit
            given_up = client.get("k")
            given_up.cancel()
            self.failureResultOf(given_up, CancelledError)
        self.assertFalse(client.is_down(("10.0.0.1", 11211)))
        transport = endpoint.transports[0]
        self.assertTrue(transport.connected)
        self.assertEqual(len(endpoint.transports), 1)
        name = hashlib.md5(b"other").hexdigest().encode()
        transport.protocol.dataReceived(b"VALUE " + name + b" 2 1\r\n1\r\nEND\r\n" + b"END\r\n" * 3)
        self.assertEqual(self.successResultOf(others), 1)

    def test_a_caller_that_gives_up_while_connecting_is_no_failure(self) -> None:
        endpoint = HangingEndpoint()
        client = self.client(endpoint)
        waiting = client.get("other")
        for _ in range(3):
            given_up = client.get("k")
            given_up.cancel()
            self.failureResultOf(given_up, CancelledError)
        self.assertFalse(client.is_down(("10.0.0.1", 11211)))
        self.assertNoResult(waiting)  # the connection attempt goes on for the others
        self.assertEqual(endpoint.attempts, 1)

    def test_close_while_connecting_is_a_quiet_miss(self) -> None:
        client = self.client(HangingEndpoint())
        got, stored = client.get("k"), client.set("k", 1, 60)
        client.close()
        self.assertIsNone(self.successResultOf(got))
        self.assertFalse(self.successResultOf(stored))

    def test_a_server_that_cannot_be_dialled_is_a_miss_not_a_hang(self) -> None:
        # An endpoint that cannot even be made (a name IDNA refuses) must fail this call and
        # leave no connection "on its way" that every later call would wait on forever.
        client = MemcacheClient(self.clock, (("a..b", 11211),), error_limit=3)
        for _ in range(3):
            self.assertIsNone(self.successResultOf(client.get("k")))
        self.assertTrue(client.is_down(("a..b", 11211)))

    def test_no_connection_is_made_after_close(self) -> None:
        # The proxy closes its client at stop; a fire-and-forget write after that must not
        # open a connection nobody will close.
        endpoint = SilentEndpoint()
        client = self.client(endpoint)
        client.get("k")
        self.successResultOf(client.close())
        self.assertFalse(self.successResultOf(client.set("k", 1, 60)))
        self.assertIsNone(self.successResultOf(client.get("k")))
        self.assertEqual(len(endpoint.transports), 1)
        self.assertFalse(client.is_down(("10.0.0.1", 11211)))

    def test_long_expiry_is_sent_as_a_time(self) -> None:
        self.clock.advance(1_700_000_000)
        client = self.client(SilentEndpoint())
        self.assertEqual(client._expiry(0.2), 1)
        self.assertEqual(client._expiry(30 * 86400), 30 * 86400)
        self.assertEqual(client._expiry(31 * 86400), 1_700_000_000 + 31 * 86400)
