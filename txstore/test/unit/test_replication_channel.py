"""`FramedChannel` in memory: backpressure both ways, deadlines, errors and framing, no sockets."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransportWithDisconnection
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from txstore.replication.channel import HIGH_WATER, LOW_WATER, FramedChannel, SessionFailed
from txstore.replication.frames import FrameDecoder, FrameType, data_record, encode, record
from txstore.replication.states import R, S, State

TIMEOUT = 10.0
HASH = "0" * 29 + "abc"
F = FrameType


class RecordingTransport(StringTransportWithDisconnection):
    """A transport that counts how often its protocol paused and resumed its reading."""

    def __init__(self) -> None:
        super().__init__()
        self.reading = []  # "pause" / "resume" (its reading), "unregister" (us), "lose", in order

    def pauseProducing(self) -> None:
        self.reading.append("pause")
        super().pauseProducing()

    def resumeProducing(self) -> None:
        self.reading.append("resume")
        super().resumeProducing()

    def unregisterProducer(self) -> None:
        self.reading.append("unregister")
        super().unregisterProducer()

    def loseConnection(self) -> None:
        if self.connected:
            self.reading.append("lose")
        super().loseConnection()

    def written(self) -> list:
        return FrameDecoder().feed(self.value())


def hello():
    return record(F.HELLO, version=1, kind="object", device="d1", partition=3, policy=0, frag_index=None)


class ChannelCase(SynchronousTestCase):
    def connect(self, side: str) -> tuple[FramedChannel, RecordingTransport]:
        self.clock = Clock()
        channel = FramedChannel(side, self.clock, TIMEOUT)
        transport = RecordingTransport()
        transport.protocol = channel
        channel.makeConnection(transport)
        return channel, transport

    def receiving(self, channel: FramedChannel) -> Deferred:
        return Deferred.fromCoroutine(channel.receive())

    def take(self, channel: FramedChannel):
        """A record that is already queued."""
        return self.successResultOf(self.receiving(channel))

    def assertFailedWith(self, waiting: Deferred, code: int, *, from_peer: bool = False) -> SessionFailed:
        failure = self.failureResultOf(waiting, SessionFailed).value
        self.assertEqual((failure.code, failure.from_peer), (code, from_peer))
        return failure

    def assertErrorWritten(self, transport: RecordingTransport, code: int) -> None:
        written = transport.written()
        self.assertEqual(written[-1].type, F.ERROR)
        self.assertEqual(written[-1]["code"], code)
        self.assertEqual([r.type for r in written].count(F.ERROR), 1)
        self.assertFalse(transport.connected)

    def assertNoTimers(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def open_updates(self, channel: FramedChannel) -> None:
        """Take a receiver's session to where PUT bodies may come."""
        channel.dataReceived(encode(hello()) + encode(record(F.OFFER_END)))
        self.assertEqual(self.take(channel).type, F.HELLO)
        channel.send(record(F.READY, version=1))
        self.assertEqual(self.take(channel).type, F.OFFER_END)
        channel.send(record(F.WANT_END))
        channel.dataReceived(encode(record(F.PUT, hash=HASH, name="/a/c/o", timestamp="0000000001.00000",
                                           metadata={}, length=10 * 1024 * 1024)))
        self.assertEqual(self.take(channel).type, F.PUT)


class SendBackpressureTests(ChannelCase):
    def test_registers_as_streaming_producer(self) -> None:
        channel, transport = self.connect(S)
        self.assertIs(transport.producer, channel)
        self.assertTrue(transport.streaming)

    def test_drained_at_once_unless_paused(self) -> None:
        channel, transport = self.connect(S)
        self.successResultOf(Deferred.fromCoroutine(channel.drained()))
        self.assertNoTimers()

    def test_drained_waits_for_resume(self) -> None:
        channel, transport = self.connect(S)
        channel.send(hello())
        transport.producer.pauseProducing()
        draining = Deferred.fromCoroutine(channel.drained())
        self.assertNoResult(draining)
        self.clock.advance(TIMEOUT * 0.9)
        self.assertNoResult(draining)
        transport.producer.resumeProducing()
        self.assertIsNone(self.successResultOf(draining))
        self.assertNoTimers()
        self.assertTrue(transport.connected)
        self.assertEqual([r.type for r in transport.written()], [F.HELLO])
        # Paused again later: waits again, with a fresh deadline.
        transport.producer.pauseProducing()
        again = Deferred.fromCoroutine(channel.drained())
        self.clock.advance(TIMEOUT * 0.9)
        self.assertNoResult(again)
        transport.producer.resumeProducing()
        self.successResultOf(again)
        self.assertNoTimers()

    def test_drain_times_out_with_408(self) -> None:
        channel, transport = self.connect(S)
        channel.send(hello())
        transport.producer.pauseProducing()
        draining = Deferred.fromCoroutine(channel.drained())
        self.clock.advance(TIMEOUT - 0.01)
        self.assertNoResult(draining)
        self.clock.advance(0.02)
        self.assertFailedWith(draining, 408)
        self.assertErrorWritten(transport, 408)
        self.assertEqual([r.type for r in transport.written()], [F.HELLO, F.ERROR])
        # Everything after the failure fails the same way, and writes nothing more.
        self.assertRaises(SessionFailed, channel.send, record(F.GET_HASHES))
        self.assertFailedWith(self.receiving(channel), 408)
        self.assertEqual(len(transport.written()), 2)
        self.assertNoTimers()

    def test_stop_producing_does_not_end_the_wait_early(self) -> None:
        channel, transport = self.connect(S)
        transport.producer.pauseProducing()
        draining = Deferred.fromCoroutine(channel.drained())
        transport.producer.stopProducing()
        self.assertNoResult(draining)
        transport.loseConnection()
        self.assertFailedWith(draining, 499)
        self.assertNoTimers()


class ReceiveFlowControlTests(ChannelCase):
    def test_reading_pauses_above_high_water_and_resumes_below_low_water(self) -> None:
        channel, transport = self.connect(R)
        self.open_updates(channel)
        size = 200 * 1024
        self.assertTrue(5 * size < HIGH_WATER < 6 * size and size < LOW_WATER < 2 * size)
        chunk = encode(data_record(b"d" * size))
        for _ in range(5):
            channel.dataReceived(chunk)
        self.assertEqual(transport.reading, [])  # 1,000 KiB queued: still reading
        channel.dataReceived(chunk)
        self.assertEqual(transport.reading, ["pause"])
        # More already in flight arrives: no second pause.
        channel.dataReceived(chunk[:100])
        channel.dataReceived(chunk[100:])
        self.assertEqual(transport.reading, ["pause"])
        for left in range(6, 1, -1):  # 7 queued; taking 5 leaves 2 (400 KiB), above LOW_WATER
            self.assertEqual(len(self.take(channel).data), size)
            self.assertEqual(transport.reading, ["pause"], f"resumed with {left} frames queued")
        self.assertEqual(len(self.take(channel).data), size)  # 1 left: 200 KiB < LOW_WATER
        self.assertEqual(transport.reading, ["pause", "resume"])
        self.assertEqual(len(self.take(channel).data), size)
        self.assertEqual(transport.reading, ["pause", "resume"])
        # A second wave pauses again.
        for _ in range(6):
            channel.dataReceived(chunk)
        self.assertEqual(transport.reading, ["pause", "resume", "pause"])
        for _ in range(6):
            self.take(channel)
        self.assertEqual(transport.reading, ["pause", "resume", "pause", "resume"])
        self.assertTrue(transport.connected)
        self.assertNoTimers()

    def test_many_small_frames_count_too(self) -> None:
        channel, transport = self.connect(R)
        self.open_updates(channel)
        frames = HIGH_WATER // 1000 + 10
        channel.dataReceived(encode(data_record(b"s" * 1000)) * frames)
        self.assertEqual(transport.reading, ["pause"])
        taken = 0
        while transport.reading == ["pause"]:
            self.take(channel)
            taken += 1
        self.assertEqual(transport.reading, ["pause", "resume"])
        left = frames - taken
        self.assertLess(left * 1000, LOW_WATER)
        self.assertGreater(left * 1000, LOW_WATER * 0.8)  # resumed on reaching LOW_WATER, not later


class DeadlineTests(ChannelCase):
    def test_receive_times_out_with_408(self) -> None:
        channel, transport = self.connect(S)
        channel.send(hello())
        waiting = self.receiving(channel)
        self.clock.advance(TIMEOUT - 0.01)
        self.assertNoResult(waiting)
        self.clock.advance(0.02)
        failure = self.assertFailedWith(waiting, 408)
        self.assertIn("timed out", failure.reason)
        self.assertErrorWritten(transport, 408)
        self.assertEqual(channel.machine.state, State.CLOSED)
        self.assertNoTimers()

    def test_each_frame_gets_a_fresh_deadline(self) -> None:
        channel, transport = self.connect(R)
        waiting = self.receiving(channel)
        self.clock.advance(TIMEOUT * 0.9)
        channel.dataReceived(encode(hello()))
        self.assertEqual(self.successResultOf(waiting).type, F.HELLO)
        channel.send(record(F.READY, version=1))
        waiting = self.receiving(channel)
        self.clock.advance(TIMEOUT * 0.9)
        self.assertNoResult(waiting)
        channel.dataReceived(encode(record(F.GET_HASHES)))
        self.assertEqual(self.successResultOf(waiting).type, F.GET_HASHES)
        self.assertTrue(transport.connected)
        self.assertNoTimers()


class ErrorTests(ChannelCase):
    def test_received_error_frame(self) -> None:
        channel, transport = self.connect(S)
        channel.send(hello())
        waiting = self.receiving(channel)
        channel.dataReceived(encode(record(F.ERROR, code=507, reason="no device d1")))
        failure = self.assertFailedWith(waiting, 507, from_peer=True)
        self.assertEqual(failure.reason, "no device d1")
        self.assertFalse(transport.connected)
        self.assertEqual([r.type for r in transport.written()], [F.HELLO])  # no ERROR back
        self.assertNoTimers()

    def test_received_error_frame_already_queued(self) -> None:
        channel, transport = self.connect(R)
        channel.dataReceived(encode(record(F.ERROR, code=500, reason="sender failed")))
        failure = self.assertFailedWith(self.receiving(channel), 500, from_peer=True)
        self.assertEqual(failure.reason, "sender failed")
        self.assertEqual(transport.value(), b"")
        self.assertFalse(transport.connected)

    def test_frame_out_of_order_is_400(self) -> None:
        channel, transport = self.connect(R)
        channel.dataReceived(encode(record(F.GET_HASHES)))  # before HELLO
        failure = self.assertFailedWith(self.receiving(channel), 400)
        self.assertIn("GET_HASHES", failure.reason)
        self.assertErrorWritten(transport, 400)
        self.assertEqual(transport.written()[0]["reason"], failure.reason)

    def test_frame_from_the_wrong_side_is_400(self) -> None:
        channel, transport = self.connect(S)
        channel.send(hello())
        channel.dataReceived(encode(hello()))  # the receiver talks like a sender
        self.assertFailedWith(self.receiving(channel), 400)
        self.assertErrorWritten(transport, 400)

    def test_order_counts_frames_sent_before_taking(self) -> None:
        # HELLO and GET_HASHES both arrived before the receiver answered READY: fine, since the
        # machine checks GET_HASHES when it is taken, after READY went out.
        channel, transport = self.connect(R)
        channel.dataReceived(encode(hello()) + encode(record(F.GET_HASHES)))
        self.assertEqual(self.take(channel).type, F.HELLO)
        channel.send(record(F.READY, version=1))
        self.assertEqual(self.take(channel).type, F.GET_HASHES)
        self.assertTrue(transport.connected)
        # But an answer taken before this side's question is out of order.
        sender, out = self.connect(S)
        sender.dataReceived(encode(record(F.READY, version=1)))
        self.assertFailedWith(self.receiving(sender), 400)
        self.assertErrorWritten(out, 400)

    def test_unexpected_kind_is_400(self) -> None:
        # HASHES is allowed by the state machine here, but expect() asks for something else.
        channel, transport = self.connect(S)
        channel.send(hello())
        channel.dataReceived(encode(record(F.READY, version=1)))
        self.assertEqual(self.successResultOf(Deferred.fromCoroutine(channel.expect(F.READY))).type, F.READY)
        channel.send(record(F.GET_HASHES))
        channel.dataReceived(encode(record(F.HASHES, hashes={})))
        failure = self.failureResultOf(Deferred.fromCoroutine(channel.expect(F.WANT, F.WANT_END)), SessionFailed)
        self.assertEqual(failure.value.code, 400)
        self.assertIn("expected WANT or WANT_END, got HASHES", failure.value.reason)
        self.assertErrorWritten(transport, 400)

    def test_garbage_is_400_on_arrival(self) -> None:
        channel, transport = self.connect(R)
        waiting = self.receiving(channel)
        channel.dataReceived(b"\x7f\x00\x00\x00\x02{}")  # unknown frame type
        self.assertFailedWith(waiting, 400)
        self.assertErrorWritten(transport, 400)
        self.assertNoTimers()

    def test_oversized_frame_is_400_without_waiting_for_it(self) -> None:
        channel, transport = self.connect(R)
        channel.dataReceived(b"\x31\x7f\xff\xff\xff")  # a 2 GiB DATA frame announced
        self.assertFailedWith(self.receiving(channel), 400)
        self.assertErrorWritten(transport, 400)


class ConnectionLostTests(ChannelCase):
    def test_lost_while_receiving(self) -> None:
        channel, transport = self.connect(S)
        channel.send(hello())
        waiting = self.receiving(channel)
        channel.connectionLost(Failure(ConnectionLost("reset by peer")))
        failure = self.assertFailedWith(waiting, 499)
        self.assertFalse(failure.from_peer)
        self.assertIn("reset by peer", failure.reason)  # the cause (a TLS refusal, say) is kept
        self.assertEqual([r.type for r in transport.written()], [F.HELLO])
        self.assertNoTimers()
        self.assertRaises(SessionFailed, channel.send, record(F.GET_HASHES))

    def test_lost_while_draining(self) -> None:
        channel, transport = self.connect(S)
        transport.producer.pauseProducing()
        draining = Deferred.fromCoroutine(channel.drained())
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.assertFailedWith(draining, 499).reason, "connection closed by the peer")
        self.assertNoTimers()

    def test_frames_queued_before_the_close_are_still_delivered(self) -> None:
        channel, transport = self.connect(R)
        channel.dataReceived(encode(hello()))
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.take(channel).type, F.HELLO)
        self.assertFailedWith(self.receiving(channel), 499)

    def test_end_closes_and_later_waits_fail(self) -> None:
        channel, transport = self.connect(S)
        channel.send(hello())
        channel.dataReceived(encode(record(F.READY, version=1)))
        self.take(channel)
        channel.end()
        self.assertEqual([r.type for r in transport.written()], [F.HELLO, F.END])
        self.assertFalse(transport.connected)
        self.assertIsInstance(self.failureResultOf(self.receiving(channel), SessionFailed).value, SessionFailed)


class ProducerReleaseTests(ChannelCase):
    """
    Whenever this side closes, it unregisters as the transport's producer first: a TLS
    transport (TLSMemoryBIOProtocol) does not shut down while a producer is registered, so the
    connection would otherwise stay open after the session.
    """

    def assertReleasedThenClosed(self, transport: RecordingTransport) -> None:
        self.assertIsNone(transport.producer)
        self.assertEqual(transport.reading[-2:], ["unregister", "lose"])
        self.assertFalse(transport.connected)

    def test_end(self) -> None:
        channel, transport = self.connect(S)
        channel.send(hello())
        channel.dataReceived(encode(record(F.READY, version=1)))
        self.take(channel)
        channel.end()
        self.assertReleasedThenClosed(transport)

    def test_abort(self) -> None:
        channel, transport = self.connect(S)
        channel.abort(500, "sender failed")
        self.assertReleasedThenClosed(transport)
        self.assertErrorWritten(transport, 500)

    def test_timeout(self) -> None:
        channel, transport = self.connect(R)
        waiting = self.receiving(channel)
        self.clock.advance(TIMEOUT)
        self.assertFailedWith(waiting, 408)
        self.assertReleasedThenClosed(transport)

    def test_error_from_the_peer(self) -> None:
        channel, transport = self.connect(R)
        channel.dataReceived(encode(record(F.ERROR, code=500, reason="x")))
        self.assertFailedWith(self.receiving(channel), 500, from_peer=True)
        self.assertReleasedThenClosed(transport)

    def test_end_from_the_peer(self) -> None:
        # The receiver closes with a bare loseConnection() after the sender's END: the channel
        # has let go of the transport already when it hands that END over.
        sent, stream = session_stream()
        channel, transport = self.connect(R)
        serving = Deferred.fromCoroutine(serve(channel, len(sent)))
        channel.dataReceived(stream)
        self.assertEqual(self.successResultOf(serving)[-1].type, F.END)
        self.assertIsNone(transport.producer)
        self.assertEqual(transport.reading, ["unregister"])
        transport.loseConnection()  # what ReceiverSession does

    def test_not_after_the_connection_is_gone(self) -> None:
        # The sender's END and its close both arrive before the receiver takes the END.
        sent, stream = session_stream()
        last = encode(sent[-1])
        channel, transport = self.connect(R)
        channel.dataReceived(stream[:-len(last)])
        self.successResultOf(Deferred.fromCoroutine(serve(channel, len(sent) - 1)))
        channel.dataReceived(last)
        transport.producer = None  # as a real transport lets go of its producer when it closes
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.take(channel).type, F.END)
        self.assertFailedWith(self.receiving(channel), 499)
        self.assertNotIn("unregister", transport.reading)


def session_stream() -> tuple[list, bytes]:
    """A whole object session as the sender writes it."""
    sent = [
        hello(),
        record(F.GET_HASHES),
        record(F.OFFER, objects=[[HASH, {"data": "0000000001.00000", "meta": "0000000002.00000"}]]),
        record(F.OFFER, objects=[["1" * 32, {"ts": "0000000003.00000"}]]),
        record(F.OFFER_END),
        record(F.PUT, hash=HASH, name="/a/c/ö", timestamp="0000000001.00000", metadata={"ETag": "x"}, length=7),
        data_record(b"abc"),
        data_record(b"\x00\x03\xff\x01"),
        record(F.PUT_END, etag="e" * 32),
        record(F.POST, hash=HASH, name="/a/c/ö", timestamp="0000000002.00000", metadata={"X": "é"}),
        record(F.DELETE, hash="1" * 32, name="/a/c/p", timestamp="0000000003.00000", metadata={}),
        record(F.UPDATES_END),
        record(F.END),
    ]
    return sent, b"".join(encode(item) for item in sent)


#: What the receiver answers after taking each frame (None: nothing).
ANSWERS = {
    F.HELLO: record(F.READY, version=1),
    F.GET_HASHES: record(F.HASHES, hashes={"abc": "0" * 32}),
    F.OFFER: record(F.WANT, objects=[[HASH, ["data"]]], newer=[]),
    F.OFFER_END: record(F.WANT_END),
    F.UPDATES_END: record(F.END, applied=3),
}


async def serve(channel: FramedChannel, count: int) -> list:
    got = []
    for _ in range(count):
        item = await channel.receive()
        got.append(item)
        if item.type in ANSWERS:
            channel.send(ANSWERS[item.type])
    return got


class SplitStreamTests(ChannelCase):
    def run_session(self, pieces: list[bytes]) -> tuple[list, RecordingTransport]:
        sent, _stream = session_stream()
        channel, transport = self.connect(R)
        serving = Deferred.fromCoroutine(serve(channel, len(sent)))
        for piece in pieces:
            channel.dataReceived(piece)
        got = self.successResultOf(serving)
        self.assertTrue(channel.machine.closed)
        self.assertTrue(transport.connected)
        self.assertNoTimers()
        return got, transport

    def test_split_at_every_position(self) -> None:
        sent, stream = session_stream()
        expected = None
        for cut in range(len(stream) + 1):
            got, transport = self.run_session([stream[:cut], stream[cut:]])
            self.assertEqual(got, sent, f"split at {cut}")
            self.assertEqual([g.data for g in got], [s.data for s in sent])
            if expected is None:
                expected = transport.value()
            self.assertEqual(transport.value(), expected, f"split at {cut}")
        self.assertEqual([r.type for r in FrameDecoder().feed(expected)],
                         [F.READY, F.HASHES, F.WANT, F.WANT, F.WANT_END, F.END])

    def test_split_at_every_pair_of_positions_in_a_frame_run(self) -> None:
        sent, stream = session_stream()
        window = range(0, 60)
        for first in window:
            for second in range(first, 60):
                got, _ = self.run_session([stream[:first], stream[first:second], stream[second:]])
                self.assertEqual(got, sent, f"split at {first}, {second}")

    def test_one_byte_at_a_time(self) -> None:
        sent, stream = session_stream()
        got, _ = self.run_session([stream[i:i + 1] for i in range(len(stream))])
        self.assertEqual(got, sent)
