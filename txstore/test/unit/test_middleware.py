"""The built-in middlewares, each on its own, over an in-memory inner app."""

from __future__ import annotations

import json
from urllib.parse import quote
from xml.etree import ElementTree

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from txstore.common.constraints import Constraints
from txstore.common.listing_format import XML, render_container_listing
from txstore.common.web import ResponseAborted
from txstore.interfaces import IByteSource
from txstore.middleware.catch_errors import CatchErrors
from txstore.middleware.copy import Copy
from txstore.middleware.gatekeeper import Gatekeeper
from txstore.middleware.healthcheck import Healthcheck
from txstore.middleware.listing_formats import ListingFormats, max_listing_bytes
from txstore.middleware import tempauth
from txstore.common import config as c
from txstore.middleware.proxy_logging import FIELDS, ProxyLogging, template
from txstore.proxy import subrequest
from txstore.proxy.controllers.base import AccountInfo
from txstore.proxy.messages import HeaderMap, SwiftRequest, SwiftResponse


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
        self.assertEqual((response.status, response.body), (500, f"Internal Server Error (transaction {trans_id})".encode()))
        self.assertTrue(body.stopped)  # the upload is not read on
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_every_401_carries_swifts_challenge(self) -> None:
        """``Swift realm="<account>"``, quoted so a hostile account name cannot forge headers."""
        refuse = CatchErrors(InnerApp(lambda r: SwiftResponse.text(401, "Unauthorized")), lambda: 0)
        hax = 'AUTH_haxx"\nContent-Length: 5\n\n<b>x'
        for path, realm in [("/v1/AUTH_test/c/o", "AUTH_test"), ("/v1/" + quote(hax), quote(hax)),
                            ("/v1/caf%C3%A9", "caf%C3%A9"), ("/auth/v1.0", "unknown"), ("/v1.0", "unknown"),
                            ("/v1/%FF", "unknown"), ("/", "unknown")]:
            response = self.call(refuse, SwiftRequest("GET", path))
            self.assertEqual(response.headers["WWW-Authenticate"], f'Swift realm="{realm}"', path)
        # a stage's own challenge is kept; other statuses get none
        own = SwiftResponse(401, HeaderMap({"WWW-Authenticate": 'Swift realm="mine"'}))
        response = self.call(CatchErrors(InnerApp(lambda r: own), lambda: 0), SwiftRequest("GET", "/v1/a"))
        self.assertEqual(response.headers["WWW-Authenticate"], 'Swift realm="mine"')
        response = self.call(CatchErrors(InnerApp(), lambda: 0), SwiftRequest("GET", "/v1/a"))
        self.assertNotIn("WWW-Authenticate", response.headers)

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
        self.assertEqual((response.status, response.body), (200, b"OK"))
        response = self.call(app, SwiftRequest("POST", "/healthcheck"))
        self.assertEqual((response.status, response.headers["Allow"]), (405, "GET, HEAD"))
        self.assertEqual(self.call(app, SwiftRequest("GET", "/healthcheck/x")).body, b"inner")
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

    def test_the_line_as_written(self) -> None:
        request = SwiftRequest("GET", "/v1/a/c/{o}", trans_id="tx3", client_ip="10.0.0.9",
                               environ={"swift.source": "S3"})
        self.call(ProxyLogging(InnerApp(lambda r: SwiftResponse(404, body=b"nope"))), request)
        [line] = self.lines
        self.assertRegex(formatEvent(line), r"^10\.0\.0\.9 GET /v1/a/c/\{o\} 404 4 \d+\.\d{4}s tx3 S3$")

    def test_a_temp_url_signature_is_logged_cut_short(self) -> None:
        signature = "sha256:" + "A" * 43
        request = SwiftRequest("GET", "/v1/a/c/o", query=f"temp_url_sig={signature}&temp_url_expires=9&x=1")
        self.call(ProxyLogging(InnerApp()), request)
        [line] = self.lines
        self.assertEqual(line["path"], "/v1/a/c/o?temp_url_sig=sha256:AAAAAAAAA...&temp_url_expires=9&x=1")

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


    def test_swifts_template_fields(self) -> None:
        template = ("{client_ip} {remote_addr} {method} {path} {protocol} {status_int} {referer} {user_agent}"
                    " {auth_token} {bytes_recvd} {bytes_sent} {client_etag} {transaction_id} {source} {log_info}")
        logging = ProxyLogging(InnerApp(lambda r: SwiftResponse(201, body=b"ok")), template=template)
        request = SwiftRequest(
            "PUT", "/v1/a/c/o b", trans_id="tx3", client_ip="10.0.0.1",
            headers=HeaderMap({"X-Forwarded-For": "192.0.2.7, 10.0.0.1", "User-Agent": "curl/8 x",
                               "X-Auth-Token": "AUTH_tk" + "0" * 30, "Content-Length": "5", "ETag": "abc"}),
        )
        self.call(logging, request)
        [line] = self.lines
        self.assertEqual(formatEvent(line), "192.0.2.7 10.0.0.1 PUT /v1/a/c/o%20b HTTP/1.1 201 - curl/8%20x"
                                       " AUTH_tk000000000... 5 2 abc tx3 - -")

    def test_json_lines_carry_every_field(self) -> None:
        logging = ProxyLogging(InnerApp(lambda r: SwiftResponse(200, body=b"abc")), as_json=True)
        self.call(logging, SwiftRequest("GET", "/v1/a/c/o", trans_id="tx4"))
        [line] = self.lines
        fields = json.loads(formatEvent(line))
        self.assertEqual(set(fields), set(FIELDS))
        self.assertEqual((fields["method"], fields["status_int"], fields["bytes_sent"]), ("GET", "200", "3"))
        self.assertNotEqual(fields["ttfb"], "-")

    def test_a_template_with_an_unknown_field_is_refused_at_load(self) -> None:
        self.assertRaises(c.BadValue, template, "{client_ip} {nonsense}", None)
        self.assertRaises(c.BadValue, template, "{client_ip", None)
        self.assertEqual(template("{method} {path}", None), "{method} {path}")


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

    def test_range_and_conditions_apply_to_the_source(self) -> None:
        """As Swift's: a ranged copy stores that part, without the whole object's ETag."""
        def answer(request: SwiftRequest):
            if request.method == "GET":
                if request.header("If-Match") == "other":
                    return SwiftResponse.text(412, "Precondition Failed")
                return SwiftResponse(206, HeaderMap({**self.SOURCE_HEADERS, "Content-Length": "2",
                                                     "Content-Range": "bytes 1-2/6"}), b"ou")
            self.put_body = read_all(self, request.body)
            return SwiftResponse.empty(201)

        inner = InnerApp(answer)
        request = SwiftRequest("COPY", "/v1/AUTH_a/c/o", HeaderMap({
            "Destination": "d/o", "Range": "bytes=1-2", "If-Modified-Since": "Tue, 14 Nov 2023 22:13:20 GMT"}))
        response = self.call(Copy(inner), request)
        read, write = inner.requests
        self.assertEqual((read.header("Range"), read.header("If-Modified-Since")),
                         ("bytes=1-2", "Tue, 14 Nov 2023 22:13:20 GMT"))
        self.assertEqual((response.status, self.put_body), (201, b"ou"))
        self.assertEqual([write.header(name) for name in ("Range", "If-Modified-Since", "ETag", "Content-Length")],
                         [None, None, None, "2"])
        # a source that fails a condition is that answer, and nothing is written
        inner = InnerApp(answer)
        request = SwiftRequest("PUT", "/v1/AUTH_a/d/o", HeaderMap({"X-Copy-From": "c/o", "If-Match": "other"}))
        self.assertEqual(self.call(Copy(inner), request).status, 412)
        self.assertEqual([r.method for r in inner.requests], ["GET"])

    def test_a_source_answered_whole_is_copied(self) -> None:
        def answer(request: SwiftRequest):
            if request.method == "GET":
                return SwiftResponse(200, HeaderMap(self.SOURCE_HEADERS), b"source")  # bytes, not a stream
            self.put_body = read_all(self, request.body)
            return SwiftResponse.empty(201)

        response = self.call(Copy(InnerApp(answer)), SwiftRequest("COPY", "/v1/AUTH_a/c/o", HeaderMap({"Destination": "d/o"})))
        self.assertEqual((response.status, self.put_body), (201, b"source"))

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
            (SwiftRequest("COPY", "/v1/AUTH_a/c/o"), 412, b"Destination header required"),
            (SwiftRequest("COPY", "/v1/AUTH_a/c/o", HeaderMap({"Destination": "nocontainer"})), 412,
             b"Destination header must be of the form <container name>/<object name>"),
            (SwiftRequest("PUT", "/v1/AUTH_a/c/o", HeaderMap({"X-Copy-From": "c/missing"})), 404,
             b"Not Found: the copy source does not exist"),
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


CONTAINER_ENTRIES = [
    {"name": "a<&>\"'\t\n\r", "hash": "d41d8", "bytes": 12, "content_type": "text/plain; x=<&>",
     "last_modified": "2023-11-14T22:13:20.123450"},
    {"subdir": "dir<&>/"},
    {"name": "\U0001f600", "hash": "e1", "bytes": 0, "content_type": "application/octet-stream",
     "last_modified": "2023-11-14T22:13:21.000000"},
]
ACCOUNT_ENTRIES = [{"name": "c&", "count": 3, "bytes": 30, "last_modified": "2023-11-14T22:13:20.123450"},
                   {"subdir": "x/"}]


def json_answer(entries, *, status: int = 200, streamed: bool = False, **headers: str) -> SwiftResponse:
    """A listing as the application answers it when asked for JSON."""
    data = json.dumps(entries).encode("ascii")
    response = SwiftResponse(status, HeaderMap({"Content-Type": "application/json; charset=utf-8",
                                                "Content-Length": str(len(data)), "X-Container-Object-Count": "3",
                                                **headers}), data)
    if streamed:
        response.body = Chunks([data[:7], data[7:]])
    return response


def head_answer(request: SwiftRequest) -> SwiftResponse:
    """A HEAD as a node answers it (through a controller): 204, the format's type, no body."""
    return SwiftResponse(204, HeaderMap({"Content-Type": "application/json; charset=utf-8", "Content-Length": "0",
                                         "X-Container-Object-Count": "3"}), b"")


class TempAuthTests(Case):
    def setUp(self) -> None:
        self.inner = InnerApp()
        settings = {"token_life": 60, "reseller_prefix": "AUTH",
                    "user_test_tester": ("clé", (".admin",), None)}  # proxy.conf is UTF-8 text
        self.auth = tempauth.middleware.build(self.inner, settings, _Services())

    def login(self, key: bytes) -> SwiftResponse:
        # header values reach the pipeline as Latin-1 strings of the bytes sent
        return self.call(self.auth, SwiftRequest("GET", "/auth/v1.0", HeaderMap(
            {"X-Auth-User": "test:tester", "X-Auth-Key": key.decode("latin-1")})))

    def test_a_key_is_the_utf8_text_the_client_sent(self) -> None:
        self.assertEqual(self.login("clé".encode("utf-8")).status, 200)
        self.assertEqual(self.login("clé".encode("latin-1")).status, 401)
        self.assertEqual(self.inner.requests, [])  # the auth endpoint is answered by tempauth itself

    def test_a_token_that_names_no_one_is_refused_at_once(self) -> None:
        body = Chunks([b"upload"])
        response = self.call(self.auth, SwiftRequest("PUT", "/v1/AUTH_test/c/o", HeaderMap({"X-Auth-Token": "AUTH_tkstale"}),
                                                     body=body))
        self.assertEqual((response.status, body.stopped, self.inner.requests), (401, True, []))

    def test_it_leaves_an_authorizer_unless_overridden(self) -> None:
        self.call(self.auth, SwiftRequest("GET", "/v1/AUTH_test/c"))
        self.assertIn("swift.authorize", self.inner.requests[0].environ)
        request = SwiftRequest("GET", "/v1/AUTH_test/c")
        request.environ["swift.authorize_override"] = True
        self.call(self.auth, request)
        self.assertNotIn("swift.authorize", self.inner.requests[1].environ)


class AccountACLTests(Case):
    """tempauth's part in account ACLs: the header checked and stored, the ACL looked up and shown."""

    def setUp(self) -> None:
        self.stored: dict[str, str] = {}
        self.lookups: list[str] = []

        def answer(request: SwiftRequest) -> SwiftResponse:
            # as the application: the authorizer decides once the path is known
            decision = request.environ["swift.authorize"](request, "AUTH_test", None, None, None)
            if not decision.allowed:
                return SwiftResponse.empty(decision.status)
            if request.method in ("PUT", "POST"):
                if "X-Account-Sysmeta-Core-Access-Control" in request.headers:
                    self.stored["acl"] = request.headers["X-Account-Sysmeta-Core-Access-Control"]
                return SwiftResponse.empty(204)
            headers = {"X-Account-Container-Count": "0"}
            if self.stored.get("acl"):
                headers["X-Account-Sysmeta-Core-Access-Control"] = self.stored["acl"]
            return SwiftResponse.empty(204, headers)

        self.inner = InnerApp(answer)
        settings = {"token_life": 60, "reseller_prefix": "AUTH", "user_test_tester": ("k", (".admin",), None),
                    "user_test_other": ("k", (), None), "user_test2_alien": ("k", (), None)}

        async def account_info(request: SwiftRequest, account: str) -> AccountInfo:
            self.lookups.append(account)
            return AccountInfo(204, {"core-access-control": self.stored["acl"]} if self.stored.get("acl") else {})

        built = tempauth.middleware.build(self.inner, settings, _Services())
        self.auth = tempauth.TempAuthMiddleware(self.inner, built.auth, account_info)
        self.tokens = {user: self.login(user) for user in ("test:tester", "test:other", "test2:alien")}

    def login(self, user: str) -> str:
        response = self.call(self.auth, SwiftRequest("GET", "/auth/v1.0", HeaderMap({"X-Auth-User": user,
                                                                                      "X-Auth-Key": "k"})))
        return response.headers["X-Auth-Token"]

    def request(self, user: str, method: str, path: str, **headers: str) -> SwiftResponse:
        request = SwiftRequest(method, path, HeaderMap({"X-Auth-Token": self.tokens[user], **headers}))
        return self.call(self.auth, request)

    def test_the_header_is_checked_and_stored_as_sysmeta(self) -> None:
        response = self.request("test:tester", "POST", "/v1/AUTH_test", **{
            "X-Account-Access-Control": '{"read-only": ["test:other"], "admin": []}'})
        self.assertEqual(response.status, 204)
        self.assertEqual(self.stored["acl"], '{"admin":[],"read-only":["test:other"]}')
        self.assertNotIn("X-Account-Access-Control", self.inner.requests[-1].headers)
        for value, reason in [("[]", "Syntax error in input ('[]')"), ("{", "Syntax error in input ('{')"),
                              ('{"owner": []}', 'Key "owner" not recognized'),
                              ('{"admin": "x"}', 'Value for key "admin" must be a list'),
                              ('{"read-write": [1]}', 'Elements of "read-write" list must be strings')]:
            response = self.request("test:tester", "POST", "/v1/AUTH_test", **{"X-Account-Access-Control": value})
            self.assertEqual((response.status, response.body), (400, f"{reason}".encode()))
        self.assertEqual(self.stored["acl"], '{"admin":[],"read-only":["test:other"]}')  # unchanged
        for empty in ("{}", "", '{"admin": []}'):
            self.request("test:tester", "POST", "/v1/AUTH_test", **{"X-Account-Access-Control": empty})
            self.assertEqual(self.stored["acl"], "")  # removed

    def test_owners_see_it_others_do_not(self) -> None:
        self.stored["acl"] = '{"read-only":["test:other"]}'
        owner = self.request("test:tester", "HEAD", "/v1/AUTH_test")
        self.assertEqual(owner.headers.get("X-Account-Access-Control"), '{"read-only":["test:other"]}')
        self.assertNotIn("X-Account-Sysmeta-Core-Access-Control", owner.headers)
        self.assertEqual(self.lookups, [])  # an owner needs no lookup
        other = self.request("test:other", "HEAD", "/v1/AUTH_test")
        self.assertNotIn("X-Account-Access-Control", other.headers)
        self.assertNotIn("X-Account-Sysmeta-Core-Access-Control", other.headers)
        self.assertEqual(self.lookups, ["AUTH_test"])

    def test_the_authorizer_judges_by_the_accounts_acl(self) -> None:
        self.stored["acl"] = '{"read-write":["test:other"],"admin":["test2:alien"]}'
        reads = self.inner.requests
        self.request("test:other", "GET", "/v1/AUTH_test/c")
        decision = reads[-1].environ["swift.authorize"](reads[-1], "AUTH_test", "c", None, None)
        self.assertEqual((decision.allowed, decision.is_owner), (True, False))
        decision = reads[-1].environ["swift.authorize"](reads[-1], "AUTH_test", None, None, None)
        self.assertTrue(decision.allowed)  # GET of the account
        self.request("test:other", "POST", "/v1/AUTH_test")
        decision = reads[-1].environ["swift.authorize"](reads[-1], "AUTH_test", None, None, None)
        self.assertEqual((decision.allowed, decision.status), (False, 403))  # no account metadata
        self.request("test2:alien", "POST", "/v1/AUTH_test", **{"X-Account-Access-Control": "{}"})
        decision = reads[-1].environ["swift.authorize"](reads[-1], "AUTH_test", None, None, None)
        self.assertEqual((decision.allowed, decision.is_owner), (True, True))  # an admin may set ACLs


class _Services:
    """What tempauth takes from ProxyServices."""

    clock = staticmethod(lambda: 1_700_000_000.0)

    def __init__(self) -> None:
        from txstore.proxy.info import InfoRegistry

        self.info = InfoRegistry()


class ListingFormatsTests(Case):
    def setUp(self) -> None:
        self.entries: list = CONTAINER_ENTRIES
        self.inner = InnerApp(lambda r: head_answer(r) if r.method == "HEAD" else json_answer(self.entries))
        self.app = ListingFormats(self.inner, max_listing_bytes(Constraints()))

    def get(self, path: str = "/v1/AUTH_a/c", query: str = "", method: str = "GET", **headers: str) -> SwiftResponse:
        return self.call(self.app, SwiftRequest(method, path, HeaderMap(headers), query=query))

    def assertListing(self, response: SwiftResponse, status: int, content_type: str, body: bytes) -> None:
        self.assertEqual((response.status, response.headers.get("Content-Type"), response.body,
                          response.headers.get("Content-Length")),
                         (status, content_type, body, str(len(body))))

    def test_each_format_from_the_format_parameter(self) -> None:
        plain = "a<&>\"'\t\n\r\ndir<&>/\n\U0001f600\n".encode()
        cases = {"plain": ("text/plain; charset=utf-8", plain),
                 "json": ("application/json; charset=utf-8", json.dumps(CONTAINER_ENTRIES).encode()),
                 "XML": ("application/xml; charset=utf-8", render_container_listing(XML, "c", CONTAINER_ENTRIES))}
        for value, (content_type, body) in cases.items():
            response = self.get(query=f"format={value}", Accept="text/xml")  # format= wins over Accept
            self.assertListing(response, 200, content_type, body)
            self.assertEqual(response.headers["X-Container-Object-Count"], "3")  # the answer's own headers stay
            self.assertNotIn("Vary", response.headers)  # format= decided, not Accept
            asked = self.inner.requests[-1]
            self.assertEqual((asked.query, asked.header("Accept")), ("format=json", "application/json"))

    def test_each_format_from_accept(self) -> None:
        cases = {"application/json": "application/json", "application/xml": "application/xml",
                 "text/xml": "text/xml", "text/plain": "text/plain", "*/*": "text/plain",
                 "text/html, application/json;q=0.5": "application/json",
                 "application/json;q=0.5, text/xml": "text/xml"}
        for accept, media_type in cases.items():
            response = self.get(Accept=accept)
            self.assertEqual((response.status, response.headers["Content-Type"], response.headers["Vary"]),
                             (200, f"{media_type}; charset=utf-8", "Accept"), accept)
            self.assertEqual(self.inner.requests[-1].header("Accept"), "application/json")
        self.assertTrue(self.get(Accept="text/xml").body.startswith(
            b'<?xml version="1.0" encoding="UTF-8"?>\n<container name="c"><object>'))
        self.assertEqual(self.get().headers["Content-Type"], "text/plain; charset=utf-8")  # neither: plain

    def test_nothing_acceptable_is_a_406_with_a_reason(self) -> None:
        upload = Chunks([b"ignored"])
        response = self.call(self.app, SwiftRequest("GET", "/v1/AUTH_a/c", HeaderMap({"Accept": "text/html"}),
                                                    body=upload))
        self.assertEqual((response.status, response.body),
                         (406, b"Not Acceptable: the listing is available as text/plain, application/json, "
                               b"application/xml or text/xml"))
        self.assertEqual(self.get(method="HEAD", Accept="image/*;q=1, text/*;q=0").status, 406)
        self.assertEqual((self.get(Accept="json").status, self.get(Accept="json").body), (400, b"Invalid Accept header"))
        self.assertEqual(self.get(query="format=%FF").body, b'"format" parameter not valid UTF-8')
        self.assertEqual(self.inner.requests, [])  # refused here, before the application
        self.assertTrue(upload.stopped)

    def test_an_unknown_format_value_means_plain(self) -> None:
        for query in ("format=yaml", "format=%20", "format=json&format=csv"):
            response = self.get(query=query, Accept="application/json")
            self.assertEqual((response.status, response.headers["Content-Type"]), (200, "text/plain; charset=utf-8"),
                             query)

    def test_an_empty_plain_listing_is_a_204(self) -> None:
        self.entries = []
        self.assertListing(self.get(), 204, "text/plain; charset=utf-8", b"")
        self.assertListing(self.get(query="format=json"), 200, "application/json; charset=utf-8", b"[]")
        self.assertListing(self.get(query="format=xml"), 200, "application/xml; charset=utf-8",
                           b'<?xml version="1.0" encoding="UTF-8"?>\n<container name="c"></container>')

    def test_xml_escapes_odd_names_as_the_nodes_do(self) -> None:
        response = self.get("/v1/AUTH_a/c%3C%26%3E%22%09", query="format=xml")
        self.assertEqual(response.body.decode(), (
            '<?xml version="1.0" encoding="UTF-8"?>\n<container name="c&lt;&amp;&gt;&quot;&#09;">'
            "<object><name>a&lt;&amp;&gt;\"'\t\n&#13;</name><hash>d41d8</hash><bytes>12</bytes>"
            "<content_type>text/plain; x=&lt;&amp;&gt;</content_type>"
            "<last_modified>2023-11-14T22:13:20.123450</last_modified></object>"
            '<subdir name="dir&lt;&amp;&gt;/"><name>dir&lt;&amp;&gt;/</name></subdir>'
            "<object><name>\U0001f600</name><hash>e1</hash><bytes>0</bytes>"
            "<content_type>application/octet-stream</content_type>"
            "<last_modified>2023-11-14T22:13:21.000000</last_modified></object></container>"))
        root = ElementTree.fromstring(response.body)
        self.assertEqual((root.get("name"), [child.findtext("name") for child in root]),
                         ("c<&>\"\t", ["a<&>\"'\t\n\r", "dir<&>/", "\U0001f600"]))

    def test_account_listings_and_subdirs(self) -> None:
        self.entries = ACCOUNT_ENTRIES
        self.assertEqual(self.get("/v1/AUTH_%C3%A9").body, b"c&\nx/\n")
        self.assertEqual(self.get("/v1/AUTH_%C3%A9/", query="format=xml").body.decode(), (
            '<?xml version="1.0" encoding="UTF-8"?>\n<account name="AUTH_\u00e9"><container><name>c&amp;</name>'
            "<count>3</count><bytes>30</bytes><last_modified>2023-11-14T22:13:20.123450</last_modified></container>"
            '<subdir name="x/"><name>x/</name></subdir></account>'))

    def test_head_gets_the_content_type_of_the_format(self) -> None:
        for accept, content_type in (("text/xml", "text/xml"), ("application/json", "application/json"),
                                     ("", "text/plain")):
            response = self.get(method="HEAD", Accept=accept)
            self.assertEqual((response.status, response.headers["Content-Type"], response.body,
                              response.headers["Content-Length"], response.headers["X-Container-Object-Count"]),
                             (204, f"{content_type}; charset=utf-8", b"", "0", "3"))
        self.inner.answer = lambda r: json_answer([], status=200)  # a HEAD answered 200 with a JSON length
        response = self.get("/v1/AUTH_a", method="HEAD", query="format=xml")
        self.assertEqual((response.status, response.headers["Content-Type"], response.headers.get("Content-Length")),
                         (200, "application/xml; charset=utf-8", None))  # the JSON's length is not the XML's

    def test_other_answers_pass_untouched(self) -> None:
        answers = [SwiftResponse.text(404, "Not Found"), SwiftResponse.text(401, "Unauthorized"),
                   json_answer(CONTAINER_ENTRIES, status=503), json_answer(CONTAINER_ENTRIES, status=202),
                   SwiftResponse.text(200, "a document, not JSON"),  # as staticweb would answer
                   json_answer(CONTAINER_ENTRIES, **{"Content-Type": "text/plain"}),  # JSON, but not sent as JSON
                   json_answer({"not": "a list"}), json_answer([["not", "objects"]]), json_answer([{"bytes": 1}]),
                   json_answer(CONTAINER_ENTRIES, **{"Content-Length": str(max_listing_bytes(Constraints()) + 1)})]
        for answer in answers:
            expected = (answer.status, answer.headers.copy(), answer.body)
            self.inner.answer = lambda r: answer
            response = self.get(query="format=xml")
            self.assertEqual((response.status, response.headers, response.body), expected)

    def test_other_query_parameters_are_kept_byte_for_byte(self) -> None:
        query = "limit=2&marker=a%2Fb&format=xml&prefix=%E2%9C%93+x&%66ormat=plain&delimiter=/&&end_marker&r=%ff"
        request = SwiftRequest("GET", "/v1/AUTH_a/c", query=query)
        response = self.call(self.app, request)
        self.assertEqual(response.headers["Content-Type"], "text/plain; charset=utf-8")  # the last format= wins
        self.assertEqual(self.inner.requests[0].query,
                         "limit=2&marker=a%2Fb&prefix=%E2%9C%93+x&delimiter=/&&end_marker&r=%ff&format=json")
        self.assertEqual(request.query, query)  # the client's request is as it came (proxy_logging logs it)
        self.get(query="limit=1")
        self.assertEqual(self.inner.requests[1].query, "limit=1&format=json")

    def test_objects_and_writes_pass_untouched(self) -> None:
        requests = [SwiftRequest("GET", "/v1/AUTH_a/c/o", HeaderMap({"Accept": "text/html"}), query="format=xml"),
                    SwiftRequest("HEAD", "/v1/AUTH_a/c//", query="format=xml"),
                    SwiftRequest("PUT", "/v1/AUTH_a/c", HeaderMap({"Accept": "text/xml"}), query="format=xml"),
                    SwiftRequest("POST", "/v1/AUTH_a", query="format=plain"),
                    SwiftRequest("GET", "/info", query="format=xml"), SwiftRequest("GET", "/v1//c"),
                    SwiftRequest("GET", "/v2/AUTH_a/c", HeaderMap({"Accept": "text/html"}))]
        for request in requests:
            expected = (request.query, request.headers.copy())
            response = self.call(self.app, request)
            asked = self.inner.requests[-1]
            self.assertEqual((asked.query, asked.headers), expected, request)
            self.assertEqual(response.headers["Content-Type"], "application/json; charset=utf-8", request)
            self.assertNotIn("Vary", response.headers)

    def test_a_streamed_listing_is_read_from_its_source(self) -> None:
        self.inner.answer = lambda r: json_answer(CONTAINER_ENTRIES, streamed=True)
        response = self.get()
        self.assertListing(response, 200, "text/plain; charset=utf-8", "a<&>\"'\t\n\r\ndir<&>/\n\U0001f600\n".encode())
        self.inner.answer = lambda r: json_answer(CONTAINER_ENTRIES, streamed=True, **{"Vary": "Origin"})
        response = self.get(query="format=json")  # JSON passes as it came, its source unread
        self.assertEqual(read_all(self, response.body), json.dumps(CONTAINER_ENTRIES).encode())
        response = self.get(Accept="application/json")
        self.assertEqual(response.headers["Vary"], "Origin, Accept")

    def test_a_body_that_breaks_off_fails_the_request(self) -> None:
        body = Chunks([b'[{"name": '], ResponseAborted("node gone"))
        self.inner.answer = lambda r: SwiftResponse(200, HeaderMap({"Content-Type": "application/json",
                                                                    "Content-Length": "100"}), body)
        self.failureResultOf(Deferred.fromCoroutine(self.app(SwiftRequest("GET", "/v1/AUTH_a/c"))), ResponseAborted)
        self.assertTrue(body.stopped)

    def test_sub_requests_asking_for_json_get_json(self) -> None:
        data = b'[{"name": "o",   "hash": "h", "bytes": 1, "content_type": "x", "last_modified": "t"}]'
        self.inner.answer = lambda r: SwiftResponse(200, HeaderMap({"Content-Type": "application/json; charset=utf-8",
                                                                    "Content-Length": str(len(data))}), data)
        parent = SwiftRequest("GET", "/v1/AUTH_a/c/o", HeaderMap({"Accept": "text/xml"}))
        response = self.call(self.app, subrequest.make(parent, "GET", "/v1/AUTH_a/c", source="VW", query="format=json"))
        self.assertListing(response, 200, "application/json; charset=utf-8", data)
