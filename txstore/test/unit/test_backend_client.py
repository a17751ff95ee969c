"""Tests for txstore.common.backend_client against a real server on 127.0.0.1."""

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import URI
from twisted.web.error import SchemeNotSupported
from twisted.web.server import Site

from txstore.common.backend_client import BackendClient, BackendError, BackendTimeout, NodeEndpoints, quote_path
from txstore.storage.edge import DispatchResource
from txstore.storage.http_support import NodeResponse, plain_text


class BackendClientTests(TestCase):
    def setUp(self) -> None:
        self.seen = []
        self.hanging: list = []

        def handler(request):
            self.seen.append((request.method, request.path, request.getHeader(b"x-timestamp"), request.content.read()))
            if request.path == b"/hang":
                self.hanging.append(request)
                return Deferred()
            return plain_text(201, "made", {b"X-Echo": b"yes"})

        site = Site(DispatchResource(handler))
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.client = BackendClient(reactor, timeout=5)
        self.addCleanup(self.client.close)

    async def test_round_trip(self) -> None:
        port = self.port.getHost().port
        response = await self.client.request(
            "PUT", "127.0.0.1", port, "/d1/1/a/c/\u00e9 x%/y", {"X-Timestamp": "1.00000"}, b"body"
        )
        self.assertEqual((response.status, response.body), (201, b"made\n"))
        self.assertEqual(response.header("X-Echo"), "yes")
        self.assertEqual(self.seen, [(b"PUT", b"/d1/1/a/c/%C3%A9%20x%25/y", b"1.00000", b"body")])
        again = await self.client.request("GET", "127.0.0.1", port, "/x")
        self.assertEqual(again.status, 201)

    async def test_connections_are_not_logged(self) -> None:
        """Twisted's client factory logs two lines per connection; a busy node's log was mostly those."""
        events: list = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        await self.client.request("GET", "127.0.0.1", self.port.getHost().port, "/x")  # a new connection
        self.assertEqual([e for e in events if "factory" in formatEvent(e)], [])

    async def test_head_and_empty_put(self) -> None:
        """A HEAD's Content-Length is not waited for as a body; an empty PUT says Content-Length: 0."""
        port = self.port.getHost().port
        head = await self.client.request("HEAD", "127.0.0.1", port, "/h")
        self.assertEqual((head.status, head.body, head.header("content-length")), (201, b"", "5"))
        empty = await self.client.request("PUT", "127.0.0.1", port, "/e", body=b"")
        self.assertEqual(empty.status, 201)
        self.assertEqual(self.seen[-1], (b"PUT", b"/e", None, b""))

    async def test_answers_as_they_are(self) -> None:
        """
        A node's redirect is its answer (not followed), a Set-Cookie is not sent back, nothing
        asks for gzip, and a query sent unencoded by a client goes percent-encoded.
        """
        asked: list = []

        def handler(request):
            asked.append((request.uri, request.getHeader(b"cookie"), request.getHeader(b"accept-encoding")))
            return plain_text(301, "moved", {b"Location": b"/elsewhere", b"Set-Cookie": b"k=v"})

        site = Site(DispatchResource(handler))
        other = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(other.stopListening)
        port = other.getHost().port
        first = await self.client.request("GET", "127.0.0.1", port, "/c", query="?prefix=\u00e9 x&limit=2")
        second = await self.client.request("GET", "127.0.0.1", port, "/c", query="?prefix=%C3%A9")
        self.assertEqual((first.status, first.body, first.header("location")), (301, b"moved\n", "/elsewhere"))
        self.assertEqual(second.status, 301)
        self.assertEqual(asked, [(b"/c?prefix=%C3%A9%20x&limit=2", None, None), (b"/c?prefix=%C3%A9", None, None)])

    async def test_timeout(self) -> None:
        port = self.port.getHost().port
        with self.assertRaises(BackendTimeout):
            await self.client.request("GET", "127.0.0.1", port, "/hang", timeout=0.2)

    async def test_refused(self) -> None:
        port = self.port.getHost().port
        await self.port.stopListening()
        with self.assertRaises(BackendError):
            await self.client.request("GET", "127.0.0.1", port, "/x")

    async def test_notify_is_a_bodiless_request_on_a_pooled_connection(self) -> None:
        """A container update: its answer read (a 204 without a length too), its connection kept."""
        answers = {b"/made": plain_text(201, "made"), b"/gone": respond_204(), b"/none": plain_text(404, "no db")}

        def handler(request):
            self.seen.append((request.method, request.path, request.getHeader(b"content-length"),
                              request.getHeader(b"x-backend-allow-reserved-names"), request.content.read()))
            return answers[request.path.split(b"/")[-1].join((b"/", b""))]

        site = Site(DispatchResource(handler))
        other = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(other.stopListening)
        port = other.getHost().port
        made = await self.client.notify("PUT", "127.0.0.1", port, "/d1/1/a/c/made", {"X-Size": "3"})
        gone = await self.client.notify("DELETE", "127.0.0.1", port, "/d1/1/a/c/gone", {})
        none = await self.client.notify("PUT", "127.0.0.1", port, "/d1/1/a/\x00c/none", {}, timeout=1)
        self.assertEqual([(a.status, a.body) for a in (made, gone, none)], [(201, b"made\n"), (204, b""), (404, b"no db\n")])
        self.assertEqual(self.seen, [(b"PUT", b"/d1/1/a/c/made", b"0", None, b""),
                                     (b"DELETE", b"/d1/1/a/c/gone", b"0", None, b""),
                                     (b"PUT", b"/d1/1/a/%00c/none", b"0", b"true", b"")])
        self.assertEqual(self.client.puts.connects, 1)  # one connection for the three

    async def test_notify_timeout_and_refusal(self) -> None:
        port = self.port.getHost().port
        with self.assertRaises(BackendTimeout):
            await self.client.notify("PUT", "127.0.0.1", port, "/hang", {}, timeout=0.2)
        await self.port.stopListening()
        with self.assertRaises(BackendError):
            await self.client.notify("PUT", "127.0.0.1", port, "/x", {})

    def test_quote_path(self) -> None:
        self.assertEqual(quote_path("/a b/%2F/\u00e9"), "/a%20b/%252F/%C3%A9")


class NodeEndpointsTests(SynchronousTestCase):
    def test_one_endpoint_per_node_with_the_connect_timeout(self) -> None:
        endpoints = NodeEndpoints(reactor, 2.5)
        first = endpoints.endpointForURI(URI.fromBytes(b"http://127.0.0.1:6210/d1/1/a/c/o"))
        again = endpoints.endpointForURI(URI.fromBytes(b"http://127.0.0.1:6210/d1/2/a/c/p"))
        other = endpoints.endpointForURI(URI.fromBytes(b"http://127.0.0.1:6220/d2/1/a/c/o"))
        self.assertIs(first, again)
        self.assertIsNot(first, other)
        self.assertEqual((first._hostText, first._port, first._timeout), ("127.0.0.1", 6210, 2.5))

    def test_plain_http_only(self) -> None:
        endpoints = NodeEndpoints(reactor, 2.0)
        self.assertRaises(SchemeNotSupported, endpoints.endpointForURI, URI.fromBytes(b"https://127.0.0.1:6210/x"))


def respond_204() -> NodeResponse:
    """A 204 as a container server sends it: no body and no Content-Length."""
    return NodeResponse(204, {})
