"""Tests for txstore.proxy.put_connection on an in-memory transport."""

from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from txstore.proxy.put_connection import NodeAnswer, NodeGone, PutConnection, request_head


def connected(chunked: bool = False):
    head = request_head("PUT", "/d1/1/a/c/o", "n1", {"Content-Length": "5", "Expect": "100-continue"})
    conn = PutConnection(head, chunked)
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

    def test_garbage(self) -> None:
        conn, transport = connected()
        conn.dataReceived(b"SSH-2.0-OpenSSH\r\n\r\n")
        self.failureResultOf(conn.ready, NodeGone)
        self.failureResultOf(conn.answer, NodeGone)
