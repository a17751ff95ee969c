"""
The symlink middleware over an in-memory store (`MemorySwift`): links written (dynamic and
static) and refused, followed on GET and HEAD as the requester with Range and conditionals,
chains and their limit, ``?symlink=get``, POST's redirect, links to large objects with slo and
dlo above, copies, what gatekeeper keeps from clients, and the container listing's rows.
"""

from __future__ import annotations

import json
from hashlib import md5

from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txstore.middleware.copy import Copy
from txstore.middleware.dlo import DynamicLargeObjects
from txstore.middleware.gatekeeper import Gatekeeper
from txstore.middleware.slo import StaticLargeObjects
from txstore.middleware.symlink import EMPTY_ETAG, Symlinks
from txstore.proxy.messages import BytesSource, HeaderMap, SwiftRequest, SwiftResponse
from txstore.test.swift_fake import MemorySwift, read_body

A = "/v1/AUTH_a"
TC = f"{A}/tc"
LC = f"{A}/lc"
TARGET_BODY = b"target body"
TARGET = f"{TC}/t"
LISTING_ETAG = "X-Object-Sysmeta-Container-Update-Override-Etag"
SLO_SETTINGS = {"max_manifest_segments": 10, "max_manifest_size": 4096, "yield_frequency": 10, "concurrency": 2}


def hexmd5(data: bytes) -> str:
    return md5(data).hexdigest()


class Guarded:
    """Between the middleware and the store: 403 for ``denied`` paths to anyone but ``owner``."""

    def __init__(self, app) -> None:
        self.app = app
        self.denied: set[str] = set()

    async def __call__(self, request: SwiftRequest) -> SwiftResponse:
        if request.identity != "owner" and request.decoded_path in self.denied:
            request.discard_body()
            return SwiftResponse.text(403, "Forbidden")
        return await self.app(request)


class Case(SynchronousTestCase):
    def setUp(self) -> None:
        self.store = MemorySwift()
        self.guard = Guarded(self.store)
        self.symlinks = Symlinks(self.guard, 2, 1 << 20)
        self.app = self.symlinks
        self.etag = self.store.put(TARGET, TARGET_BODY, **{"Content-Type": "application/target"})

    def call(self, method: str, path: str, body: bytes = b"", query: str = "", identity: str = "alice",
             **headers: str) -> SwiftResponse:
        headers.setdefault("X-Auth-Token", "AUTH_tk")
        if method == "PUT" and "Transfer-Encoding" not in headers:
            headers.setdefault("Content-Length", str(len(body)))
        request = SwiftRequest(method, path, HeaderMap(headers), query, BytesSource(body), trans_id="tx",
                               identity=identity)
        return self.successResultOf(ensureDeferred(self.app(request)))

    def read(self, response: SwiftResponse) -> bytes:
        return read_body(self, response)

    def link(self, name: str, target: str = "tc/t", status: int = 201, **headers: str) -> SwiftResponse:
        response = self.call("PUT", f"{LC}/{name}", **{"X-Symlink-Target": target, **headers})
        self.assertEqual(response.status, status, response.body)
        return response

    def sub_requests(self, method: str | None = None):
        return [call for call in self.store.calls if call.source == "SYM" and method in (None, call.method)]


class PutTests(Case):
    def test_a_link_is_a_zero_byte_object_holding_its_target_in_sysmeta(self) -> None:
        self.link("l")
        stored = self.store.objects[f"{LC}/l"]
        self.assertEqual(stored.body, b"")
        self.assertEqual(stored.headers["X-Object-Sysmeta-Symlink-Target"], "tc/t")
        self.assertEqual(stored.headers["Content-Type"], "application/symlink")
        self.assertEqual(stored.headers[LISTING_ETAG], f"{EMPTY_ETAG}; symlink_target=tc/t")
        for name in ("X-Symlink-Target", "X-Object-Sysmeta-Symlink-Target-Account",
                     "X-Object-Sysmeta-Symlink-Target-Etag"):
            self.assertNotIn(name, stored.headers)
        self.assertEqual(self.sub_requests(), [])  # a dynamic link's target is not looked at
        self.link("typed", **{"Content-Type": "text/x-mine"})
        self.assertEqual(self.store.objects[f"{LC}/typed"].headers["Content-Type"], "text/x-mine")

    def test_the_target_is_normalized_and_stored_quoted(self) -> None:
        self.store.put(f"{TC}/dealde/l04 011e 4c8df/flash.png", TARGET_BODY)
        self.store.put(f"{TC}/café", b"accent")
        for name, value in (("l1", "tc/dealde%2Fl04 011e%204c8df/flash.png"),
                            ("l2", "tc/dealde/l04%20011e%204c8df/flash.png")):
            self.link(name, value)
            self.assertEqual(self.store.objects[f"{LC}/{name}"].headers["X-Object-Sysmeta-Symlink-Target"],
                             "tc/dealde/l04%20011e%204c8df/flash.png")
            response = self.call("GET", f"{LC}/{name}")
            self.assertEqual((response.status, self.read(response)), (200, TARGET_BODY))
            self.assertEqual(response.headers["Content-Location"], f"{A}/tc/dealde/l04%20011e%204c8df/flash.png")
        self.link("l3", "tc/caf%C3%A9")
        response = self.call("GET", f"{LC}/l3")
        self.assertEqual((self.read(response), response.headers["Content-Location"]), (b"accent", f"{TC}/caf%C3%A9"))

    def test_refusals_say_why_and_store_nothing(self) -> None:
        cases = [
            ({"X-Symlink-Target": "tc/t"}, b"non-zero-length", 400, b"Symlink requests require a zero byte body"),
            ({"X-Symlink-Target": "t"}, b"", 412,
             b"X-Symlink-Target header must be of the form <container name>/<object name>"),
            ({"X-Symlink-Target": "/tc/t"}, b"", 412,
             b"X-Symlink-Target header must be of the form <container name>/<object name>"),
            ({"X-Symlink-Target": "tc/"}, b"", 412,
             b"X-Symlink-Target header must be of the form <container name>/<object name>"),
            ({"X-Symlink-Target": "tc/%FF"}, b"", 412, b"Invalid UTF8 or contains NULL"),
            ({"X-Symlink-Target": "tc/t", "X-Symlink-Target-Account": "a/b"}, b"", 412,
             b"Account name cannot contain slashes"),
            ({"X-Symlink-Target": "tc/t", "X-Symlink-Target-Account": ""}, b"", 412, b"Account name cannot be empty"),
            ({"X-Symlink-Target": "lc/l"}, b"", 400, b"Symlink cannot target itself"),
            ({"X-Symlink-Target": "lc/l", "X-Symlink-Target-Account": "AUTH_a"}, b"", 400,
             b"Symlink cannot target itself"),
            ({"X-Symlink-Target": "tc/t", "X-Symlink-Target-Etag": 'a;b'}, b"", 400,
             b"Bad X-Symlink-Target-Etag format"),
        ]
        for headers, body, status, reason in cases:
            response = self.call("PUT", f"{LC}/l", body, **headers)
            self.assertEqual((response.status, response.body), (status, reason), headers)
        chunked = self.call("PUT", f"{LC}/l", b"x", **{"X-Symlink-Target": "tc/t", "Transfer-Encoding": "chunked"})
        self.assertEqual(chunked.status, 400)
        self.assertNotIn(f"{LC}/l", self.store.objects)
        self.assertEqual([c for c in self.store.calls if c.method == "PUT"], [])

    def test_a_chunked_empty_body_is_a_link_of_zero_bytes(self) -> None:
        self.link("l", **{"Transfer-Encoding": "chunked"})
        [put] = [c for c in self.store.calls if c.method == "PUT"]
        self.assertEqual(put.headers["Content-Length"], "0")
        self.assertNotIn("Transfer-Encoding", put.headers)

    def test_a_target_account_is_stored_only_when_named(self) -> None:
        self.link("l", **{"X-Symlink-Target-Account": "AUTH_b"})
        stored = self.store.objects[f"{LC}/l"].headers
        self.assertEqual(stored["X-Object-Sysmeta-Symlink-Target-Account"], "AUTH_b")
        self.assertEqual(stored[LISTING_ETAG], f"{EMPTY_ETAG}; symlink_target=tc/t; symlink_target_account=AUTH_b")
        self.store.put("/v1/AUTH_b/tc/t", b"elsewhere")
        response = self.call("GET", f"{LC}/l")
        self.assertEqual((self.read(response), response.headers["Content-Location"]),
                         (b"elsewhere", "/v1/AUTH_b/tc/t"))


class StaticLinkTests(Case):
    def test_a_static_link_records_the_targets_etag_size_and_type(self) -> None:
        self.link("s", **{"X-Symlink-Target-Etag": f'"{self.etag}"'})  # quotes or not
        stored = self.store.objects[f"{LC}/s"].headers
        self.assertEqual([stored[name] for name in ("X-Object-Sysmeta-Symlink-Target-Etag",
                                                    "X-Object-Sysmeta-Symlink-Target-Bytes", "Content-Type")],
                         [self.etag, "11", "application/target"])
        self.assertEqual(stored[LISTING_ETAG], f"{EMPTY_ETAG}; symlink_target=tc/t; "
                                               f"symlink_target_etag={self.etag}; symlink_target_bytes=11")
        [head] = self.sub_requests("HEAD")  # as the requester
        self.assertEqual((head.path, head.headers["X-Auth-Token"]), (TARGET, "AUTH_tk"))
        self.link("typed", **{"X-Symlink-Target-Etag": self.etag, "Content-Type": "text/mine"})
        self.assertEqual(self.store.objects[f"{LC}/typed"].headers["Content-Type"], "text/mine")

    def test_a_target_that_is_missing_differs_or_is_forbidden_is_refused(self) -> None:
        missing = self.link("s", "lc/nothing", 409, **{"X-Symlink-Target-Etag": EMPTY_ETAG})
        self.assertEqual(missing.body, b"X-Symlink-Target does not exist")
        self.assertEqual(missing.headers["Content-Location"], f"{LC}/nothing")
        other = self.link("s", status=409, **{"X-Symlink-Target-Etag": "not-the-real-etag"})
        self.assertEqual(other.body, f"Object Etag '{self.etag}' does not match X-Symlink-Target-Etag header "
                                     "'not-the-real-etag'".encode())
        self.guard.denied.add(TARGET)
        self.link("s", status=403, **{"X-Symlink-Target-Etag": self.etag})
        self.assertNotIn(f"{LC}/s", self.store.objects)
        self.link("s", status=201, identity="owner", **{"X-Symlink-Target-Etag": self.etag})

    def test_a_link_as_target_is_checked_as_swift_checks_it(self) -> None:
        self.link("dynamic")
        self.link("static", **{"X-Symlink-Target-Etag": self.etag})
        # a dynamic link is the zero-byte object it is, even when its target is gone
        self.link("to-dynamic", "lc/dynamic", **{"X-Symlink-Target-Etag": EMPTY_ETAG})
        self.assertEqual(self.store.objects[f"{LC}/to-dynamic"].headers["X-Object-Sysmeta-Symlink-Target-Bytes"], "0")
        self.link("to-dynamic", "lc/dynamic", 409, **{"X-Symlink-Target-Etag": self.etag})
        # a static link is checked through the ETag it recorded
        self.link("to-static", "lc/static", **{"X-Symlink-Target-Etag": self.etag})
        differ = self.link("x", "lc/static", 409, **{"X-Symlink-Target-Etag": "not-the-real-etag"})
        self.assertEqual(differ.body, b"X-Symlink-Target-Etag headers do not match")
        del self.store.objects[TARGET]
        self.link("to-broken", "lc/dynamic", **{"X-Symlink-Target-Etag": EMPTY_ETAG})

    def test_reading_a_static_link_checks_the_target_etag(self) -> None:
        self.link("s", **{"X-Symlink-Target-Etag": self.etag})
        response = self.call("GET", f"{LC}/s", **{"If-Match": self.etag})
        self.assertEqual((response.status, self.read(response)), (200, TARGET_BODY))
        self.assertEqual(self.call("GET", f"{LC}/s", **{"If-Match": "not-the-etag"}).status, 412)
        self.store.put(TARGET, b"updated target body")
        for method, headers in (("HEAD", {}), ("GET", {}), ("GET", {"If-Match": self.etag}),
                                ("GET", {"If-Match": "not-the-etag"})):
            response = self.call(method, f"{LC}/s", **headers)
            self.assertEqual(response.status, 409, (method, headers))
            self.assertEqual(response.headers["Content-Location"], TARGET)
        del self.store.objects[TARGET]
        gone = self.call("GET", f"{LC}/s")  # not-found-ness trumps the ETag
        self.assertEqual((gone.status, gone.headers["Content-Location"]), (404, TARGET))

    def test_static_and_dynamic_links_chained(self) -> None:
        self.link("static", **{"X-Symlink-Target-Etag": self.etag})
        self.link("dynamic", "lc/static")
        self.link("dynamic2")
        self.link("static2", "lc/dynamic2", **{"X-Symlink-Target-Etag": EMPTY_ETAG})
        for name in ("dynamic", "static2"):
            response = self.call("GET", f"{LC}/{name}")
            self.assertEqual((response.status, self.read(response)), (200, TARGET_BODY), name)
            self.assertEqual(response.headers["Content-Location"], TARGET)


class ReadTests(Case):
    def setUp(self) -> None:
        super().setUp()
        self.link("l")

    def test_get_and_head_answer_the_target_with_its_location(self) -> None:
        response = self.call("GET", f"{LC}/l")
        self.assertEqual((response.status, self.read(response)), (200, TARGET_BODY))
        self.assertEqual([response.headers[name] for name in ("ETag", "Content-Length", "Content-Type")],
                         [self.etag, "11", "application/target"])
        self.assertEqual(response.headers["Content-Location"], TARGET)
        self.assertNotIn("X-Object-Sysmeta-Symlink-Target", response.headers)
        head = self.call("HEAD", f"{LC}/l")
        self.assertEqual((head.status, head.headers["Content-Length"], head.headers["Content-Location"]),
                         (200, "11", TARGET))
        # the target was read as the requester, tagged as the middleware's
        read = self.sub_requests("GET")[0]
        self.assertEqual((read.path, read.headers["X-Auth-Token"]), (TARGET, "AUTH_tk"))
        self.guard.denied.add(TARGET)
        forbidden = self.call("GET", f"{LC}/l")
        self.assertEqual((forbidden.status, forbidden.headers["Content-Location"]), (403, TARGET))
        self.assertEqual(self.call("GET", f"{LC}/l", identity="owner").status, 200)

    def test_range_and_conditionals_apply_to_the_target(self) -> None:
        ranged = self.call("GET", f"{LC}/l", Range="bytes=7-10")
        self.assertEqual((ranged.status, self.read(ranged)), (206, b"body"))
        self.assertEqual(ranged.headers["Content-Range"], "bytes 7-10/11")
        # the link itself was asked without its (empty) body being ranged
        first = self.store.calls[-2]
        self.assertEqual(first.path, f"{LC}/l")
        self.assertIn("X-Object-Sysmeta-Symlink-Target", first.headers["X-Backend-Ignore-Range-If-Metadata-Present"])
        for headers, status in (({"If-Match": self.etag}, 200), ({"If-Match": "other"}, 412),
                                ({"If-None-Match": self.etag}, 304), ({"If-None-Match": "other"}, 200)):
            response = self.call("GET", f"{LC}/l", **headers)
            self.assertEqual((response.status, response.headers["Content-Location"]), (status, TARGET), headers)
            self.assertEqual(response.headers["ETag"], self.etag)

    def test_a_link_that_answers_304_412_or_416_itself_is_still_followed(self) -> None:
        refused = []

        async def refuse_links(request: SwiftRequest) -> SwiftResponse:
            response = await self.store(request)
            if request.decoded_path == f"{LC}/l":  # as a node answers a link the request does not fit
                response.status, response.body = refused[-1], b""
            return response

        self.symlinks.app = refuse_links
        for status, headers, answer in ((412, {"If-Match": self.etag}, (200, TARGET_BODY)),
                                        (304, {"If-None-Match": EMPTY_ETAG}, (200, TARGET_BODY)),
                                        (416, {"Range": "bytes=7-10"}, (206, b"body"))):
            refused.append(status)
            response = self.call("GET", f"{LC}/l", **headers)
            self.assertEqual((response.status, self.read(response)), answer, status)

    def test_a_missing_target_is_a_404_that_says_where(self) -> None:
        self.link("nowhere", "tc/none")
        for method in ("GET", "HEAD"):
            response = self.call(method, f"{LC}/nowhere")
            self.assertEqual((response.status, response.headers["Content-Location"]), (404, f"{TC}/none"))
        self.assertEqual(self.call("GET", f"{LC}/none").headers.get("Content-Location"), None)

    def test_chains_are_followed_up_to_symloop_max(self) -> None:
        self.link("l2", "lc/l")
        response = self.call("GET", f"{LC}/l2")
        self.assertEqual((self.read(response), response.headers["Content-Location"]), (TARGET_BODY, TARGET))
        self.link("l3", "lc/l2")
        too_many = self.call("GET", f"{LC}/l3")
        self.assertEqual((too_many.status, too_many.body),
                         (409, b"Too many levels of symbolic links, maximum allowed is 2"))
        self.assertEqual(self.call("HEAD", f"{LC}/l3").status, 409)
        self.assertEqual(self.call("HEAD", f"{LC}/l3", query="symlink=get").status, 200)
        self.link("ping", "lc/pong")
        self.link("pong", "lc/ping")
        self.assertEqual(self.call("GET", f"{LC}/ping").status, 409)
        longer = Symlinks(self.store, 3, 1 << 20)
        request = SwiftRequest("GET", f"{LC}/l3", HeaderMap(), "", BytesSource(b""))
        self.assertEqual(self.read(self.successResultOf(ensureDeferred(longer(request)))), TARGET_BODY)

    def test_symlink_get_reads_the_link_itself(self) -> None:
        self.link("s", **{"X-Symlink-Target-Etag": self.etag, "X-Symlink-Target-Account": "AUTH_a"})
        for method in ("GET", "HEAD"):
            response = self.call(method, f"{LC}/l", query="symlink=get")
            self.assertEqual((response.status, response.body, response.headers["Content-Length"]), (200, b"", "0"))
            self.assertEqual((response.headers["X-Symlink-Target"], response.headers["ETag"]), ("tc/t", EMPTY_ETAG))
            self.assertNotIn("X-Symlink-Target-Account", response.headers)  # not named: the link's own
            self.assertNotIn("X-Object-Sysmeta-Symlink-Target", response.headers)
            self.assertNotIn("Content-Location", response.headers)
            static = self.call(method, f"{LC}/s", query="symlink=get")
            self.assertEqual([static.headers.get(f"X-Symlink-Target{suffix}") for suffix in ("", "-Account", "-Etag",
                                                                                               "-Bytes")],
                             ["tc/t", "AUTH_a", self.etag, "11"])
        # conditionals apply to the link
        self.assertEqual(self.call("GET", f"{LC}/l", query="symlink=get", **{"If-Match": EMPTY_ETAG}).status, 200)
        self.assertEqual(self.call("GET", f"{LC}/l", query="symlink=get", **{"If-Match": self.etag}).status, 412)
        plain = self.call("GET", TARGET, query="symlink=get")
        self.assertEqual((self.read(plain), plain.headers.get("X-Symlink-Target")), (TARGET_BODY, None))

    def test_other_requests_pass(self) -> None:
        self.assertEqual(self.call("DELETE", f"{LC}/l").status, 204)
        self.assertIn(TARGET, self.store.objects)
        self.assertEqual(self.read(self.call("GET", TARGET)), TARGET_BODY)
        self.assertEqual(self.call("PUT", f"{LC}/l", b"plain").status, 201)  # overwritten: a plain object
        self.assertEqual(self.read(self.call("GET", f"{LC}/l")), b"plain")


class PostTests(Case):
    def test_a_post_to_a_link_updates_it_and_redirects_to_the_target(self) -> None:
        self.link("l")
        response = self.call("POST", f"{LC}/l", **{"X-Object-Meta-Alpha": "apple"})
        self.assertEqual((response.status, response.headers["Location"]), (307, TARGET))
        self.assertEqual(response.body, b"The requested POST was applied to a symlink. POST directly to the target "
                                        b"to apply requested metadata.")
        self.assertNotIn("X-Symlink-Target-Etag", response.headers)
        link = self.call("GET", f"{LC}/l", query="symlink=get")
        self.assertEqual((link.headers["X-Object-Meta-Alpha"], link.headers["X-Symlink-Target"]), ("apple", "tc/t"))
        self.assertNotIn("X-Object-Meta-Alpha", self.call("GET", f"{LC}/l").headers)
        # what the object is was asked by the middleware itself
        [head] = self.sub_requests("HEAD")
        self.assertEqual(head.path, f"{LC}/l")

    def test_a_static_or_broken_or_cross_account_link_too(self) -> None:
        self.link("s", **{"X-Symlink-Target-Etag": self.etag})
        self.store.put(TARGET, b"changed")
        static = self.call("POST", f"{LC}/s", **{"Content-Type": "application/foo"})
        self.assertEqual((static.status, static.headers["Location"], static.headers["X-Symlink-Target-Etag"]),
                         (307, TARGET, self.etag))
        self.assertEqual(self.store.objects[f"{LC}/s"].headers["Content-Type"], "application/foo")
        self.link("x", "tc/none", **{"X-Symlink-Target-Account": "AUTH_b"})
        self.assertEqual(self.call("POST", f"{LC}/x").headers["Location"], "/v1/AUTH_b/tc/none")

    def test_a_post_answer_that_names_the_target_is_used(self) -> None:
        self.link("l")

        async def telling(request: SwiftRequest) -> SwiftResponse:
            response = await self.store(request)
            if request.method == "POST":  # as Swift's object server answers a POST
                stored = self.store.objects[request.decoded_path].headers
                response.headers.update(stored.with_prefix("x-object-sysmeta-"))
            return response

        self.symlinks.app = telling
        self.assertEqual(self.call("POST", f"{LC}/l").status, 307)
        self.assertEqual(self.sub_requests("HEAD"), [])

    def test_a_plain_object_is_posted_and_a_target_cannot_be(self) -> None:
        self.assertEqual(self.call("POST", TARGET, **{"X-Object-Meta-K": "v"}).status, 202)
        refused = self.call("POST", TARGET, **{"X-Symlink-Target": "c/new"})
        self.assertEqual((refused.status, refused.body), (400, b"A PUT request is required to set a symlink target"))
        self.assertEqual(self.call("POST", f"{LC}/none").status, 404)


class LargeObjectTests(Case):
    """slo and dlo above symlink, as in the default pipeline: a link's target arrives raw, and is assembled."""

    def setUp(self) -> None:
        super().setUp()
        self.dlo = DynamicLargeObjects(self.symlinks, 100, 10)
        self.app = StaticLargeObjects(self.dlo, SLO_SETTINGS, Clock())
        self.etags = {name: self.store.put(f"{A}/segs/{name}", name.encode() * 5) for name in "abc"}
        segments = [{"path": f"/segs/{name}", "etag": self.etags[name], "size_bytes": 5} for name in "abc"]
        put = self.call("PUT", f"{TC}/manifest", json.dumps(segments).encode(), "multipart-manifest=put")
        self.assertEqual(put.status, 201, put.body)
        self.slo_etag = put.headers["ETag"]
        self.manifest_etag = self.store.objects[f"{TC}/manifest"].etag

    def test_a_link_to_a_static_large_object(self) -> None:
        self.link("l", "tc/manifest")
        response = self.call("GET", f"{LC}/l")
        self.assertEqual((response.status, self.read(response)), (200, b"aaaaabbbbbccccc"))
        self.assertEqual((response.headers["ETag"], response.headers["Content-Location"]),
                         (self.slo_etag, f"{TC}/manifest"))
        ranged = self.call("GET", f"{LC}/l", Range="bytes=3-11")
        self.assertEqual((ranged.status, self.read(ranged)), (206, b"aabbbbbcc"))
        head = self.call("HEAD", f"{LC}/l")
        self.assertEqual(head.headers["Content-Length"], "15")
        manifest = self.call("GET", f"{LC}/l", query="multipart-manifest=get")
        self.assertEqual([entry["hash"] for entry in json.loads(manifest.body)], [self.etags[n] for n in "abc"])

    def test_a_static_link_to_a_static_large_object_is_pinned_to_its_manifest(self) -> None:
        for etag in (self.slo_etag, self.slo_etag.strip('"')):  # the large object's ETag is not the one
            self.link("s", "tc/manifest", 409, **{"X-Symlink-Target-Etag": etag})
        self.link("s", "tc/manifest", **{"X-Symlink-Target-Etag": self.manifest_etag})
        stored = self.store.objects[f"{LC}/s"].headers
        self.assertEqual(stored["X-Object-Sysmeta-Symlink-Target-Bytes"], "15")  # the large object's size
        self.assertEqual(stored[LISTING_ETAG], f"{EMPTY_ETAG}; slo_etag={self.slo_etag.strip(chr(34))}; "
                                               f"symlink_target=tc/manifest; symlink_target_etag={self.manifest_etag}; "
                                               "symlink_target_bytes=15")
        self.assertEqual(self.read(self.call("GET", f"{LC}/s")), b"aaaaabbbbbccccc")

    def test_segments_may_be_links(self) -> None:
        self.store.put(f"{A}/segs/real", b"R" * 4)
        self.link("seg", "segs/real")
        segments = [{"path": "/lc/seg"}, {"path": "/segs/a"}]
        self.assertEqual(self.call("PUT", f"{TC}/m2", json.dumps(segments).encode(), "multipart-manifest=put").status,
                         201)
        self.assertEqual(json.loads(self.store.objects[f"{TC}/m2"].body)[0]["bytes"], 4)  # checked through the link
        self.assertEqual(self.read(self.call("GET", f"{TC}/m2")), b"RRRRaaaaa")

    def test_a_link_to_a_dynamic_large_object(self) -> None:
        self.store.put(f"{TC}/dlo", b"", **{"X-Object-Manifest": "segs/"})
        self.link("d", "tc/dlo")
        response = self.call("GET", f"{LC}/d")
        self.assertEqual((self.read(response), response.headers["Content-Location"]),
                         (b"aaaaabbbbbccccc", f"{TC}/dlo"))
        self.assertEqual(self.read(self.call("GET", f"{LC}/d", Range="bytes=4-5")), b"ab")
        self.assertEqual(self.call("GET", f"{LC}/d", query="multipart-manifest=get").headers["X-Object-Manifest"],
                         "segs/")


class CopyTests(Case):
    def setUp(self) -> None:
        super().setUp()
        self.app = Copy(self.symlinks)
        self.link("l")

    def test_a_copy_of_a_link_is_its_target(self) -> None:
        self.assertEqual(self.call("COPY", f"{LC}/l", Destination="tc/copy").status, 201)
        self.assertEqual(self.call("PUT", f"{TC}/copy2", **{"X-Copy-From": "lc/l"}).status, 201)
        for name in ("copy", "copy2"):
            copied = self.store.objects[f"{TC}/{name}"]
            self.assertEqual(copied.body, TARGET_BODY)
            self.assertNotIn("X-Object-Sysmeta-Symlink-Target", copied.headers)
            response = self.call("GET", f"{TC}/{name}")
            self.assertNotIn("Content-Location", response.headers)

    def test_with_symlink_get_the_link_is_copied(self) -> None:
        self.assertEqual(self.call("COPY", f"{LC}/l", query="symlink=get", Destination="lc/l2").status, 201)
        self.assertEqual(self.call("PUT", f"{LC}/l3", query="symlink=get", **{"X-Copy-From": "lc/l"}).status, 201)
        for name in ("l2", "l3"):
            copied = self.store.objects[f"{LC}/{name}"]
            self.assertEqual((copied.body, copied.headers["X-Object-Sysmeta-Symlink-Target"]), (b"", "tc/t"))
            response = self.call("GET", f"{LC}/{name}")
            self.assertEqual((self.read(response), response.headers["Content-Location"]), (TARGET_BODY, TARGET))

    def test_a_link_copied_to_another_account_points_there_unless_told(self) -> None:
        self.store.put("/v1/AUTH_b/tc/t", b"b's")
        self.call("PUT", "/v1/AUTH_b/lc/l", query="symlink=get",
                  **{"X-Copy-From": "lc/l", "X-Copy-From-Account": "AUTH_a"})
        self.assertEqual(self.read(self.call("GET", "/v1/AUTH_b/lc/l")), b"b's")
        self.call("PUT", "/v1/AUTH_b/lc/l", query="symlink=get",
                  **{"X-Copy-From": "lc/l", "X-Copy-From-Account": "AUTH_a", "X-Symlink-Target-Account": "AUTH_a"})
        response = self.call("GET", "/v1/AUTH_b/lc/l")
        self.assertEqual((self.read(response), response.headers["Content-Location"]), (TARGET_BODY, TARGET))

    def test_a_static_link_copied_is_checked_again(self) -> None:
        self.link("s", **{"X-Symlink-Target-Etag": self.etag})
        self.assertEqual(self.call("COPY", f"{LC}/s", query="symlink=get", Destination="lc/s2").status, 201)
        self.assertEqual(self.store.objects[f"{LC}/s2"].headers["X-Object-Sysmeta-Symlink-Target-Bytes"], "11")
        self.store.put(TARGET, b"changed")
        self.assertEqual(self.call("COPY", f"{LC}/s", query="symlink=get", Destination="lc/s3").status, 409)


class GatekeeperTests(Case):
    def test_clients_cannot_write_or_read_the_sysmeta(self) -> None:
        self.app = Gatekeeper(self.symlinks)
        self.call("PUT", f"{LC}/forged", **{"X-Object-Sysmeta-Symlink-Target": "tc/t",
                                            LISTING_ETAG: f"{EMPTY_ETAG}; symlink_target=tc/t"})
        self.assertNotIn("X-Object-Sysmeta-Symlink-Target", self.store.objects[f"{LC}/forged"].headers)
        self.assertNotIn("Content-Location", self.call("GET", f"{LC}/forged").headers)
        self.link("l")
        link = self.call("HEAD", f"{LC}/l", query="symlink=get")
        self.assertEqual(link.headers["X-Symlink-Target"], "tc/t")
        self.assertEqual(link.headers.with_prefix("x-object-sysmeta-"), {})


class ListingTests(Case):
    def test_link_rows_show_their_targets(self) -> None:
        self.link("dynamic")
        self.link("static", **{"X-Symlink-Target-Etag": self.etag})
        self.link("other", "tc/t", **{"X-Symlink-Target-Account": "AUTH_b"})
        self.store.put(f"{LC}/plain", b"x")
        self.store.put(f"{LC}/params", b"y", **{LISTING_ETAG: "abc; other=1"})  # not a link: untouched
        response = self.call("GET", LC, query="format=json")
        rows = {row["name"]: row for row in json.loads(self.read(response))}
        self.assertEqual(int(response.headers["Content-Length"]), len(response.body))
        for row in rows.values():
            row.pop("last_modified")
        self.assertEqual(rows["dynamic"], {"name": "dynamic", "bytes": 0, "hash": EMPTY_ETAG,
                                           "content_type": "application/symlink", "symlink_path": TARGET})
        self.assertEqual(rows["static"], {"name": "static", "bytes": 0, "hash": EMPTY_ETAG,
                                          "content_type": "application/target", "symlink_path": TARGET,
                                          "symlink_etag": self.etag, "symlink_bytes": 11})
        self.assertEqual(rows["other"]["symlink_path"], "/v1/AUTH_b/tc/t")
        self.assertEqual(rows["plain"]["hash"], hexmd5(b"x"))
        self.assertEqual(rows["params"]["hash"], "abc; other=1")
        self.assertNotIn("symlink_path", rows["plain"])

    def test_a_static_link_to_a_large_object_lists_its_etags(self) -> None:
        app = StaticLargeObjects(self.symlinks, SLO_SETTINGS, Clock())
        self.store.put(f"{A}/segs/a", b"a" * 5)
        manifest = [{"path": "/segs/a"}]
        self.app = app
        slo_etag = self.call("PUT", f"{TC}/m", json.dumps(manifest).encode(), "multipart-manifest=put").headers["ETag"]
        self.link("s", "tc/m", **{"X-Symlink-Target-Etag": self.store.objects[f"{TC}/m"].etag})
        [row] = json.loads(self.read(self.call("GET", LC, query="format=json")))
        self.assertEqual((row["hash"], row["slo_etag"], row["symlink_bytes"]), (EMPTY_ETAG, slo_etag, 5))

    def test_what_is_not_a_json_listing_passes(self) -> None:
        self.link("l")
        plain = self.call("GET", LC)
        self.assertEqual(plain.body, b"l\n")
        self.assertEqual(self.call("GET", "/v1/AUTH_a/none", query="format=json").status, 404)
        self.assertEqual(self.call("HEAD", LC, query="format=json").status, 200)
