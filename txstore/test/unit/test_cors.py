"""
cors: preflights answered from the container's metadata and the operator's settings (allowed
or 401, the headers a browser needs), actual answers given Access-Control-Allow-Origin and
-Expose-Headers in strict and non-strict mode, settings and ``/info``.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import SynchronousTestCase

from txstore.common import config as c
from txstore.middleware import cors
from txstore.middleware.cors import CORS, OPTIONS
from txstore.proxy.controllers.base import ContainerInfo
from txstore.proxy.info import InfoRegistry
from txstore.proxy.messages import HeaderMap, SwiftRequest, SwiftResponse

A = "/v1/AUTH_a"


def settings(**raw: str) -> dict:
    return c.parse_section(Path("proxy.conf"), "filter:cors", c.Section("filter:cors", options=OPTIONS),
                           list(raw.items()))


class Below:
    """The rest of the pipeline: an object with user metadata; records what reached it."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def __call__(self, request: SwiftRequest) -> SwiftResponse:
        self.seen.append(request.method)
        return SwiftResponse(200, HeaderMap({"Content-Type": "text/plain", "X-Object-Meta-Color": "red",
                                             "X-Backend-Secret": "x", "ETag": "abc"}), b"body")


class Case(SynchronousTestCase):
    def setUp(self) -> None:
        self.meta: dict[str, dict[str, str]] = {"open": {"access-control-allow-origin": "*"},
                                                "shop": {"access-control-allow-origin": "http://a.com http://b.com",
                                                         "access-control-max-age": "600",
                                                         "access-control-expose-headers": "X-Custom Content-Length"}}
        self.build()

    async def containers(self, request, account, container):
        if container not in self.meta and container != "plain":
            return ContainerInfo(404)
        return ContainerInfo(200, meta=self.meta.get(container, {}))

    def build(self, **raw: str) -> None:
        self.below = Below()
        self.app = CORS(self.below, settings(**raw), self.containers)

    def call(self, method: str, path: str, **headers: str) -> SwiftResponse:
        request = SwiftRequest(method, path, HeaderMap({k.replace("_", "-"): v for k, v in headers.items()}))
        return self.successResultOf(ensureDeferred(self.app(request)))


class PreflightTests(Case):
    def test_allowed_by_any_origin(self) -> None:
        response = self.call("OPTIONS", f"{A}/open/o", Origin="http://m.com", Access_Control_Request_Method="GET")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.headers["Access-Control-Allow-Origin"], "*")
        self.assertEqual(response.headers["Access-Control-Allow-Methods"],
                         "COPY, DELETE, GET, HEAD, OPTIONS, POST, PUT")
        self.assertNotIn("Access-Control-Expose-Headers", response.headers)
        self.assertNotIn("Access-Control-Max-Age", response.headers)
        self.assertEqual(self.below.seen, [])  # answered here, without a token

    def test_allowed_origin_gets_itself_back(self) -> None:
        response = self.call("OPTIONS", f"{A}/shop/o", Origin="http://b.com", Access_Control_Request_Method="PUT",
                             Access_Control_Request_Headers="x-auth-token, content-type")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.headers["Access-Control-Allow-Origin"], "http://b.com")
        self.assertEqual(response.headers["Vary"], "Origin")
        self.assertEqual(response.headers["Access-Control-Max-Age"], "600")
        self.assertEqual(response.headers["Access-Control-Allow-Headers"], "x-auth-token, content-type")

    def test_refusals(self) -> None:
        cases = [
            (f"{A}/shop/o", {"Origin": "http://m.com", "Access-Control-Request-Method": "GET"}),  # origin
            (f"{A}/open/o", {"Origin": "http://m.com"}),  # no method asked
            (f"{A}/open/o", {"Origin": "http://m.com", "Access-Control-Request-Method": "PATCH"}),
            (f"{A}/open", {"Origin": "http://m.com", "Access-Control-Request-Method": "COPY"}),  # not a container's
            (f"{A}/plain/o", {"Origin": "http://m.com", "Access-Control-Request-Method": "GET"}),  # no rules
            (f"{A}/missing/o", {"Origin": "http://m.com", "Access-Control-Request-Method": "GET"}),
            (A, {"Origin": "http://m.com", "Access-Control-Request-Method": "GET"}),
        ]
        for path, headers in cases:
            request = SwiftRequest("OPTIONS", path, HeaderMap(headers))
            response = self.successResultOf(ensureDeferred(self.app(request)))
            self.assertEqual(response.status, 401, (path, headers))
            self.assertNotIn("Access-Control-Allow-Origin", response.headers)

    def test_without_origin_it_lists_the_methods(self) -> None:
        response = self.call("OPTIONS", f"{A}/shop")
        self.assertEqual((response.status, response.headers["Allow"]), (200, "DELETE, GET, HEAD, OPTIONS, POST, PUT"))
        self.assertEqual(self.call("OPTIONS", "/info").headers["Allow"], "GET, HEAD, OPTIONS")

    def test_operator_origins_everywhere(self) -> None:
        self.build(cors_allow_origin="http://ops.example, http://x.example")
        for path in (A, f"{A}/plain/o", f"{A}/shop/o", "/info"):
            response = self.call("OPTIONS", path, Origin="http://x.example", Access_Control_Request_Method="GET")
            self.assertEqual((response.status, response.headers.get("Access-Control-Allow-Origin")),
                             (200, "http://x.example"), path)


class ActualRequestTests(Case):
    def test_any_origin(self) -> None:
        response = self.call("GET", f"{A}/open/o", Origin="http://m.com")
        self.assertEqual(response.headers["Access-Control-Allow-Origin"], "*")
        exposed = response.headers["Access-Control-Expose-Headers"].split(", ")
        self.assertIn("x-object-meta-color", exposed)
        self.assertIn("etag", exposed)
        self.assertNotIn("x-backend-secret", exposed)
        self.assertEqual(self.below.seen, ["GET"])

    def test_container_and_operator_exposed_headers(self) -> None:
        self.build(cors_expose_headers="X-Ops")
        exposed = self.call("GET", f"{A}/shop/o", Origin="http://a.com").headers["Access-Control-Expose-Headers"]
        self.assertEqual(exposed.split(", ")[-3:], ["x-custom", "content-length", "x-ops"])

    def test_strict_mode(self) -> None:
        response = self.call("GET", f"{A}/shop/o", Origin="http://m.com")
        self.assertEqual(response.status, 200)
        self.assertNotIn("Access-Control-Allow-Origin", response.headers)
        response = self.call("GET", f"{A}/shop/o", Origin="http://a.com")
        self.assertEqual(response.headers["Access-Control-Allow-Origin"], "http://a.com")
        self.assertEqual(response.headers["Vary"], "Origin")

    def test_lax_mode_echoes_any_origin(self) -> None:
        self.build(strict_cors_mode="false")
        response = self.call("GET", f"{A}/shop/o", Origin="http://m.com")
        self.assertEqual(response.headers["Access-Control-Allow-Origin"], "http://m.com")

    def test_without_origin_nothing_is_added(self) -> None:
        response = self.call("GET", f"{A}/open/o")
        self.assertNotIn("Access-Control-Allow-Origin", response.headers)
        self.assertNotIn("Access-Control-Expose-Headers", response.headers)


class SettingsTests(SynchronousTestCase):
    def test_defaults_and_info(self) -> None:
        parsed = settings()
        self.assertEqual((parsed["strict_cors_mode"], parsed["cors_allow_origin"], parsed["cors_expose_headers"]),
                         (True, (), ()))

        class Proxy:
            info = InfoRegistry()
            context = None

        Proxy.info.register("swift", max_file_size=5)
        cors.middleware.build(Below(), settings(strict_cors_mode="false"), Proxy)
        self.assertEqual(Proxy.info.as_dict()["swift"], {"max_file_size": 5, "strict_cors_mode": False})

    def test_bad_value(self) -> None:
        self.assertRaises(c.ConfigError, settings, strict_cors_mode="sometimes")
