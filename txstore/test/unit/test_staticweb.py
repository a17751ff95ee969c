"""
The staticweb middleware over an in-memory store (`MemorySwift`) and an authorizer that lets
anonymous requests read what a ``.r:*`` (``.rlistings``) ACL allows: index pages, redirects to
a directory's slash, error pages, HTML listings (style sheet, label, directory type, links that
carry a temporary URL's signature), who is served a site and who the plain API, settings.
"""

from __future__ import annotations

from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import SynchronousTestCase

from txstore.common import config as c
from txstore.middleware import tempurl
from txstore.middleware.staticweb import OPTIONS, StaticWeb, url_base
from txstore.proxy import subrequest
from txstore.proxy.controllers.base import ContainerInfo
from txstore.proxy.messages import HeaderMap, SwiftRequest, SwiftResponse
from txstore.proxy.tempauth import Decision
from txstore.test.swift_fake import MemorySwift, read_body

A = "/v1/AUTH_a"
SITE = f"{A}/site"
TOKEN = "owner-token"


class Containers:
    """The container info staticweb and the authorizer read: metadata and read ACLs by container."""

    def __init__(self, store: MemorySwift) -> None:
        self.store = store
        self.meta: dict[str, dict[str, str]] = {}
        self.read_acl: dict[str, str] = {}

    def info(self, account: str, container: str) -> ContainerInfo:
        path = f"/v1/{account}/{container}"
        if path not in self.store.containers:
            return ContainerInfo(404)
        return ContainerInfo(200, read_acl=self.read_acl.get(container), meta=self.meta.get(container, {}))

    async def __call__(self, request, account, container):
        return self.info(account, container)


def authorize(request: SwiftRequest, account, container, obj, info) -> Decision:
    """A token is the owner; anonymous readers get what the container's ``.r:*`` ACL allows."""
    if request.identity is not None:
        return Decision(True, is_owner=True)
    acl = (info.read_acl if info is not None else None) or ""
    if request.method in ("GET", "HEAD") and container and ".r:*" in acl and (obj or ".rlistings" in acl):
        return Decision(True)
    return Decision(False, 401, "Unauthorized")


class Auth:
    """tempauth's part, above staticweb: the token becomes an identity, the authorizer is installed."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, request: SwiftRequest) -> SwiftResponse:
        if request.header("X-Auth-Token") == TOKEN:
            request.identity = "owner"
        if not request.environ.get(subrequest.OVERRIDE):
            request.environ[subrequest.AUTHORIZE] = authorize
        return await self.app(request)


class Authorizing:
    """The application's part: the authorizer is asked, with the container's info, before the store answers."""

    def __init__(self, app, containers: Containers) -> None:
        self.app, self.containers = app, containers

    async def __call__(self, request: SwiftRequest) -> SwiftResponse:
        decide = request.environ.get(subrequest.AUTHORIZE)
        if decide is not None:
            _v, account, container, obj = request.split(2, 4)
            info = self.containers.info(account, container) if container else None
            decision = decide(request, account, container, obj, info)
            if not decision.allowed:
                return SwiftResponse.text(decision.status, "Unauthorized")
        return await self.app(request)


class Case(SynchronousTestCase):
    def setUp(self) -> None:
        self.store = MemorySwift()
        self.containers = Containers(self.store)
        self.build()
        for container in ("site", "private", "plain"):
            self.store.containers.add(f"{A}/{container}")
        self.containers.read_acl["site"] = ".r:*,.rlistings"
        self.web(index="index.html", error="error.html", listings="true")
        self.store.put(f"{SITE}/index.html", b"<p>home</p>", **{"Content-Type": "text/html"})
        self.store.put(f"{SITE}/404error.html", b"<p>no such page</p>", **{"Content-Type": "text/html"})
        self.store.put(f"{SITE}/401error.html", b"<p>not yours</p>", **{"Content-Type": "text/html"})
        self.store.put(f"{SITE}/style.css", b"h1 {}", **{"Content-Type": "text/css"})
        self.store.put(f"{SITE}/docs", b"", **{"Content-Type": "application/directory"})
        self.store.put(f"{SITE}/docs/guide.txt", b"read me", **{"Content-Type": "text/plain"})
        self.store.put(f"{SITE}/docs/api/ref.txt", b"ref", **{"Content-Type": "text/plain"})
        self.store.put(f"{SITE}/blog/index.html", b"<p>blog</p>", **{"Content-Type": "text/html"})
        self.store.put(f"{A}/private/index.html", b"secret", **{"Content-Type": "text/html"})
        self.containers.meta["private"] = {"web-index": "index.html", "web-listings": "true"}
        self.store.put(f"{A}/plain/o", b"plain")

    def build(self, **settings) -> None:
        scheme, host = settings.get("url_base", ("", ""))
        self.app = Auth(StaticWeb(Authorizing(self.store, self.containers), self.containers, scheme, host))

    def web(self, container: str = "site", **meta: str) -> None:
        self.containers.meta[container] = {f"web-{name.replace('_', '-')}": value for name, value in meta.items()}

    def call(self, method: str, path: str, token: bool = False, environ: dict | None = None,
             **headers: str) -> SwiftResponse:
        if token:
            headers["X-Auth-Token"] = TOKEN
        request = SwiftRequest(method, path, HeaderMap(headers), trans_id="tx", host="web.example:8080",
                               environ=dict(environ or {}))
        return self.successResultOf(ensureDeferred(self.app(request)))

    def body(self, response: SwiftResponse) -> str:
        return read_body(self, response).decode("utf-8")


class IndexTests(Case):
    def test_container_root_serves_the_index(self) -> None:
        response = self.call("GET", f"{SITE}/")
        self.assertEqual((response.status, self.body(response)), (200, "<p>home</p>"))
        self.assertEqual(response.headers["Content-Type"], "text/html")

    def test_head_of_the_root_is_the_index_head(self) -> None:
        response = self.call("HEAD", f"{SITE}/")
        self.assertEqual((response.status, response.headers["Content-Length"]), (200, "11"))
        self.assertEqual(self.body(response), "")

    def test_root_without_slash_is_redirected(self) -> None:
        response = self.call("GET", SITE)
        self.assertEqual(response.status, 301)
        self.assertEqual(response.headers["Location"], f"http://web.example:8080{SITE}/")

    def test_url_base_in_redirects(self) -> None:
        self.build(url_base=("https", "www.example.com"))
        self.assertEqual(self.call("GET", SITE).headers["Location"], f"https://www.example.com{SITE}/")
        self.build(url_base=("https", ""))
        self.assertEqual(self.call("GET", SITE).headers["Location"], f"https://web.example:8080{SITE}/")

    def test_index_of_a_directory_and_its_redirect(self) -> None:
        response = self.call("GET", f"{SITE}/blog/")
        self.assertEqual((response.status, self.body(response)), (200, "<p>blog</p>"))
        response = self.call("GET", f"{SITE}/blog")
        self.assertEqual((response.status, response.headers["Location"]), (301, f"http://web.example:8080{SITE}/blog/"))

    def test_objects_are_served_as_they_are(self) -> None:
        response = self.call("GET", f"{SITE}/docs/guide.txt")
        self.assertEqual((response.status, self.body(response)), (200, "read me"))

    def test_no_index_no_listings_is_404(self) -> None:
        self.web(index="index.html")
        response = self.call("GET", f"{SITE}/docs/")
        self.assertEqual(response.status, 404)


class RedirectTests(Case):
    def test_a_directory_marker_is_redirected_to_its_slash(self) -> None:
        response = self.call("GET", f"{SITE}/docs")
        self.assertEqual((response.status, response.headers["Location"]), (301, f"http://web.example:8080{SITE}/docs/"))

    def test_a_prefix_without_marker_is_redirected(self) -> None:
        response = self.call("GET", f"{SITE}/docs/api")
        self.assertEqual(response.status, 301)
        self.assertEqual(response.headers["Location"], f"http://web.example:8080{SITE}/docs/api/")

    def test_nothing_there_is_404_with_the_error_page(self) -> None:
        response = self.call("GET", f"{SITE}/nowhere")
        self.assertEqual((response.status, self.body(response)), (404, "<p>no such page</p>"))
        self.assertEqual(response.headers["Content-Type"], "text/html")

    def test_a_marker_with_a_custom_directory_type(self) -> None:
        self.web(listings="true", directory_type="text/directory")
        self.store.put(f"{SITE}/pics", b"", **{"Content-Type": "text/directory"})
        self.store.put(f"{SITE}/pics/a.png", b"png")
        self.assertEqual(self.call("GET", f"{SITE}/pics").status, 301)
        # an application/directory object is now an ordinary (empty) object
        self.assertEqual(self.call("GET", f"{SITE}/docs").status, 200)

    def test_no_redirect_for_who_may_not_read(self) -> None:
        self.assertEqual(self.call("GET", f"{A}/private").status, 401)
        self.assertEqual(self.call("GET", f"{A}/private/").status, 401)


class ErrorPageTests(Case):
    def test_error_page_only_for_401_and_404(self) -> None:
        self.web(error="error.html")
        response = self.call("GET", f"{SITE}/missing.html")
        self.assertEqual((response.status, self.body(response)), (404, "<p>no such page</p>"))

    def test_without_its_page_the_error_is_plain(self) -> None:
        self.store.objects.pop(f"{SITE}/404error.html")
        response = self.call("GET", f"{SITE}/missing.html")
        self.assertEqual(response.status, 404)
        self.assertNotIn("<p>", self.body(response))

    def test_listing_refused_serves_the_401_page(self) -> None:
        self.containers.read_acl["site"] = ".r:*"
        self.web(listings="true", error="error.html")
        response = self.call("GET", f"{SITE}/")
        self.assertEqual((response.status, self.body(response)), (401, "<p>not yours</p>"))

    def test_head_of_an_error_page_has_no_body(self) -> None:
        response = self.call("HEAD", f"{SITE}/missing.html")
        self.assertEqual((response.status, self.body(response)), (404, ""))


class ListingTests(Case):
    def setUp(self) -> None:
        super().setUp()
        self.web(listings="true")

    def test_root_listing(self) -> None:
        response = self.call("GET", f"{SITE}/")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.headers["Content-Type"], "text/html; charset=UTF-8")
        self.assertEqual(response.headers["X-Backend-Content-Generator"], "staticweb")
        page = self.body(response)
        self.assertEqual(response.headers["Content-Length"], str(len(page.encode())))
        self.assertIn(f"<title>Listing of {SITE}/</title>", page)
        self.assertIn('<a href="./docs/">docs/</a>', page)
        self.assertIn('<a href="./index.html">index.html</a>', page)
        self.assertIn('class="item type-text type-html"', page)
        self.assertNotIn("guide.txt", page)
        self.assertNotIn('href="..', page)
        self.assertIn("<style", page)

    def test_directory_listing(self) -> None:
        page = self.body(self.call("GET", f"{SITE}/docs/"))
        self.assertIn(f"Listing of {SITE}/docs/", page)
        self.assertIn('<a href="../">../</a>', page)
        self.assertIn('<a href="./guide.txt">guide.txt</a>', page)
        self.assertIn('<a href="./api/">api/</a>', page)
        self.assertNotIn("index.html", page)

    def test_empty_or_missing_directory_is_404(self) -> None:
        self.assertEqual(self.call("GET", f"{SITE}/nothing/").status, 404)

    def test_style_sheet_relative_to_the_root(self) -> None:
        self.web(listings="true", listings_css="style.css")
        self.assertIn('<link rel="stylesheet" type="text/css" href="style.css" />',
                      self.body(self.call("GET", f"{SITE}/")))
        self.assertIn('href="../../style.css"', self.body(self.call("GET", f"{SITE}/docs/api/")))
        self.web(listings="true", listings_css="https://cdn.example/s.css")
        self.assertIn('href="https://cdn.example/s.css"', self.body(self.call("GET", f"{SITE}/docs/")))

    def test_label(self) -> None:
        self.web(listings="true", listings_label="example.com")
        page = self.body(self.call("GET", f"{SITE}/docs/"))
        self.assertIn("Listing of example.com/docs/", page)
        self.assertNotIn("/v1/", page)

    def test_names_are_escaped(self) -> None:
        self.store.put(f'{SITE}/<b>"x"&y', b"")
        page = self.body(self.call("GET", f"{SITE}/"))
        self.assertIn('<a href="./%3Cb%3E%22x%22%26y">&lt;b&gt;"x"&amp;y</a>', page)
        self.assertNotIn("<b>", page)

    def test_head_of_a_listing(self) -> None:
        response = self.call("HEAD", f"{SITE}/")
        self.assertEqual(response.status, 200)
        self.assertEqual(self.body(response), "")
        self.assertGreater(int(response.headers["Content-Length"]), 0)

    def test_listing_needs_rlistings(self) -> None:
        self.containers.read_acl["site"] = ".r:*"
        self.assertEqual(self.call("GET", f"{SITE}/").status, 401)
        self.assertEqual(self.call("GET", SITE).status, 401)  # and no redirect either

    def test_index_wins_over_listing(self) -> None:
        self.web(listings="true", index="index.html")
        self.assertEqual(self.body(self.call("GET", f"{SITE}/")), "<p>home</p>")
        self.assertIn("Listing of", self.body(self.call("GET", f"{SITE}/docs/")))


class TempURLLinkTests(Case):
    def signed(self, prefix: str, inline: bool = False) -> dict:
        return {"REMOTE_USER": tempurl.REMOTE_USER,
                tempurl.INFO: {"sig": "abc123", "expires": "2030-01-02T03:04:05Z", "prefix": prefix,
                               "ip_range": None, "inline": inline}}

    def test_links_carry_the_signature(self) -> None:
        self.web(listings="true")
        page = self.body(self.call("GET", f"{SITE}/docs/", environ=self.signed("")))
        query = "?temp_url_prefix=&amp;temp_url_expires=2030-01-02T03%3A04%3A05Z&amp;temp_url_sig=abc123"
        self.assertIn(f'<a href="./guide.txt{query}">guide.txt</a>', page)
        self.assertIn(f'<a href="./api/{query}">api/</a>', page)
        self.assertIn('href="..', page)
        page = self.body(self.call("GET", f"{SITE}/docs/", environ=self.signed("", inline=True)))
        self.assertIn(f'<a href="./guide.txt{query}&amp;inline">guide.txt</a>', page)

    def test_no_parent_link_outside_the_signed_prefix(self) -> None:
        self.web(listings="true")
        self.assertNotIn('href="..', self.body(self.call("GET", f"{SITE}/docs/", environ=self.signed("docs/"))))
        self.assertIn('href="..', self.body(self.call("GET", f"{SITE}/docs/api/", environ=self.signed("docs/"))))


class WhoIsServedTests(Case):
    def test_a_token_sees_the_plain_api(self) -> None:
        response = self.call("GET", f"{SITE}/", token=True)
        self.assertEqual(response.headers["Content-Type"], "text/plain; charset=utf-8")
        self.assertIn("index.html\n", self.body(response))
        self.assertEqual(self.call("GET", f"{SITE}/docs", token=True).status, 200)  # the marker itself

    def test_a_token_with_web_mode_sees_the_site(self) -> None:
        response = self.call("GET", f"{SITE}/", token=True, **{"X-Web-Mode": "true"})
        self.assertEqual(self.body(response), "<p>home</p>")

    def test_web_mode_on_a_container_that_is_no_site(self) -> None:
        self.assertEqual(self.call("GET", f"{A}/plain/", token=True, **{"X-Web-Mode": "true"}).status, 404)
        self.assertEqual(self.call("GET", f"{A}/plain/", token=True).status, 200)

    def test_anonymous_on_a_container_that_is_no_site(self) -> None:
        self.assertEqual(self.call("GET", f"{A}/plain/").status, 401)
        self.assertEqual(self.call("GET", f"{A}/plain/o").status, 401)

    def test_writes_and_accounts_pass(self) -> None:
        self.assertEqual(self.call("PUT", f"{SITE}/new", token=True).status, 201)
        self.assertEqual(self.call("DELETE", f"{SITE}/").status, 401)
        self.assertEqual(self.call("GET", A).status, 401)
        self.assertEqual([call.source for call in self.store.calls], [None])

    def test_sub_requests_are_tagged_and_anonymous(self) -> None:
        self.call("GET", f"{SITE}/blog/")
        self.assertEqual([(call.path, call.source) for call in self.store.calls],
                         [(f"{SITE}/blog/", None), (f"{SITE}/blog/index.html", "SW")])
        self.assertNotIn("X-Auth-Token", self.store.calls[-1].headers)


class SettingsTests(SynchronousTestCase):
    def parse(self, raw: str):
        return c.parse_section(__import__("pathlib").Path("proxy.conf"), "filter:staticweb",
                               c.Section("filter:staticweb", options=OPTIONS), [("url_base", raw)])["url_base"]

    def test_url_base_forms(self) -> None:
        self.assertEqual(url_base("", None), ("", ""))
        self.assertEqual(url_base("http://www.example.com", None), ("http", "www.example.com"))
        self.assertEqual(url_base("https:", None), ("https", ""))
        self.assertEqual(url_base("https://", None), ("https", ""))
        self.assertEqual(url_base("//www.example.com:8080", None), ("", "www.example.com:8080"))

    def test_bad_url_base(self) -> None:
        for raw in ("ftp://x", "http://x/path", "http://x?q=1"):
            self.assertRaises(c.ConfigError, self.parse, raw)


class NamesTests(Case):
    def test_utf8_names_in_metadata(self) -> None:
        # metadata arrives as header values: the UTF-8 bytes as Latin-1 characters
        self.containers.meta["site"] = {"web-index": "índex.html".encode().decode("latin-1"),
                                        "web-listings": "true",
                                        "web-listings-css": "stÿle.css".encode().decode("latin-1")}
        self.store.put(f"{SITE}/índex.html", b"accented")
        self.assertEqual(self.body(self.call("GET", f"{SITE}/")), "accented")
        self.assertIn('href="../st%C3%BFle.css"', self.body(self.call("GET", f"{SITE}/docs/")))
