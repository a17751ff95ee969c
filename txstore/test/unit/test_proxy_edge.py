"""
The proxy's HTTP edge: twisted requests become `SwiftRequest`s with every byte of the path,
and `SwiftResponse`s are rendered whole or pumped with backpressure; a body that breaks off
aborts the connection.
"""

from __future__ import annotations

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from zope.interface import implementer

from txstore.common.streaming import StreamingSite
from txstore.common.web import ResponseAborted
from txstore.interfaces import IByteSource
from txstore.proxy.edge import ProxyEdge, _Pump
from txstore.proxy.messages import HeaderMap, SwiftRequest, SwiftResponse, WatchedSource, unwatched
from txstore.test.unit.test_middleware import Chunks


@implementer(IByteSource)
class HeldChunks:
    """A body whose reads wait until the test answers them."""

    def __init__(self) -> None:
        self.reads: list[Deferred] = []
        self.stopped = False

    def read(self) -> Deferred:
        waiting: Deferred = Deferred()
        self.reads.append(waiting)
        return waiting

    def stop(self) -> None:
        self.stopped = True


class FakeRequest:
    """What _Pump uses of twisted's Request."""

    def __init__(self) -> None:
        self.channel = object()
        self.producer = None
        self.written: list[bytes] = []
        self.sentLength = 0

    def registerProducer(self, producer, streaming: bool) -> None:
        assert streaming and self.producer is None
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.written.append(data)


class PumpTests(SynchronousTestCase):
    def test_reads_only_while_the_client_takes_more(self) -> None:
        request, source = FakeRequest(), HeldChunks()
        pump = _Pump(request, source)
        done = Deferred.fromCoroutine(pump.run())
        self.assertIs(request.producer, pump)
        source.reads[0].callback(b"one")
        pump.pauseProducing()  # the client's socket is full
        source.reads[1].callback(b"two")
        self.assertEqual((request.written, len(source.reads)), ([b"one", b"two"], 2))  # no third read while paused
        pump.resumeProducing()
        self.assertEqual(len(source.reads), 3)
        source.reads[2].callback(b"")
        self.assertEqual((self.successResultOf(done), request.producer, source.stopped), (True, None, False))

    def test_a_client_that_goes_stops_the_source(self) -> None:
        request, source = FakeRequest(), HeldChunks()
        pump = _Pump(request, source)
        done = Deferred.fromCoroutine(pump.run())
        pump.pauseProducing()
        source.reads[0].callback(b"one")
        pump.stopProducing()
        self.assertEqual((self.successResultOf(done), source.stopped, len(source.reads)), (False, True, 1))

    def test_a_broken_body_is_reported(self) -> None:
        request, source = FakeRequest(), HeldChunks()
        done = Deferred.fromCoroutine(_Pump(request, source).run())
        source.reads[0].errback(ResponseAborted("node gone"))
        self.assertEqual((self.successResultOf(done), source.stopped), (False, True))


class Watcher(WatchedSource):
    """Records what it is told, and what a failure became."""

    def __init__(self, source, told: list, turn_into: Exception | None = None) -> None:
        super().__init__(source)
        self.told = told
        self.turn_into = turn_into

    def ended(self, sent: int) -> None:
        self.told.append((self, "ended", sent))

    def failed(self, failure, sent: int):
        self.told.append((self, "failed", sent, failure.value))
        if self.turn_into is not None:
            raise self.turn_into
        return failure

    def stopped(self, sent: int) -> None:
        self.told.append((self, "stopped", sent))


class WatchedPumpTests(SynchronousTestCase):
    """The middlewares that only watch a body are told at its end; each chunk is one read of the source."""

    def setUp(self) -> None:
        self.told: list = []
        self.source = HeldChunks()
        self.inner = Watcher(self.source, self.told)
        self.outer = Watcher(self.inner, self.told, turn_into=ResponseAborted("internal error"))
        self.request = FakeRequest()
        self.pump = _Pump(self.request, self.outer)
        self.done = Deferred.fromCoroutine(self.pump.run())

    def test_the_end_is_told_innermost_first(self) -> None:
        self.source.reads[0].callback(b"one")
        self.source.reads[1].callback(b"three")
        self.assertEqual(self.told, [])  # nothing per chunk
        self.source.reads[2].callback(b"")
        self.assertTrue(self.successResultOf(self.done))
        self.assertEqual(self.told, [(self.inner, "ended", 8), (self.outer, "ended", 8)])
        self.assertEqual((self.request.written, len(self.source.reads), self.source.stopped),
                         ([b"one", b"three"], 3, False))

    def test_a_failure_passes_through_each_as_its_errback_would(self) -> None:
        self.source.reads[0].callback(b"one")
        broken = RuntimeError("bug")
        self.source.reads[1].errback(broken)
        self.assertFalse(self.successResultOf(self.done))
        self.assertEqual(self.told[:2], [(self.inner, "failed", 3, broken), (self.outer, "failed", 3, broken)])
        # then the source is stopped, each watcher told outermost first
        self.assertEqual(self.told[2:], [(self.outer, "stopped", 3), (self.inner, "stopped", 3)])
        self.assertTrue(self.source.stopped)

    def test_a_client_that_goes_is_told_with_what_went_out(self) -> None:
        self.pump.pauseProducing()
        self.source.reads[0].callback(b"one")
        self.pump.stopProducing()
        self.assertFalse(self.successResultOf(self.done))
        self.assertEqual(self.told, [(self.outer, "stopped", 3), (self.inner, "stopped", 3)])
        self.assertTrue(self.source.stopped)

    def test_other_readers_read_through_the_watchers(self) -> None:
        told: list = []
        source = HeldChunks()
        watched = Watcher(Watcher(source, told), told)
        first = watched.read()
        source.reads[0].callback(b"abc")
        self.assertEqual(self.successResultOf(first), b"abc")
        end = watched.read()
        source.reads[1].callback(b"")
        self.assertEqual(self.successResultOf(end), b"")
        self.assertEqual([(what, sent) for _, what, sent in told], [("ended", 3), ("ended", 3)])
        self.assertEqual(unwatched(watched), (source, [watched, watched.source]))


class EdgeTests(TestCase):
    """The edge on a loopback socket, in front of a scripted pipeline."""

    def setUp(self) -> None:
        self.seen: list[SwiftRequest] = []
        self.bodies: list[bytes] = []
        self.answer = lambda request: SwiftResponse.text(200, "hello")

        async def pipeline(request: SwiftRequest) -> SwiftResponse:
            self.seen.append(request)
            self.bodies.append(b"")
            while chunk := await request.body.read():
                self.bodies[-1] += chunk
            return self.answer(request)

        site = StreamingSite(ProxyEdge(pipeline).resource())
        site.noisy = False
        listening = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        self.base = f"http://127.0.0.1:{listening.getHost().port}"
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        self.client = treq.client.HTTPClient(Agent(reactor, pool=pool))

    async def test_request_values(self) -> None:
        response = await self.client.put(self.base + "/v1/AUTH_a/c//o%2Fx/?multipart-manifest=put",
                                         data=b"body", headers={"X-Object-Meta-Color": "bl\xe9u".encode("latin-1")})
        self.assertEqual((response.code, await response.content()), (200, b"hello"))
        [request] = self.seen
        self.assertEqual((request.method, request.path, request.query, request.client_ip),
                         ("PUT", "/v1/AUTH_a/c//o%2Fx/", "multipart-manifest=put", "127.0.0.1"))
        self.assertEqual(request.headers["x-object-meta-color"], "bl\xe9u")  # bytes kept, as Latin-1
        self.assertEqual(self.bodies, [b"body"])

    async def test_a_path_klein_cannot_decode_still_reaches_the_pipeline(self) -> None:
        response = await self.client.get(self.base + "/v1/AUTH_a/c/%FF")
        await response.content()
        self.assertEqual((response.code, self.seen[0].path), (200, "/v1/AUTH_a/c/%FF"))

    async def test_a_host_klein_cannot_decode_still_reaches_the_pipeline(self) -> None:
        response = await self.client.get(self.base + "/healthcheck", headers={b"Host": b"caf\xe9"})
        await response.content()
        self.assertEqual((response.code, self.seen[0].host), (200, "caf\xe9"))

    async def test_whole_and_head_responses(self) -> None:
        self.answer = lambda request: SwiftResponse(
            202, HeaderMap({"Content-Length": "10", "X-Thing": "1"} if request.method == "HEAD" else {"X-Thing": "1"}),
            b"" if request.method == "HEAD" else b"0123456789")
        response = await self.client.get(self.base + "/x")
        self.assertEqual((response.code, await response.content(), response.length), (202, b"0123456789", 10))
        response = await self.client.head(self.base + "/x")
        self.assertEqual((response.code, response.headers.getRawHeaders(b"content-length"),
                          response.headers.getRawHeaders(b"x-thing")), (202, [b"10"], [b"1"]))

    async def test_streamed_body(self) -> None:
        chunks = [bytes([i]) * 65536 for i in range(40)]
        self.answer = lambda request: SwiftResponse(200, HeaderMap({"Content-Length": str(40 * 65536)}), Chunks(chunks))
        response = await self.client.get(self.base + "/big")
        self.assertEqual(await response.content(), b"".join(chunks))

    async def raw(self, data: bytes) -> bytes:
        """What the edge answers to ``data`` sent as it is, until it closes the connection."""
        received = Deferred()

        class Raw(Protocol):
            def connectionMade(self) -> None:
                self.got = b""
                self.transport.write(data)

            def dataReceived(self, chunk: bytes) -> None:
                self.got += chunk

            def connectionLost(self, reason=None) -> None:
                received.callback(self.got)

        port = int(self.base.rsplit(":", 1)[1])
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Raw())
        return await received.addTimeout(10, reactor)

    async def test_keep_alive_is_said_back(self) -> None:
        """As Swift's server: an HTTP/1.1 ``Connection: keep-alive`` is answered in kind."""
        got = await self.raw(b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: Keep-Alive\r\n\r\n"
                             b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
                             b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, close\r\n\r\n")
        first, second, third = got.split(b"HTTP/1.1 200 OK")[1:]
        self.assertIn(b"\r\nConnection: keep-alive\r\n", first)
        self.assertNotIn(b"onnection:", second)
        self.assertNotIn(b"keep-alive", third)
        got = await self.raw(b"GET /d HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")  # 1.0: closed anyway
        self.assertTrue(got.startswith(b"HTTP/1.0 200 OK"), got)
        self.assertNotIn(b"keep-alive", got)

    async def test_a_body_that_breaks_off_aborts_the_connection(self) -> None:
        source = Chunks([b"x" * 1000], ResponseAborted("no replica could resume"))
        self.answer = lambda request: SwiftResponse(200, HeaderMap({"Content-Length": "5000"}), source)
        with self.assertRaises(Exception):  # never a short body taken for a whole one
            response = await self.client.get(self.base + "/broken")
            await response.content()
        self.assertTrue(source.stopped)
