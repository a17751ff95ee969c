"""Replication over mutual TLS on real loopback sockets, with certificates made by the test."""

from __future__ import annotations

from twisted.internet import reactor, tcp
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from txstore.common.tls import Credentials
from txstore.replication.receiver import ReceiverFactory
from txstore.replication.sender import Connector, ObjectSender
from txstore.storage.partitions import get_hashes
from txstore.test.pki import PKI
from txstore.test.support import temp_dir
from txstore.test.unit.test_replication import NOW, PART, Peer, files_of, make_context


class TLSReplicationTests(TestCase):
    timeout = 20

    def setUp(self) -> None:
        self.pki = PKI(temp_dir(self))
        self.here = make_context(self)
        self.there = make_context(self)
        self.factory = ReceiverFactory(self.there, reactor, timeout=2.0)

    def listen(self, credentials: Credentials | None) -> Peer:
        wrapped = credentials.wrap_listening(self.factory) if credentials is not None else self.factory
        port = reactor.listenTCP(0, wrapped, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return Peer("127.0.0.1", port.getHost().port, "d1")

    def put(self, context, name, ts, body=b"x"):
        diskfile = context.diskfiles.get_diskfile("d1", PART, "AUTH_a", "c", name)
        writer = diskfile.create_writer()
        writer.write(body)
        writer.commit({"Content-Type": "t/t"}, ts)
        return diskfile

    def hashes(self, context):
        return get_hashes(context.diskfiles.partition_path("d1", 0, PART), now=NOW)

    def sync(self, peer: Peer, tls: Credentials | None) -> Deferred:
        sender = ObjectSender(self.here, Connector(reactor, conn_timeout=1.0, timeout=2.0, tls=tls))
        return ensureDeferred(sender.sync(peer, "d1", PART, 0, local_hashes=self.hashes(self.here)))

    async def settle(self) -> None:
        """Both sides are done: the receiver's session ended and every connection is closed."""
        for _ in range(50):
            connections = [s for s in reactor.getReaders() + reactor.getWriters()
                           if isinstance(s, (tcp.Client, tcp.Server))]
            if not self.factory.sessions and not connections:
                return
            await deferLater(reactor, 0.02, lambda: None)
        self.fail(f"still open after 1 s: sessions {self.factory.sessions}, connections {connections}")

    def stock(self) -> bytes:
        body = bytes(range(256)) * 2000  # 512,000 bytes: two DATA frames and a bit
        self.put(self.here, "big", "1600000000.00000", body)
        self.put(self.here, "small", "1600000001.00000", b"tiny")
        self.put(self.here, "gone", "1600000000.00000").delete("1600000002.00000")
        return body

    def assertNothingArrived(self) -> None:
        self.assertEqual(files_of(self.there), {})
        self.assertEqual(self.factory.stats["sessions_ok"], 0)
        tmp = self.there.devices / "d1" / "tmp"
        self.assertEqual(list(tmp.iterdir()) if tmp.exists() else [], [])

    async def test_mutual_tls_sync(self) -> None:
        body = self.stock()
        peer = self.listen(self.pki.credentials(self.pki.peer))
        outcome = await self.sync(peer, self.pki.credentials(self.pki.node))
        await self.settle()
        self.assertTrue(outcome.ok, outcome.reason)
        self.assertEqual((outcome.offered, outcome.updates), (3, 3))
        self.assertEqual(files_of(self.there), files_of(self.here))
        self.assertEqual(self.hashes(self.there), self.hashes(self.here))
        copy = self.there.diskfiles.get_diskfile("d1", PART, "AUTH_a", "c", "big")
        state = copy.read_metadata()
        with copy.open_reader(state) as reader:
            self.assertEqual(reader.read(0, len(body) + 1), body)
        self.assertEqual(self.factory.stats["sessions_ok"], 1)

    async def test_client_certificate_from_another_ca_is_refused(self) -> None:
        self.stock()
        peer = self.listen(self.pki.credentials(self.pki.peer))
        # The sender trusts the cluster CA (so it accepts the receiver), but its own certificate
        # was issued by another CA: only the receiver's check can refuse it.
        outcome = await self.sync(peer, self.pki.credentials(self.pki.stranger, ca=self.pki.cluster_ca))
        await self.settle()
        self.assertFalse(outcome.ok)
        self.assertIn("unknown ca", outcome.reason)  # the receiver's alert
        self.assertNothingArrived()

    async def test_no_client_certificate_is_refused(self) -> None:
        self.stock()
        peer = self.listen(self.pki.credentials(self.pki.peer))
        # A TLS client that verifies the receiver but presents no certificate of its own.
        class Anonymous:
            def options_for(_self, host):
                return optionsForClientTLS(host, trustRoot=Certificate.loadPEM(self.pki.cluster_ca.read_text()))

        outcome = await self.sync(peer, Anonymous())
        await self.settle()
        self.assertFalse(outcome.ok)
        self.assertIn("certificate", outcome.reason)  # the receiver's alert: certificate required
        self.assertNothingArrived()

    async def test_plain_tcp_sender_fails_cleanly(self) -> None:
        self.stock()
        peer = self.listen(self.pki.credentials(self.pki.peer))
        started = reactor.seconds()
        outcome = await self.sync(peer, None)
        await self.settle()
        self.assertFalse(outcome.ok)
        self.assertLess(reactor.seconds() - started, 1.5)  # refused, not timed out (2 s)
        self.assertNotIn("408", outcome.reason)
        self.assertNothingArrived()

    async def test_receiver_certificate_for_another_address_is_refused(self) -> None:
        self.stock()
        peer = self.listen(self.pki.credentials(self.pki.elsewhere))
        outcome = await self.sync(peer, self.pki.credentials(self.pki.node))
        await self.settle()
        self.assertFalse(outcome.ok)
        self.assertIn("IPAddressMismatch", outcome.reason)  # service_identity, on the sender
        self.assertNothingArrived()

    async def test_receiver_certificate_from_another_ca_is_refused(self) -> None:
        self.stock()
        peer = self.listen(Credentials.from_files(*self.pki.stranger, self.pki.other_ca))
        outcome = await self.sync(peer, self.pki.credentials(self.pki.node))
        await self.settle()
        self.assertFalse(outcome.ok)
        self.assertIn("certificate verify failed", outcome.reason)  # the sender's own check
        self.assertNothingArrived()

    async def test_receiver_error_arrives_as_a_frame_and_both_sides_close(self) -> None:
        self.stock()
        port = self.listen(self.pki.credentials(self.pki.peer)).replication_port
        outcome = await self.sync(Peer("127.0.0.1", port, "nope"), self.pki.credentials(self.pki.node))
        await self.settle()  # the connection closes: the TLS shutdown is not held up
        self.assertFalse(outcome.ok)
        self.assertIn("507", outcome.reason)
        self.assertIn("from the peer", outcome.reason)
        self.assertNothingArrived()
