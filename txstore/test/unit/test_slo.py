"""
The slo middleware over an in-memory store (`MemorySwift`): manifests checked and stored as
Swift stores them, large objects read whole, by range and by several ranges across segment
boundaries, nested manifests, inline data, a segment changed since the manifest was written,
the manifest itself (get, raw, delete), and what a client may not do.
"""

from __future__ import annotations

import base64
import json
from hashlib import md5

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txstore.common.web import ResponseAborted
from txstore.middleware.slo import StaticLargeObjects
from txstore.proxy.messages import BytesSource, HeaderMap, SwiftRequest, SwiftResponse
from txstore.test.swift_fake import MemorySwift, read_body

C = "/v1/AUTH_a/c"
SETTINGS = {"max_manifest_segments": 10, "max_manifest_size": 4096, "yield_frequency": 10, "concurrency": 2}


def hexmd5(data: bytes) -> str:
    return md5(data).hexdigest()


class SLOTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.store = MemorySwift()
        self.clock = Clock()
        self.slo = StaticLargeObjects(self.store, SETTINGS, self.clock)
        self.etags = {name: self.store.put(f"{C}/{name}", name.encode() * size)
                      for name, size in (("a", 5), ("b", 7), ("c", 3))}

    def call(self, method: str, path: str, body: bytes = b"", query: str = "", **headers: str) -> SwiftResponse:
        request = SwiftRequest(method, path, HeaderMap(headers), query, BytesSource(body), trans_id="tx")
        done = ensureDeferred(self.slo(request))
        return self.successResultOf(done)

    def read(self, response: SwiftResponse) -> bytes:
        return read_body(self, response)

    def put_manifest(self, name: str, segments: list[dict], **headers: str) -> SwiftResponse:
        return self.call("PUT", f"{C}/{name}", json.dumps(segments).encode(), "multipart-manifest=put", **headers)

    def segment(self, name: str, **extra) -> dict:
        return {"path": f"/c/{name}", "etag": self.etags[name], "size_bytes": len(self.store.objects[f"{C}/{name}"].body),
                **extra}

    def test_manifest_put_stores_what_swift_stores(self) -> None:
        response = self.put_manifest("m", [self.segment("a"), self.segment("b")], **{"Content-Type": "text/x"})
        self.assertEqual(response.status, 201)
        slo_etag = hexmd5((self.etags["a"] + self.etags["b"]).encode())
        self.assertEqual(response.headers["ETag"], f'"{slo_etag}"')
        stored = self.store.objects[f"{C}/m"]
        self.assertEqual(stored.headers["X-Static-Large-Object"], "True")
        self.assertEqual(stored.headers["X-Object-Sysmeta-Slo-Etag"], slo_etag)
        self.assertEqual(stored.headers["X-Object-Sysmeta-Slo-Size"], "12")
        self.assertEqual(stored.headers["X-Object-Sysmeta-Container-Update-Override-Size"], "12")
        self.assertEqual(stored.headers["X-Object-Sysmeta-Container-Update-Override-Etag"],
                         f"{stored.etag}; slo_etag={slo_etag}")
        entries = json.loads(stored.body)
        self.assertEqual([(e["name"], e["bytes"], e["hash"]) for e in entries],
                         [("/c/a", 5, self.etags["a"]), ("/c/b", 7, self.etags["b"])])
        # the segments were checked as the requester, tagged as the middleware's
        self.assertEqual({(c.method, c.path, c.source) for c in self.store.calls if c.method == "HEAD"},
                         {("HEAD", f"{C}/a", "SLO"), ("HEAD", f"{C}/b", "SLO")})

    def test_bad_segments_are_each_named(self) -> None:
        response = self.put_manifest("m", [
            self.segment("a", etag="0" * 32), self.segment("b", size_bytes=99), {"path": "/c/missing"},
            self.segment("c"),
        ])
        self.assertEqual(response.status, 400)
        self.assertEqual(response.body.decode().splitlines(), [
            "Errors:", "c/a, Etag Mismatch", "c/b, Size Mismatch", "c/missing, 404 Not Found"])
        self.assertNotIn(f"{C}/m", self.store.objects)

    def test_malformed_manifests_are_refused_with_the_reason(self) -> None:
        cases = [
            (b"not json", 400, "Manifest must be valid JSON."),
            (b"{}", 400, "Manifest must be a list."),
            (json.dumps([{"path": "/c/a", "teag": "x"}]).encode(), 400, 'Index 0: extraneous keys "teag"'),
            (json.dumps([{"etag": "x"}]).encode(), 400, "Index 0: expected keys to include path"),
            (json.dumps([{"path": "/c"}]).encode(), 400, "Index 0: path does not refer to an object."),
            (json.dumps([{"path": "/c/a"}] * 11).encode(), 413, "Number of segments must be <= 10"),
            (b"[" + b" " * 5000 + b"]", 413, "Manifest File > 4096 bytes"),
        ]
        for body, status, reason in cases:
            response = self.call("PUT", f"{C}/m", body, "multipart-manifest=put")
            self.assertEqual(response.status, status, body[:40])
            self.assertIn(reason, response.body.decode())
        self.assertNotIn(f"{C}/m", self.store.objects)

    def test_client_etag_must_match_the_large_objects(self) -> None:
        self.assertEqual(self.put_manifest("m", [self.segment("a")], ETag="nope").status, 422)
        self.assertEqual(self.put_manifest("m", [self.segment("a")], ETag=hexmd5(self.etags["a"].encode())).status, 201)

    def test_get_streams_the_segments_and_head_reports_the_whole(self) -> None:
        self.put_manifest("m", [self.segment("a"), self.segment("b"), self.segment("c")])
        response = self.call("GET", f"{C}/m")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.headers["Content-Length"], "15")
        self.assertEqual(self.read(response), b"aaaaabbbbbbbccc")
        head = self.call("HEAD", f"{C}/m")
        self.assertEqual((head.status, head.headers["Content-Length"]), (200, "15"))
        self.assertEqual(head.headers["ETag"], response.headers["ETag"])
        self.assertNotIn("X-Object-Sysmeta-Slo-Etag", head.headers)
        # each segment was read pinned to the ETag the manifest recorded
        gets = [c for c in self.store.calls if c.method == "GET" and c.source == "SLO"]
        self.assertEqual([c.headers.get("If-Match") for c in gets], [self.etags[n] for n in "abc"])

    def test_the_manifests_own_etag_is_shown_beside_the_large_objects(self) -> None:
        self.put_manifest("m", [self.segment("a"), self.segment("b")])
        manifest_etag = self.store.objects[f"{C}/m"].etag
        for method in ("GET", "HEAD"):
            response = self.call(method, f"{C}/m")
            self.assertEqual(response.headers["X-Manifest-Etag"], manifest_etag)
            self.assertNotEqual(response.headers["ETag"], f'"{manifest_etag}"')

    def test_a_part_number_reads_one_segment_as_a_range_of_the_whole(self) -> None:
        self.put_manifest("m", [self.segment("a"), self.segment("b"), self.segment("c")])
        whole_etag = self.call("HEAD", f"{C}/m").headers["ETag"]
        for number, (body, content_range) in enumerate(
                [(b"aaaaa", "bytes 0-4/15"), (b"bbbbbbb", "bytes 5-11/15"), (b"ccc", "bytes 12-14/15")], 1):
            for method in ("GET", "HEAD"):
                response = self.call(method, f"{C}/m", query=f"part-number={number}", Range="bytes=0-0")
                self.assertEqual(response.status, 206)
                self.assertEqual((response.headers["Content-Range"], response.headers["Content-Length"],
                                  response.headers["X-Parts-Count"], response.headers["ETag"]),
                                 (content_range, str(len(body)), "3", whole_etag))
                self.assertEqual(self.read(response), body if method == "GET" else b"")
        # past the last part: 416 with the whole's size; not a positive integer: 400
        for method, text in (("GET", b"The requested part number is not satisfiable"), ("HEAD", b"")):
            response = self.call(method, f"{C}/m", query="part-number=4")
            self.assertEqual((response.status, response.body, response.headers["Content-Range"],
                              response.headers["X-Parts-Count"], response.headers["Content-Length"]),
                             (416, text, "bytes */15", "3", str(len(text))))
        for bad in ("0", "-1", "x", ""):
            response = self.call("GET", f"{C}/m", query=f"part-number={bad}")
            self.assertEqual((response.status, response.body),
                             (400, b"Part number must be an integer greater than 0"))
        # an object that is not a manifest is read whole, a HEAD as a HEAD
        self.assertEqual(self.read(self.call("GET", f"{C}/a", query="part-number=2")), b"aaaaa")
        head = self.call("HEAD", f"{C}/a", query="part-number=1")
        self.assertEqual((head.status, head.headers["Content-Length"], self.read(head)), (200, "5", b""))

    def test_ranges_across_segment_boundaries(self) -> None:
        self.put_manifest("m", [self.segment("a"), self.segment("b"), self.segment("c")])
        whole = b"aaaaabbbbbbbccc"
        for spec, first, last in (("3-9", 3, 9), ("-4", 11, 14), ("12-", 12, 14), ("0-0", 0, 0)):
            response = self.call("GET", f"{C}/m", Range=f"bytes={spec}")
            self.assertEqual(response.status, 206, spec)
            self.assertEqual(response.headers["Content-Range"], f"bytes {first}-{last}/15")
            self.assertEqual(self.read(response), whole[first:last + 1], spec)
        self.assertEqual(self.call("GET", f"{C}/m", Range="bytes=15-").status, 416)

    def test_several_ranges_are_a_multipart_answer_of_the_promised_length(self) -> None:
        self.put_manifest("m", [self.segment("a"), self.segment("b"), self.segment("c")])
        response = self.call("GET", f"{C}/m", Range="bytes=1-2,4-6,13-")
        self.assertEqual(response.status, 206)
        body = self.read(response)
        self.assertEqual(len(body), int(response.headers["Content-Length"]))
        boundary = response.headers["Content-Type"].split("boundary=")[1]
        parts = body.split(f"--{boundary}".encode())
        self.assertEqual([p.split(b"\r\n\r\n", 1)[1].rstrip(b"\r\n") for p in parts[1:-1]], [b"aa", b"abb", b"cc"])

    def test_nested_manifests_ranged_segments_and_data(self) -> None:
        self.put_manifest("inner", [self.segment("b"), self.segment("c")])
        inner = self.call("HEAD", f"{C}/inner")
        response = self.put_manifest("outer", [
            {"data": base64.b64encode(b"<<").decode()},
            self.segment("a", range="1-3"),
            {"path": "/c/inner", "etag": inner.headers["ETag"].strip('"'), "size_bytes": 10},
        ])
        self.assertEqual(response.status, 201, response.body)
        self.assertEqual(self.read(self.call("GET", f"{C}/outer")), b"<<aaabbbbbbbccc")
        self.assertEqual(self.read(self.call("GET", f"{C}/outer", Range="bytes=4-9")), b"abbbbb")

    def test_a_read_goes_through_at_most_ten_manifests(self) -> None:
        self.put_manifest("m1", [self.segment("a")])
        for depth in range(2, 12):
            self.assertEqual(self.put_manifest(f"m{depth}", [{"path": f"/c/m{depth - 1}"}]).status, 201)
        self.assertEqual(self.read(self.call("GET", f"{C}/m10")), b"aaaaa")
        response = self.call("GET", f"{C}/m11")
        self.assertEqual(response.status, 409)
        self.assertIn(b"nest more than 10 deep", response.body)

    def test_a_segment_changed_since_the_manifest_breaks_the_read(self) -> None:
        self.put_manifest("m", [self.segment("a"), self.segment("b")])
        self.store.put(f"{C}/b", b"B" * 7)  # same size, other bytes
        response = self.call("GET", f"{C}/m")
        self.assertEqual(self.successResultOf(response.body.read()), b"aaaaa")
        self.failureResultOf(response.body.read(), ResponseAborted)

    def test_a_bad_first_segment_is_a_conflict_before_any_byte(self) -> None:
        self.put_manifest("m", [self.segment("a"), self.segment("b")])
        del self.store.objects[f"{C}/a"]
        self.assertEqual(self.call("GET", f"{C}/m").status, 409)

    def test_conditionals_compare_the_large_objects_etag(self) -> None:
        etag = self.put_manifest("m", [self.segment("a")]).headers["ETag"]
        self.assertEqual(self.call("GET", f"{C}/m", **{"If-None-Match": etag}).status, 304)
        self.assertEqual(self.call("GET", f"{C}/m", **{"If-Match": '"other"'}).status, 412)
        self.assertEqual(self.call("GET", f"{C}/m", **{"If-Match": etag}).status, 200)

    def test_the_manifest_itself(self) -> None:
        self.put_manifest("m", [self.segment("a"), self.segment("b", range="2-3")])
        got = self.call("GET", f"{C}/m", query="multipart-manifest=get")
        self.assertEqual(got.headers["Content-Type"], "application/json; charset=utf-8")
        self.assertEqual([e["name"] for e in json.loads(got.body)], ["/c/a", "/c/b"])
        raw = self.call("GET", f"{C}/m", query="multipart-manifest=get&format=raw")
        self.assertEqual(json.loads(raw.body), [
            {"path": "/c/a", "etag": self.etags["a"], "size_bytes": 5},
            {"path": "/c/b", "etag": self.etags["b"], "size_bytes": 7, "range": "2-3"}])
        # raw is what a PUT takes back
        self.assertEqual(self.call("PUT", f"{C}/copy", raw.body, "multipart-manifest=put").status, 201)
        self.assertEqual(self.read(self.call("GET", f"{C}/copy")), b"aaaaabb")

    def test_delete_removes_the_manifest_and_its_segments(self) -> None:
        self.put_manifest("m", [self.segment("a"), self.segment("b")])
        del self.store.objects[f"{C}/b"]
        response = self.call("DELETE", f"{C}/m", query="multipart-manifest=delete", Accept="application/json")
        self.assertEqual(response.status, 200)
        self.assertEqual(json.loads(response.body), {
            "Number Deleted": 2, "Number Not Found": 1, "Response Body": "", "Response Status": "200 OK",
            "Errors": []})
        self.assertEqual(sorted(self.store.objects), [f"{C}/c"])

    def test_a_versions_delete_reads_and_deletes_that_version_of_the_manifest(self) -> None:
        self.put_manifest("m", [self.segment("a")])
        self.store.calls.clear()
        response = self.call("DELETE", f"{C}/m", query="multipart-manifest=delete&version-id=1.5",
                             Accept="application/json")
        self.assertEqual(json.loads(response.body)["Number Deleted"], 2)
        # the segments are not versions; the manifest's read and its delete name the version
        self.assertEqual([(c.method, c.path, c.query) for c in self.store.calls], [
            ("GET", f"{C}/m", "multipart-manifest=get&version-id=1.5"), ("DELETE", f"{C}/a", ""),
            ("DELETE", f"{C}/m", "version-id=1.5")])

    def test_clients_cannot_forge_a_large_object(self) -> None:
        response = self.call("PUT", f"{C}/x", b"[]", **{"X-Static-Large-Object": "True"})
        self.assertEqual(response.status, 400)
        self.assertNotIn(f"{C}/x", self.store.objects)
        self.call("POST", f"{C}/a", **{"X-Static-Large-Object": "True", "X-Object-Meta-K": "v"})
        self.assertNotIn("X-Static-Large-Object", self.store.calls[-1].headers)

    def test_heartbeat_sends_spaces_then_the_result(self) -> None:
        self.store_calls_wait = Deferred()
        original = self.store.__call__
        held: list[Deferred] = []

        async def slow(request):
            if request.method == "HEAD":
                waiting: Deferred = Deferred()
                held.append(waiting)
                await waiting
            return await original(request)

        self.slo.app = slow
        response = self.call("PUT", f"{C}/m", json.dumps([self.segment("a")]).encode(),
                             "multipart-manifest=put&heartbeat=on")
        self.assertEqual(response.status, 202)
        self.assertEqual(self.successResultOf(response.body.read()), b" ")
        pending = response.body.read()
        self.assertNoResult(pending)
        self.clock.advance(10)
        self.assertEqual(self.successResultOf(pending), b" ")
        pending = response.body.read()
        held[0].callback(None)
        result = self.successResultOf(pending)
        self.assertTrue(result.startswith(b"\r\n\r\nResponse Status: 201 Created\n"), result)
        self.assertIn(b"\nEtag: ", result)
        self.assertEqual(self.successResultOf(response.body.read()), b"")

    def test_a_resized_first_segment_is_a_conflict(self) -> None:
        self.put_manifest("m", [{"path": "/c/a"}, self.segment("b")])  # no etag pinned
        self.store.put(f"{C}/a", b"a" * 9)
        response = self.call("GET", f"{C}/m")
        self.assertEqual(response.status, 409, response.body)

    def test_a_manifest_row_shows_its_large_object(self) -> None:
        """The node lists the override ETag verbatim; the JSON row splits ``slo_etag`` out, quoted."""
        response = self.put_manifest("m", [self.segment("a"), self.segment("b")])
        slo_etag = response.headers["ETag"]
        self.store.put(f"{C}/params", b"x", **{"X-Object-Sysmeta-Container-Update-Override-Etag": "abc; other=1"})
        listing = self.call("GET", C, query="format=json")
        rows = {row["name"]: row for row in json.loads(self.read(listing))}
        self.assertEqual(int(listing.headers["Content-Length"]), len(listing.body))
        manifest_md5 = self.store.objects[f"{C}/m"].etag
        self.assertEqual((rows["m"]["hash"], rows["m"]["slo_etag"], rows["m"]["bytes"]), (manifest_md5, slo_etag, 12))
        self.assertEqual(rows["params"]["hash"], "abc; other=1")
        self.assertNotIn("slo_etag", rows["params"])
        self.assertNotIn("slo_etag", rows["a"])
        # Anything else passes as it came.
        self.assertEqual(self.call("GET", f"{C}x", query="format=json").status, 404)
        self.assertEqual(self.read(self.call("GET", C)).split(b"\n")[0], b"a")
