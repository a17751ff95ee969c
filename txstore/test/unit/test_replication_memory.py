"""
Replication sessions in memory: the object sender and receiver joined by ``twisted.test.iosim``
instead of loopback sockets, on a `Clock`, so that a session runs to its end, or to its
timeout, in one synchronous step of the test (test_replication.py drives the same sessions over
real sockets, with the real reactor).
"""

from __future__ import annotations

import os

from attrs import frozen
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from txstore.replication.channel import FramedChannel
from txstore.replication.receiver import ReceiverFactory
from txstore.replication.sender import ObjectSender
from txstore.storage.partitions import get_hashes
from txstore.test.unit.test_replication import NOW, PART, Peer, files_of, make_context


@frozen
class MemoryConnector:
    """
    The sender's `Connector` over an in-memory pump: ``open`` joins a new channel to a protocol
    of ``peers[(host, port)]`` (a factory), and keeps the pump for the test to drive.
    """

    clock: Clock
    peers: dict
    pumps: list
    timeout: float = 5.0

    async def open(self, host: str, port: int) -> FramedChannel:
        channel = FramedChannel("sender", self.clock, self.timeout)
        server = self.peers[(host, port)].buildProtocol(IPv4Address("TCP", host, port))
        client_address, server_address = IPv4Address("TCP", "127.0.0.2", 40000), IPv4Address("TCP", host, port)
        pump = iosim.connect(
            server, iosim.FakeTransport(server, True, server_address, client_address),
            channel, iosim.FakeTransport(channel, False, client_address, server_address),
            greet=False, clock=self.clock,
        )
        self.pumps.append(pump)
        return channel


class Silent(Protocol):
    """A peer that takes the connection and never says a word."""


class SilentFactory:
    def buildProtocol(self, addr) -> Protocol:
        return Silent()


class InMemoryReplicationTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.here = make_context(self)
        self.there = make_context(self)
        self.pumps: list = []
        self.peers = {("10.0.0.2", 6201): ReceiverFactory(self.there, self.clock, timeout=5.0),
                      ("10.0.0.3", 6201): SilentFactory()}
        self.sender = ObjectSender(self.here, MemoryConnector(self.clock, self.peers, self.pumps))

    def put(self, context, name: str, timestamp: str, body: bytes = b"x") -> None:
        writer = context.diskfiles.get_diskfile("d1", PART, "AUTH_a", "c", name).create_writer()
        writer.write(body)
        writer.commit({"Content-Type": "t/t"}, timestamp)

    def hashes(self, context) -> dict:
        return get_hashes(context.diskfiles.partition_path("d1", 0, PART), now=NOW)

    def drive(self, syncing: Deferred, seconds: float = 0.0, rounds: int = 10_000):
        """Move bytes (and the clock, ``seconds`` in all) until the session ends; its outcome."""
        step = seconds / 100 if seconds else 0.0
        for _ in range(rounds):
            if syncing.called:
                return self.successResultOf(syncing)
            moved = any([pump.pump() for pump in self.pumps])
            if not moved and step:
                self.clock.advance(step)
        self.fail("the session did not end")

    def sync(self, host: str = "10.0.0.2") -> Deferred:
        peer = Peer(host, 6201, "d1")
        return ensureDeferred(self.sender.sync(peer, "d1", PART, 0, local_hashes=self.hashes(self.here)))

    def test_a_session_makes_the_replicas_identical(self) -> None:
        self.put(self.here, "big", "1600000000.00000", os.urandom(300_000))
        for index in range(20):
            self.put(self.here, f"small-{index}", "1600000000.00000", b"s%d" % index)
        self.put(self.there, "newer-there", "1600000009.00000")
        outcome = self.drive(self.sync())
        self.assertTrue(outcome.ok, outcome.reason)
        self.assertEqual((outcome.offered, outcome.updates), (21, 21))
        here, there = files_of(self.here), files_of(self.there)
        self.assertEqual({name_hash: there.get(name_hash) for name_hash in here}, here)
        self.assertEqual(len(there), len(here) + 1)  # and its own newer object
        again = self.drive(self.sync())
        self.assertEqual((again.ok, again.offered, again.updates), (True, 0, 0))

    def test_a_silent_peer_ends_the_session_at_its_timeout(self) -> None:
        self.put(self.here, "o", "1600000000.00000")
        syncing = self.sync("10.0.0.3")
        self.clock.advance(4.9)
        self.assertNoResult(syncing)
        outcome = self.drive(syncing, seconds=0.2)
        self.assertFalse(outcome.ok)
        self.assertEqual(files_of(self.there), {})
