"""Tests for txstore.common.put_connection on an in-memory transport."""

from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from txstore.common.put_connection import NodeAnswer, NodeGone, PutConnection, PutRequest


def request(chunked: bool = False, target: str = "/d1/1/a/c/o") -> PutRequest:
    framing = {"Transfer-Encoding": "chunked"} if chunked else {"Content-Length": "5"}
    return PutRequest.of(target, "n1", {**framing, "Expect": "100-continue"})


def connected(chunked: bool = False):
    conn = PutConnection(request(chunked))
    transport = StringTransport()
    conn.makeConnection(transport)
    return conn, transport


class PutConnectionTests(SynchronousTestCase):
    def test_continue_body_answer(self) -> None:
        conn, transport = connected()
        self.assertEqual(
            transport.value(),
            b"PUT /d1/1/a/c/o HTTP/1.1\r\nHost: n1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        )
        self.assertNoResult(conn.ready)
        conn.dataReceived(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.assertIsNone(self.successResultOf(conn.ready))
        transport.clear()
        conn.write(b"hel")
        conn.write(b"lo")
        conn.finish()
        self.assertEqual(transport.value(), b"hello")
        conn.dataReceived(b"HTTP/1.1 201 Created\r\nETag: abc\r\nContent-")
        self.assertNoResult(conn.answer)
        conn.dataReceived(b"Length: 0\r\n\r\n")
        self.assertEqual(self.successResultOf(conn.answer), NodeAnswer(201, {"etag": "abc", "content-length": "0"}, b""))
        self.assertTrue(transport.disconnecting)

    def test_refused_before_body(self) -> None:
        conn, _ = connected()
        conn.dataReceived(b"HTTP/1.1 507 Insufficient Storage\r\nContent-Length: 5\r\n\r\nfull\n")
        answer = self.successResultOf(conn.ready)
        self.assertEqual((answer.status, answer.body), (507, b"full\n"))
        self.assertEqual(self.successResultOf(conn.answer), answer)

    def test_chunked_framing(self) -> None:
        conn, transport = connected(chunked=True)
        conn.dataReceived(b"HTTP/1.1 100 Continue\r\n\r\n")
        transport.clear()
        conn.write(b"abc")
        conn.write(b"")
        conn.finish()
        self.assertEqual(transport.value(), b"3\r\nabc\r\n0\r\n\r\n")

    def test_a_body_of_known_length_as_one_chunk_with_trailers(self) -> None:
        """What a replicated PUT sends (txstore.common.body_digest): one chunk as it comes, then the fields."""
        for body, pieces in ((b"hello world", [b"hello", b" ", b"world"]), (b"", [])):
            conn = PutConnection(PutRequest.of("/d1/1/a/c/o", "n1", {
                "Transfer-Encoding": "chunked", "X-Backend-Obj-Content-Length": str(len(body)),
                "Expect": "100-continue"}))
            transport = StringTransport()
            conn.makeConnection(transport)
            head = transport.value()
            # The chunk's size line goes with the head (the body's writes then go out alone).
            self.assertTrue(head.endswith(b"\r\n\r\n%x\r\n" % len(body) if body else b"\r\n\r\n"), head)
            conn.dataReceived(b"HTTP/1.1 100 Continue\r\n\r\n")
            transport.clear()
            for piece in pieces:
                conn.write(piece)
            conn.finish({"X-Backend-Body-Md5": "m", "X-Backend-Body-Crc32": "c"})
            framed = b"%s\r\n" % body if body else b""
            self.assertEqual(transport.value(), framed + b"0\r\nX-Backend-Body-Md5: m\r\nX-Backend-Body-Crc32: c\r\n\r\n")

    def test_one_chunk_is_never_longer_or_shorter_than_said(self) -> None:
        for pieces in ([b"hello", b"!"], [b"hell"]):
            conn = PutConnection(PutRequest.of("/d1/1/a/c/o", "n1", {
                "Transfer-Encoding": "chunked", "X-Backend-Obj-Content-Length": "5", "Expect": "100-continue"}))
            transport = StringTransport()
            conn.makeConnection(transport)
            conn.dataReceived(b"HTTP/1.1 100 Continue\r\n\r\n")
            for piece in pieces:
                conn.write(piece)
            conn.finish({"X-Backend-Body-Md5": "m"})
            self.assertTrue(transport.disconnected, pieces)
            self.assertNotIn(b"0\r\nX-Backend", transport.value())  # the body never ends as if whole
            self.failureResultOf(conn.answer, NodeGone)

    def ec_archive(self) -> tuple[PutConnection, StringTransport]:
        """A connection that will send a 10-byte EC archive, its 100 Continue heard."""
        headers = {"Transfer-Encoding": "chunked", "X-Backend-Ec-Archive-Length": "10", "Expect": "100-continue"}
        conn = PutConnection(PutRequest.of("/d1/1/a/c/o", "n1", headers))
        transport = StringTransport()
        conn.makeConnection(transport)
        self.assertTrue(transport.value().endswith(b"\r\n\r\na\r\n"), transport.value())  # the chunk's size
        conn.dataReceived(b"HTTP/1.1 100 Continue\r\n\r\n")
        transport.clear()
        return conn, transport

    def test_an_ec_archive_is_a_leading_chunk_then_lines(self) -> None:
        """
        An EC archive of known length: one chunk whose size line goes with the head, its
        fragments written bare; then the footer and commit lines as chunks of their own, or
        the trailer fields straight after the archive (a node committing by POST).
        """
        for lines, trailers, tail in (
            ([b'{"etag": 1}\n', b"commit\n"], None, b'\r\nc\r\n{"etag": 1}\n\r\n7\r\ncommit\n\r\n0\r\n\r\n'),
            ([], {"X-Object-Sysmeta-Ec-Etag": "e"}, b"\r\n0\r\nX-Object-Sysmeta-Ec-Etag: e\r\n\r\n"),
        ):
            conn, transport = self.ec_archive()
            conn.write(b"frag1")
            conn.write(b"frag2")
            self.assertEqual(transport.value(), b"frag1frag2")
            for line in lines:
                conn.write(line)
            conn.finish(trailers)
            self.assertEqual(transport.value(), b"frag1frag2" + tail)
            self.assertFalse(transport.disconnected)

    def test_an_ec_archive_is_never_cut_short(self) -> None:
        conn, transport = self.ec_archive()
        conn.write(b"frag1")
        conn.finish()
        self.assertTrue(transport.disconnected)
        self.assertNotIn(b"0\r\n\r\n", transport.value())
        self.failureResultOf(conn.answer, NodeGone)

    def test_a_write_across_the_archives_end(self) -> None:
        """The archive's last bytes and the footer line in one write: the line is a chunk of its own."""
        conn, transport = self.ec_archive()
        conn.write(b"frag1")
        conn.write(b"frag2{}\n")
        conn.finish()
        self.assertEqual(transport.value(), b"frag1frag2\r\n3\r\n{}\n\r\n0\r\n\r\n")

    def test_a_second_continue_says_stored(self) -> None:
        """An EC archive committed on its connection: the node's fields, then its second 100 Continue."""
        conn, transport = connected(chunked=True)
        conn.dataReceived(b"HTTP/1.1 100 Continue\r\nX-Backend-Ec-Commit: on-connection\r\n\r\n")
        self.assertEqual(conn.continue_headers, {"x-backend-ec-commit": "on-connection"})
        stored = conn.wait_stored()
        conn.write(b"archive")
        self.assertNoResult(stored)
        conn.dataReceived(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.assertIsNone(self.successResultOf(stored))
        self.assertIsNone(self.successResultOf(conn.wait_stored()))  # asked again: the same
        self.assertNoResult(conn.answer)
        conn.write(b"commit\n")
        conn.finish()
        conn.dataReceived(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(self.successResultOf(conn.answer).status, 201)

    def test_an_answer_instead_of_stored(self) -> None:
        conn, _ = connected(chunked=True)
        conn.dataReceived(b"HTTP/1.1 100 Continue\r\n\r\n")
        stored = conn.wait_stored()
        conn.dataReceived(b"HTTP/1.1 409 Conflict\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(self.successResultOf(stored).status, 409)
        lost, _ = connected(chunked=True)
        lost.dataReceived(b"HTTP/1.1 100 Continue\r\n\r\n")
        lost.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(lost.wait_stored(), NodeGone)
        lost.answer.addErrback(lambda _: None)

    def test_a_waiter_given_up_on(self) -> None:
        conn, _ = connected(chunked=True)
        conn.dataReceived(b"HTTP/1.1 100 Continue\r\n\r\n")
        stored = conn.wait_stored()
        stored.cancel()  # a timeout
        self.failureResultOf(stored)
        conn.dataReceived(b"HTTP/1.1 100 Continue\r\n\r\n")  # comes late: no AlreadyCalledError
        self.assertIsNone(self.successResultOf(conn.wait_stored()))

    def test_backpressure(self) -> None:
        conn, transport = connected()
        self.assertIs(transport.producer, conn)
        self.assertTrue(conn.writable)
        conn.pauseProducing()
        self.assertFalse(conn.writable)
        waiting = conn.wait_writable()
        self.assertNoResult(waiting)
        conn.resumeProducing()
        self.successResultOf(waiting)

    def test_lost_before_answer(self) -> None:
        conn, _ = connected()
        conn.dataReceived(b"HTTP/1.1 100 Continue\r\n\r\n")
        conn.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(conn.answer, NodeGone)

    def test_a_body_shorter_than_declared_is_never_finished(self) -> None:
        conn, transport = connected()
        conn.dataReceived(b"HTTP/1.1 100 Continue\r\n\r\n")
        conn.write(b"hel")
        conn.finish()  # the node must not take 3 bytes for the object
        self.assertTrue(transport.disconnected)
        self.failureResultOf(conn.answer, NodeGone)

    def test_garbage(self) -> None:
        conn, transport = connected()
        conn.dataReceived(b"SSH-2.0-OpenSSH\r\n\r\n")
        self.failureResultOf(conn.ready, NodeGone)
        self.failureResultOf(conn.answer, NodeGone)


class RecordingPool:
    """What a PutConnection tells its pool."""

    def __init__(self) -> None:
        self.released: list[PutConnection] = []
        self.forgotten: list[PutConnection] = []

    def release(self, conn: PutConnection) -> None:
        self.released.append(conn)

    def forget(self, conn: PutConnection) -> None:
        self.forgotten.append(conn)

    def is_idle(self, conn: PutConnection) -> bool:
        return conn in self.released


def pooled(chunked: bool = False):
    pool = RecordingPool()
    conn = PutConnection(request(chunked), pool)
    transport = StringTransport()
    conn.makeConnection(transport)
    return conn, transport, pool


class ReuseTests(SynchronousTestCase):
    """Which exchanges leave a connection fit for the next PUT."""

    def send_body(self, conn) -> None:
        """The node invites the body; it is sent whole."""
        conn.dataReceived(b"HTTP/1.1 100 Continue\r\n\r\n")
        conn.write(b"hello")
        conn.finish()

    def exchange(self, conn, answer: bytes) -> NodeAnswer:
        self.send_body(conn)
        return self.exchange_tail(conn, answer)

    def test_clean_exchange_is_kept_and_reused(self) -> None:
        conn, transport, pool = pooled()
        self.exchange(conn, b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(pool.released, [conn])
        self.assertFalse(transport.disconnecting)
        transport.clear()
        conn.reuse(request(True, "/next"))
        self.assertTrue(conn.reused)
        self.assertEqual(transport.value(),
                         b"PUT /next HTTP/1.1\r\nHost: n1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n")
        self.assertNoResult(conn.ready)
        conn.dataReceived(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.assertIsNone(self.successResultOf(conn.ready))
        transport.clear()
        conn.write(b"abc")
        conn.finish()
        self.assertEqual(transport.value(), b"3\r\nabc\r\n0\r\n\r\n")
        answer = b"HTTP/1.1 201 Created\r\nETag: e\r\nContent-Length: 3\r\n\r\nok\n"
        self.assertEqual(self.exchange_tail(conn, answer).body, b"ok\n")
        self.assertEqual(pool.released, [conn, conn])

    def exchange_tail(self, conn, answer: bytes) -> NodeAnswer:
        conn.dataReceived(answer)
        return self.successResultOf(conn.answer)

    def test_not_kept(self) -> None:
        cases = {
            "connection close": b"HTTP/1.1 201 Created\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.0": b"HTTP/1.0 201 Created\r\nContent-Length: 0\r\n\r\n",
            "bytes after the answer": b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200",
        }
        for why, answer in cases.items():
            conn, transport, pool = pooled()
            self.exchange(conn, answer)
            self.assertEqual(pool.released, [], why)
            self.assertTrue(transport.disconnecting, why)

    def test_answer_before_the_body_is_not_kept(self) -> None:
        conn, transport, pool = pooled()
        conn.dataReceived(b"HTTP/1.1 409 Conflict\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(self.successResultOf(conn.ready).status, 409)
        self.assertEqual(pool.released, [])
        self.assertTrue(transport.disconnecting)

    def test_answer_delimited_by_the_end_is_not_kept(self) -> None:
        conn, transport, pool = pooled()
        self.send_body(conn)
        conn.dataReceived(b"HTTP/1.1 201 Created\r\n\r\nbody")
        conn.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.successResultOf(conn.answer).body, b"body")
        self.assertEqual(pool.released, [])
        self.assertEqual(pool.forgotten, [conn])
        self.successResultOf(conn.lost)

    def test_answer_delimited_by_the_end_after_the_transport_stopped_its_producer(self) -> None:
        conn, transport, pool = pooled()
        self.send_body(conn)
        conn.dataReceived(b"HTTP/1.0 201 Created\r\n\r\nbody")
        conn.stopProducing()  # what a TCP transport does just before connectionLost
        conn.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.successResultOf(conn.answer), NodeAnswer(201, {}, b"body"))

    def test_heard(self) -> None:
        conn, _, pool = pooled()
        self.exchange(conn, b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        conn.reuse(request(False, "/next"))
        self.assertFalse(conn.heard)
        conn.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(conn.ready, NodeGone)
        self.failureResultOf(conn.answer, NodeGone)
        self.assertFalse(conn.heard)  # lost before a byte: the pool may try a new connection

    def test_data_while_idle_closes(self) -> None:
        conn, transport, pool = pooled()
        self.exchange(conn, b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        conn.dataReceived(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
        self.assertTrue(transport.disconnected)
