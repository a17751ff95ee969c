"""Replication sessions between two nodes' storage over real loopback sockets."""

from __future__ import annotations

import os
import socket

from attrs import frozen
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from txstore.replication.frames import SURVEY_LIMIT, FrameDecoder, FrameType, ProtocolError, data_record, encode, record
from txstore.replication import receiver
from txstore.replication.receiver import ReceiverFactory
from txstore.replication.sender import Connector, ObjectSender
from txstore.storage.context import StorageContext
from txstore.storage.partitions import get_hashes, hashes_digest, list_objects, list_suffixes
from txstore.test.support import storage_context

PART = 9
NOW = 1_600_000_100.0


@frozen
class Peer:
    replication_ip: str
    replication_port: int
    device_name: str


def make_context(case) -> StorageContext:
    return storage_context(case, "d1", now=NOW)


def files_of(context: StorageContext) -> dict[str, list[str]]:
    """hash → sorted file names, for the whole partition."""
    part = context.diskfiles.partition_path("d1", 0, PART)
    return {o.name_hash: sorted(o.names) for o in list_objects(part, list_suffixes(part))}


class ReplicationCase(TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.here = make_context(self)
        self.there = make_context(self)
        self.factory = ReceiverFactory(self.there, reactor, timeout=5.0)
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.peer = Peer("127.0.0.1", self.port.getHost().port, "d1")
        self.sender = ObjectSender(self.here, Connector(reactor, conn_timeout=2.0, timeout=5.0))

    def put(self, context, name, ts, body=b"x", metadata=None):
        diskfile = context.diskfiles.get_diskfile("d1", PART, "AUTH_a", "c", name)
        writer = diskfile.create_writer()
        writer.write(body)
        writer.commit(metadata or {"Content-Type": "t/t"}, ts)
        return diskfile

    def hashes(self, context):
        return get_hashes(context.diskfiles.partition_path("d1", 0, PART), now=NOW)

    def sync(self, peer=None, **kwargs) -> Deferred:
        kwargs.setdefault("local_hashes", None if "objects" in kwargs else self.hashes(self.here))
        return ensureDeferred(self.sender.sync(peer or self.peer, "d1", PART, 0, **kwargs))

    async def connect(self) -> RawClient:
        """A hand-driven sender's connection to the receiver."""
        client = RawClient()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.peer.replication_port), client)
        return client

    def hello(self) -> bytes:
        return encode(record(FrameType.HELLO, version=1, kind="object", device="d1", partition=PART, policy=0,
                             frag_index=None))

    async def settle(self) -> None:
        """Let the receiver finish its side (it closes after the sender's END)."""
        for _ in range(50):
            if not self.factory.sessions:
                return
            await deferLater(reactor, 0.02, lambda: None)


class _Silent(Protocol):
    """A peer that accepts the connection and never says a word."""


class AbortTests(ReplicationCase):
    async def test_abort_all_ends_a_session_waiting_for_a_silent_peer(self) -> None:
        connections: list[_Silent] = []

        def build(_addr) -> _Silent:
            protocol = _Silent()
            connections.append(protocol)
            return protocol

        factory = Factory()
        factory.buildProtocol = build
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.put(self.here, "o", "1600000000.00000")
        syncing = self.sync(Peer("127.0.0.1", port.getHost().port, "d1"))
        for _ in range(100):
            if connections:
                break
            await deferLater(reactor, 0.01, lambda: None)
        self.assertNoResult(syncing)  # the silent peer holds it (for 5 s, its timeout)
        self.sender.abort_all()
        outcome = await syncing
        self.assertFalse(outcome.ok)
        self.assertIn("stopping", outcome.reason)


class ObjectSessionTests(ReplicationCase):
    async def test_primary_sync_makes_replicas_identical(self) -> None:
        big = os.urandom(1024 * 1024 + 17)
        self.put(self.here, "big", "1600000000.00000", big, {"Content-Type": "a/b", "X-Object-Meta-K": "v"})
        posted = self.put(self.here, "posted", "1600000000.00000")
        posted.write_metadata({"X-Object-Meta-New": "1"}, "1600000001.00000")
        gone = self.put(self.here, "gone", "1600000000.00000")
        gone.delete("1600000002.00000")
        for i in range(30):
            self.put(self.here, f"small-{i}", "1600000000.00000", b"s%d" % i)
        outcome = await self.sync()
        await self.settle()
        self.assertTrue(outcome.ok, outcome.reason)
        self.assertEqual(outcome.offered, 33)
        self.assertEqual(outcome.updates, 34)  # 33 objects, one with a .meta too
        self.assertEqual(files_of(self.there), files_of(self.here))
        self.assertEqual(self.hashes(self.there), self.hashes(self.here))
        copy = self.there.diskfiles.get_diskfile("d1", PART, "AUTH_a", "c", "big")
        state = copy.read_metadata()
        self.assertEqual(state.metadata["X-Object-Meta-K"], "v")
        with copy.open_reader(state) as reader:
            self.assertEqual(reader.read(0, len(big) + 1), big)
        merged = self.there.diskfiles.get_diskfile("d1", PART, "AUTH_a", "c", "posted").read_metadata()
        self.assertEqual(merged.metadata.get("X-Object-Meta-New"), "1")
        self.assertTrue(self.there.diskfiles.get_diskfile("d1", PART, "AUTH_a", "c", "gone").read_metadata().deleted)
        self.assertEqual(list((self.there.devices / "d1" / "tmp").iterdir()), [])
        # In sync now: the next session compares hashes and sends nothing.
        again = await self.sync()
        self.assertTrue(again.ok, again.reason)
        self.assertEqual((again.suffixes, again.offered, again.updates), (0, 0, 0))

    async def test_newer_on_the_receiver_is_kept(self) -> None:
        self.put(self.here, "o", "1600000000.00000", b"old")
        newer = self.put(self.there, "o", "1600000005.00000", b"new")
        outcome = await self.sync()
        self.assertTrue(outcome.ok, outcome.reason)
        self.assertEqual(outcome.updates, 0)
        self.assertEqual(outcome.peer_newer, 1)
        self.assertEqual(newer.read_metadata().timestamp.internal, "1600000005.00000")

    async def test_handoff_objects_are_offered_whole_and_confirmed(self) -> None:
        for i in range(3):
            self.put(self.here, f"o{i}", "1600000000.00000")
        self.put(self.there, "o0", "1600000000.00000")
        part = self.here.diskfiles.partition_path("d1", 0, PART)
        objects = list(list_objects(part, list_suffixes(part)))
        outcome = await self.sync(objects=objects)
        self.assertTrue(outcome.ok, outcome.reason)
        self.assertEqual((outcome.offered, outcome.updates), (3, 2))
        self.assertEqual(sorted(o.name_hash for o in outcome.confirmed), sorted(o.name_hash for o in objects))

    async def test_unknown_device_is_507(self) -> None:
        self.put(self.here, "o", "1600000000.00000")
        outcome = await self.sync(peer=Peer(self.peer.replication_ip, self.peer.replication_port, "nope"))
        self.assertFalse(outcome.ok)
        self.assertIn("507", outcome.reason)
        self.assertIn("from the peer", outcome.reason)

    async def test_session_limit_per_device_is_503(self) -> None:
        self.factory.sessions_per_device = 0
        self.put(self.here, "o", "1600000000.00000")
        outcome = await self.sync()
        self.assertFalse(outcome.ok)
        self.assertIn("503", outcome.reason)

    async def test_nobody_listening(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            free = probe.getsockname()[1]
        self.put(self.here, "o", "1600000000.00000")
        outcome = await self.sync(peer=Peer("127.0.0.1", free, "d1"))
        self.assertFalse(outcome.ok)
        self.assertIn("ConnectionRefused", outcome.reason)

    async def test_corrupt_local_copy_is_quarantined_not_sent(self) -> None:
        diskfile = self.put(self.here, "rot", "1600000000.00000", b"A" * 5000)
        data = diskfile.hash_dir / "1600000000.00000.data"
        raw = bytearray(data.read_bytes())
        raw[10] ^= 0xFF
        data.write_bytes(bytes(raw))
        outcome = await self.sync()
        await self.settle()
        self.assertFalse(outcome.ok)
        self.assertIn("failed its checksum", outcome.reason)
        self.assertFalse(diskfile.hash_dir.exists())
        self.assertTrue((self.here.devices / "d1" / "quarantined" / "objects" / diskfile.name_hash).is_dir())
        self.assertEqual(files_of(self.there), {})
        self.assertEqual(list((self.there.devices / "d1" / "tmp").iterdir()), [])


class SurveyTests(ReplicationCase):
    async def test_many_partitions_in_one_session(self) -> None:
        self.put(self.there, "a", "1600000000.00000")
        self.put(self.there, "b", "1600000001.00000")
        found = await self.sender.survey(self.peer, "d1", 0, [PART, 3, 700])
        self.assertEqual(found, {PART: hashes_digest(self.hashes(self.there)), 3: hashes_digest({}),
                                 700: hashes_digest({})})
        self.assertNotEqual(found[PART], found[3])
        await self.settle()
        self.assertEqual(self.factory.stats["sessions_ok"], 1)

    async def test_answered_a_frame_per_chunk(self) -> None:
        self.patch(receiver, "SURVEY_CHUNK", 2)
        self.put(self.there, "o", "1600000000.00000")
        parts = list(range(PART - 3, PART + 3))
        client = await self.connect()
        client.transport.write(self.hello() + encode(record(FrameType.SURVEY, partitions=parts)))
        await client.until(FrameType.SURVEY_END)
        answers = [r for r in client.records if r.type is FrameType.SURVEYED]
        self.assertEqual(len(answers), 3)
        merged = {k: v for r in answers for k, v in r["digests"].items()}
        self.assertEqual(sorted(merged), sorted(str(p) for p in parts))
        self.assertEqual(merged[str(PART)], hashes_digest(self.hashes(self.there)))
        client.transport.loseConnection()

    async def test_a_bad_survey_is_refused(self) -> None:
        for partitions in (["9"], [-1], list(range(SURVEY_LIMIT + 1))):
            client = await self.connect()
            client.transport.write(self.hello() + encode(record(FrameType.SURVEY, partitions=partitions)))
            await client.closed
            self.assertEqual((client.records[-1].type, client.records[-1]["code"]), (FrameType.ERROR, 400))

    async def test_a_failed_survey_is_none(self) -> None:
        await self.port.stopListening()
        self.assertIsNone(await self.sender.survey(self.peer, "d1", 0, [PART]))
        self.assertEqual(self.sender._open, set())

    async def test_a_peer_that_predates_survey(self) -> None:
        """It answers ERROR 400, as for any frame it does not know: no answer, and no channel left open."""
        async def unknown(session, item):
            raise ProtocolError("SURVEY has no place in an object session")

        self.patch(receiver.ReceiverSession, "_survey", unknown)
        self.assertIsNone(await self.sender.survey(self.peer, "d1", 0, [PART, 3]))
        self.assertEqual(self.sender._open, set())
        await self.settle()
        self.assertEqual(self.factory.stats["sessions_failed"], 1)

    def test_the_digest_is_of_suffixes_and_hashes(self) -> None:
        self.assertEqual(hashes_digest({"a1f": "x", "0b2": "y"}), hashes_digest({"0b2": "y", "a1f": "x"}))
        self.assertNotEqual(hashes_digest({"a1f": "x"}), hashes_digest({"a1f": "z"}))
        self.assertNotEqual(hashes_digest({"a1f": "x"}), hashes_digest({"a1f": "x", "0b2": "y"}))


class RawClient(Protocol):
    """A hand-driven sender, to misbehave."""

    def __init__(self) -> None:
        self.decoder = FrameDecoder()
        self.records = []
        self.closed = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.records += self.decoder.feed(data)

    async def until(self, kind: FrameType) -> None:
        """Wait for a frame of ``kind`` (the sender's turn comes after it)."""
        for _ in range(100):
            if any(r.type is kind for r in self.records):
                return
            await deferLater(reactor, 0.01, lambda: None)
        raise AssertionError(f"no {kind.name} in {self.records}")

    async def open_updates(self, hello: bytes) -> None:
        self.transport.write(hello + encode(record(FrameType.OFFER_END)))
        await self.until(FrameType.WANT_END)

    def connectionLost(self, reason=None) -> None:
        self.closed.callback(None)


class MisbehavingSenderTests(ReplicationCase):
    async def test_disconnect_mid_body_leaves_nothing(self) -> None:
        client = await self.connect()
        name_hash = self.there.hasher.hash_path("AUTH_a", "c", "half")
        await client.open_updates(self.hello())
        client.transport.write(
            encode(record(FrameType.PUT, hash=name_hash, name="/AUTH_a/c/half", timestamp="1600000000.00000",
                            metadata={}, length=100000))
            + encode(data_record(b"z" * 50000))
        )
        await deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(len(list((self.there.devices / "d1" / "tmp").iterdir())), 1)  # the body in flight
        client.transport.loseConnection()
        await self.settle()
        self.assertEqual(list((self.there.devices / "d1" / "tmp").iterdir()), [])
        self.assertEqual(files_of(self.there), {})

    async def test_wrong_etag_is_refused(self) -> None:
        client = await self.connect()
        name_hash = self.there.hasher.hash_path("AUTH_a", "c", "o")
        await client.open_updates(self.hello())
        client.transport.write(
            encode(record(FrameType.PUT, hash=name_hash, name="/AUTH_a/c/o", timestamp="1600000000.00000",
                            metadata={}, length=3))
            + encode(data_record(b"abc")) + encode(record(FrameType.PUT_END, etag="0" * 32))
        )
        await client.closed
        self.assertEqual([r.type for r in client.records],
                         [FrameType.READY, FrameType.WANT_END, FrameType.ERROR])
        self.assertEqual(client.records[-1]["code"], 422)
        self.assertEqual(files_of(self.there), {})
        self.assertEqual(list((self.there.devices / "d1" / "tmp").iterdir()), [])

    async def test_name_must_hash_to_the_hash(self) -> None:
        client = await self.connect()
        await client.open_updates(self.hello())
        client.transport.write(
            encode(record(FrameType.DELETE, hash="0" * 32, name="/AUTH_a/c/o", timestamp="1600000000.00000",
                            metadata={}))
        )
        await client.closed
        self.assertEqual(client.records[-1].type, FrameType.ERROR)
        self.assertEqual(client.records[-1]["code"], 400)

    async def test_garbage_gets_an_error_frame(self) -> None:
        client = await self.connect()
        client.transport.write(b"GET / HTTP/1.1\r\n\r\n")
        await client.closed
        self.assertEqual([r.type for r in client.records], [FrameType.ERROR])
        self.assertEqual(client.records[0]["code"], 400)

    async def test_idle_sender_times_out(self) -> None:
        self.factory.timeout = 0.3
        client = await self.connect()
        client.transport.write(self.hello())
        await client.closed
        self.assertEqual([r.type for r in client.records], [FrameType.READY, FrameType.ERROR])
        self.assertEqual(client.records[-1]["code"], 408)
        self.assertEqual(self.factory.active["d1"], 0)

    async def test_unsupported_version(self) -> None:
        client = await self.connect()
        client.transport.write(encode(record(FrameType.HELLO, version=99, kind="object", device="d1",
                                             partition=PART, policy=0)))
        await client.closed
        self.assertEqual(client.records[-1]["code"], 400)
        self.assertIn("version 99", client.records[-1]["reason"])
