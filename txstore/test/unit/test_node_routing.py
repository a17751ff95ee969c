"""
Tests for txstore.node.server: which server each backend path reaches, and with which names.

Requests go in as raw bytes on a `StreamingSite` channel (the node's real site) over a
`StringTransport`, so paths reach the node exactly as written here: no client normalises
``//``, a trailing ``/`` or ``%2F`` on the way.
"""

from __future__ import annotations

from attrs import define, field, frozen
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from txstore.common.paths import BackendPath
from txstore.common.streaming import StreamingSite
from txstore.common.web import ResponseAborted
from txstore.interfaces import IResponseBody
from txstore.storage.http_support import HTTPError, NodeResponse, plain_text
from txstore.node import server
from txstore.node.server import NodeServer
from txstore.common.backend_client import InertProducer


@define
class FakeServer:
    """Stands in for the account, container or object server: records each call, answers 200."""

    name: str
    calls: list[tuple[str, BackendPath]]

    async def handle(self, request, path: BackendPath) -> NodeResponse:
        return self._record("handle", request, path)

    async def handle_object_row(self, request, path: BackendPath) -> NodeResponse:
        return self._record("handle_object_row", request, path)

    async def handle_container_report(self, request, path: BackendPath) -> NodeResponse:
        return self._record("handle_container_report", request, path)

    def _record(self, method: str, request, path: BackendPath) -> NodeResponse:
        self.calls.append((f"{self.name}.{method}", path))
        return plain_text(200, f"{self.name}.{method}")


@define
class FakeRecon:
    paths: list[bytes] = field(factory=list)

    async def handle(self, request) -> NodeResponse:
        self.paths.append(request.path)
        return plain_text(200, "recon")


@implementer(IResponseBody)
class BreakingBody(InertProducer):
    """A streamed body that writes ``partial``, then fails with ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def _write_to(self, consumer) -> bool:
        consumer.write(b"partial")
        raise self.error

    def write_to(self, consumer) -> Deferred:
        return Deferred.fromCoroutine(self._write_to(consumer))


@frozen
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def parse(raw: bytes) -> Answer:
    """One HTTP/1.1 response with a Content-Length, as the node writes it."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(": ")
        headers[name.lower()] = value
    return Answer(int(status_line.split(" ")[1]), headers, body)


class Connection:
    """A client connection to ``node``'s resource, served by the node's StreamingSite."""

    def __init__(self, node: NodeServer) -> None:
        self.site = StreamingSite(node.resource(), reactor=Clock())
        self.channel = self.site.buildProtocol(None)
        self.transport = StringTransport()
        self.channel.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.channel.dataReceived(data)

    def request(self, method: bytes, path: bytes, headers: dict[bytes, bytes] | None = None) -> None:
        lines = [b"%s %s HTTP/1.1" % (method, path)]
        lines += [b"%s: %s" % item for item in {b"Host": b"node", **(headers or {})}.items()]
        self.send(b"\r\n".join(lines) + b"\r\n\r\n")

    def disconnect(self) -> None:
        self.channel.connectionLost(Failure(ConnectionDone()))

    def answer(self) -> Answer:
        return parse(self.transport.value())


class RoutingTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.calls: list[tuple[str, BackendPath]] = []
        self.recon = FakeRecon()
        self.node = NodeServer(
            accounts=FakeServer("accounts", self.calls),
            containers=FakeServer("containers", self.calls),
            objects=FakeServer("objects", self.calls),
            recon=self.recon,
        )

    def call(
        self,
        path: bytes,
        method: bytes = b"GET",
        headers: dict[bytes, bytes] | None = None,
        node: NodeServer | None = None,
    ) -> Answer:
        connection = Connection(node or self.node)
        connection.request(method, path, headers)
        return connection.answer()

    def assertReaches(
        self, path: bytes, expected: tuple[str, BackendPath], method: bytes = b"GET", **headers: bytes
    ) -> None:
        """Only the ``expected`` (server method, parsed path) was called; ``X_Foo=`` sends ``X-Foo:``."""
        del self.calls[:]
        answer = self.call(path, method, {k.replace("_", "-").encode(): v for k, v in headers.items()})
        self.assertEqual((answer.status, self.calls), (200, [expected]), path)

    def assertPlainText(self, answer: Answer, status: int, body: bytes) -> None:
        self.assertEqual((answer.status, answer.body), (status, body))
        self.assertEqual(answer.headers["content-type"], "text/plain; charset=utf-8")
        self.assertEqual(answer.headers["content-length"], str(len(body)))


class BackendPathTests(RoutingTestCase):
    def test_object_names_keep_every_slash(self) -> None:
        for raw, name in [
            (b"/dev/1/a/c//o", "/o"),
            (b"/dev/1/a/c/o/", "o/"),
            (b"/dev/1/a/c/x%2Fy", "x/y"),
            (b"/dev/1/a/c/%C3%BC%20b", "\u00fc b"),
            (b"/dev/1/a/c///", "//"),
            (b"/dev/1/a/c//", "/"),
            (b"/dev/1/a/c/dir/sub/", "dir/sub/"),
            (b"/dev/1/a/c/o%3Fx?multipart-manifest=get", "o?x"),
        ]:
            self.assertReaches(raw, ("objects.handle", BackendPath("dev", 1, "a", "c", name)))

    def test_containers_and_accounts(self) -> None:
        container = ("containers.handle", BackendPath("dev", 1, "a", "c"))
        account = ("accounts.handle", BackendPath("dev", 1, "a"))
        self.assertReaches(b"/dev/1/a/c", container)
        self.assertReaches(b"/dev/1/a/c/", container)
        self.assertReaches(b"/dev/1/a/c%2F", container)
        self.assertReaches(b"/dev/1/a", account)
        self.assertReaches(b"/dev/1/a/", account)

    def test_levels_come_from_the_decoded_path(self) -> None:
        """An encoded ``/`` in a fixed segment splits it, as Swift splits the decoded path."""
        self.assertReaches(b"/dev/1/a/c%2Fo", ("objects.handle", BackendPath("dev", 1, "a", "c", "o")))
        self.assertReaches(b"/dev/1/a%2Fc", ("containers.handle", BackendPath("dev", 1, "a", "c")))
        self.assertReaches(b"/dev/1/a/c%252Fo", ("containers.handle", BackendPath("dev", 1, "a", "c%2Fo")))

    def test_object_row_update_goes_to_the_container_server(self) -> None:
        row = ("containers.handle_object_row", BackendPath("dev", 1, "a", "c", "o"))
        obj = ("objects.handle", BackendPath("dev", 1, "a", "c", "o"))
        self.assertReaches(b"/dev/1/a/c/o", row, b"PUT", X_Backend_Server_Type=b"container")
        self.assertReaches(b"/dev/1/a/c/o", row, b"DELETE", X_Backend_Server_Type=b"container")
        self.assertReaches(b"/dev/1/a/c/o", obj, b"PUT", X_Backend_Server_Type=b"object")
        self.assertReaches(b"/dev/1/a/c/o", obj, b"PUT")

    def test_container_report_goes_to_the_account_server(self) -> None:
        report = ("accounts.handle_container_report", BackendPath("dev", 1, "a", "c"))
        container = ("containers.handle", BackendPath("dev", 1, "a", "c"))
        self.assertReaches(b"/dev/1/a/c", report, b"PUT", X_Put_Timestamp=b"1.0")
        self.assertReaches(b"/dev/1/a/c/", report, b"PUT", X_Put_Timestamp=b"1.0")
        self.assertReaches(b"/dev/1/a/c", container, b"GET", X_Put_Timestamp=b"1.0")
        self.assertReaches(b"/dev/1/a/c", container, b"PUT")

    def test_a_server_this_node_does_not_run(self) -> None:
        node = NodeServer(objects=FakeServer("objects", self.calls))
        for path in (b"/dev/1/a", b"/dev/1/a/c", b"/dev/1/a/c/o"):
            headers = {b"X-Backend-Server-Type": b"container"} if path.count(b"/") == 5 else {}
            self.assertPlainText(self.call(path, headers=headers, node=node), 404, b"Not Found\n")
        self.assertEqual(self.calls, [])


class RefusedPathTests(RoutingTestCase):
    def test_not_utf8_is_412_not_kleins_400(self) -> None:
        for path in (b"/dev/1/a/c/%FF", b"/dev/1/a/%C3", b"/dev/%FF/a", b"/%FF"):
            self.assertPlainText(self.call(path), 412, b"Invalid UTF8 or contains NULL\n")
        self.assertPlainText(self.call(b"/dev/1/a/c/%00"), 412, b"Invalid UTF8 or contains NULL\n")
        self.assertEqual(self.calls, [])

    def test_not_utf8_still_reaches_recon_as_before(self) -> None:
        self.assertEqual(self.call(b"/recon/%FF").body, b"recon\n")
        self.assertEqual(self.recon.paths, [b"/recon/%FF"])

    def test_a_host_klein_cannot_decode_is_routed_as_before(self) -> None:
        answer = self.call(b"/dev/1/a/c/o", headers={b"Host": b"n\xffde"})
        expected = [("objects.handle", BackendPath("dev", 1, "a", "c", "o"))]
        self.assertEqual((answer.status, self.calls), (200, expected))

    def test_paths_no_route_takes(self) -> None:
        """Plain text from parse_backend_path, never werkzeug's HTML 404."""
        for path in (
            b"/",
            b"/dev",
            b"/dev/1",
            b"/dev/1/",
            b"/dev/1/a//",
            b"/dev//1/a",
            b"//dev/1/a",
            b"/dev/1/a//o",
            b"/healthcheck/",
            b"//healthcheck",
            b"/h%65althcheck",
            b"/recon",
            b"//recon/load",
        ):
            self.assertPlainText(self.call(path), 400, b"Invalid path\n")
        self.assertPlainText(self.call(b"/dev/x/a/c/o"), 400, b"Invalid partition\n")
        self.assertPlainText(self.call(b"/../1/a"), 400, b"Invalid device\n")
        self.assertEqual((self.calls, self.recon.paths), ([], []))

    def test_a_partition_of_non_ascii_digits_is_refused(self) -> None:
        # "²" passes str.isdigit() but not int()
        self.assertPlainText(self.call(b"/dev/%C2%B2/a"), 400, b"Invalid partition\n")

    def test_an_error_before_any_handler_is_a_plain_500(self) -> None:
        def broken(raw: bytes, allow_reserved: bool = False):
            raise ValueError("a bug in path parsing")

        self.patch(server, "parse_backend_path", broken)
        self.assertPlainText(self.call(b"/dev/1/a"), 500, b"Internal Server Error\n")
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)


class HealthcheckAndReconTests(RoutingTestCase):
    def test_healthcheck(self) -> None:
        self.assertPlainText(self.call(b"/healthcheck"), 200, b"OK\n")
        self.assertPlainText(self.call(b"/healthcheck?probe=1"), 200, b"OK\n")
        head = self.call(b"/healthcheck", b"HEAD")
        self.assertEqual((head.status, head.body, head.headers["content-length"]), (200, b"", "3"))
        post = self.call(b"/healthcheck", b"POST")
        self.assertPlainText(post, 405, b"Method Not Allowed\n")
        self.assertEqual(post.headers["allow"], "GET, HEAD")

    def test_recon(self) -> None:
        for path in (b"/recon/load", b"/recon/", b"/recon/a/b", b"/recon//x"):
            self.assertEqual(self.call(path).body, b"recon\n")
        self.assertEqual(self.recon.paths, [b"/recon/load", b"/recon/", b"/recon/a/b", b"/recon//x"])

    def test_without_recon_its_paths_are_backend_paths(self) -> None:
        node = NodeServer(accounts=FakeServer("accounts", self.calls))
        self.assertPlainText(self.call(b"/recon/load", node=node), 400, b"Invalid path\n")
        self.assertEqual(self.call(b"/recon/1/a", node=node).status, 200)
        self.assertEqual(self.calls, [("accounts.handle", BackendPath("recon", 1, "a"))])


@define
class ControlledServer:
    """An object server whose handler the test steers: it waits on ``commit`` and records its steps."""

    steps: list[str] = field(factory=list)
    commit: Deferred = field(factory=Deferred)
    fail_with: Exception | None = None
    fail_after_writing: bool = False

    async def handle(self, request, path: BackendPath) -> NodeResponse:
        self.steps.append("start")
        if self.fail_with is not None:
            if self.fail_after_writing:  # the response begins, then breaks off
                return NodeResponse(200, {"Content-Length": "100"}, BreakingBody(self.fail_with))
            raise self.fail_with
        body = b""
        while chunk := await request.body.read():
            body += chunk
        self.steps.append(f"body {body!r}")
        await self.commit
        self.steps.append("committed")
        return plain_text(201, "Created")


class HandlerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.server = ControlledServer()
        self.node = NodeServer(objects=self.server)
        self.connection = Connection(self.node)

    def put(self, body: bytes = b"") -> None:
        self.connection.send(b"PUT /dev/1/a/c/o HTTP/1.1\r\nHost: node\r\nContent-Length: 5\r\n\r\n" + body)

    def test_handler_runs_before_the_body_arrives(self) -> None:
        self.put()
        self.assertEqual(self.server.steps, ["start"])
        self.connection.send(b"hello")
        self.server.commit.callback(None)
        self.assertEqual(self.server.steps, ["start", "body b'hello'", "committed"])
        self.assertEqual(self.connection.answer().status, 201)

    def test_a_client_that_goes_away_does_not_cancel_the_handler(self) -> None:
        self.put(b"hello")
        self.connection.disconnect()
        self.assertFalse(self.server.commit.called, "the commit step was cancelled")
        self.server.commit.callback(None)
        self.assertEqual(self.server.steps, ["start", "body b'hello'", "committed"])
        self.assertEqual(self.connection.transport.value(), b"")

    def test_http_error_is_plain_text_with_its_headers(self) -> None:
        self.server.fail_with = HTTPError(507, "Insufficient Storage", {"X-Why": "full"})
        self.connection.request(b"GET", b"/dev/1/a/c/o")
        answer = self.connection.answer()
        self.assertEqual((answer.status, answer.body), (507, b"Insufficient Storage\n"))
        self.assertEqual(answer.headers["x-why"], "full")

    def test_response_aborted_aborts_the_connection(self) -> None:
        self.server.fail_with = ResponseAborted()
        self.server.fail_after_writing = True
        self.connection.request(b"GET", b"/dev/1/a/c/o")
        self.assertTrue(self.connection.transport.disconnected)
        self.assertIn(b"partial", self.connection.transport.value())
        self.assertFalse(self.connection.transport.value().endswith(b"0\r\n\r\n"), "the response was finished")
        self.connection.disconnect()

    def test_unhandled_error_once_written_drops_the_connection(self) -> None:
        self.server.fail_with = RuntimeError("disk on fire")
        self.server.fail_after_writing = True
        self.connection.request(b"GET", b"/dev/1/a/c/o")
        self.assertTrue(self.connection.transport.disconnecting)
        self.assertNotIn(b"Internal Server Error", self.connection.transport.value())
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_unhandled_error_is_a_logged_plain_500(self) -> None:
        self.server.fail_with = RuntimeError("disk on fire")
        self.connection.request(b"GET", b"/dev/1/a/c/o")
        answer = self.connection.answer()
        self.assertEqual((answer.status, answer.body), (500, b"Internal Server Error\n"))
        self.assertEqual(answer.headers["content-type"], "text/plain; charset=utf-8")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class AccessLogTests(RoutingTestCase):
    def test_one_line_per_request(self) -> None:
        events: list[dict] = []
        self.patch(server, "ACCESS_LOG", Logger(observer=events.append))
        self.call(b"/dev/1/a/c/o", headers={b"X-Trans-Id": b"tx1"})
        self.call(b"/dev/1/a/c/%FF")
        self.call(b"/nowhere")
        self.call(b"/healthcheck")
        lines = [formatEvent(event) for event in events]
        self.assertEqual([line.split(" ")[1:4] for line in lines], [
            ["GET", "/dev/1/a/c/o", "200"],
            ["GET", "/dev/1/a/c/%FF", "412"],
            ["GET", "/nowhere", "400"],
            ["GET", "/healthcheck", "200"],
        ])
        self.assertTrue(lines[0].endswith(" tx1"))

    def test_a_client_gone_is_logged_as_such(self) -> None:
        events: list[dict] = []
        self.patch(server, "ACCESS_LOG", Logger(observer=events.append))
        controlled = ControlledServer()
        connection = Connection(NodeServer(objects=controlled))
        connection.send(b"PUT /dev/1/a/c/o HTTP/1.1\r\nHost: node\r\nContent-Length: 5\r\n\r\nhello")
        connection.disconnect()
        controlled.commit.callback(None)
        [event] = events
        self.assertTrue(formatEvent(event).endswith("(client gone)"))
