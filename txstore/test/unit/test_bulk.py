"""
bulk over an in-memory store (`MemorySwift`): archives (tar, tar.gz, tar.bz2, concatenated
gzip) extracted into the account, a container or a prefix with containers created as needed;
the result in each format; refusals (bad archive, unknown format, too many containers, failed
files, a file too large, a truncated archive) with nothing stored that should not be; what
an extraction holds with a large member; heartbeats; bulk deletes (results, limits, 401, the
order of objects and containers); the query strings never becoming plain writes or deletes.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import tarfile

from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from txstore.common.constraints import Constraints
from txstore.interfaces import IByteSource
from txstore.middleware.bulk import CHUNK, OPTIONS, ArchiveReader, Bulk, Heartbeats, info_of, render
from txstore.proxy.messages import HeaderMap, SwiftRequest, SwiftResponse
from txstore.test.swift_fake import MemorySwift

A = "/v1/AUTH_a"


def settings(**overrides) -> dict:
    found = {option.name: option.default for option in OPTIONS}
    found.update(overrides)
    return found


def archive(files: dict[str, bytes], compression: str = "", dirs: tuple[str, ...] = (),
            pax: dict | None = None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=f"w:{compression}", format=tarfile.PAX_FORMAT) as tar:
        for name in dirs:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            if pax and name in pax:
                info.pax_headers = pax[name]
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@implementer(IByteSource)
class Pieces:
    """A client's body in pieces (made as they are read)."""

    def __init__(self, pieces) -> None:
        self.pieces = iter(pieces)

    def read(self) -> Deferred:
        return succeed(next(self.pieces, b""))

    def stop(self) -> None:
        pass


class Proxyish:
    """What the proxy adds to `MemorySwift` for these tests: object names over 1024 bytes (400), container DELETE."""

    def __init__(self, store: MemorySwift) -> None:
        self.store = store

    async def __call__(self, request: SwiftRequest) -> SwiftResponse:
        _v, account, container, obj = request.split(2, 4)
        if obj is not None and len(obj.encode()) > 1024:
            request.discard_body()
            return SwiftResponse.empty(400)
        if request.method == "DELETE" and container and obj is None:
            path = f"/v1/{account}/{container}"
            if any(name.startswith(path + "/") for name in self.store.objects):
                return SwiftResponse.empty(409)
            if path not in self.store.containers:
                return SwiftResponse.empty(404)
            self.store.containers.discard(path)
            return SwiftResponse.empty(204)
        return await self.store(request)


class Case(TestCase):
    """Extraction runs tarfile in a thread: these tests run on the real reactor."""

    def setUp(self) -> None:
        self.store = MemorySwift()
        self.store.containers.add(f"{A}/c")
        self.bulk = Bulk(Proxyish(self.store), settings(), Constraints(), reactor, in_thread=deferToThread)

    async def call(self, method: str, path: str, query: str, body: bytes = b"", step: int = 4096, **headers: str):
        headers.setdefault("Content-Length", str(len(body)))
        if headers["Content-Length"] is None:
            del headers["Content-Length"]
        source = Pieces(body[i:i + step] for i in range(0, len(body), step))
        request = SwiftRequest(method, path, HeaderMap(headers), query=query, body=source, trans_id="tx")
        return await self.bulk(request)

    async def extract(self, path: str, body: bytes, kind: str = "tar", **headers: str) -> dict:
        response = await self.call("PUT", path, f"extract-archive={kind}", body, Accept="application/json",
                                   **headers)
        self.assertEqual(response.status, 200)
        return json.loads(response.body)

    def stored(self) -> dict[str, bytes]:
        return {path: s.body for path, s in self.store.objects.items()}


class ExtractTests(Case):
    async def test_archives_into_the_account_a_container_and_a_prefix(self) -> None:
        files = {"c/a.txt": b"first", "d/sub/b": b"x" * 100000, "./c/dot": b"dot", "top-level": b"ignored"}
        for kind, compression in (("tar", ""), ("tar.gz", "gz"), ("tar.bz2", "bz2")):
            self.store.objects.clear()
            result = await self.extract(A, archive(files, compression, dirs=("c",)), kind)
            self.assertEqual(result, {"Response Status": "201 Created", "Response Body": "",
                                      "Number Files Created": 3, "Errors": []})
            self.assertEqual(self.stored(), {f"{A}/c/a.txt": b"first", f"{A}/d/sub/b": b"x" * 100000,
                                             f"{A}/c/dot": b"dot"})
        self.assertIn(f"{A}/d", self.store.containers)  # created on the way
        self.store.objects.clear()
        result = await self.extract(f"{A}/c/pre/", archive({"one": b"1", "two/three": b"3"}))
        self.assertEqual(result["Number Files Created"], 2)
        self.assertEqual(self.stored(), {f"{A}/c/pre/one": b"1", f"{A}/c/pre/two/three": b"3"})
        puts = [call for call in self.store.calls if call.method == "PUT" and "/pre/" in call.path]
        self.assertEqual({call.source for call in puts}, {"EA"})

    async def test_pax_metadata_and_concatenated_gzip(self) -> None:
        body = archive({"c/o": b"data"}, pax={"c/o": {"SCHILY.xattr.user.mime_type": "text/x-o",
                                                      "SCHILY.xattr.user.meta.color": "red"}})
        await self.extract(A, body)
        headers = self.store.objects[f"{A}/c/o"].headers
        self.assertEqual((headers["Content-Type"], headers["X-Object-Meta-color"]), ("text/x-o", "red"))
        self.store.objects.clear()
        plain = archive({"c/p": b"pp"})
        half = len(plain) // 1024 * 512
        body = gzip.compress(plain[:half]) + gzip.compress(plain[half:])
        self.assertEqual((await self.extract(A, body, "tar.gz"))["Number Files Created"], 1)
        self.assertEqual(self.stored(), {f"{A}/c/p": b"pp"})

    async def test_formats(self) -> None:
        body = archive({"c/o": b"data", "c/" + "n" * 1100: b"too long a name"})
        response = await self.call("PUT", A, "extract-archive=tar", body)
        self.assertEqual(response.headers["Content-Type"], "text/plain; charset=utf-8")
        self.assertEqual(response.body.decode().splitlines()[:4],
                         ["Number Files Created: 1", "Response Body: ", "Response Status: 400 Bad Request", "Errors:"])
        self.store.objects.clear()
        response = await self.call("PUT", A, "extract-archive=tar", body, Accept="application/xml")
        self.assertTrue(response.body.startswith(b"<extract>\n<number_files_created>1</number_files_created>\n"))
        self.assertIn(b"<errors>\n<object><name>c/nnn", response.body)
        response = await self.call("PUT", A, "extract-archive=tar", body, Accept="image/png")
        self.assertEqual(response.status, 406)

    async def test_refusals(self) -> None:
        result = await self.extract(A, b"this is no archive" * 100)
        self.assertEqual(result["Response Status"], "400 Bad Request")
        self.assertTrue(result["Response Body"].startswith("Invalid Tar File: "))
        result = await self.extract(A, b"not gzip" * 100, "tar.gz")
        self.assertTrue(result["Response Body"].startswith("Invalid Tar File: "))
        result = await self.extract(A, archive({"top": b"only"}))
        self.assertEqual((result["Response Status"], result["Response Body"]),
                         ("400 Bad Request", "Invalid Tar File: No Valid Files"))
        response = await self.call("PUT", A, "extract-archive=zip", b"x")
        self.assertEqual((response.status, response.body), (400, b"Unsupported archive format"))
        response = await self.call("PUT", A, "extract-archive=tar", b"", **{"Content-Length": None})
        self.assertEqual((response.status, response.body), (411, b"Length Required"))
        self.assertEqual(self.stored(), {})

    async def test_limits(self) -> None:
        self.bulk.max_containers = 2
        result = await self.extract(A, archive({"c1/o": b"1", "c2/o": b"2", "c3/o": b"3", "c4/o": b"4"}))
        self.assertEqual((result["Response Status"], result["Response Body"], result["Number Files Created"]),
                         ("400 Bad Request", "More than 2 containers to create from tar.", 2))
        self.assertNotIn(f"{A}/c3/o", self.store.objects)
        self.assertNotIn(f"{A}/c3", self.store.containers)  # refused before its PUT (Swift creates it, then refuses)
        self.bulk.max_failed_extractions = 2
        self.store.objects.clear()
        names = {f"c/{'n' * 1100}{i}": b"x" for i in range(5)}
        result = await self.extract(A, archive({**names, "c/after": b"a"}))
        self.assertEqual(len(result["Errors"]), 2)
        self.assertEqual(result["Response Status"], "400 Bad Request")
        self.assertNotIn(f"{A}/c/after", self.store.objects)  # stopped
        self.bulk.limits = Constraints(max_file_size=3)
        self.store.objects.clear()
        result = await self.extract(A, archive({"c/big": b"1234", "c/ok": b"123"}))
        self.assertEqual(result["Errors"], [["c/big", "413 Request Entity Too Large"]])
        self.assertEqual(self.stored(), {f"{A}/c/ok": b"123"})

    async def test_only_the_containers_created_count(self) -> None:
        """Swift counts the containers an extraction creates; those found need no creating."""
        self.bulk.max_containers = 1
        self.store.containers.add(f"{A}/d")
        result = await self.extract(A, archive({"c/1": b"1", "d/2": b"2", "e/3": b"3"}))
        self.assertEqual((result["Response Status"], result["Number Files Created"]), ("201 Created", 3))
        result = await self.extract(A, archive({"c/4": b"4", "f/5": b"5", "g/6": b"6", "c/7": b"7"}))
        self.assertEqual((result["Response Status"], result["Response Body"], result["Number Files Created"]),
                         ("400 Bad Request", "More than 1 containers to create from tar.", 2))
        self.assertEqual(self.store.containers, {f"{A}/c", f"{A}/d", f"{A}/e", f"{A}/f"})
        self.assertEqual(sorted(self.stored()), [f"{A}/c/1", f"{A}/c/4", f"{A}/d/2", f"{A}/e/3", f"{A}/f/5"])

    async def test_a_server_failure_makes_the_result_502(self) -> None:
        """Failed files are 400 Bad Request, 502 Bad Gateway once one of them failed with a 5xx (Swift's)."""
        store = Proxyish(self.store)

        async def failing(request: SwiftRequest) -> SwiftResponse:
            if request.method == "PUT" and request.decoded_path.endswith("/broken"):
                request.discard_body()
                return SwiftResponse.empty(503)
            return await store(request)
        self.bulk = Bulk(failing, settings(), Constraints(max_file_size=3), reactor, in_thread=deferToThread)
        result = await self.extract(A, archive({"c/big": b"1234", "c/ok": b"1"}))
        self.assertEqual((result["Response Status"], result["Errors"]),
                         ("400 Bad Request", [["c/big", "413 Request Entity Too Large"]]))
        result = await self.extract(A, archive({"c/big": b"1234", "c/broken": b"2", "c/fine": b"3"}))
        self.assertEqual((result["Response Status"], result["Number Files Created"]), ("502 Bad Gateway", 1))
        self.assertEqual(result["Errors"], [["c/big", "413 Request Entity Too Large"],
                                            ["c/broken", "503 Service Unavailable"]])

    async def test_a_truncated_archive_stores_no_partial_object(self) -> None:
        body = archive({"c/whole": b"w" * 10, "c/cut": b"c" * 100000})
        result = await self.extract(A, body[:60000])
        self.assertEqual(result["Response Status"], "400 Bad Request")
        self.assertEqual(self.stored(), {f"{A}/c/whole": b"w" * 10})

    async def test_a_large_member_is_handed_over_a_chunk_at_a_time(self) -> None:
        """64 MiB in one member: the PUT is given pieces no larger than CHUNK, as they are read."""
        sizes = []

        class Sink:
            async def __call__(self, request: SwiftRequest) -> SwiftResponse:
                if request.method != "PUT" or request.decoded_path.count("/") < 4:
                    return SwiftResponse.empty(204)
                while data := await request.body.read():
                    sizes.append(len(data))
                return SwiftResponse.empty(201)

        member = 64 << 20
        header = tarfile.TarInfo("c/big")
        header.size = member
        head = header.tobuf(tarfile.USTAR_FORMAT)
        pieces = [head, *(b"\0" * (1 << 20) for _ in range(64)), b"\0" * 1024]
        self.bulk = Bulk(Sink(), settings(), Constraints(), reactor, in_thread=deferToThread)
        request = SwiftRequest("PUT", A, HeaderMap({"Accept": "application/json", "Content-Length": "1"}),
                               query="extract-archive=tar", body=Pieces(pieces), trans_id="tx")
        response = await self.bulk(request)
        self.assertEqual(json.loads(response.body)["Number Files Created"], 1)
        self.assertEqual(sum(sizes), member)
        self.assertLessEqual(max(sizes), CHUNK)

    async def test_not_plain_writes_or_deletes(self) -> None:
        self.store.put(f"{A}/c/o", b"kept")
        for method, query in (("DELETE", "extract-archive=tar"), ("POST", "extract-archive=tar"),
                              ("PUT", "bulk-delete")):
            response = await self.call(method, f"{A}/c/o", query)
            self.assertEqual(response.status, 405, (method, query))
        self.assertEqual(self.stored(), {f"{A}/c/o": b"kept"})
        self.assertEqual(self.store.calls, [])


class ReaderTests(SynchronousTestCase):
    def test_a_bomb_is_decompressed_a_chunk_at_a_time(self) -> None:
        for compression, compress in (("gz", gzip.compress), ("bz2", bz2.compress)):
            bomb = compress(b"\0" * (256 << 20))
            pieces = iter([bomb[i:i + 65536] for i in range(0, len(bomb), 65536)])
            reader = ArchiveReader(lambda: next(pieces, b""), compression)
            total = biggest = 0
            while data := reader.read(10 << 20):
                total += len(data)
                biggest = max(biggest, len(reader._out))
            self.assertEqual(total, 256 << 20)
            self.assertLessEqual(biggest, CHUNK)


class DeleteTests(Case):
    async def delete(self, body: bytes, method: str = "POST", path: str = A, **headers: str) -> dict:
        response = await self.call(method, path, "bulk-delete", body, Accept="application/json", **headers)
        self.assertEqual(response.status, 200)
        return json.loads(response.body)

    async def test_objects_then_containers(self) -> None:
        self.store.put(f"{A}/c/one", b"1")
        self.store.put(f"{A}/c/t w\u00e9", b"2")
        self.store.containers.add(f"{A}/empty")
        result = await self.delete(b"c\n/c/one\n c/t%20w%C3%A9 \n\n/c/missing\nempty\n")
        self.assertEqual(result, {"Response Status": "200 OK", "Response Body": "", "Number Deleted": 4,
                                  "Number Not Found": 1, "Errors": []})
        self.assertEqual((self.stored(), self.store.containers), ({}, set()))  # c after its objects: no 409
        self.store.put(f"{A}/full/o", b"1")
        result = await self.delete(b"full\n")
        self.assertEqual((result["Response Status"], result["Errors"]), ("400 Bad Request", [["full", "409 Conflict"]]))

    async def test_limits_and_refusals(self) -> None:
        self.store.put(f"{A}/c/o", b"1")
        self.bulk.max_deletes = 2
        result = await self.delete(b"c/o\nc/p\nc/q\n", method="DELETE")
        self.assertEqual((result["Response Status"], result["Response Body"]),
                         ("413 Request Entity Too Large", "Maximum Bulk Deletes: 2 per request"))
        self.assertIn(f"{A}/c/o", self.store.objects)  # nothing deleted
        result = await self.delete(b"")
        self.assertEqual((result["Response Status"], result["Response Body"]), ("400 Bad Request",
                                                                              "Invalid bulk delete."))
        result = await self.delete(b"c/" + b"x" * 3000)
        self.assertEqual((result["Response Status"], result["Response Body"]), ("400 Bad Request",
                                                                              "Invalid File Name"))
        result = await self.delete(b"c/%FF\n")
        self.assertEqual(result["Errors"], [["c/%FF", "412 Precondition Failed"]])
        self.assertIn(f"{A}/c/o", self.store.objects)

    async def test_max_failures_and_401(self) -> None:
        class Refusing:
            def __init__(self) -> None:
                self.calls = 0

            async def __call__(self, request: SwiftRequest) -> SwiftResponse:
                self.calls += 1
                return SwiftResponse.empty(int(request.decoded_path.rsplit("/", 1)[1]))

        app = Refusing()
        self.bulk = Bulk(app, settings(max_failed_deletes=2, delete_concurrency=1), Constraints(), reactor,
                         in_thread=deferToThread)
        result = await self.delete(b"/c/503\n/c/500\n/c/502\n/c/204\n")
        self.assertEqual((result["Response Status"], result["Response Body"]),
                         ("400 Bad Request", "Max delete failures exceeded"))
        self.assertEqual(result["Errors"], [["/c/503", "503 Service Unavailable"],
                                            ["/c/500", "500 Internal Server Error"]])
        self.assertEqual(app.calls, 2)
        # the last name's failure reaches the limit: stopped all the same (Swift checks after each answer)
        result = await self.delete(b"/c/204\n/c/409\n/c/404\n/c/412\n")
        self.assertEqual((result["Response Status"], result["Response Body"], result["Number Deleted"],
                          result["Number Not Found"]), ("400 Bad Request", "Max delete failures exceeded", 1, 1))
        # fewer failures than the limit: 400 for a client's error, 502 once one is a server's
        self.bulk.max_failed_deletes = 3
        result = await self.delete(b"/c/409\n/c/204\n")
        self.assertEqual((result["Response Status"], result["Response Body"]), ("400 Bad Request", ""))
        result = await self.delete(b"/c/409\n/c/503\n/c/204\n")
        self.assertEqual((result["Response Status"], result["Response Body"], result["Number Deleted"]),
                         ("502 Bad Gateway", "", 1))
        result = await self.delete(b"/c/401\n/c/204\n")
        self.assertEqual(result["Response Status"], "401 Unauthorized")


class HeartbeatTests(SynchronousTestCase):
    def test_spaces_then_the_result(self) -> None:
        clock = Clock()
        work = Deferred()
        body = Heartbeats(clock, 10, work, xml=False)
        first = body.read()
        clock.advance(10)
        self.assertEqual(self.successResultOf(first), b" ")
        second = body.read()
        clock.advance(5)
        work.callback(b"Result\n")
        self.assertEqual(self.successResultOf(second), b"\r\n\r\nResult\n")
        self.assertEqual(self.successResultOf(body.read()), b"")
        xml = Heartbeats(clock, 10, Deferred(), xml=True)
        reading = xml.read()
        clock.advance(10)
        self.assertEqual(self.successResultOf(reading), b'<?xml version="1.0" encoding="UTF-8"?>\n')
        xml.stop()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_no_beat_before_the_body_is_in(self) -> None:
        clock = Clock()
        body_read = Deferred()
        body = Heartbeats(clock, 10, Deferred(), xml=False, body_read=body_read)
        reading = body.read()
        clock.advance(100)
        self.assertNoResult(reading)
        body_read.callback(None)
        clock.advance(10)
        self.assertEqual(self.successResultOf(reading), b" ")
        body.stop()

    def test_render_and_info(self) -> None:
        data = {"Response Status": "200 OK", "Number Deleted": 1}
        self.assertEqual(render("text/plain", data, [["a&b", "404 Not Found"]], "delete"),
                         b"Number Deleted: 1\nResponse Status: 200 OK\nErrors:\na&b, 404 Not Found\n")
        self.assertEqual(render("text/xml", data, [["a&b", "404 Not Found"]], "delete"),
                         b"<delete>\n<number_deleted>1</number_deleted>\n<response_status>200 OK</response_status>\n"
                         b"<errors>\n<object><name>a&amp;b</name><status>404 Not Found</status></object>\n"
                         b"</errors>\n</delete>\n")
        # awkward names as Swift's saxutils.escape writes them: & < > escaped, the rest as it is
        body = render("application/xml", {"Response Body": "<&>"}, [["/c/\"'\u00e9\x01<", "409 Conflict"]], "extract")
        self.assertEqual(body.decode("utf-8"), "<extract>\n<response_body>&lt;&amp;&gt;</response_body>\n<errors>\n"
                                               "<object><name>/c/\"'\u00e9\x01&lt;</name><status>409 Conflict</status>"
                                               "</object>\n</errors>\n</extract>\n")
        self.assertEqual(render("text/xml", {}, [], "delete"), b"<delete>\n<errors>\n</errors>\n</delete>\n")
        self.assertEqual(info_of(settings()), {
            "bulk_upload": {"max_containers_per_extraction": 10000, "max_failed_extractions": 1000},
            "bulk_delete": {"max_deletes_per_request": 10000, "max_failed_deletes": 1000}})



class WithoutBulkTests(SynchronousTestCase):
    def test_a_pipeline_without_bulk_refuses_its_writes(self) -> None:
        """Issue 20: DELETE /v1/<account>?bulk-delete must never reach the account as a DELETE."""
        from txstore.proxy.pipeline import build_pipeline

        store = MemorySwift()
        store.put(f"{A}/c/o", b"kept")
        app = build_pipeline((), store, None)
        for method, path, query in (("DELETE", A, "bulk-delete"), ("POST", A, "bulk-delete"),
                                    ("PUT", f"{A}/c", "extract-archive=tar"), ("DELETE", f"{A}/c/o", "bulk-delete=1")):
            response = self.successResultOf(app(SwiftRequest(method, path, HeaderMap(), query=query)))
            self.assertEqual(response.status, 501, (method, query))
        self.assertEqual(store.calls, [])
        request = SwiftRequest("GET", f"{A}/c/o", HeaderMap(), query="bulk-delete")
        self.assertEqual(self.successResultOf(Deferred.fromCoroutine(app(request))).status, 200)
