"""
The dlo middleware over an in-memory store (`MemorySwift`): manifests written and changed,
large objects read whole, by range and by several ranges across segment boundaries, from
listings of many pages and of more than ``max_segments``, conditionals on the large object's
ETag, segments changed or unreadable, the manifest itself, reads as the requester, and copies.
"""

from __future__ import annotations

import json
from hashlib import md5

from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txstore.common.web import ResponseAborted
from txstore.middleware.copy import Copy
from txstore.middleware.dlo import DynamicLargeObjects
from txstore.middleware.slo import StaticLargeObjects
from txstore.proxy.messages import BytesSource, HeaderMap, SwiftRequest, SwiftResponse
from txstore.test.swift_fake import MemorySwift, read_body

A = "/v1/AUTH_a"
C = f"{A}/c"
SEGS = f"{A}/segs"
EMPTY_ETAG = md5(b"").hexdigest()


def hexmd5(data: bytes) -> str:
    return md5(data).hexdigest()


class Case(SynchronousTestCase):
    max_segments = 100
    page_size = 10

    def setUp(self) -> None:
        self.store = MemorySwift()
        self.dlo = DynamicLargeObjects(self.store, self.max_segments, self.page_size)
        self.app = self.dlo
        self.segments: dict[str, bytes] = {}

    def add_segments(self, prefix: str, *sizes: int) -> bytes:
        """Segments ``<prefix>00``, ``<prefix>01``…, each of its own letter; their concatenation."""
        whole = b""
        for index, size in enumerate(sizes):
            data = bytes([ord("a") + len(self.segments) % 26]) * size
            name = f"{prefix}{index:02d}"
            self.store.put(f"{SEGS}/{name}", data)
            self.segments[name] = data
            whole += data
        return whole

    def call(self, method: str, path: str, body: bytes = b"", query: str = "", **headers: str) -> SwiftResponse:
        request = SwiftRequest(method, path, HeaderMap(headers), query, BytesSource(body), trans_id="tx")
        return self.successResultOf(ensureDeferred(self.app(request)))

    def read(self, response: SwiftResponse) -> bytes:
        return read_body(self, response)

    def manifest(self, name: str = "m", target: str = "segs/big/", body: bytes = b"", **headers: str) -> SwiftResponse:
        return self.call("PUT", f"{C}/{name}", body, **{"X-Object-Manifest": target, **headers})

    def calls(self, method: str = "GET", source: str = "DLO"):
        return [call for call in self.store.calls if call.method == method and call.source == source]


class ManifestTests(Case):
    def test_a_manifest_is_stored_with_its_header(self) -> None:
        self.assertEqual(self.manifest(target="segs/big%20one/").status, 201)
        self.assertEqual(self.store.objects[f"{C}/m"].headers["X-Object-Manifest"], "segs/big%20one/")

    def test_a_header_not_of_the_container_prefix_form_is_refused(self) -> None:
        for value in ("segs", "segs/", "/big", "segs//big", "segs/big?x", "segs/a&b"):
            response = self.manifest(target=value)
            self.assertEqual(response.status, 400, value)
            self.assertEqual(response.body, b"X-Object-Manifest must be in the format container/prefix")
        self.assertNotIn(f"{C}/m", self.store.objects)
        self.store.put(f"{C}/plain", b"x")
        self.assertEqual(self.call("POST", f"{C}/plain", **{"X-Object-Manifest": "nope"}).status, 400)

    def test_a_post_changes_where_the_manifest_points(self) -> None:
        self.add_segments("big/", 2, 2)
        self.add_segments("other/", 3)
        self.manifest()
        self.assertEqual(self.call("POST", f"{C}/m", **{"X-Object-Manifest": "segs/other/"}).status, 202)
        self.assertEqual(self.read(self.call("GET", f"{C}/m")), b"ccc")
        # as in Swift, a POST without the header makes the manifest a plain object again
        self.call("POST", f"{C}/m", **{"X-Object-Meta-K": "v"})
        plain = self.call("GET", f"{C}/m")
        self.assertEqual((plain.status, plain.body, plain.headers.get("X-Object-Manifest")), (200, b"", None))


class ReadTests(Case):
    def setUp(self) -> None:
        super().setUp()
        self.whole = self.add_segments("big/", 5, 7, 3)
        self.add_segments("bigger/", 4)  # shares a prefix with the manifest's, not the trailing slash
        self.manifest(body=b"the manifest's own body is not served",
                      **{"Content-Type": "text/x-big", "X-Object-Meta-Color": "blue"})
        self.etag = hexmd5("".join(hexmd5(self.segments[f"big/{i:02d}"]) for i in range(3)).encode())

    def test_get_answers_the_segments_in_listing_order(self) -> None:
        response = self.call("GET", f"{C}/m")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.headers["Content-Length"], "15")
        self.assertEqual(response.headers["ETag"], f'"{self.etag}"')
        self.assertEqual(response.headers["X-Object-Manifest"], "segs/big/")
        self.assertEqual((response.headers["Content-Type"], response.headers["X-Object-Meta-Color"]),
                         ("text/x-big", "blue"))
        self.assertEqual(self.read(response), self.whole)
        self.assertEqual(self.whole, b"aaaaabbbbbbbccc")
        listing, *segments = self.calls()  # one listing, surveyed and streamed
        self.assertEqual((listing.path, listing.query), ("/v1/AUTH_a/segs", "format=json&prefix=big%2F&limit=10"))
        self.assertEqual([c.path for c in segments], [f"{SEGS}/big/{i:02d}" for i in range(3)])
        # whole segments, nothing pinned: a DLO has no ETags of its segments to pin
        self.assertEqual([(c.headers.get("Range"), c.headers.get("If-Match")) for c in segments], [(None, None)] * 3)

    def test_head_answers_the_length_and_etag_without_reading_segments(self) -> None:
        head = self.call("HEAD", f"{C}/m")
        self.assertEqual((head.status, head.body), (200, b""))
        self.assertEqual(head.headers["Content-Length"], "15")
        self.assertEqual(head.headers["ETag"], f'"{self.etag}"')
        self.assertEqual([c.path for c in self.calls()], ["/v1/AUTH_a/segs"])  # the listing only

    def test_ranges_across_segment_boundaries(self) -> None:
        for spec, first, last in (("3-9", 3, 9), ("-4", 11, 14), ("12-", 12, 14), ("0-0", 0, 0), ("5-11", 5, 11),
                                  ("4-99", 4, 14)):
            response = self.call("GET", f"{C}/m", Range=f"bytes={spec}")
            self.assertEqual(response.status, 206, spec)
            self.assertEqual(response.headers["Content-Range"], f"bytes {first}-{last}/15")
            self.assertEqual(response.headers["Content-Length"], str(last - first + 1))
            self.assertEqual(self.read(response), self.whole[first:last + 1], spec)
        self.store.calls.clear()
        self.read(self.call("GET", f"{C}/m", Range="bytes=6-7"))
        [segment] = self.calls()[1:]  # only the segment that holds the range, only those bytes
        self.assertEqual((segment.path, segment.headers["Range"]), (f"{SEGS}/big/01", "bytes=1-2"))

    def test_an_unsatisfiable_range_is_416(self) -> None:
        response = self.call("GET", f"{C}/m", Range="bytes=15-")
        self.assertEqual(response.status, 416)
        self.assertEqual(response.headers["Content-Range"], "bytes */15")
        self.assertEqual(self.calls()[1:], [])

    def test_several_ranges_get_the_whole_object(self) -> None:
        """Swift's dlo ignores a Range of several ranges (200, the whole), even unsatisfiable ones."""
        for spec in ("1-2,4-6,13-", "0-4,10-14", "20-30,40-50"):
            response = self.call("GET", f"{C}/m", Range=f"bytes={spec}")
            self.assertEqual((response.status, response.headers["Content-Length"]), (200, "15"), spec)
            self.assertNotIn("Content-Range", response.headers)
            self.assertEqual(self.read(response), self.whole)

    def test_conditionals_compare_the_large_objects_etag(self) -> None:
        quoted = f'"{self.etag}"'
        self.assertEqual(self.call("GET", f"{C}/m", **{"If-None-Match": quoted}).status, 304)
        self.assertEqual(self.call("HEAD", f"{C}/m", **{"If-None-Match": quoted}).status, 304)
        self.assertEqual(self.call("GET", f"{C}/m", **{"If-Match": '"other"'}).status, 412)
        # the manifest's own ETag is not the large object's
        self.assertEqual(self.call("GET", f"{C}/m", **{"If-Match": EMPTY_ETAG}).status, 412)
        self.assertEqual(self.call("GET", f"{C}/m", **{"If-None-Match": EMPTY_ETAG}).status, 200)
        matched = self.call("GET", f"{C}/m", **{"If-Match": quoted, "Range": "bytes=0-1"})
        self.assertEqual((matched.status, self.read(matched)), (206, b"aa"))
        not_modified = self.call("GET", f"{C}/m", **{"If-None-Match": "*"})
        self.assertEqual((not_modified.status, not_modified.headers["ETag"]), (304, quoted))

    def test_a_segment_changed_since_the_listing_breaks_the_read(self) -> None:
        response = self.call("GET", f"{C}/m")
        self.store.put(f"{SEGS}/big/01", b"B" * 9)  # after the listing: longer than it says
        self.assertEqual(self.successResultOf(response.body.read()), b"aaaaa")
        self.failureResultOf(response.body.read(), ResponseAborted)
        response = self.call("GET", f"{C}/m")  # listed again: the new size
        self.assertEqual(response.headers["Content-Length"], "17")
        self.assertEqual(self.read(response), b"aaaaaBBBBBBBBBccc")

    def forbid(self, name: str) -> None:
        """The segment ``name`` is listed but cannot be read (403)."""
        store = self.store

        async def forbidding(request: SwiftRequest) -> SwiftResponse:
            if request.decoded_path == f"{SEGS}/{name}":
                return SwiftResponse.text(403, "Forbidden")
            return await store(request)

        self.dlo.app = forbidding

    def test_a_bad_first_segment_is_a_conflict_before_any_byte(self) -> None:
        self.forbid("big/00")
        self.assertEqual(self.call("GET", f"{C}/m").status, 409)
        # a range that does not reach it is read
        self.assertEqual(self.read(self.call("GET", f"{C}/m", Range="bytes=5-")), b"bbbbbbbccc")

    def test_a_bad_later_segment_aborts_the_read_when_reached(self) -> None:
        self.forbid("big/01")
        response = self.call("GET", f"{C}/m")
        self.assertEqual((response.status, self.successResultOf(response.body.read())), (200, b"aaaaa"))
        self.failureResultOf(response.body.read(), ResponseAborted)

    def test_multipart_manifest_get_is_the_manifest_itself(self) -> None:
        response = self.call("GET", f"{C}/m", query="multipart-manifest=get")
        self.assertEqual(response.body, b"the manifest's own body is not served")
        self.assertEqual(response.headers["ETag"], hexmd5(response.body))
        self.assertEqual(response.headers["X-Object-Manifest"], "segs/big/")
        self.assertEqual(self.calls(), [])

    def test_the_segments_are_read_as_the_requester(self) -> None:
        seen = []
        store = self.store

        async def recording(request: SwiftRequest) -> SwiftResponse:
            seen.append((request.environ.get("swift.source"), request.identity,
                         request.environ.get("swift.authorize"), request.trans_id))
            return await store(request)

        def authorize(*args):
            return None

        self.dlo.app = recording
        request = SwiftRequest("GET", f"{C}/m", HeaderMap({"X-Auth-Token": "AUTH_tk"}), trans_id="tx",
                               environ={"swift.authorize": authorize}, identity="test:tester")
        self.read(self.successResultOf(ensureDeferred(self.dlo(request))))
        # the listing and three segments
        self.assertEqual(seen[1:], [("DLO", "test:tester", authorize, "tx")] * 4)
        self.assertEqual([c.headers.get("X-Auth-Token") for c in self.calls()], ["AUTH_tk"] * 4)

    def test_a_segment_that_is_a_manifest_is_served_as_a_plain_object(self) -> None:
        self.store.put(f"{SEGS}/big/03", b"zz", **{"X-Object-Manifest": "segs/bigger/"})
        self.assertEqual(self.read(self.call("GET", f"{C}/m")), self.whole + b"zz")

    def test_other_objects_pass_untouched(self) -> None:
        self.store.put(f"{C}/plain", b"0123456789")
        response = self.call("GET", f"{C}/plain", Range="bytes=2-4")
        self.assertEqual((response.status, response.body), (206, b"234"))
        self.assertEqual(self.calls(), [])


class ListingTests(Case):
    page_size = 2

    def test_a_listing_of_many_pages_is_read_one_page_at_a_time(self) -> None:
        whole = self.add_segments("bïg/", 3, 1, 4, 1, 5, 9, 2)
        self.manifest(target="segs/b%C3%AFg/")
        response = self.call("GET", f"{C}/m")
        self.assertEqual(response.headers["Content-Length"], str(len(whole)))
        self.assertEqual(self.read(response), whole)
        listings = [c.query for c in self.calls() if c.path == "/v1/AUTH_a/segs"]
        markers = [f"&marker=b%C3%AFg%2F{i:02d}" for i in (1, 3, 5)]
        page = "format=json&prefix=b%C3%AFg%2F&limit=2"
        # surveyed for the length and ETag, then listed again as the read reached each page
        self.assertEqual(listings, [page] + [page + m for m in markers] + [page] + [page + m for m in markers])
        etag = hexmd5("".join(hexmd5(self.segments[f"bïg/{i:02d}"]) for i in range(7)).encode())
        self.assertEqual(self.call("HEAD", f"{C}/m").headers["ETag"], f'"{etag}"')

    def test_a_listing_of_whole_pages_ends_with_an_empty_one(self) -> None:
        whole = self.add_segments("big/", 3, 1, 4, 1)
        self.manifest()
        response = self.call("GET", f"{C}/m")
        self.assertEqual((response.headers["Content-Length"], self.read(response)), (str(len(whole)), whole))
        listings = [c.query.partition("&marker=")[2] for c in self.calls() if c.path == "/v1/AUTH_a/segs"]
        self.assertEqual(listings, ["", "big%2F01", "big%2F03", "", "big%2F01"])  # the last full page held

    def test_a_range_lists_again_only_the_pages_it_needs(self) -> None:
        whole = self.add_segments("big/", 3, 1, 4, 1, 5, 9, 2)
        self.manifest()
        self.store.calls.clear()
        response = self.call("GET", f"{C}/m", Range="bytes=10-14")
        self.assertEqual(self.read(response), whole[10:15])
        listings = [c.query.partition("&marker=")[2] for c in self.calls() if c.path == "/v1/AUTH_a/segs"]
        self.assertEqual(listings, ["", "big%2F01", "big%2F03", "big%2F05", "big%2F03"])

    def test_a_listing_changed_between_survey_and_read_breaks_the_read(self) -> None:
        self.add_segments("big/", 3, 1, 4, 1, 5)
        self.manifest()
        response = self.call("GET", f"{C}/m")
        self.store.put(f"{SEGS}/big/02", b"x" * 4)  # same size, other ETag: the listing differs
        self.assertEqual(self.successResultOf(response.body.read()), b"aaa")
        self.assertEqual(self.successResultOf(response.body.read()), b"b")
        self.failureResultOf(response.body.read(), ResponseAborted)

    def test_an_empty_listing_is_an_empty_object(self) -> None:
        self.store.containers.add(SEGS)
        self.manifest()
        response = self.call("GET", f"{C}/m")
        self.assertEqual((response.status, response.body, response.headers["Content-Length"]), (200, b"", "0"))
        self.assertEqual(response.headers["ETag"], f'"{EMPTY_ETAG}"')
        self.assertEqual(self.call("GET", f"{C}/m", Range="bytes=0-").status, 416)

    def test_a_container_that_cannot_be_listed_is_answered_as_it_was(self) -> None:
        self.manifest(target="nowhere/x")
        response = self.call("GET", f"{C}/m")
        self.assertEqual(response.status, 404)
        self.assertIn(b"listing the segments' container answered 404", response.body)
        head = self.call("HEAD", f"{C}/m")
        self.assertEqual((head.status, head.body), (404, b""))


class TooManySegmentsTests(Case):
    max_segments = 4
    page_size = 2

    def test_more_than_max_segments_streams_without_length_or_etag(self) -> None:
        whole = self.add_segments("big/", 3, 1, 4, 1, 5, 9, 2)
        self.manifest()
        response = self.call("GET", f"{C}/m")
        self.assertEqual(response.status, 200)
        self.assertNotIn("Content-Length", response.headers)
        self.assertNotIn("ETag", response.headers)
        self.assertNotIn("Accept-Ranges", response.headers)
        self.assertEqual(self.read(response), whole)
        # a range cannot be placed without the whole listing: the whole object
        ranged = self.call("GET", f"{C}/m", Range="bytes=0-1")
        self.assertEqual((ranged.status, self.read(ranged)), (200, whole))
        head = self.call("HEAD", f"{C}/m")
        self.assertEqual(head.status, 200)
        self.assertNotIn("Content-Length", head.headers)
        # no ETag: only * matches
        self.assertEqual(self.call("GET", f"{C}/m", **{"If-Match": ","}).status, 412)
        self.assertEqual(self.call("HEAD", f"{C}/m", **{"If-Match": "*"}).status, 200)

    def test_exactly_max_segments_has_a_length(self) -> None:
        whole = self.add_segments("big/", 3, 1, 4, 1)
        self.manifest()
        response = self.call("GET", f"{C}/m")
        self.assertEqual(response.headers["Content-Length"], str(len(whole)))
        self.assertEqual(self.read(response), whole)


class CopyTests(Case):
    def setUp(self) -> None:
        super().setUp()
        slo = StaticLargeObjects(self.dlo, {"max_manifest_segments": 10, "max_manifest_size": 4096,
                                            "yield_frequency": 10, "concurrency": 2}, Clock())
        self.app = Copy(slo)  # as the default pipeline has them
        self.whole = self.add_segments("big/", 5, 7, 3)
        self.manifest(**{"X-Object-Meta-Color": "blue"})

    def test_a_copy_of_a_dlo_is_a_plain_object_of_its_bytes(self) -> None:
        response = self.call("COPY", f"{C}/m", Destination="c/copy")
        self.assertEqual(response.status, 201)
        copied = self.store.objects[f"{C}/copy"]
        self.assertEqual(copied.body, self.whole)
        self.assertNotIn("X-Object-Manifest", copied.headers)
        self.assertEqual(copied.headers["X-Object-Meta-Color"], "blue")
        [put] = [call for call in self.store.calls if call.method == "PUT" and call.path == f"{C}/copy"]
        self.assertNotIn("ETag", put.headers)  # the large object's is not the md5 of its bytes
        self.assertEqual(self.call("PUT", f"{C}/copy2", **{"X-Copy-From": "c/m"}).status, 201)
        self.assertEqual(self.store.objects[f"{C}/copy2"].body, self.whole)

    def test_multipart_manifest_get_copies_the_manifest(self) -> None:
        response = self.call("COPY", f"{C}/m", query="multipart-manifest=get", Destination="c/m2")
        self.assertEqual(response.status, 201)
        copied = self.store.objects[f"{C}/m2"]
        self.assertEqual((copied.body, copied.headers["X-Object-Manifest"]), (b"", "segs/big/"))
        self.assertEqual(self.read(self.call("GET", f"{C}/m2")), self.whole)
        self.call("PUT", f"{C}/m3", query="multipart-manifest=get",
                  **{"X-Copy-From": "c/m", "X-Fresh-Metadata": "true"})
        self.assertEqual(self.store.objects[f"{C}/m3"].headers["X-Object-Manifest"], "segs/big/")

    def test_a_copy_of_an_slo_is_a_plain_object_of_its_bytes(self) -> None:
        segments = [{"path": f"/segs/big/{i:02d}", "etag": hexmd5(self.segments[f"big/{i:02d}"])} for i in range(3)]
        self.assertEqual(self.call("PUT", f"{C}/s", json.dumps(segments).encode(), "multipart-manifest=put").status,
                         201)
        self.assertEqual(self.call("COPY", f"{C}/s", Destination="c/scopy").status, 201)
        copied = self.store.objects[f"{C}/scopy"]
        self.assertEqual(copied.body, self.whole)
        self.assertNotIn("X-Static-Large-Object", copied.headers)
        self.assertEqual(self.read(self.call("GET", f"{C}/scopy")), self.whole)

    def test_a_part_number_copies_that_segment_of_an_slo(self) -> None:
        segments = [{"path": f"/segs/big/{i:02d}", "etag": hexmd5(self.segments[f"big/{i:02d}"])} for i in range(3)]
        self.call("PUT", f"{C}/s", json.dumps(segments).encode(), "multipart-manifest=put")
        self.assertEqual(self.call("COPY", f"{C}/s", query="part-number=2", Destination="c/p2").status, 201)
        self.assertEqual(self.store.objects[f"{C}/p2"].body, self.segments["big/01"])
        self.assertEqual(self.call("PUT", f"{C}/p3", query="part-number=3", **{"X-Copy-From": "c/s"}).status, 201)
        self.assertEqual(self.store.objects[f"{C}/p3"].body, self.segments["big/02"])
        [put] = [call for call in self.store.calls if call.method == "PUT" and call.path == f"{C}/p3"]
        self.assertEqual(put.query, "")  # the copy is a whole object
        self.assertEqual(self.call("COPY", f"{C}/s", query="part-number=4", Destination="c/p4").status, 416)

    def test_multipart_manifest_get_copies_an_slo_manifest_as_a_manifest(self) -> None:
        segments = [{"path": f"/segs/big/{i:02d}", "etag": hexmd5(self.segments[f"big/{i:02d}"])} for i in range(3)]
        stored = self.call("PUT", f"{C}/s", json.dumps(segments).encode(), "multipart-manifest=put")
        checks = lambda: [c for c in self.store.calls if c.method == "HEAD" and c.path.endswith("/segs/big/00")]  # noqa: E731
        before = len(checks())
        response = self.call("COPY", f"{C}/s", query="multipart-manifest=get", Destination="c/s2")
        self.assertEqual(response.status, 201, response.body)
        self.assertEqual(response.headers["ETag"], stored.headers["ETag"])  # the large object's
        copied = self.store.objects[f"{C}/s2"]
        self.assertEqual(copied.headers["X-Static-Large-Object"], "True")
        self.assertEqual(copied.body, self.store.objects[f"{C}/s"].body)  # the stored form again
        self.assertEqual(self.read(self.call("GET", f"{C}/s2")), self.whole)
        self.assertEqual(len(checks()), before + 1)  # the segments were checked again
