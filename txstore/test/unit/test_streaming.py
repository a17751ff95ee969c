"""Tests for txstore.common.streaming: bodies streamed into the resource, with backpressure."""

from __future__ import annotations


from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from txstore.common import streaming
from txstore.common.streaming import BodyIncomplete, StreamingRequest, StreamingSite
from txstore.storage.edge import DispatchResource
from txstore.storage.http_support import plain_text


class Harness:
    """A StreamingSite channel on a StringTransport, and what the handler saw."""

    def __init__(self, handler, high_water: int = 1024) -> None:
        StreamingRequest.high_water = high_water
        # A Clock, not the global reactor: the channels' idle timers must not outlive the test.
        self.site = StreamingSite(DispatchResource(handler), reactor=Clock())
        self.channel = self.site.buildProtocol(None)
        self.transport = StringTransport()
        self.channel.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.channel.dataReceived(data)

    def output(self) -> bytes:
        return self.transport.value()


class StreamingTests(SynchronousTestCase):
    def tearDown(self) -> None:
        StreamingRequest.high_water = 1024 * 1024

    def test_renders_before_body_and_reads_it_in_pieces(self) -> None:
        seen: list = []

        async def handler(request):
            seen.append(("start", request.method, request.path, request.args, request.body.length))
            while True:
                chunk = await request.body.read()
                if not chunk:
                    break
                seen.append(chunk)
            return plain_text(201, "got %d" % request.body.received)

        h = Harness(handler)
        h.send(b"PUT /a/b%2Fc?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n")
        self.assertEqual(seen, [("start", b"PUT", b"/a/b%2Fc", {b"x": [b"1"]}, 10)])
        h.send(b"hello")
        self.assertEqual(seen[1:], [b"hello"])
        self.assertEqual(h.output(), b"")
        h.send(b"world")
        self.assertEqual(seen[2:], [b"world"])
        self.assertIn(b"HTTP/1.1 201 Created", h.output())
        self.assertTrue(h.output().endswith(b"got 10\n"))
        self.assertFalse(h.transport.disconnecting)

    def test_keep_alive_after_streamed_body(self) -> None:
        async def handler(request):
            body = b""
            while chunk := await request.body.read():
                body += chunk
            return plain_text(200, body or b"empty")

        h = Harness(handler)
        h.send(b"PUT /1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertEqual(h.output().count(b"HTTP/1.1 200 OK"), 2)
        self.assertIn(b"abc\n", h.output())
        self.assertIn(b"empty\n", h.output())

    def test_chunked_body(self) -> None:
        received = []

        async def handler(request):
            self.assertIsNone(request.body.length)
            while chunk := await request.body.read():
                received.append(chunk)
            return plain_text(201, "ok")

        h = Harness(handler)
        h.send(b"PUT /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        self.assertEqual(received, [b"abc"])
        h.send(b"2\r\nde\r\n0\r\n\r\n")
        self.assertEqual(received, [b"abc", b"de"])
        self.assertIn(b"201 Created", h.output())

    def test_reads_inside_a_chunk_go_on_as_they_are(self) -> None:
        """
        A body sent as one large chunk: each read that falls inside the chunk's data is handed
        on as it came (the same bytes object, not a copy); chunks and reads that straddle
        their boundaries decode as twisted.web's decoder does.
        """
        pieces = []

        async def handler(request):
            while chunk := await request.body.read():
                pieces.append(chunk)
            return plain_text(201, "ok")

        h = Harness(handler, high_water=1 << 20)
        h.send(b"PUT /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n14\r\n")
        inside = b"a" * 12
        h.send(inside)
        self.assertIs(pieces[0], inside)
        h.send(b"bbbbbbbb\r\n3\r\nxyz\r")  # the end of the first chunk, then a whole one
        h.send(b"\n2")
        h.send(b"\r\nuv\r\n0\r\nX-Backend-Body-Md5: m\r\n\r\n")
        self.assertEqual(b"".join(pieces), b"a" * 12 + b"b" * 8 + b"xyz" + b"uv")
        self.assertIn(b"201 Created", h.output())

    def test_trailers_are_known_when_the_body_ends(self) -> None:
        seen = []

        async def handler(request):
            while await request.body.read():
                self.assertEqual(request.trailers, {})
            seen.append(dict(request.trailers))
            return plain_text(201, "ok")

        h = Harness(handler)
        h.send(b"PUT /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        h.send(b"0\r\nX-Object-Sysmeta-Ec-Etag: 900150983cd24fb0d6963f7d28e17f72\r\nBad line\r\n\r\n")
        self.assertEqual(seen, [{"x-object-sysmeta-ec-etag": "900150983cd24fb0d6963f7d28e17f72"}])
        self.assertIn(b"201 Created", h.output())

    def test_large_bodies_are_read_in_larger_pieces_while_they_arrive(self) -> None:
        """The transport's read size grows for a large or chunked body, and is restored after."""
        sizes = []

        async def handler(request):
            sizes.append(h.transport.bufferSize)
            while await request.body.read():
                pass
            return plain_text(201, "ok")

        h = Harness(handler)
        h.transport.bufferSize = 65536  # as a TCP transport has
        h.send(b"PUT /big HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % streaming.LARGE_BODY)
        self.assertEqual(sizes, [streaming.BODY_READ_SIZE])
        h.send(b"x" * streaming.LARGE_BODY)
        self.assertEqual(h.transport.bufferSize, 65536)
        h.send(b"PUT /small HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc")
        h.send(b"PUT /chunked HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        self.assertEqual(sizes[1:], [65536, streaming.BODY_READ_SIZE])
        h.send(b"0\r\n\r\n")
        self.assertEqual(h.transport.bufferSize, 65536)
        self.assertEqual(h.output().count(b"201 Created"), 3)

    def test_an_early_answer_restores_the_read_size(self) -> None:
        async def handler(request):
            return plain_text(413, "too large")

        h = Harness(handler)
        h.transport.bufferSize = 65536
        h.send(b"PUT /big HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % (10 * streaming.LARGE_BODY))
        self.assertIn(b"413", h.output())
        self.assertEqual(h.transport.bufferSize, 65536)

    def test_a_raw_utf8_target_is_taken_as_its_quoted_form(self) -> None:
        """Swift takes unquoted UTF-8 names; twisted.web alone would answer 400."""
        seen = []

        async def handler(request):
            seen.append((request.path, request.args))
            return plain_text(200, "ok")

        h = Harness(handler)
        h.send("GET /v1/a/c/\u00e9t\u00e9?prefix=\u20ac HTTP/1.1\r\nHost: h\r\n\r\n".encode())
        self.assertEqual(seen, [(b"/v1/a/c/%C3%A9t%C3%A9", {b"prefix": ["\u20ac".encode()]})])
        self.assertIn(b"200 OK", h.output())
        # A header line with the same bytes is not the request line: left as it is.
        h.send("GET /x HTTP/1.1\r\nHost: h\r\nX-Object-Meta-A: \u00e9\r\n\r\n".encode())
        self.assertEqual(seen[1], (b"/x", {}))
        # What is malformed for another reason is still refused.
        h2 = Harness(handler)
        h2.send("GET /\u00e9 x HTTP/1.1\r\nHost: h\r\n\r\n".encode())
        self.assertIn(b"400", h2.output())
        self.assertEqual(len(seen), 2)

    def test_overlong_lines_are_answered_with_their_reason(self) -> None:
        """Swift's limits (8192 bytes a line): 414 for the request line, 400 for a header."""
        async def handler(request):
            return plain_text(200, "ok")

        h = Harness(handler)
        h.send(b"GET /" + b"x" * 8200 + b" HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertTrue(h.output().startswith(b"HTTP/1.1 414 Request URI Too Long\r\n"), h.output()[:80])
        self.assertTrue(h.output().endswith(b"the request line is over 8192 bytes\n"))
        self.assertTrue(h.transport.disconnecting)
        h = Harness(handler)
        h.send(b"GET / HTTP/1.1\r\nHost: h\r\nX-Object-Meta-Big: " + b"v" * 8200 + b"\r\n\r\n")
        self.assertTrue(h.output().startswith(b"HTTP/1.1 400 Bad Request\r\n"), h.output()[:80])
        self.assertIn(b"Header Line Too Long", h.output())
        h = Harness(handler)
        h.send(b"GET /" + b"x" * 8000 + b" HTTP/1.1\r\nHost: h\r\nX-Fine: " + b"v" * 8000 + b"\r\n\r\n")
        self.assertIn(b"200 OK", h.output())

    def test_a_transfer_coding_we_do_not_implement_is_501(self) -> None:
        """Swift's answers: 501 to ``gzip, chunked`` (before any handler runs), 400 to ``gzip``."""
        seen = []

        async def handler(request):
            seen.append(request)
            return plain_text(201, "ok")

        for coding in (b"gzip,chunked", b"gzip, Chunked", b"chunked, chunked"):
            h = Harness(handler)
            h.send(b"PUT /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: " + coding + b"\r\nX-After: 1\r\n\r\n3\r\nabc\r\n")
            self.assertTrue(h.output().startswith(b"HTTP/1.1 501 Not Implemented\r\n"), (coding, h.output()[:80]))
            self.assertTrue(h.output().endswith(b"Unsupported Transfer-Coding header value specified in Transfer-Encoding header\n"))
            self.assertEqual(h.output().count(b"HTTP/1.1"), 1)
            self.assertTrue(h.transport.disconnecting)
        h = Harness(handler)
        h.send(b"PUT /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\nabc")
        self.assertTrue(h.output().startswith(b"HTTP/1.1 400 Bad Request\r\n"), h.output()[:80])
        self.assertEqual(seen, [])
        h = Harness(handler)
        h.send(b"PUT /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        self.assertIn(b"201 Created", h.output())

    def test_quote_raw_target(self) -> None:
        self.assertEqual(streaming.quote_raw_target(b"GET /a HTTP/1.1"), b"GET /a HTTP/1.1")
        self.assertEqual(streaming.quote_raw_target(b"PUT /\xff%20 HTTP/1.1"), b"PUT /%FF%20 HTTP/1.1")
        self.assertEqual(streaming.quote_raw_target(b"GET /\xff"), b"GET /\xff")

    def test_continue_only_when_the_body_is_read(self) -> None:
        async def refuse(request):
            return plain_text(401, "Unauthorized")

        h = Harness(refuse)
        h.send(b"PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        self.assertNotIn(b"100 Continue", h.output())
        self.assertTrue(h.output().startswith(b"HTTP/1.1 401 Unauthorized"))
        self.assertIn(b"Connection: close", h.output())
        self.assertTrue(h.transport.disconnecting)
        h.send(b"12345")  # the rest of the body arrives anyway: ignored, no error

        async def accept(request):
            while await request.body.read():
                pass
            return plain_text(201, "ok")

        h = Harness(accept)
        h.send(b"PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        self.assertEqual(h.output(), b"HTTP/1.1 100 Continue\r\n\r\n")
        h.send(b"12345")
        self.assertIn(b"201 Created", h.output())

    def test_early_answer_with_whole_body_in_one_read(self) -> None:
        def refuse(request):
            return plain_text(413, "too big")

        h = Harness(refuse)
        h.send(b"PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\n\r\n")
        self.assertEqual(h.output().count(b"HTTP/1.1"), 1)
        self.assertIn(b"413", h.output())
        self.assertTrue(h.transport.disconnecting)

    def test_backpressure(self) -> None:
        reads = []

        async def slow(request):
            reads.append(request)
            return await _never()

        h = Harness(slow, high_water=8)
        h.send(b"PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n")
        [request] = reads
        self.assertEqual(h.transport.producerState, "producing")
        h.send(b"1234")
        self.assertEqual(h.transport.producerState, "producing")
        h.send(b"5678")
        self.assertEqual(h.transport.producerState, "paused")
        data = self.successResultOf(request.body.read())
        self.assertEqual(data, b"12345678")
        self.assertEqual(h.transport.producerState, "producing")
        # a pending read keeps the stream flowing
        pending = request.body.read()
        self.assertNoResult(pending)
        h.send(b"9")
        self.assertEqual(self.successResultOf(pending), b"9")

    def test_client_gone(self) -> None:
        requests = []

        async def handler(request):
            requests.append(request)
            return await _never()

        h = Harness(handler)
        h.send(b"PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nabc")
        [request] = requests
        pending = self.successResultOf(request.body.read())
        self.assertEqual(pending, b"abc")
        waiting = request.body.read()
        h.channel.connectionLost(Failure(ConnectionLost("gone")))
        failure = self.failureResultOf(waiting, BodyIncomplete)
        self.assertIn("after 3 bytes", failure.getErrorMessage())
        self.failureResultOf(request.body.read(), BodyIncomplete)

    def test_bodyless_requests_take_the_ordinary_path(self) -> None:
        seen = []

        def handler(request):
            seen.append(self.successResultOf(request.body.read()))
            return plain_text(200, "ok")

        h = Harness(handler)
        h.send(b"GET /x?y=2 HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertEqual(seen, [b""])
        self.assertIn(b"200 OK", h.output())


def _never():
    from twisted.internet.defer import Deferred

    return Deferred()
