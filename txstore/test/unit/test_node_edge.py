"""
Tests for txstore.storage.edge: how a node handler's `NodeResponse` reaches the wire.

Requests go in as raw bytes on a `StreamingSite` channel over a `StringTransport`, so what is
asserted is the bytes a client receives: the status line, the headers in their order, the body,
and whether the connection was finished, dropped or aborted.
"""

from __future__ import annotations

import re

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from txstore.common.streaming import StreamingSite
from txstore.common.web import HTTPError, ResponseAborted
from txstore.interfaces import IResponseBody
from txstore.storage.edge import DispatchResource
from txstore.storage.http_support import NodeResponse, plain_text

_DATE = re.compile(rb"\r\nDate: [^\r]*")


class Connection:
    """A client connection to a `DispatchResource` of ``handler``."""

    def __init__(self, handler) -> None:
        self.site = StreamingSite(DispatchResource(handler), reactor=Clock())
        self.channel = self.site.buildProtocol(None)
        self.transport = StringTransport()
        self.channel.makeConnection(self.transport)

    def request(self, method: bytes = b"GET", path: bytes = b"/x") -> None:
        self.channel.dataReceived(b"%s %s HTTP/1.1\r\nHost: node\r\n\r\n" % (method, path))

    def output(self) -> bytes:
        """What the client received, the Date line left out."""
        return _DATE.sub(b"", self.transport.value())

    def disconnect(self) -> None:
        """The client goes away: as a TCP transport does, stop the channel's producing first."""
        self.transport.producer.stopProducing()
        self.channel.connectionLost(Failure(ConnectionDone()))


SERVER_LINE = b"Server: TwistedWeb/"


def head_and_body(raw: bytes) -> tuple[list[bytes], bytes]:
    """The status line and header lines (the Server line left out), and the body."""
    head, _, body = raw.partition(b"\r\n\r\n")
    return [line for line in head.split(b"\r\n") if not line.startswith(SERVER_LINE)], body


@implementer(IResponseBody)
class ScriptedBody:
    """A streamed body the test drives: it writes what `send` gives, and ends when told."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.consumer = None
        self.done: Deferred | None = None

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")

    def stopProducing(self) -> None:
        self.calls.append("stop")

    def write_to(self, consumer) -> Deferred:
        self.calls.append("write_to")
        self.consumer = consumer
        self.done = Deferred()
        if "stop" in self.calls:  # let go: nothing is written
            self.done.callback(False)
        return self.done

    def send(self, data: bytes) -> None:
        self.consumer.write(data)


class EdgeTestCase(SynchronousTestCase):
    def serve(self, answer, method: bytes = b"GET") -> Connection:
        """A connection whose one request is answered by a handler returning ``answer``."""
        connection = Connection(lambda request: answer)
        connection.request(method)
        return connection


class WholeBodyTests(EdgeTestCase):
    def test_status_headers_in_order_and_body(self) -> None:
        response = NodeResponse(201, {"X-B": "2", "X-A": "1", b"Content-Length": b"5", "x-b": "3"}, b"hello")
        head, body = head_and_body(self.serve(response).output())
        # x-b keeps X-B's place and takes the last value, as twisted's headers do.
        self.assertEqual(head, [b"HTTP/1.1 201 Created", b"X-B: 3", b"X-A: 1", b"Content-Length: 5"])
        self.assertEqual(body, b"hello")

    def test_head_has_the_gets_length_and_no_body(self) -> None:
        connection = self.serve(plain_text(200, "hello"), b"HEAD")
        head, body = head_and_body(connection.output())
        self.assertIn(b"Content-Length: 6", head)
        self.assertEqual(body, b"")
        self.assertFalse(connection.transport.disconnecting)

    def test_no_content_has_no_length(self) -> None:
        head, body = head_and_body(self.serve(NodeResponse(204, {"X-Timestamp": "1"})).output())
        self.assertEqual((head, body), ([b"HTTP/1.1 204 No Content", b"X-Timestamp: 1"], b""))

    def test_the_handler_sees_the_raw_path(self) -> None:
        seen = []

        def handler(request):
            seen.append(request.path)
            return plain_text(200, "ok")

        Connection(handler).request(b"GET", b"/v1/a/c/x//y/%2F/")
        self.assertEqual(seen, [b"/v1/a/c/x//y/%2F/"])

    def test_a_coroutine_answers_when_done(self) -> None:
        waiting: Deferred = Deferred()

        async def handler(request):
            await waiting
            return plain_text(201, "made")

        connection = Connection(handler)
        connection.request(b"PUT")
        self.assertEqual(connection.output(), b"")
        waiting.callback(None)
        self.assertTrue(connection.output().endswith(b"\r\n\r\nmade\n"))

    def test_headers_go_out_as_the_bytes_they_came_as(self) -> None:
        """Bytes that are not UTF-8 (kept as surrogates) are sent back as they came: no 500."""
        answer = NodeResponse(200, {"X-Good": "caf\u00e9", "X-Raw": "text/\udcff"}, b"x")
        head, body = head_and_body(self.serve(answer).output())
        self.assertEqual(head[0], b"HTTP/1.1 200 OK")
        self.assertIn(b"X-Good: caf\xc3\xa9", head)
        self.assertIn(b"X-Raw: text/\xff", head)

    def test_a_line_break_in_a_header_cannot_make_another(self) -> None:
        head, body = head_and_body(self.serve(NodeResponse(200, {"X-Bad": "a\r\nX-Injected: 1"}, b"x")).output())
        self.assertEqual(head[0], b"HTTP/1.1 200 OK")
        self.assertFalse([line for line in head if line.startswith(b"X-Injected")])


class ErrorTests(EdgeTestCase):
    def test_http_error_is_its_plain_text_after_its_headers(self) -> None:
        def refuse(request):
            raise HTTPError(405, "Method Not Allowed", {"Allow": "GET"})

        async def refuse_later(request):
            raise HTTPError(405, "Method Not Allowed", {"Allow": "GET"})

        for handler in (refuse, refuse_later):
            connection = Connection(handler)
            connection.request()
            head, body = head_and_body(connection.output())
            self.assertEqual(head, [b"HTTP/1.1 405 Method Not Allowed", b"Allow: GET",
                                    b"Content-Type: text/plain; charset=utf-8", b"Content-Length: 19"])
            self.assertEqual(body, b"Method Not Allowed\n")

    def test_errors_become_a_logged_plain_500(self) -> None:
        def broken(request):
            raise RuntimeError("boom")

        async def fails(request):
            raise ValueError("async boom")

        for handler, error in ((broken, RuntimeError), (fails, ValueError), (lambda request: b"bytes", TypeError)):
            connection = Connection(handler)
            connection.request()
            head, body = head_and_body(connection.output())
            self.assertEqual((head[0], body), (b"HTTP/1.1 500 Internal Server Error", b"Internal Server Error\n"))
            self.assertEqual(len(self.flushLoggedErrors(error)), 1)

    def test_a_handler_is_not_cancelled_when_the_client_goes_away(self) -> None:
        commit: Deferred = Deferred()
        steps = []

        async def handler(request):
            await commit
            steps.append("committed")
            return plain_text(201, "made")

        connection = Connection(handler)
        connection.request(b"PUT")
        connection.disconnect()
        self.assertFalse(commit.called, "the handler's wait was cancelled")
        commit.callback(None)
        self.assertEqual(steps, ["committed"])
        self.assertEqual(connection.transport.value(), b"")


class StreamedBodyTests(EdgeTestCase):
    def setUp(self) -> None:
        self.body = ScriptedBody()
        self.response = NodeResponse(200, {"ETag": "abc", "Content-Length": "10"}, self.body)

    def test_written_as_the_connections_producer(self) -> None:
        connection = self.serve(self.response)
        self.assertIs(connection.channel._requestProducer, self.body)
        self.body.send(b"01234")
        # The client's buffer fills and drains: twisted pauses and resumes the body.
        connection.channel.pauseProducing()
        connection.channel.resumeProducing()
        self.body.send(b"56789")
        self.assertIs(connection.channel._requestProducer, self.body)  # not finished before write_to is done
        self.body.done.callback(True)
        head, data = head_and_body(connection.output())
        self.assertEqual(head, [b"HTTP/1.1 200 OK", b"ETag: abc", b"Content-Length: 10"])
        self.assertEqual(data, b"0123456789")
        self.assertEqual(self.body.calls, ["write_to", "pause", "resume"])
        self.assertIsNone(connection.channel._requestProducer)
        self.assertFalse(connection.transport.disconnecting)

    def test_response_aborted_aborts(self) -> None:
        connection = self.serve(self.response)
        self.body.send(b"01234")
        self.body.done.errback(ResponseAborted("rot"))
        self.assertTrue(connection.transport.disconnected, "not aborted")
        self.assertTrue(connection.output().endswith(b"\r\n\r\n01234"))
        self.assertEqual(self.flushLoggedErrors(), [])
        connection.disconnect()

    def test_an_error_before_the_first_byte_is_answered_without_the_headers(self) -> None:
        connection = self.serve(self.response)
        self.body.done.errback(HTTPError(404, "Not Found: rot"))
        head, data = head_and_body(connection.output())
        self.assertEqual(head, [b"HTTP/1.1 404 Not Found", b"Content-Type: text/plain; charset=utf-8",
                                b"Content-Length: 15"])
        self.assertEqual(data, b"Not Found: rot\n")
        self.assertIsNone(connection.channel._requestProducer)

        body = ScriptedBody()
        connection = self.serve(NodeResponse(200, {"ETag": "abc", "Content-Length": "10"}, body))
        body.done.errback(RuntimeError("bug"))
        head, data = head_and_body(connection.output())
        self.assertEqual((head[0], head[1:2], data),
                         (b"HTTP/1.1 500 Internal Server Error", [b"Content-Type: text/plain; charset=utf-8"],
                          b"Internal Server Error\n"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_an_error_after_the_first_byte_drops_the_connection(self) -> None:
        connection = self.serve(self.response)
        self.body.send(b"01234")
        self.body.done.errback(RuntimeError("disk on fire"))
        self.assertTrue(connection.transport.disconnecting)
        self.assertFalse(connection.transport.disconnected, "aborted, not dropped")
        self.assertNotIn(b"Internal Server Error", connection.output())
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_a_client_gone_mid_body_stops_it_quietly(self) -> None:
        connection = self.serve(self.response)
        self.body.send(b"01234")
        connection.disconnect()
        self.assertEqual(self.body.calls, ["write_to", "stop"])
        self.body.done.callback(False)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_a_client_gone_before_the_answer_lets_the_body_go(self) -> None:
        answer: Deferred = Deferred()
        connection = Connection(lambda request: answer)
        connection.request()
        connection.disconnect()
        answer.callback(self.response)
        self.assertEqual(self.body.calls, ["stop", "write_to"])
        self.assertEqual(connection.transport.value(), b"")

    def test_head_lets_the_body_go(self) -> None:
        connection = self.serve(self.response, b"HEAD")
        head, data = head_and_body(connection.output())
        self.assertEqual((head, data), ([b"HTTP/1.1 200 OK", b"ETag: abc", b"Content-Length: 10"], b""))
        self.assertEqual(self.body.calls, ["stop", "write_to"])

    def test_stopped_while_the_client_is_there_is_never_finished_short(self) -> None:
        connection = self.serve(self.response)
        self.body.send(b"01234")
        self.body.done.callback(False)
        self.assertTrue(connection.transport.disconnected)
        connection.disconnect()
