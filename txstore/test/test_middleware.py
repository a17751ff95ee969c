"""The built-in middlewares, each on its own, over an in-memory inner app."""

from __future__ import annotations

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from txstore.common.web import ResponseAborted
from txstore.interfaces import IByteSource
from txstore.middleware.catch_errors import CatchErrors
from txstore.middleware.copy import Copy
from txstore.middleware.gatekeeper import Gatekeeper
from txstore.middleware.healthcheck import Healthcheck
from txstore.middleware.proxy_logging import ProxyLogging
from txstore.proxy import subrequest
from txstore.proxy.messages import BytesSource, HeaderMap, SwiftRequest, SwiftResponse


class InnerApp:
    """Records what reaches it and answers with ``answer(request)``."""

    def __init__(self, answer=None) -> None:
        self.requests: list[SwiftRequest] = []
        self.answer = answer or (lambda request: SwiftResponse.text(200, "inner"))

    async def __call__(self, request: SwiftRequest) -> SwiftResponse:
        self.requests.append(request)
        result = self.answer(request)
        if isinstance(result, Deferred):
            result = await result
        return result


@implementer(IByteSource)
class Chunks:
    """A body of ``chunks``, then ``end`` (b"" or an exception); notes whether it was stopped."""

    def __init__(self, chunks: list[bytes], end: object = b"") -> None:
        self.chunks = list(chunks)
        self.end = end
        self.stopped = False

    def read(self) -> Deferred:
        if self.chunks:
            return succeed(self.chunks.pop(0))
        if isinstance(self.end, BaseException):
            return fail(self.end)
        return succeed(b"")

    def stop(self) -> None:
        self.stopped = True


def read_all(case: SynchronousTestCase, source) -> bytes:
    data = []
    while chunk := case.successResultOf(source.read()):
        data.append(chunk)
    return b"".join(data)


class Case(SynchronousTestCase):
    def call(self, app, request: SwiftRequest) -> SwiftResponse:
        return self.successResultOf(Deferred.fromCoroutine(app(request)))


class CatchErrorsTests(Case):
    def test_every_response_carries_the_trans_id(self) -> None:
        inner = InnerApp()
        response = self.call(CatchErrors(inner, lambda: 1_700_000_000), SwiftRequest("GET", "/x"))
        trans_id = response.headers["X-Trans-Id"]
        self.assertRegex(trans_id, r"^tx[0-9a-f]{21}-006553f100$")
        self.assertEqual((response.headers["X-Openstack-Request-Id"], inner.requests[0].trans_id), (trans_id, trans_id))

    def test_a_failure_is_a_500_naming_the_trans_id_never_a_traceback(self) -> None:
        def boom(request):
            raise KeyError("secret internals")

        body = Chunks([b"upload"])
        response = self.call(CatchErrors(InnerApp(boom), lambda: 0), SwiftRequest("PUT", "/x", body=body))
        trans_id = response.headers["X-Trans-Id"]
        self.assertEqual((response.status, response.body), (500, f"Internal Server Error (transaction {trans_id})\n".encode()))
        self.assertTrue(body.stopped)  # the upload is not read on
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_a_body_that_fails_midway_becomes_an_abort(self) -> None:
        source = Chunks([b"first"], ValueError("disk gone"))
        app = CatchErrors(InnerApp(lambda r: SwiftResponse(200, body=source)), lambda: 0)
        response = self.call(app, SwiftRequest("GET", "/x"))
        self.assertEqual(self.successResultOf(response.body.read()), b"first")
        self.failureResultOf(response.body.read(), ResponseAborted)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)


class GatekeeperTests(Case):
    RESERVED = {"X-Backend-Storage-Policy-Index": "1", "X-Object-Sysmeta-Slo": "yes", "X-Container-Sysmeta-A": "b",
                "X-Account-Sysmeta-Q": "1", "X-Object-Transient-Sysmeta-Crypto": "k"}
    KEPT = {"X-Object-Meta-Color": "blue", "Content-Type": "text/plain", "X-Backendish": "stays"}

    def test_clients_neither_write_nor_read_reserved_headers(self) -> None:
        inner = InnerApp(lambda r: SwiftResponse(200, HeaderMap({**self.RESERVED, **self.KEPT}), b""))
        response = self.call(Gatekeeper(inner), SwiftRequest("PUT", "/v1/a/c/o", HeaderMap({**self.RESERVED, **self.KEPT})))
        self.assertEqual(dict(inner.requests[0].headers.items()), self.KEPT)
        self.assertEqual(dict(response.headers.items()), self.KEPT)


class HealthcheckTests(Case):
    def test_answers_its_path_and_passes_the_rest(self) -> None:
        inner = InnerApp()
        app = Healthcheck(inner)
        response = self.call(app, SwiftRequest("GET", "/healthcheck"))
        self.assertEqual((response.status, response.body), (200, b"OK\n"))
        response = self.call(app, SwiftRequest("POST", "/healthcheck"))
        self.assertEqual((response.status, response.headers["Allow"]), (405, "GET, HEAD"))
        self.assertEqual(self.call(app, SwiftRequest("GET", "/healthcheck/x")).body, b"inner\n")
        self.assertEqual(len(inner.requests), 1)


class ProxyLoggingTests(Case):
    def setUp(self) -> None:
        self.lines: list[dict] = []
        self.patch(ProxyLogging, "access", Logger(namespace="test.access", observer=self.lines.append))

    def test_one_line_when_the_body_has_gone_out(self) -> None:
        source = Chunks([b"abc", b"defg"])
        inner = InnerApp(lambda r: SwiftResponse(200, body=source))
        outer = ProxyLogging(ProxyLogging(inner))  # the outer and the inner copy, as in the pipeline
        request = SwiftRequest("GET", "/v1/a/c/o", query="x=1", trans_id="tx1", client_ip="10.0.0.9")
        response = self.call(outer, request)
        self.assertEqual(self.lines, [])
        self.assertEqual(read_all(self, response.body), b"abcdefg")
        [line] = self.lines
        self.assertEqual((line["client"], line["method"], line["path"], line["status"], line["sent"], line["trans_id"]),
                         ("10.0.0.9", "GET", "/v1/a/c/o?x=1", 200, 7, "tx1"))

    def test_sub_requests_are_logged_with_their_source(self) -> None:
        inner = InnerApp()
        logging = ProxyLogging(inner)
        parent = SwiftRequest("PUT", "/v1/a/c/o", trans_id="tx2")
        parent.environ["swift.proxy_access_log_made"] = True  # the outer copy logged the client's request
        self.call(logging, parent)
        self.assertEqual(self.lines, [])
        self.call(logging, subrequest.make(parent, "GET", "/v1/a/c/src", source="COPY"))
        [line] = self.lines
        self.assertEqual((line["method"], line["source"], line["trans_id"]), ("GET", " COPY", "tx2"))

    def test_a_stopped_body_is_logged_as_such(self) -> None:
        response = self.call(ProxyLogging(InnerApp(lambda r: SwiftResponse(200, body=Chunks([b"abc"])))),
                             SwiftRequest("GET", "/o"))
        self.successResultOf(response.body.read())
        response.body.stop()
        [line] = self.lines
        self.assertEqual((line["sent"], line["note"]), (3, " (client gone)"))


class CopyTests(Case):
    SOURCE_HEADERS = {"Content-Length": "6", "Content-Type": "text/x-src", "ETag": "e1", "X-Object-Meta-A": "src",
                      "X-Object-Sysmeta-Keep": "k", "X-Delete-At": "1999999999", "Last-Modified": "Tue, 14 Nov 2023 22:13:20 GMT",
                      "Content-Disposition": "inline"}

    def setUp(self) -> None:
        self.source = Chunks([b"sou", b"rce"])
        self.put_body = b""

        def answer(request: SwiftRequest):
            if request.method == "GET":
                if request.path == "/v1/AUTH_a/c/missing":
                    return SwiftResponse.text(404, "Not Found")
                return SwiftResponse(200, HeaderMap(self.SOURCE_HEADERS), self.source)
            self.put_body = read_all(self, request.body)
            return SwiftResponse.empty(201, {"ETag": "e1"})

        self.inner = InnerApp(answer)
        self.copy = Copy(self.inner)

    def test_copy_becomes_a_get_then_a_streamed_put(self) -> None:
        upload = Chunks([b"ignored"])
        request = SwiftRequest("COPY", "/v1/AUTH_a/c/src%20obj", HeaderMap({
            "Destination": "/d/new%2Fname", "X-Object-Meta-B": "mine", "X-Auth-Token": "t"}), body=upload,
            trans_id="tx9")
        request.environ["swift.authorize"] = authorize = object()
        response = self.call(self.copy, request)
        read, write = self.inner.requests
        self.assertEqual((read.method, read.path, read.environ["swift.source"], read.trans_id),
                         ("GET", "/v1/AUTH_a/c/src%20obj", "COPY", "tx9"))
        self.assertIs(read.environ["swift.authorize"], authorize)  # the requester must be allowed to read it
        self.assertEqual((write.method, write.path), ("PUT", "/v1/AUTH_a/d/new/name"))
        self.assertEqual(self.put_body, b"source")
        self.assertTrue(upload.stopped)
        headers = dict(write.headers.items())
        self.assertEqual({k: headers.get(k) for k in ("X-Object-Meta-A", "X-Object-Meta-B", "X-Object-Sysmeta-Keep",
                                                       "Content-Type", "ETag", "Content-Length", "X-Delete-At",
                                                       "Destination", "Content-Disposition")},
                         {"X-Object-Meta-A": "src", "X-Object-Meta-B": "mine", "X-Object-Sysmeta-Keep": "k",
                          "Content-Type": "text/x-src", "ETag": "e1", "Content-Length": "6", "X-Delete-At": None,
                          "Destination": None, "Content-Disposition": "inline"})
        self.assertEqual((response.status, response.headers["X-Copied-From"], response.headers["X-Copied-From-Account"],
                          response.headers["X-Copied-From-Last-Modified"]),
                         (201, "c/src%20obj", "AUTH_a", "Tue, 14 Nov 2023 22:13:20 GMT"))

    def test_put_with_copy_from_and_fresh_metadata(self) -> None:
        request = SwiftRequest("PUT", "/v1/AUTH_a/d/o", HeaderMap({
            "X-Copy-From": "c/src", "X-Copy-From-Account": "AUTH_a", "X-Fresh-Metadata": "true",
            "Content-Type": "text/mine", "Content-Length": "0"}))
        response = self.call(self.copy, request)
        write = self.inner.requests[1]
        self.assertEqual((response.status, write.path, write.header("X-Object-Meta-A"), write.header("Content-Type"),
                          write.header("Content-Length"), write.header("X-Copy-From")),
                         (201, "/v1/AUTH_a/d/o", None, "text/mine", "6", None))

    def test_refusals(self) -> None:
        cases = [
            (SwiftRequest("COPY", "/v1/AUTH_a/c/o"), 412, b"Destination header required\n"),
            (SwiftRequest("COPY", "/v1/AUTH_a/c/o", HeaderMap({"Destination": "nocontainer"})), 412,
             b"Destination header must be of the form <container name>/<object name>\n"),
            (SwiftRequest("PUT", "/v1/AUTH_a/c/o", HeaderMap({"X-Copy-From": "c/missing"})), 404,
             b"Not Found: the copy source does not exist\n"),
        ]
        for request, status, body in cases:
            response = self.call(self.copy, request)
            self.assertEqual((response.status, response.body), (status, body))
        self.assertEqual([r.method for r in self.inner.requests], ["GET"])  # nothing was written

    def test_other_requests_pass(self) -> None:
        for request in (SwiftRequest("PUT", "/v1/AUTH_a/c/o"), SwiftRequest("GET", "/v1/AUTH_a/c/o"),
                        SwiftRequest("COPY", "/v1/AUTH_a/c")):
            self.call(self.copy, request)
        self.assertEqual([(r.method, r.path) for r in self.inner.requests],
                         [("PUT", "/v1/AUTH_a/c/o"), ("GET", "/v1/AUTH_a/c/o"), ("COPY", "/v1/AUTH_a/c")])

    def test_a_refused_destination_releases_the_source(self) -> None:
        def answer(request):
            if request.method == "GET":
                return SwiftResponse(200, HeaderMap(self.SOURCE_HEADERS), self.source)
            request.discard_body()
            return SwiftResponse.text(403, "Forbidden")

        response = self.call(Copy(InnerApp(answer)), SwiftRequest("COPY", "/v1/AUTH_a/c/o", HeaderMap({"Destination": "d/o"})))
        self.assertEqual(response.status, 403)
        self.assertNotIn("X-Copied-From", response.headers)
        self.assertTrue(self.source.stopped)
