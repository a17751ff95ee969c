"""
domain_remap: hosts under a storage domain become account and container paths (Swift's
documented examples), reseller prefixes and their case, the default prefix, legacy path
mangling, redirects pointed back at the host's path, hosts left alone, settings and ``/info``.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import SynchronousTestCase

from txstore.common import config as c
from txstore.middleware import domain_remap
from txstore.middleware.domain_remap import OPTIONS, DomainRemap
from txstore.proxy.info import InfoRegistry
from txstore.proxy.messages import HeaderMap, SwiftRequest, SwiftResponse


def settings(**raw: str) -> dict:
    return c.parse_section(Path("proxy.conf"), "filter:domain_remap",
                           c.Section("filter:domain_remap", options=OPTIONS), list(raw.items()))


class Seen:
    """The next stage: records the path it got, answers with a Location below it."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, request: SwiftRequest) -> SwiftResponse:
        self.paths.append(request.path)
        return SwiftResponse.empty(301, {"Location": f"http://{request.host}{request.path}/",
                                         "Content-Location": "http://elsewhere/v1/x"})


class RemapTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.build()

    def build(self, **raw: str) -> None:
        self.seen = Seen()
        self.app = DomainRemap(self.seen, settings(**raw))

    def call(self, host: str, path: str, method: str = "GET") -> tuple[str | None, SwiftResponse]:
        request = SwiftRequest(method, path, HeaderMap({"Host": host}), host=host)
        response = self.successResultOf(ensureDeferred(self.app(request)))
        self.assertEqual(request.path, path)  # the client's request is left as it came (logged so)
        return (self.seen.paths.pop() if self.seen.paths else None), response

    def test_swift_documented_examples(self) -> None:
        cases = [
            ("container.AUTH-account.example.com", "/object", "/v1/AUTH_account/container/object"),
            ("container.AUTH-account.example.com", "/v1/object", "/v1/AUTH_account/container/v1/object"),
            ("AUTH-account.example.com", "/container/object", "/v1/AUTH_account/container/object"),
            ("auth-account.example.com", "/container/object", "/v1/AUTH_account/container/object"),
            ("auth_account.example.com", "/container/object", "/v1/AUTH_account/container/object"),
            ("AUTH_account.example.com", "/container/object", "/v1/AUTH_account/container/object"),
            ("AUTH_account.example.com:8080", "/c/o", "/v1/AUTH_account/c/o"),
            ("AUTH_account.EXAMPLE.com", "/", "/v1/AUTH_account/"),
            ("c.AUTH_a.example.com", "/", "/v1/AUTH_a/c/"),
            ("c.AUTH_a.example.com", "//v1", "/v1/AUTH_a/c//v1"),
            ("c.AUTH_a.example.com", "/%E2%98%83%20x", "/v1/AUTH_a/c/%E2%98%83%20x"),
            ("☃.AUTH_a.example.com".encode().decode("latin-1"), "/o", "/v1/AUTH_a/%E2%98%83/o"),
        ]
        for host, path, expected in cases:
            self.assertEqual(self.call(host, path)[0], expected, (host, path))

    def test_other_hosts_untouched(self) -> None:
        for host in ("127.0.0.1:8080", "example.com", "www.example.org", "AUTH_a.example.community", "[::1]:80"):
            self.assertEqual(self.call(host, "/v1/AUTH_a/c")[0], "/v1/AUTH_a/c", host)

    def test_too_many_labels_is_400(self) -> None:
        path, response = self.call("x.c.AUTH_a.example.com", "/o", "PUT")
        self.assertIsNone(path)
        self.assertEqual((response.status, response.body), (400, b"Bad domain in host header"))

    def test_unknown_prefix_left_alone_or_given_the_default(self) -> None:
        self.assertEqual(self.call("acme.example.com", "/c")[0], "/c")
        self.build(default_reseller_prefix="AUTH")
        self.assertEqual(self.call("acme.example.com", "/c")[0], "/v1/AUTH_acme/c")
        self.assertEqual(self.call("auth-acme.example.com", "/c")[0], "/v1/AUTH_acme/c")

    def test_several_prefixes_and_domains(self) -> None:
        self.build(storage_domain="example.com, .storage.example.net", reseller_prefixes="AUTH, SERVICE",
                   path_root="/v2/")
        self.assertEqual(self.call("service-x.storage.example.net", "/c")[0], "/v2/SERVICE_x/c")
        self.assertEqual(self.call("c.AUTH_y.example.com", "/o")[0], "/v2/AUTH_y/c/o")

    def test_no_prefixes_take_the_label_as_it_is(self) -> None:
        self.build(reseller_prefixes="")
        self.assertEqual(self.call("anything-goes.example.com", "/c")[0], "/v1/anything-goes/c")

    def test_mangle_client_paths(self) -> None:
        self.build(mangle_client_paths="true")
        self.assertEqual(self.call("c.AUTH_a.example.com", "/v1/o")[0], "/v1/AUTH_a/c/o")
        self.assertEqual(self.call("c.AUTH_a.example.com", "/v1")[0], "/v1/AUTH_a/c/")
        self.assertEqual(self.call("c.AUTH_a.example.com", "/v10")[0], "/v1/AUTH_a/c/v10")

    def test_locations_point_back_at_the_host(self) -> None:
        _, response = self.call("AUTH_a.example.com", "/site")
        self.assertEqual(response.headers["Location"], "http://AUTH_a.example.com/site/")
        self.assertEqual(response.headers["Content-Location"], "http://elsewhere/v1/x")
        _, response = self.call("site.AUTH_a.example.com", "/dir")
        self.assertEqual(response.headers["Location"], "http://site.AUTH_a.example.com/dir/")


class SettingsTests(SynchronousTestCase):
    def test_defaults_and_info(self) -> None:
        parsed = settings()
        self.assertEqual((parsed["storage_domain"], parsed["path_root"], parsed["reseller_prefixes"]),
                         ((".example.com",), "v1", ("AUTH",)))
        info = InfoRegistry()

        class Proxy:
            pass

        proxy = Proxy()
        proxy.info = info
        domain_remap.middleware.build(Seen(), parsed, proxy)
        self.assertEqual(info.as_dict()["domain_remap"], {"default_reseller_prefix": None})

    def test_bad_values(self) -> None:
        for raw in ({"path_root": "a/b"}, {"path_root": "/"}, {"default_reseller_prefix": "a.b"},
                    {"mangle_client_paths": "maybe"}):
            self.assertRaises(c.ConfigError, settings, **raw)
