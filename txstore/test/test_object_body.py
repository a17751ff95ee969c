"""
`ObjectBodyProducer` in memory: a runner whose reads finish only when the test says so, and
a request that records writes, so what is read ahead, held, written and awaited is visible.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.trial.unittest import SynchronousTestCase

from txstore.storage.object_body import CHUNK_SIZE, CorruptBody, ObjectBodyProducer


class ManualRunner:
    """Runs each call when `finish` is called, in order; records what was asked."""

    def __init__(self) -> None:
        self.waiting: list[tuple[Deferred, object, tuple]] = []

    def run(self, key, function, *args):
        d = Deferred()
        self.waiting.append((d, function, args))
        return d

    def finish(self) -> None:
        d, function, args = self.waiting.pop(0)
        d.callback(function(*args))


class FakeReader:
    def __init__(self, body: bytes, verified: bool | None = None) -> None:
        self.body = body
        self.verified = verified
        self.reads: list[tuple[int, int]] = []

    def read(self, offset: int, length: int) -> bytes:
        self.reads.append((offset, length))
        return self.body[offset : offset + length]

    def etag_verified(self) -> bool | None:
        return self.verified if self.reads and sum(n for _, n in self.reads) >= len(self.body) else None


class RecordingRequest:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.producer = None

    def registerProducer(self, producer, streaming: bool) -> None:
        assert streaming
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))


class ObjectBodyProducerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.body = bytes(range(256)) * (CHUNK_SIZE * 3 // 256) + b"tail"
        self.runner = ManualRunner()
        self.reader = FakeReader(self.body, verified=True)
        self.request = RecordingRequest()
        self.producer = ObjectBodyProducer(self.request, self.runner, "d1", self.reader)

    def send(self, parts=None, trailer: bytes = b"", whole: bool = True) -> Deferred:
        parts = parts if parts is not None else [(b"", 0, len(self.body) - 1)]
        return ensureDeferred(self.producer.send(parts, trailer, whole))

    def test_reads_one_chunk_ahead_while_the_client_drains(self) -> None:
        done = self.send()
        self.assertEqual(len(self.runner.waiting), 1)
        self.runner.finish()
        # The first chunk went out and the second is already being read.
        self.assertEqual(self.request.written, [self.body[:CHUNK_SIZE]])
        self.assertEqual(len(self.runner.waiting), 1)
        self.producer.pauseProducing()  # the client's buffer is full
        self.runner.finish()
        # The second chunk is read and held; nothing more is read or written until the client drains.
        self.assertEqual(len(self.request.written), 1)
        self.assertEqual(self.runner.waiting, [])
        self.producer.resumeProducing()
        self.assertEqual(self.request.written[1], self.body[CHUNK_SIZE : 2 * CHUNK_SIZE])
        self.assertEqual(len(self.runner.waiting), 1)
        while self.runner.waiting:
            self.runner.finish()
        self.assertIs(self.successResultOf(done), True)
        self.assertEqual(b"".join(self.request.written), self.body)
        self.assertEqual([offset for offset, _ in self.reader.reads], [0, CHUNK_SIZE, 2 * CHUNK_SIZE, 3 * CHUNK_SIZE])
        self.assertIsNone(self.request.producer)

    def test_a_stop_waits_for_the_read_in_flight(self) -> None:
        """The caller closes the file when send returns: never while a pool thread reads it."""
        done = self.send()
        self.runner.finish()
        self.producer.stopProducing()  # the client went away while chunk 2 is being read
        self.assertNoResult(done)
        self.runner.finish()
        self.assertIs(self.successResultOf(done), False)
        self.assertEqual(self.request.written, [self.body[:CHUNK_SIZE]])
        self.assertEqual(self.runner.waiting, [])

    def test_a_failed_check_stops_before_the_last_chunk(self) -> None:
        self.reader.verified = False
        done = self.send()
        while self.runner.waiting:
            self.runner.finish()
        self.failureResultOf(done, CorruptBody)
        self.assertEqual(b"".join(self.request.written), self.body[: 3 * CHUNK_SIZE])

    def test_a_short_file_is_corrupt(self) -> None:
        self.reader.body = self.body[:CHUNK_SIZE]
        done = self.send()
        while self.runner.waiting:
            self.runner.finish()
        self.failureResultOf(done, CorruptBody)

    def test_parts_prefixes_and_trailer(self) -> None:
        parts = [(b"--a\r\n", 10, 19), (b"--b\r\n", CHUNK_SIZE - 2, CHUNK_SIZE + 1)]
        done = self.send(parts, trailer=b"--end", whole=False)
        while self.runner.waiting:
            self.runner.finish()
        self.assertIs(self.successResultOf(done), True)
        expected = b"--a\r\n" + self.body[10:20] + b"--b\r\n" + self.body[CHUNK_SIZE - 2 : CHUNK_SIZE + 2] + b"--end"
        self.assertEqual(b"".join(self.request.written), expected)
