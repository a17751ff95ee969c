"""
The versioned_writes middleware over an in-memory store (`MemorySwift`, with container metadata
and reverse listings added here): the container's setting as sysmeta and back, stack mode's
archive and restore, history mode's delete markers, mode changes, who may version, failures,
links and manifests kept as they are, and the filter's configuration.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlencode

from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import SynchronousTestCase

from txstore.common.backend_client import quote_path
from txstore.common.config import ConfigError
from txstore.common.timestamps import Timestamp
from txstore.middleware import versioned_writes
from txstore.middleware.copy import Copy
from txstore.middleware.symlink import Symlinks
from txstore.middleware.versioned_writes import DELETE_MARKER, VersionedWrites, archive_name, archive_prefix
from txstore.proxy.controllers.base import ContainerInfo
from txstore.proxy.info import InfoRegistry
from txstore.proxy.messages import BytesSource, HeaderMap, SwiftRequest, SwiftResponse
from txstore.proxy.tempauth import Decision
from txstore.test.swift_fake import MemorySwift, read_body

A = "/v1/AUTH_a"
C = f"{A}/c"
V = f"{A}/v"
# What a container keeps (as the container server does): ACLs, sysmeta and the plain locations.
CONTAINER_KEPT = ("x-container-read", "x-container-write", "x-container-sysmeta-", "x-versions-location",
                  "x-history-location")


class VersionedStore(MemorySwift):
    """MemorySwift with what versioning needs of containers: metadata (PUT/POST, shown on
    HEAD/GET; an empty value removes) and ``reverse=on`` listings."""

    def __init__(self) -> None:
        super().__init__()
        self.metadata: dict[str, HeaderMap] = {}

    def _container(self, request: SwiftRequest, path: str) -> SwiftResponse:
        if request.method in ("PUT", "POST"):
            if request.method == "POST" and not self._container_exists(path):
                return SwiftResponse.text(404, "Not Found")
            kept = self.metadata.setdefault(path, HeaderMap())
            for name, value in request.headers.items():
                if name.lower().startswith(CONTAINER_KEPT):
                    if value:
                        kept[name] = value
                    else:
                        kept.pop(name)
            if request.method == "POST":
                self.containers.add(path)
                return SwiftResponse.empty(204)
        reverse = request.method == "GET" and request.params.get("reverse") == "on"
        if reverse:
            request = self._forward_listing(request)
        response = super()._container(request, path)
        if reverse and response.status == 200:
            response = self._reversed(request, response)
        if response.status // 100 == 2 and request.method in ("GET", "HEAD"):
            response.headers.update(self.metadata.get(path, HeaderMap()).items())
            count = sum(1 for name in self.objects if name.startswith(path + "/"))
            response.headers["X-Container-Object-Count"] = str(count)
        return response

    def _forward_listing(self, request: SwiftRequest) -> SwiftRequest:
        """The whole forward listing of the prefix; `_reversed` applies marker and limit."""
        params = request.params
        self._reverse_marker = params.get("marker", "")
        self._reverse_limit = int(params.get("limit") or 10000)
        kept = urlencode({"format": "json", "prefix": params.get("prefix", "")})
        return SwiftRequest("GET", request.path, request.headers, kept)

    def _reversed(self, request: SwiftRequest, response: SwiftResponse) -> SwiftResponse:
        rows = list(reversed(json.loads(response.body)))
        marker = self._reverse_marker.encode("utf-8")
        if marker:
            rows = [row for row in rows if row["name"].encode("utf-8") < marker]
        body = json.dumps(rows[:self._reverse_limit]).encode()
        return SwiftResponse(200, HeaderMap({"Content-Type": "application/json; charset=utf-8",
                                             "Content-Length": str(len(body))}), body)

    def info(self, path: str) -> ContainerInfo:
        if not self._container_exists(path):
            return ContainerInfo(404)
        kept = self.metadata.get(path, HeaderMap())
        prefix = "x-container-sysmeta-"
        return ContainerInfo(204, kept.get("X-Container-Read"), kept.get("X-Container-Write"),
                             sysmeta={name.lower()[len(prefix):]: value for name, value in kept.items()
                                      if name.lower().startswith(prefix)},
                             versions=kept.get("X-Versions-Location"))


class Case(SynchronousTestCase):
    enabled = True

    def setUp(self) -> None:
        self.store = VersionedStore()
        self.versioned = VersionedWrites(self.below(self.store), enabled=self.enabled, container_info=self.info,
                                         clock=self.clock, max_file_size=1 << 20, max_listing_bytes=1 << 20)
        self.app = Copy(self.versioned)
        self.store.containers.update({C, V})
        self.denied: set[str] = set()  # identities the authorizer refuses writes to C

    def below(self, store):
        return store

    def clock(self) -> float:
        """Just after the store's last write (each of its writes is a second after the one before)."""
        return self.store.now + 0.5

    async def info(self, request: SwiftRequest, account: str, container: str) -> ContainerInfo:
        return self.store.info(f"/v1/{account}/{container}")

    def authorize(self, request: SwiftRequest, account, container, obj, info) -> Decision:
        if request.identity in self.denied:
            return Decision(False, 403, "denied")
        return Decision(True)

    def call(self, method: str, path: str, body: bytes = b"", query: str = "", identity: str = "alice",
             **headers: str) -> SwiftResponse:
        if method == "PUT" and "X-Copy-From" not in headers and path.count("/") > 3:
            headers.setdefault("Content-Length", str(len(body)))
        request = SwiftRequest(method, quote_path(path), HeaderMap(headers), query, BytesSource(body), trans_id="tx",
                               identity=identity, environ={"swift.authorize": self.authorize})
        return self.successResultOf(ensureDeferred(self.app(request)))

    def read(self, response: SwiftResponse) -> bytes:
        return read_body(self, response)

    def put(self, path: str, body: bytes, status: int = 201, **headers: str) -> SwiftResponse:
        response = self.call("PUT", path, body, **headers)
        self.assertEqual(response.status, status, response.body)
        return response

    def delete(self, path: str, status: int = 204, **kwargs) -> SwiftResponse:
        response = self.call("DELETE", path, **kwargs)
        self.assertEqual(response.status, status, response.body)
        return response

    def get(self, path: str) -> bytes | None:
        response = self.call("GET", path)
        return self.read(response) if response.status == 200 else None

    def versions(self, container: str = V) -> list[str]:
        return sorted((name[len(container) + 1:] for name in self.store.objects if name.startswith(container + "/")),
                      key=lambda n: n.encode("utf-8"))

    def version_bodies(self, container: str = V) -> list[bytes]:
        return [self.store.objects[f"{container}/{name}"].body for name in self.versions(container)]

    def version_types(self, container: str = V) -> list[str]:
        return [self.store.objects[f"{container}/{name}"].headers["Content-Type"] for name in self.versions(container)]

    def set_location(self, header: str = "X-Versions-Location", value: str = "v", status: int = 204,
                     **headers: str) -> SwiftResponse:
        response = self.call("POST", C, **{header: value, **headers})
        self.assertEqual(response.status, status, response.body)
        return response

    def writes(self) -> list[tuple[str, str]]:
        return [(call.method, call.path) for call in self.store.calls
                if call.source == "VW" and call.method in ("PUT", "DELETE")]


class ContainerSettingTests(Case):
    def test_a_location_is_kept_in_sysmeta_and_shown_as_its_mode(self) -> None:
        self.set_location()
        kept = self.store.metadata[C]
        self.assertEqual((kept.get("X-Container-Sysmeta-Versions-Location"),
                          kept.get("X-Container-Sysmeta-Versions-Mode")), ("v", "stack"))
        self.assertNotIn("X-Versions-Location", kept)  # sent empty: the plain metadata cleared
        head = self.call("HEAD", C)
        self.assertEqual(head.headers.get("X-Versions-Location"), "v")
        self.assertNotIn("X-History-Location", head.headers)
        self.set_location("X-History-Location", "v%20h")
        head = self.call("HEAD", C)
        self.assertEqual(head.headers.get("X-History-Location"), "v%20h")
        self.assertNotIn("X-Versions-Location", head.headers)
        self.assertEqual(self.call("GET", C, query="format=json").headers.get("X-History-Location"), "v%20h")
        self.assertEqual(kept.get("X-Container-Sysmeta-Versions-Mode"), "history")

    def test_a_container_put_sets_it_too(self) -> None:
        self.assertEqual(self.call("PUT", f"{A}/new", **{"X-History-Location": "v"}).status, 201)
        self.assertEqual(self.call("HEAD", f"{A}/new").headers.get("X-History-Location"), "v")

    def test_removing(self) -> None:
        for header, value in (("X-Versions-Location", ""), ("X-History-Location", ""),
                              ("X-Remove-Versions-Location", "x"), ("X-Remove-History-Location", "yes")):
            with self.subTest(header=header):
                self.set_location()
                self.set_location(header, value)
                head = self.call("HEAD", C)
                self.assertNotIn("X-Versions-Location", head.headers)
                self.assertNotIn("X-Container-Sysmeta-Versions-Location", self.store.metadata[C])
                self.assertNotIn("X-Container-Sysmeta-Versions-Mode", self.store.metadata[C])

    def test_setting_wins_over_removing_in_one_request(self) -> None:
        self.set_location("X-History-Location", "v", **{"X-Remove-History-Location": "v"})
        self.assertEqual(self.call("HEAD", C).headers.get("X-History-Location"), "v")

    def test_both_at_once_are_refused_unless_one_is_empty(self) -> None:
        response = self.call("POST", C, **{"X-Versions-Location": "v", "X-History-Location": "h"})
        self.assertEqual((response.status, response.body),
                         (400, b"Only one of x-versions-location or x-history-location may be specified"))
        self.assertNotIn(C, self.store.metadata)
        self.set_location("X-Versions-Location", "v", **{"X-History-Location": ""})
        self.assertEqual(self.call("HEAD", C).headers.get("X-Versions-Location"), "v")
        self.set_location("X-Versions-Location", "", **{"X-History-Location": "h"})
        self.assertEqual(self.call("HEAD", C).headers.get("X-History-Location"), "h")

    def test_a_container_with_object_versioning_takes_no_location(self) -> None:
        self.store.metadata[C] = HeaderMap({"X-Container-Sysmeta-Versions-Container": "%00versions%00c",
                                            "X-Container-Sysmeta-Versions-Enabled": "True"})
        for method in ("POST", "PUT"):
            response = self.call(method, C, **{"X-History-Location": "v"})
            self.assertEqual(response.status, 400)
            self.assertIn(b"already using object versioning", response.body)
        self.assertNotIn("X-Container-Sysmeta-Versions-Location", self.store.metadata[C])
        self.set_location("X-Versions-Location", "")  # removing one is not refused

    def test_a_location_with_a_slash_is_refused(self) -> None:
        response = self.call("POST", C, **{"X-Versions-Location": "v/x"})
        self.assertEqual((response.status, response.body), (412, b"Container name cannot contain slashes"))

    def test_plain_metadata_of_older_proxies(self) -> None:
        # Stored as plain metadata before versioned_writes: X-Versions-Location is honoured (stack),
        # X-History-Location, which nothing acted on, is not shown.
        self.store.metadata[C] = HeaderMap({"X-Versions-Location": "v", "X-History-Location": "h"})
        head = self.call("HEAD", C)
        self.assertEqual(head.headers.get("X-Versions-Location"), "v")
        self.assertNotIn("X-History-Location", head.headers)
        self.put(f"{C}/o", b"one")
        self.put(f"{C}/o", b"two")
        self.assertEqual(self.version_bodies(), [b"one"])
        self.set_location("X-History-Location", "v")
        self.assertEqual(dict(self.store.metadata[C].items()),
                         {"X-Container-Sysmeta-Versions-Location": "v", "X-Container-Sysmeta-Versions-Mode": "history"})


class DisabledTests(Case):
    enabled = False

    def test_setting_is_refused_removing_works_and_nothing_is_versioned(self) -> None:
        response = self.call("POST", C, **{"X-Versions-Location": "v"})
        self.assertEqual((response.status, response.body), (412, b"Versioned Writes is disabled"))
        response = self.call("PUT", f"{A}/other", **{"X-History-Location": "v"})
        self.assertEqual(response.status, 412)
        self.store.metadata[C] = HeaderMap({"X-Container-Sysmeta-Versions-Location": "v",
                                            "X-Container-Sysmeta-Versions-Mode": "stack"})
        self.put(f"{C}/o", b"one")
        self.put(f"{C}/o", b"two")
        self.assertEqual(self.versions(), [])
        self.assertEqual(self.call("HEAD", C).headers.get("X-Versions-Location"), "v")
        self.set_location("X-Remove-Versions-Location", "x")
        self.assertEqual(dict(self.store.metadata[C].items()), {})


class StackModeTests(Case):
    def setUp(self) -> None:
        super().setUp()
        self.set_location()

    def test_an_overwrite_archives_the_current_object_first(self) -> None:
        self.put(f"{C}/o", b"aaaaa", **{"Content-Type": "text/one", "Content-Encoding": "gzip",
                                        "Content-Disposition": "attachment"})
        first = self.store.objects[f"{C}/o"].timestamp
        self.assertEqual(self.versions(), [])
        self.put(f"{C}/o", b"bbbbb", **{"Content-Type": "text/two", "X-Object-Meta-Foo": "Bar"})
        self.assertEqual(self.versions(), [f"001o/{first.internal}"])
        archived = self.store.objects[f"{V}/001o/{first.internal}"]
        self.assertEqual(archived.body, b"aaaaa")
        self.assertEqual((archived.headers["Content-Type"], archived.headers["Content-Encoding"],
                          archived.headers["Content-Disposition"]), ("text/one", "gzip", "attachment"))
        self.assertNotIn("X-Object-Meta-Foo", archived.headers)
        self.assertEqual(self.get(f"{C}/o"), b"bbbbb")
        # a POST changes metadata, makes no version; the next overwrite archives what it left
        self.assertEqual(self.call("POST", f"{C}/o", **{"X-Object-Meta-Fu": "baz"}).status, 202)
        self.assertEqual(len(self.versions()), 1)
        self.put(f"{C}/o", b"ccccc")
        self.assertEqual(self.version_bodies(), [b"aaaaa", b"bbbbb"])
        self.assertEqual(self.store.objects[f"{V}/{self.versions()[1]}"].headers["X-Object-Meta-Fu"], "baz")
        # the archive's own sub-requests: a read and a write, as the middleware
        reads = [call for call in self.store.calls if call.source == "VW" and call.method == "GET"
                 and call.path == f"{C}/o"]
        self.assertEqual({(call.query, call.headers.get("X-Newest")) for call in reads}, {("symlink=get", "true")})

    def test_a_copy_over_the_object_archives_it(self) -> None:
        self.put(f"{C}/o", b"ccccc")
        self.store.put(f"{A}/src/s", b"ddddd", **{"Content-Type": "text/four"})
        self.assertEqual(self.call("COPY", f"{A}/src/s", Destination="c/o").status, 201)
        self.assertEqual((self.get(f"{C}/o"), self.version_bodies()), (b"ddddd", [b"ccccc"]))
        self.put(f"{C}/o", b"", **{"X-Copy-From": "src/s"})
        self.assertEqual(self.version_bodies(), [b"ccccc", b"ddddd"])

    def test_delete_restores_the_previous_version_each_time(self) -> None:
        for body, kind in ((b"aaaaa", "text/one"), (b"bbbbb", "text/two"), (b"ccccc", "text/three")):
            self.put(f"{C}/o", body, **{"Content-Type": kind, "X-Object-Meta-Body": body.decode()})
        self.delete(f"{C}/o")
        self.assertEqual((self.get(f"{C}/o"), self.version_bodies()), (b"bbbbb", [b"aaaaa"]))
        restored = self.store.objects[f"{C}/o"].headers
        self.assertEqual((restored["Content-Type"], restored["X-Object-Meta-Body"]), ("text/two", "bbbbb"))
        self.delete(f"{C}/o")
        self.assertEqual((self.get(f"{C}/o"), self.versions()), (b"aaaaa", []))
        self.delete(f"{C}/o")
        self.assertIsNone(self.get(f"{C}/o"))
        self.delete(f"{C}/o", 404)

    def test_pages_of_the_archive_are_read_newest_first(self) -> None:
        # another object's versions share the archive; a version gone meanwhile is skipped
        for body in (b"1", b"2", b"3"):
            self.put(f"{C}/o", body)
            self.put(f"{C}/o2", body)
        newest = self.versions()[1]  # 001o/<second>
        del self.store.objects[f"{V}/{newest}"]
        self.delete(f"{C}/o")
        self.assertEqual(self.get(f"{C}/o"), b"1")
        self.assertEqual(self.get(f"{C}/o2"), b"3")
        listing = [call for call in self.store.calls if call.source == "VW" and call.path == V]
        self.assertIn("reverse=on", listing[0].query)
        self.assertIn("prefix=001o%2F", listing[0].query)

    def test_utf8_names_count_their_bytes(self) -> None:
        name = "caf\u00e9 %25ff"
        self.assertEqual(archive_prefix(name), f"00b{name}/")
        self.put(f"{C}/{name}", b"one")
        self.put(f"{C}/{name}", b"two")
        self.assertEqual(self.versions()[0].split("/")[0], f"00b{name}")
        self.delete(f"{C}/{name}")
        self.assertEqual(self.get(f"{C}/{name}"), b"one")

    def test_a_percent_encoded_location_names_the_decoded_container(self) -> None:
        self.store.containers.add(f"{A}/v \u00e9")
        self.set_location("X-Versions-Location", "v%20%C3%A9")
        self.put(f"{C}/o", b"one")
        self.put(f"{C}/o", b"two")
        self.assertEqual(self.version_bodies(f"{A}/v \u00e9"), [b"one"])

    def test_a_manifest_is_archived_and_restored_as_the_manifest(self) -> None:
        self.put(f"{C}/big", b"", **{"X-Object-Manifest": "segs/p"})
        self.put(f"{C}/big", b"plain")
        self.assertEqual(self.store.objects[f"{V}/{self.versions()[0]}"].headers["X-Object-Manifest"], "segs/p")
        self.delete(f"{C}/big")
        self.assertEqual(self.store.objects[f"{C}/big"].headers["X-Object-Manifest"], "segs/p")

    def test_a_container_without_a_location_is_left_alone(self) -> None:
        self.put(f"{A}/plain/o", b"one")
        self.put(f"{A}/plain/o", b"two")
        self.delete(f"{A}/plain/o")
        self.assertEqual(self.writes(), [])

    def test_only_a_writer_of_the_container_versions(self) -> None:
        self.put(f"{C}/o", b"one")
        self.put(f"{C}/o", b"two")
        self.denied.add("mallory")
        before = list(self.store.calls)
        for method in ("PUT", "DELETE"):
            response = self.call(method, f"{C}/o", b"evil", identity="mallory")
            self.assertEqual((response.status, response.body), (403, b"Forbidden"))
        # refused before any archive read or write
        self.assertEqual([call for call in self.store.calls if call not in before and call.method != "GET"], [])
        self.assertEqual((self.get(f"{C}/o"), self.version_bodies()), (b"two", [b"one"]))

    def test_a_failing_archive_leaves_the_object_as_it_was(self) -> None:
        self.put(f"{C}/o", b"one")
        for status, answered in ((403, 412), (507, 503)):
            with self.subTest(status=status):
                self.store.containers.discard(V)
                broken = self.fail_puts_to(V, status)
                response = self.call("PUT", f"{C}/o", b"two", **{"Content-Length": "3"})
                self.assertEqual(response.status, answered)
                self.assertEqual(self.get(f"{C}/o"), b"one")
                self.app = Copy(self.versioned)
                self.versioned.app = broken.app

    def fail_puts_to(self, prefix: str, status: int):
        store = self.store

        class Failing:
            app = store

            async def __call__(self, request: SwiftRequest) -> SwiftResponse:
                if request.method == "PUT" and request.decoded_path.startswith(prefix + "/"):
                    request.discard_body()
                    return SwiftResponse.text(status, "no")
                return await store(request)

        failing = Failing()
        self.versioned.app = failing
        return failing


class HistoryModeTests(Case):
    def setUp(self) -> None:
        super().setUp()
        self.set_location("X-History-Location")

    def test_delete_archives_and_leaves_a_marker(self) -> None:
        self.put(f"{C}/o", b"aaaaa", **{"Content-Type": "text/one"})
        self.put(f"{C}/o", b"bbbbb", **{"Content-Type": "text/two"})
        current = self.store.objects[f"{C}/o"].timestamp
        self.delete(f"{C}/o")
        self.assertIsNone(self.get(f"{C}/o"))
        marker = archive_name("o", Timestamp.from_seconds(self.store.now - 0.5))  # before its own PUT
        self.assertEqual(self.versions()[1:], [f"001o/{current.internal}", marker])
        self.assertEqual(self.version_bodies(), [b"aaaaa", b"bbbbb", b""])
        self.assertEqual(self.version_types(), ["text/one", "text/two", DELETE_MARKER])
        # each later DELETE answers 404 and still leaves a marker
        for _ in range(2):
            self.delete(f"{C}/o", 404)
        self.assertEqual(self.version_types()[2:], [DELETE_MARKER] * 3)
        # a new object after the markers: a PUT archives nothing, the next one archives it
        self.put(f"{C}/o", b"eeee")
        self.assertEqual(len(self.versions()), 5)
        self.put(f"{C}/o", b"ffff")
        self.assertEqual(self.version_bodies()[-1], b"eeee")

    def test_a_writer_without_access_is_refused_before_anything(self) -> None:
        self.put(f"{C}/o", b"aaaaa")
        self.denied.add("mallory")
        response = self.call("DELETE", f"{C}/o", identity="mallory")
        self.assertEqual(response.status, 403)
        self.assertEqual((self.get(f"{C}/o"), self.versions()), (b"aaaaa", []))


class ChangingModeTests(Case):
    """Swift's functional test_delete_while_changing_mode, step by step."""

    def test_stack_mode_over_markers(self) -> None:
        self.set_location("X-History-Location")
        self.put(f"{C}/o", b"version1", **{"Content-Type": "text/jibberish01"})
        self.put(f"{C}/o", b"version2", **{"Content-Type": "text/jibberish01"})
        self.delete(f"{C}/o")
        self.assertEqual(self.version_types()[-1], DELETE_MARKER)
        self.set_location()
        # the newest is a marker and the object is gone: the version before it comes back and
        # the DELETE takes the marker
        self.delete(f"{C}/o")
        self.assertEqual((self.get(f"{C}/o"), self.version_bodies()), (b"version2", [b"version1"]))
        self.set_location("X-History-Location")
        self.delete(f"{C}/o")
        self.delete(f"{C}/o", 404)
        self.assertEqual(len(self.versions()), 4)
        self.set_location()
        # the newest marker, with nothing before it but another marker: the DELETE takes it alone
        self.delete(f"{C}/o")
        self.assertEqual((len(self.versions()), self.get(f"{C}/o")), (3, None))
        self.delete(f"{C}/o")
        self.assertEqual((self.get(f"{C}/o"), self.version_bodies()), (b"version2", [b"version1"]))

    def test_a_marker_while_the_object_exists_again_leaves_the_archive_alone(self) -> None:
        self.set_location("X-History-Location")
        self.put(f"{C}/o", b"one")
        self.delete(f"{C}/o")
        self.set_location()
        self.store.put(f"{C}/o", b"back")  # written without versioning (another proxy, say)
        self.delete(f"{C}/o")
        self.assertIsNone(self.get(f"{C}/o"))
        self.assertEqual(self.version_types(), ["application/octet-stream", DELETE_MARKER])


class SymlinkTests(Case):
    """Links below versioned_writes (Swift's order): archived and restored as links."""

    def below(self, store):
        return Symlinks(store, 2, 1 << 20)

    def setUp(self) -> None:
        super().setUp()
        self.set_location()
        self.store.put(f"{C}/ta", b"aaaaa")
        self.store.put(f"{C}/tb", b"bbbbb")

    def test_a_link_is_versioned_as_a_link(self) -> None:
        self.put(f"{C}/l", b"", **{"X-Symlink-Target": "c/ta"})
        self.put(f"{C}/l", b"", **{"X-Symlink-Target": "c/tb"})
        self.assertEqual(self.get(f"{C}/l"), b"bbbbb")
        archived = f"{V}/{self.versions()[0]}"
        self.assertEqual(self.store.objects[archived].headers["X-Object-Sysmeta-Symlink-Target"], "c/ta")
        self.assertEqual(self.get(archived), b"aaaaa")
        self.delete(f"{C}/l")
        self.assertEqual(self.get(f"{C}/l"), b"aaaaa")
        self.assertEqual(self.call("HEAD", f"{C}/l", query="symlink=get").headers["X-Symlink-Target"], "c/ta")

    def test_a_copy_of_an_archived_link_with_symlink_get_restores_it(self) -> None:
        self.put(f"{C}/l", b"", **{"X-Symlink-Target": "c/ta", "Content-Type": "application/symlink"})
        self.put(f"{C}/l", b"not a link")
        archived = self.versions()[0]
        response = self.call("COPY", f"{V}/{archived}", query="symlink=get", Destination="c/l")
        self.assertEqual(response.status, 201, response.body)
        self.assertEqual(self.get(f"{C}/l"), b"aaaaa")
        self.assertEqual(self.version_bodies(), [b"", b"not a link"])


class FilterTests(SynchronousTestCase):
    def build(self, **options: str):
        from txstore.proxy.server import stages_from

        stages = stages_from({"versioned_writes": options})
        return next(stage for stage in stages if stage.name == "versioned_writes")

    def test_options_and_info(self) -> None:
        stage = self.build()
        self.assertEqual(dict(stage.settings), {"allow_versioned_writes": False, "allow_object_versioning": False})
        stage = self.build(allow_versioned_writes="true")
        self.assertTrue(stage.settings["allow_versioned_writes"])
        for allowed, expected in ((False, {}), (True, {"versioned_writes": {
                "allowed_flags": ["x-versions-location", "x-history-location"]}})):
            info = InfoRegistry()
            services = FakeServices(info)
            built = versioned_writes.middleware.build(MemorySwift(), {"allow_versioned_writes": allowed,
                                                                      "allow_object_versioning": False}, services)
            self.assertIsInstance(built, VersionedWrites)
            self.assertEqual(built.enabled, allowed)
            self.assertEqual(info.as_dict(), expected)

    def test_object_versioning_is_refused_until_it_is_built(self) -> None:
        self.patch(versioned_writes, "OBJECT_VERSIONING_MODULE", "txstore.middleware.no_such_module")
        err = self.assertRaises(ConfigError, self.build, allow_object_versioning="true")
        self.assertEqual(str(err), f"<proxy.conf>: [filter:versioned_writes]: allow_object_versioning: "
                                   f"{versioned_writes.NOT_BUILT}".replace("<proxy.conf>", str(Path("<proxy.conf>").absolute())))
        self.assertNotIn("\n", str(err))
        self.assertEqual(self.build(allow_object_versioning="false").settings["allow_object_versioning"], False)

    def test_the_shipped_configs_enable_it(self) -> None:
        from txstore.aio.layout import Layout, Topology, _proxy_config

        conf = (Path(__file__).parents[3] / "conf" / "proxy.conf").read_text()
        self.assertIn("dlo versioned_writes symlink", conf)
        self.assertIn("[filter:versioned_writes]\n", conf)
        self.assertIn("\nallow_versioned_writes = true\n", conf)
        self.assertIn("[filter:versioned_writes]\nuse = egg:txstore#versioned_writes\nallow_versioned_writes = true\n",
                      _proxy_config(Layout(Path("/nowhere"), Topology(), 8080)))


class FakeServices:
    def __init__(self, info: InfoRegistry) -> None:
        from txstore.common.constraints import Constraints

        self.info = info
        self.clock = lambda: 0.0
        self.context = type("Context", (), {"constraints": Constraints()})()
