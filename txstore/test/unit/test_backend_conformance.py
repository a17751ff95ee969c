"""
One set of tests for every `IBackendClient`: the real client against a small node on a
loopback socket, and the in-memory fake the controller tests use, so the fake cannot drift
from what the real client does.

The node in both: ``/sd1/…`` holds ``hello world`` (GET, HEAD) and stores PUT bodies
(201 with their md5); ``/full/…`` answers every PUT with 507 before the body.
"""

from __future__ import annotations

import hashlib

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.trial.unittest import TestCase
from twisted.web.client import ResponseDone
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface.verify import verifyObject

from txstore.common.backend_client import BackendClient, BackendResponse
from txstore.common.streaming import StreamingSite
from txstore.interfaces import IBackendClient
from txstore.test.backend_fake import FakeBackend

STORED = b"hello world"


class _Collect(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.done: Deferred = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason) -> None:
        self.done.callback((reason,))  # a tuple: a bare Failure would fire the errbacks


class BackendClientConformance:
    """Mixed into a TestCase whose ``setUp`` sets ``self.client``, ``self.host``, ``self.port``."""

    client: object
    host: str
    port: int

    def test_provides_the_interface(self) -> None:
        self.assertTrue(verifyObject(IBackendClient, self.client))

    async def test_small_request(self) -> None:
        response = await self.client.request("GET", self.host, self.port, "/sd1/1/a/c/o", {"X-Trans-Id": "tx"})
        self.assertIsInstance(response, BackendResponse)
        self.assertEqual((response.status, response.body), (200, STORED))

    async def test_streamed_get(self) -> None:
        response = await self.client.stream("GET", self.host, self.port, "/sd1/1/a/c/o", {"X-Trans-Id": "tx"})
        self.assertEqual((response.status, response.length, response.header("etag")),
                         (200, len(STORED), hashlib.md5(STORED).hexdigest()))
        self.assertNotIn("content-length", response.headers)
        collect = _Collect()
        response.deliver(collect)
        (reason,) = await collect.done
        self.assertTrue(reason.check(ResponseDone))
        self.assertEqual(collect.data, STORED)

    async def test_streamed_head(self) -> None:
        response = await self.client.stream("HEAD", self.host, self.port, "/sd1/1/a/c/o", {})
        self.assertEqual((response.status, response.length), (200, len(STORED)))
        self.assertTrue(await response.discard(reactor, 5))

    async def test_put_invited(self) -> None:
        connection, early = await self.client.put(self.host, self.port, "/sd1/1/a/c/new",
                                                  {"Content-Length": "6", "Expect": "100-continue"}, timeout=5)
        self.assertIsNone(early)
        self.assertTrue(connection.writable)
        await connection.wait_writable()
        connection.write(b"abc")
        connection.write(b"def")
        connection.finish()
        answer = await connection.answer
        self.assertEqual((answer.status, answer.header("etag")), (201, hashlib.md5(b"abcdef").hexdigest()))

    async def test_put_refused_before_the_body(self) -> None:
        connection, early = await self.client.put(self.host, self.port, "/full/1/a/c/new",
                                                  {"Content-Length": "6", "Expect": "100-continue"}, timeout=5)
        self.assertEqual(early.status, 507)


class _Node(Resource):
    isLeaf = True

    def render_GET(self, request) -> bytes:
        request.setHeader(b"ETag", hashlib.md5(STORED).hexdigest().encode())
        return STORED

    def render_HEAD(self, request) -> bytes:
        request.setHeader(b"ETag", hashlib.md5(STORED).hexdigest().encode())
        request.setHeader(b"Content-Length", b"%d" % len(STORED))
        return b""

    def render_PUT(self, request):
        if request.path.startswith(b"/full/"):
            request.setResponseCode(507)
            return b""
        received = hashlib.md5()

        async def store() -> None:
            while chunk := await request.body.read():
                received.update(chunk)
            request.setResponseCode(201)
            request.setHeader(b"ETag", received.hexdigest().encode())
            request.setHeader(b"Content-Length", b"0")
            request.finish()

        Deferred.fromCoroutine(store())
        return NOT_DONE_YET


class RealBackendClientTests(BackendClientConformance, TestCase):
    def setUp(self) -> None:
        site = StreamingSite(_Node())
        site.noisy = False
        listening = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        self.client = BackendClient(reactor)
        self.addCleanup(self.client.close)
        self.host, self.port = "127.0.0.1", listening.getHost().port


class FakeBackendTests(BackendClientConformance, TestCase):
    def setUp(self) -> None:
        self.client = FakeBackend()
        self.host, self.port = "127.0.0.9", 6000

        def node(call):
            if call.path.startswith("/full/"):
                return BackendResponse(507, {}, b"")
            if call.method == "PUT":
                return BackendResponse(201, {}, b"")
            etag = hashlib.md5(STORED).hexdigest()
            return BackendResponse(200, {"etag": etag, "content-length": str(len(STORED))},
                                   STORED if call.method == "GET" else b"")

        self.client.default = node
