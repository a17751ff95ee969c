"""
Tests for txstore.middleware.object_versioning over MemorySwift (with what versioning needs of
containers, added here: metadata, DELETE, reverse and delimiter listings, reserved names hidden
unless allowed), below the copy middleware and above the symlink middleware, as in the pipeline.
"""

from __future__ import annotations

import json
from hashlib import md5
from typing import Any
from urllib.parse import quote, urlencode

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from txstore.common.paths import ALLOW_RESERVED, RESERVED
from txstore.middleware.copy import Copy
from txstore.middleware.object_versioning import (
    DELETE_MARKER_CONTENT_TYPE, ObjectVersioning, inverted, split_version, version_object,
)
from txstore.middleware.symlink import Symlinks
from txstore.proxy.controllers.base import ContainerInfo
from txstore.proxy.messages import BytesSource, HeaderMap, SwiftRequest, SwiftResponse
from txstore.proxy.tempauth import Decision
from txstore.common.timestamps import Timestamp
from txstore.test.swift_fake import Call, MemorySwift

A = "AUTH_test"
C = f"/v1/{A}/c"
V = f"/v1/{A}/\x00versions\x00c"
KEPT = ("x-container-read", "x-container-write", "x-container-sysmeta-", "x-container-meta-", "x-versions-location")


class VersionedSwift(MemorySwift):
    """MemorySwift whose containers keep metadata, can be deleted, list in reverse and with a
    delimiter, count their objects and bytes, and hide reserved names unless allowed."""

    def __init__(self) -> None:
        super().__init__()
        self.metadata: dict[str, HeaderMap] = {}

    def _rows(self, path: str) -> list[tuple[str, Any]]:
        names = sorted((p[len(path) + 1:] for p in self.objects if p.startswith(path + "/")),
                       key=lambda n: n.encode("utf-8"))
        return [(name, self.objects[f"{path}/{name}"]) for name in names]

    def _container(self, request: SwiftRequest, path: str) -> SwiftResponse:
        method = request.method
        if method in ("PUT", "POST"):
            if method == "POST" and path not in self.containers:
                return SwiftResponse.text(404, "Not Found")
            created = path not in self.containers
            self.containers.add(path)
            kept = self.metadata.setdefault(path, HeaderMap())
            for name, value in request.headers.items():
                if name.lower().startswith(KEPT):
                    kept[name] = value
            return SwiftResponse.empty(201 if created and method == "PUT" else 202 if method == "PUT" else 204)
        if path not in self.containers:
            return SwiftResponse.text(404, "Not Found")
        rows = self._rows(path)
        if method == "DELETE":
            if rows:
                return SwiftResponse.text(409, "Conflict")
            self.containers.discard(path)
            self.metadata.pop(path, None)
            return SwiftResponse.empty(204)
        params = request.params
        if not request.allow_reserved:
            rows = [(n, s) for n, s in rows if not n.startswith(RESERVED)]
        headers = HeaderMap(self.metadata.get(path, HeaderMap()).items())
        headers["X-Container-Object-Count"] = str(len(rows))
        headers["X-Container-Bytes-Used"] = str(sum(len(s.body) for _n, s in rows))
        prefix, marker, end = params.get("prefix", ""), params.get("marker", ""), params.get("end_marker", "")
        delimiter, reverse = params.get("delimiter", ""), params.get("reverse", "") in ("true", "on", "yes")
        limit = int(params.get("limit") or 10000)
        if reverse:
            rows.reverse()
        listed: list[dict[str, Any]] = []
        for name, stored in rows:
            if not name.startswith(prefix):
                continue
            if marker and (name <= marker if not reverse else name >= marker):
                continue
            if end and (name >= end if not reverse else name <= end):
                continue
            if delimiter:
                cut = name.find(delimiter, len(prefix))
                if cut >= 0:
                    sub = name[:cut + len(delimiter)]
                    if not listed or listed[-1].get("subdir") != sub:
                        if sub != marker:
                            listed.append({"subdir": sub})
                    continue
            listed.append({"name": name, "bytes": int(stored.headers.get(
                "X-Object-Sysmeta-Container-Update-Override-Size", len(stored.body))),
                "hash": stored.headers.get("X-Object-Sysmeta-Container-Update-Override-Etag", stored.etag),
                "content_type": stored.headers.get("Content-Type"), "last_modified": stored.timestamp.isoformat})
        listed = listed[:limit]
        body = json.dumps(listed).encode()
        headers["Content-Type"] = "application/json; charset=utf-8"
        headers["Content-Length"] = str(len(body))
        if method == "HEAD":
            return SwiftResponse(204, headers, b"")
        return SwiftResponse(200, headers, body)  # a node's JSON listing, empty or not

    def _account(self, request: SwiftRequest, account: str) -> SwiftResponse:
        params = request.params
        prefix, marker, end = params.get("prefix", ""), params.get("marker", ""), params.get("end_marker", "")
        rows = []
        for path in sorted(self.containers, key=lambda p: p.encode("utf-8")):
            name = path[len(f"/v1/{account}/"):]
            if (not path.startswith(f"/v1/{account}/") or not name.startswith(prefix) or name <= marker
                    or (end and name >= end) or (name.startswith(RESERVED) and not request.allow_reserved)):
                continue
            objects = self._rows(path)
            rows.append({"name": name, "count": len(objects), "bytes": sum(len(s.body) for _n, s in objects),
                         "last_modified": "2023-11-14T22:13:20.000000"})
        body = json.dumps(rows).encode()
        return SwiftResponse(200, HeaderMap({"Content-Type": "application/json; charset=utf-8",
                                             "Content-Length": str(len(body))}), body)

    async def __call__(self, request: SwiftRequest) -> SwiftResponse:
        parts = request.split(1, 4)
        if parts[2] is None and request.method == "GET":
            self.calls.append(Call(request.method, request.decoded_path, request.query, dict(request.headers.items()),
                                   request.environ.get("swift.source")))
            return self._account(request, parts[1])
        if request.method == "PUT" and parts[3] is not None and f"/v1/{parts[1]}/{parts[2]}" not in self.containers:
            request.discard_body()
            return SwiftResponse.text(404, "Not Found")
        return await super().__call__(request)

    def info(self, path: str) -> ContainerInfo:
        if path not in self.containers:
            return ContainerInfo(404)
        kept = self.metadata.get(path, HeaderMap())
        return ContainerInfo(204, kept.get("X-Container-Read"), kept.get("X-Container-Write"),
                             sysmeta={n.lower()[len("x-container-sysmeta-"):]: v for n, v in kept.items()
                                      if n.lower().startswith("x-container-sysmeta-")},
                             versions=kept.get("X-Versions-Location"))


def run(app, request: SwiftRequest) -> SwiftResponse:
    result: list[SwiftResponse] = []
    Deferred.fromCoroutine(app(request)).addCallback(result.append)
    return result[0]


class Case(SynchronousTestCase):
    def setUp(self) -> None:
        self.store = VersionedSwift()
        self.now = 1_700_000_100.0
        self.versioning = ObjectVersioning(Symlinks(self.store, 2, 1 << 20), self.lookup, lambda index: "gold",
                                           self.clock)
        self.app = Copy(self.versioning)
        self.store.containers.add(C)

    def clock(self) -> float:
        self.now += 1
        return self.now

    async def lookup(self, request: SwiftRequest, account: str, container: str) -> ContainerInfo:
        return self.store.info(f"/v1/{account}/{container}")

    def request(self, method: str, path: str, body: bytes = b"", query: str = "", **headers: str) -> SwiftResponse:
        named = {name.replace("_", "-"): value for name, value in headers.items()}
        if method in ("PUT", "POST") and "Content-Length" not in named:
            named["Content-Length"] = str(len(body))
        response = run(self.app, SwiftRequest(method, quote(path), HeaderMap(named), query, BytesSource(body)))
        if response.streamed:
            chunks = []
            while True:
                got: list[bytes] = []
                response.body.read().addCallback(got.append)
                if not got[0]:
                    break
                chunks.append(got[0])
            response.body = b"".join(chunks)
        return response

    def enable(self, on: bool = True) -> SwiftResponse:
        return self.request("POST", "/v1/AUTH_test/c", X_Versions_Enabled="true" if on else "false")

    def put(self, name: str, body: bytes, **headers: str) -> str | None:
        response = self.request("PUT", f"{C}/{name}", body, **headers)
        self.assertEqual(response.status, 201, response.body)
        return response.headers.get("X-Object-Version-Id")

    def versions(self, **params: str) -> list[dict[str, Any]]:
        response = self.request("GET", C, query=urlencode({"versions": "", "format": "json", **params}))
        self.assertEqual(response.status, 200, response.body)
        listing = json.loads(response.body)
        for item in listing:
            item.pop("last_modified", None)
        return listing

    def listing(self, **params: str) -> list[dict[str, Any]]:
        response = self.request("GET", C, query=urlencode({"format": "json", **params}))
        return json.loads(response.body) if response.body else []


class NameTests(SynchronousTestCase):
    def test_inverted_ids_sort_newest_first(self) -> None:
        older, newer = Timestamp.parse("1700000000.12345"), Timestamp.parse("1700000001.00000")
        self.assertEqual(inverted(older), "8299999999.87654")
        self.assertLess(version_object("o", newer), version_object("o", older))
        self.assertEqual(split_version(version_object("o/x", older)), ("o/x", older))
        self.assertEqual(split_version("plain"), ("plain", None))
        self.assertEqual(split_version("\x00o\x00bad"), ("\x00o\x00bad", None))


class EnableTests(Case):
    def test_enable_creates_the_hidden_container(self) -> None:
        self.assertEqual(self.enable().status, 204)
        self.assertIn(V, self.store.containers)
        head = self.request("HEAD", C)
        self.assertEqual(head.headers["X-Versions-Enabled"], "True")
        self.assertEqual(head.headers["X-Container-Sysmeta-Versions-Container"], "%00versions%00c")
        [made] = [call for call in self.store.calls if call.method == "PUT" and call.path == V]
        self.assertEqual((made.headers[ALLOW_RESERVED], made.headers["X-Storage-Policy"], made.source),
                         ("true", "gold", "OV"))
        self.assertEqual(self.enable(False).status, 204)
        self.assertEqual(self.request("HEAD", C).headers["X-Versions-Enabled"], "False")

    def test_put_container_with_versioning(self) -> None:
        response = self.request("PUT", f"/v1/{A}/new", X_Versions_Enabled="true")
        self.assertEqual(response.status, 201)
        self.assertIn(f"/v1/{A}/\x00versions\x00new", self.store.containers)

    def test_legacy_versioning_refused(self) -> None:
        self.store.metadata[C] = HeaderMap({"X-Container-Sysmeta-Versions-Location": "archive"})
        response = self.enable()
        self.assertEqual(response.status, 400)
        self.assertIn(b"legacy versioned writes", response.body)

    def test_delete_refused_while_versions_remain(self) -> None:
        self.enable()
        self.put("o", b"one")
        self.assertEqual(self.request("DELETE", f"{C}/o").status, 204)
        self.assertEqual(self.request("DELETE", C).status, 409)
        for item in self.versions():
            self.request("DELETE", f"{C}/o", query=f"version-id={item['version_id']}")
        self.assertEqual(self.versions(), [])
        self.assertEqual(self.request("DELETE", C).status, 204)
        self.assertNotIn(V, self.store.containers)

    def test_a_non_empty_container_keeps_its_versioning(self) -> None:
        self.enable()
        self.enable(False)
        self.put("o", b"plain")  # not versioned: the hidden container stays empty
        self.assertEqual(self.request("DELETE", C).status, 409)  # the container's own answer
        self.assertIn(V, self.store.containers)
        self.request("DELETE", f"{C}/o")
        self.assertEqual(self.request("DELETE", C).status, 204)
        self.assertNotIn(V, self.store.containers)

    def test_nothing_is_done_for_whom_the_authorizer_refuses(self) -> None:
        def refuse(request, account, container, obj, info):
            return Decision(False, 403)

        request = SwiftRequest("POST", C, HeaderMap({"X-Versions-Enabled": "true"}))
        request.environ["swift.authorize"] = refuse
        self.assertEqual(run(self.app, request).status, 403)
        self.assertNotIn(V, self.store.containers)
        self.enable()
        for method in ("PUT", "DELETE"):
            request = SwiftRequest(method, f"{C}/o", HeaderMap({"Content-Length": "1"}), "", BytesSource(b"x"))
            request.environ["swift.authorize"] = refuse
            self.assertEqual(run(self.app, request).status, 403)
        self.assertEqual([call.method for call in self.store.calls if call.path.startswith(V + "/")], [])
        request = SwiftRequest("DELETE", C)
        request.environ["swift.authorize"] = refuse
        self.assertEqual(run(self.app, request).status, 403)
        self.assertIn(V, self.store.containers)

    def test_account_listing_counts_the_hidden_containers_bytes(self) -> None:
        self.enable()
        self.put("o", b"12345")
        self.put("o", b"123")
        self.store.containers.update({f"/v1/{A}/a", f"/v1/{A}/d"})
        response = self.request("GET", f"/v1/{A}", query="format=json")
        self.assertEqual([(row["name"], row["bytes"]) for row in json.loads(response.body)],
                         [("a", 0), ("c", 8), ("d", 0)])
        self.assertEqual(response.headers["Content-Length"], str(len(response.body)))
        # a listing that allows reserved names is a middleware's: as it is
        request = SwiftRequest("GET", f"/v1/{A}", HeaderMap({ALLOW_RESERVED: "true"}), "format=json")
        rows = json.loads(run(self.app, request).body)
        self.assertEqual([(row["name"], row["bytes"]) for row in rows], [(V.rsplit("/", 1)[1], 8), ("a", 0),
                                                                          ("c", 0), ("d", 0)])

    def test_bytes_used_counts_versions(self) -> None:
        self.enable()
        self.put("o", b"12345")
        self.put("o", b"123")
        head = self.request("HEAD", C)
        self.assertEqual((head.headers["X-Container-Bytes-Used"], head.headers["X-Container-Object-Count"]),
                         ("8", "1"))


class WriteTests(Case):
    def setUp(self) -> None:
        super().setUp()
        self.enable()

    def test_put_writes_a_version_and_a_link(self) -> None:
        v1 = self.put("o", b"one", Content_Type="text/one", X_Object_Meta_Color="blue")
        self.assertIsNotNone(v1)
        self.assertEqual(Timestamp.parse(v1).internal, v1)
        stored = self.store.objects[f"{V}/{version_object('o', Timestamp.parse(v1))}"]
        self.assertEqual((stored.body, stored.headers["Content-Type"]), (b"one", "text/one"))
        link = self.store.objects[f"{C}/o"].headers
        self.assertEqual(link["X-Object-Sysmeta-Versions-Symlink"], "true")
        self.assertEqual(link["X-Object-Sysmeta-Symlink-Target-Etag"], md5(b"one").hexdigest())
        self.assertEqual(link["X-Object-Sysmeta-Symlink-Target-Bytes"], "3")
        got = self.request("GET", f"{C}/o")
        self.assertEqual((got.status, got.body, got.headers["X-Object-Version-Id"]), (200, b"one", v1))
        self.assertEqual(got.headers["Content-Location"], f"/v1/{A}/c/o?version-id={v1}")
        self.assertEqual(got.headers["X-Object-Meta-Color"], "blue")
        self.assertEqual(got.headers["Content-Type"], "text/one")

    def test_overwrite_and_read_old_versions(self) -> None:
        v1 = self.put("o", b"one", Content_Type="text/one")
        v2 = self.put("o", b"two", Content_Type="text/two")
        self.assertEqual(self.request("GET", f"{C}/o").body, b"two")
        old = self.request("GET", f"{C}/o", query=f"version-id={v1}")
        self.assertEqual((old.status, old.body, old.headers["X-Object-Version-Id"]), (200, b"one", v1))
        self.assertEqual(old.headers["Content-Type"], "text/one")
        self.assertEqual([(i["version_id"], i["is_latest"], i["content_type"]) for i in self.versions()],
                         [(v2, True, "text/two"), (v1, False, "text/one")])

    def test_unversioned_object_is_kept_when_versioning_starts(self) -> None:
        self.enable(False)
        self.assertIsNone(self.put("o", b"plain"))
        self.assertEqual([(i["version_id"], i["is_latest"]) for i in self.versions()], [("null", True)])
        self.enable(True)
        v2 = self.put("o", b"new")
        listed = self.versions()
        self.assertEqual([i["version_id"] for i in listed][0], v2)
        self.assertEqual(len(listed), 2)
        old = self.request("GET", f"{C}/o", query=f"version-id={listed[1]['version_id']}")
        self.assertEqual(old.body, b"plain")

    def test_an_unversioned_link_is_kept_as_a_link(self) -> None:
        self.enable(False)
        self.store.put(f"{C}/t", b"target")
        self.assertIsNone(self.put("l", b"", X_Symlink_Target="c/t"))
        self.enable(True)
        self.put("l", b"new")
        old = self.versions()[1]
        self.assertEqual(old["version_id"] != "null", True)
        got = self.request("GET", f"{C}/l", query=f"version-id={old['version_id']}")
        self.assertEqual(got.body, b"target")
        link = self.request("HEAD", f"{C}/l", query=f"version-id={old['version_id']}&symlink=get")
        self.assertEqual(link.headers["X-Symlink-Target"], "c/t")

    def test_delete_writes_a_marker(self) -> None:
        v1 = self.put("o", b"one")
        deleted = self.request("DELETE", f"{C}/o")
        self.assertEqual(deleted.status, 204)
        marker = deleted.headers["X-Object-Version-Id"]
        self.assertEqual(self.request("GET", f"{C}/o").status, 404)
        again = self.request("DELETE", f"{C}/o")
        self.assertEqual(again.status, 404)
        self.assertIn("X-Object-Version-Id", again.headers)
        listed = self.versions()
        self.assertEqual([(i["version_id"], i["is_latest"], i["content_type"], i["bytes"]) for i in listed],
                         [(again.headers["X-Object-Version-Id"], True, DELETE_MARKER_CONTENT_TYPE, 0),
                          (marker, False, DELETE_MARKER_CONTENT_TYPE, 0), (v1, False, "application/octet-stream", 3)])
        head = self.request("HEAD", f"{C}/o", query=f"version-id={marker}")
        self.assertEqual((head.status, head.headers["Content-Type"], head.headers["X-Object-Version-Id"]),
                         (404, DELETE_MARKER_CONTENT_TYPE, marker))

    def test_post_changes_the_version_not_a_new_one(self) -> None:
        v1 = self.put("o", b"one", Content_Type="text/one")
        posted = self.request("POST", f"{C}/o", X_Object_Meta_Fu="baz", Content_Type="text/posted")
        self.assertEqual(posted.status, 202)
        self.assertEqual(len(self.versions()), 1)
        got = self.request("HEAD", f"{C}/o", query=f"version-id={v1}")
        self.assertEqual((got.headers["X-Object-Meta-Fu"], got.headers["Content-Type"]), ("baz", "text/posted"))

    def test_suspended_writes_pass(self) -> None:
        self.put("o", b"one")
        self.enable(False)
        self.assertIsNone(self.put("o", b"plain"))
        self.assertEqual([i["version_id"] for i in self.versions()][0], "null")
        self.assertEqual(self.request("DELETE", f"{C}/o").status, 204)
        self.assertEqual(len(self.versions()), 1)

    def test_links_are_versioned_as_links(self) -> None:
        target_etag = md5(b"data").hexdigest()
        self.request("PUT", f"/v1/{A}/plain", b"")
        self.store.containers.add(f"/v1/{A}/plain")
        self.store.put(f"/v1/{A}/plain/t", b"data", **{"Content-Type": "text/t"})
        self.put("dynamic", b"", X_Symlink_Target="plain/t")
        self.assertEqual(self.request("GET", f"{C}/dynamic").body, b"data")
        self.put("static", b"", X_Symlink_Target="plain/t", X_Symlink_Target_Etag=target_etag)
        got = self.request("GET", f"{C}/static")
        self.assertEqual((got.status, got.body), (200, b"data"))
        link = self.store.objects[f"{C}/static"].headers
        self.assertEqual(link["X-Object-Sysmeta-Symlink-Target-Etag"], target_etag)
        self.assertEqual([(i["name"], i["bytes"], i["content_type"]) for i in self.versions()],
                         [("dynamic", 0, "application/symlink"), ("static", 0, "text/t")])

    def test_version_links_do_not_count_towards_symloop_max(self) -> None:
        self.app = Copy(ObjectVersioning(Symlinks(self.store, 1, 1 << 20), self.lookup, lambda i: "gold", self.clock))
        self.store.containers.add(f"/v1/{A}/plain")
        self.store.put(f"/v1/{A}/plain/t", b"data")
        # the client's link, kept as a version: the version's link is not one of the client's
        self.put("l", b"", X_Symlink_Target="plain/t")
        got = self.request("GET", f"{C}/l")
        self.assertEqual((got.status, got.body), (200, b"data"))
        self.assertEqual(self.request("PUT", f"/v1/{A}/plain/l2", X_Symlink_Target="c/l").status, 201)
        self.assertEqual(self.request("GET", f"/v1/{A}/plain/l2").status, 409)  # two links of the client's

    def test_bad_etag_is_the_clients_error(self) -> None:
        response = self.request("PUT", f"{C}/o", b"one", ETag="a" * 32)
        self.assertEqual(response.status, 422)
        self.assertNotIn(f"{C}/o", self.store.objects)

    def test_chunked_put_is_counted(self) -> None:
        request = SwiftRequest("PUT", f"{C}/o", HeaderMap({"Transfer-Encoding": "chunked"}), "",
                               BytesSource(b"12345"))
        self.assertEqual(run(self.app, request).status, 201)
        self.assertEqual(self.store.objects[f"{C}/o"].headers["X-Object-Sysmeta-Symlink-Target-Bytes"], "5")

    def test_missing_versions_container(self) -> None:
        self.store.containers.discard(V)
        response = self.request("PUT", f"{C}/o", b"x")
        self.assertEqual(response.status, 500)
        self.assertIn(b"versions container does not exist", response.body)


class VersionIdTests(Case):
    def setUp(self) -> None:
        super().setUp()
        self.enable()
        self.v1 = self.put("o", b"one")
        self.v2 = self.put("o", b"two")

    def test_refused(self) -> None:
        self.assertEqual(self.request("POST", f"{C}/o", query=f"version-id={self.v1}").status, 400)
        self.assertEqual(self.request("GET", f"{C}/o", query="version-id=junk").status, 400)
        self.store.containers.add(f"/v1/{A}/plain")
        response = self.request("GET", f"/v1/{A}/plain/o", query=f"version-id={self.v1}")
        self.assertEqual(response.status, 400)
        self.assertIn(b"container is versioned", response.body)

    def test_delete_an_old_version(self) -> None:
        response = self.request("DELETE", f"{C}/o", query=f"version-id={self.v1}")
        self.assertEqual((response.status, response.headers["X-Object-Version-Id"],
                          response.headers["X-Object-Current-Version-Id"]), (204, self.v1, self.v2))
        self.assertEqual(self.request("GET", f"{C}/o").body, b"two")
        self.assertEqual([i["version_id"] for i in self.versions()], [self.v2])

    def test_delete_the_current_version(self) -> None:
        response = self.request("DELETE", f"{C}/o", query=f"version-id={self.v2}")
        self.assertEqual((response.status, response.headers["X-Object-Current-Version-Id"]), (204, "null"))
        self.assertEqual(self.request("GET", f"{C}/o").status, 404)
        self.assertEqual([i["version_id"] for i in self.versions()], [self.v1])

    def test_null_version(self) -> None:
        self.assertEqual(self.request("GET", f"{C}/o", query="version-id=null").status, 404)
        self.assertEqual(self.request("DELETE", f"{C}/o", query="version-id=null").status, 204)
        self.assertEqual(self.request("GET", f"{C}/o").status, 404)
        self.assertEqual(len(self.versions()), 2)

    def test_put_makes_an_old_version_current(self) -> None:
        response = self.request("PUT", f"{C}/o", query=f"version-id={self.v1}")
        self.assertEqual((response.status, response.headers["X-Object-Version-Id"]), (201, self.v1))
        self.assertEqual(self.request("GET", f"{C}/o").body, b"one")
        self.assertEqual([(i["version_id"], i["is_latest"]) for i in self.versions()],
                         [(self.v2, False), (self.v1, True)])
        self.assertEqual(self.request("PUT", f"{C}/o", b"x", query=f"version-id={self.v1}").status, 400)
        self.assertEqual(self.request("PUT", f"{C}/o", query="version-id=1.00000").status, 404)

    def test_copy_restores_a_version_as_a_new_one(self) -> None:
        response = self.request("COPY", f"{C}/o", query=f"version-id={self.v1}", Destination="c/o")
        self.assertEqual(response.status, 201)
        v3 = response.headers["X-Object-Version-Id"]
        self.assertNotIn(v3, (self.v1, self.v2))
        self.assertEqual(self.request("GET", f"{C}/o").body, b"one")
        self.assertEqual([i["version_id"] for i in self.versions()], [v3, self.v2, self.v1])

    def test_version_reads_are_the_requesters(self) -> None:
        reads = [call for call in self.store.calls if call.method == "GET" and call.query == ""]
        self.request("GET", f"{C}/o", query=f"version-id={self.v1}")
        [read] = [call for call in self.store.calls[len(reads):] if call.path.startswith(V)][-1:]
        self.assertNotEqual(read.source, "OV")  # the client's own request, rewritten


class ListingTests(Case):
    def setUp(self) -> None:
        super().setUp()
        self.enable()
        self.b1 = self.put("b", b"b1")
        self.b2 = self.put("b", b"b22")
        self.a1 = self.put("a", b"a1")
        self.request("DELETE", f"{C}/a")
        self.c1 = self.put("c-x", b"c")

    def test_plain_listing_shows_links_as_objects(self) -> None:
        listed = self.listing()
        self.assertEqual([(i["name"], i["bytes"], i["hash"], i["version_symlink"]) for i in listed],
                         [("b", 3, md5(b"b22").hexdigest(), True), ("c-x", 1, md5(b"c").hexdigest(), True)])
        self.assertEqual(listed[0]["symlink_path"], f"/v1/{A}/c/b?version-id={self.b2}")

    def test_versions_listing(self) -> None:
        listed = self.versions()
        self.assertEqual([(i["name"], i["is_latest"]) for i in listed],
                         [("a", True), ("a", False), ("b", True), ("b", False), ("c-x", True)])
        self.assertEqual(listed[2]["version_id"], self.b2)
        self.assertEqual([i["name"] for i in self.versions(reverse="true")], ["c-x", "b", "b", "a", "a"])
        self.assertEqual([i["version_id"] for i in self.versions(prefix="b")], [self.b2, self.b1])
        self.assertEqual([i["version_id"] for i in self.versions(prefix="b", reverse="true")], [self.b1, self.b2])

    def test_paging(self) -> None:
        first = self.versions(limit="3")
        self.assertEqual(len(first), 3)
        rest = self.versions(limit="3", marker=first[-1]["name"], version_marker=first[-1]["version_id"])
        self.assertEqual([i["name"] for i in first + rest], ["a", "a", "b", "b", "c-x"])
        self.assertEqual([i["name"] for i in self.versions(marker="a")], ["b", "b", "c-x"])
        self.assertEqual([i["name"] for i in self.versions(marker="b", version_marker="null")], ["b", "b", "c-x"])
        response = self.request("GET", C, query="versions&version_marker=x")
        self.assertEqual(response.status, 400)

    def test_delimiter(self) -> None:
        self.assertEqual([i.get("name", i.get("subdir")) for i in self.versions(delimiter="-")],
                         ["a", "a", "b", "b", "c-"])
        self.assertEqual(self.request("GET", C, query="versions&delimiter=1").status, 400)

    def test_only_json(self) -> None:
        self.assertEqual(self.request("GET", C, query="versions&format=xml").status, 406)
        self.assertEqual(self.request("GET", C, query="versions", Accept="text/plain").status, 406)
        request = SwiftRequest("GET", C, HeaderMap(), "versions&format=json")
        request.environ["swift.listing_asked"] = ("versions&format=plain", None)  # listing_formats says so
        self.assertEqual(run(self.app, request).status, 406)
        request = SwiftRequest("GET", C, HeaderMap(), "versions&format=json")
        request.environ["swift.listing_asked"] = ("versions", "application/*")
        self.assertEqual(run(self.app, request).status, 200)

    def test_unversioned_container(self) -> None:
        self.store.containers.add(f"/v1/{A}/plain")
        self.store.put(f"/v1/{A}/plain/x", b"x")
        response = self.request("GET", f"/v1/{A}/plain", query="versions&format=json")
        self.assertEqual([(i["name"], i["version_id"], i["is_latest"]) for i in json.loads(response.body)],
                         [("x", "null", True)])
