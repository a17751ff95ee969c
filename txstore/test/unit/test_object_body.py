"""
`ObjectBody` in memory: a runner whose reads finish only when the test says so, and a consumer
that records writes, so what is read ahead, held, written and awaited is visible.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from txstore.common.web import HTTPError
from txstore.interfaces import IResponseBody
from txstore.storage.diskfile import DiskFileError
from txstore.storage.object_body import CHUNK_SIZE, CorruptBody, ObjectBody


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
        try:
            result = function(*args)
        except Exception:
            d.errback()
            return
        d.callback(result)


class FakeReader:
    def __init__(self, body: bytes, verified: bool | None = None) -> None:
        self.body = body
        self.verified = verified
        self.reads: list[tuple[int, int]] = []
        self.closed = False
        self.fail_at: int | None = None  # a read from this offset fails as a disk would

    def read(self, offset: int, length: int) -> bytes:
        self.reads.append((offset, length))
        if self.fail_at is not None and offset >= self.fail_at:
            raise DiskFileError("EIO")
        return self.body[offset : offset + length]

    def close(self) -> None:
        self.closed = True

    def etag_verified(self) -> bool | None:
        return self.verified if self.reads and sum(n for _, n in self.reads) >= len(self.body) else None


class RecordingConsumer:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))


class ObjectBodyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.body = bytes(range(256)) * (CHUNK_SIZE * 3 // 256) + b"tail"
        self.runner = ManualRunner()
        self.reader = FakeReader(self.body, verified=True)
        self.request = RecordingConsumer()
        self.failures: list[tuple[str, bool]] = []
        self.producer: ObjectBody | None = None

    async def failed(self, err: Exception, started: bool) -> Exception:
        """The object server's part, recorded: the error is raised as it is."""
        self.failures.append((type(err).__name__, started))
        return err

    def send(self, parts=None, trailer: bytes = b"", whole: bool = True) -> Deferred:
        parts = parts if parts is not None else [(b"", 0, len(self.body) - 1)]
        self.producer = ObjectBody(self.runner, "d1", self.reader, parts, self.failed, trailer, whole)
        return self.producer.write_to(self.request)

    def finish_all(self) -> None:
        while self.runner.waiting:
            self.runner.finish()

    def test_provides_its_interface(self) -> None:
        self.send()
        verifyObject(IResponseBody, self.producer)
        self.producer.stopProducing()
        self.finish_all()

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
        self.finish_all()
        self.assertIs(self.successResultOf(done), True)
        self.assertEqual(b"".join(self.request.written), self.body)
        self.assertEqual([offset for offset, _ in self.reader.reads], [0, CHUNK_SIZE, 2 * CHUNK_SIZE, 3 * CHUNK_SIZE])
        self.assertTrue(self.reader.closed)
        self.assertEqual(self.failures, [])

    def test_a_stop_waits_for_the_read_in_flight(self) -> None:
        """The file is closed once the read in flight is done: never while a pool thread reads it."""
        done = self.send()
        self.runner.finish()
        self.producer.stopProducing()  # the client went away while chunk 2 is being read
        self.assertNoResult(done)
        self.assertEqual([function.__name__ for _, function, _ in self.runner.waiting], ["read"])
        self.runner.finish()
        self.assertFalse(self.reader.closed)
        self.assertEqual([function.__name__ for _, function, _ in self.runner.waiting], ["close"])
        self.runner.finish()
        self.assertIs(self.successResultOf(done), False)
        self.assertEqual(self.request.written, [self.body[:CHUNK_SIZE]])
        self.assertTrue(self.reader.closed)

    def test_stopped_before_it_began_it_only_lets_go(self) -> None:
        """What the edge does with a body it will not send: nothing is read or written, the file closes."""
        self.producer = ObjectBody(self.runner, "d1", self.reader, [(b"--a", 0, 9)], self.failed, b"--end")
        self.producer.stopProducing()
        done = self.producer.write_to(self.request)
        self.finish_all()
        self.assertIs(self.successResultOf(done), False)
        self.assertEqual((self.request.written, self.reader.reads, self.reader.closed), ([], [], True))

    def test_a_failed_check_stops_before_the_last_chunk(self) -> None:
        self.reader.verified = False
        done = self.send()
        self.finish_all()
        self.failureResultOf(done, CorruptBody)
        self.assertEqual(b"".join(self.request.written), self.body[: 3 * CHUNK_SIZE])
        self.assertEqual(self.failures, [("CorruptBody", True)])
        self.assertTrue(self.reader.closed)

    def test_a_failed_check_of_one_chunk_is_found_before_any_byte(self) -> None:
        self.body = self.body[: CHUNK_SIZE // 2]
        self.reader = FakeReader(self.body, verified=False)
        done = self.send()
        self.finish_all()
        self.failureResultOf(done, CorruptBody)
        self.assertEqual((self.request.written, self.failures), ([], [("CorruptBody", False)]))

    def test_a_short_file_is_corrupt(self) -> None:
        self.reader.body = self.body[:CHUNK_SIZE]
        done = self.send()
        self.finish_all()
        self.failureResultOf(done, CorruptBody)
        self.assertEqual(self.failures, [("CorruptBody", True)])

    def test_what_a_failure_becomes_is_the_callers(self) -> None:
        """The body fails with what ``failed`` returns (the object server's 404 or ResponseAborted)."""
        self.reader.fail_at = CHUNK_SIZE

        async def failed(err: Exception, started: bool) -> Exception:
            self.failures.append((type(err).__name__, started))
            return HTTPError(404, "Not Found")

        self.failed = failed  # type: ignore[method-assign]
        done = self.send()
        self.finish_all()
        self.assertEqual(self.failureResultOf(done, HTTPError).value.status, 404)
        self.assertEqual(self.failures, [("DiskFileError", True)])
        self.assertTrue(self.reader.closed)

    def test_parts_prefixes_and_trailer(self) -> None:
        parts = [(b"--a\r\n", 10, 19), (b"--b\r\n", CHUNK_SIZE - 2, CHUNK_SIZE + 1)]
        done = self.send(parts, trailer=b"--end", whole=False)
        self.finish_all()
        self.assertIs(self.successResultOf(done), True)
        expected = b"--a\r\n" + self.body[10:20] + b"--b\r\n" + self.body[CHUNK_SIZE - 2 : CHUNK_SIZE + 2] + b"--end"
        self.assertEqual(b"".join(self.request.written), expected)
