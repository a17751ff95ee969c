"""
The object server over real HTTP on 127.0.0.1: status codes, headers, bodies, and what is on
disk afterwards (nothing partial, ever).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import zlib
from pathlib import Path

import attrs
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool, ResponseFailed

from txstore.common.backend_client import BackendClient, BackendError, BackendResponse
from txstore.common.hashing import PathHasher
from txstore.common.io import DeviceThreadPools
from txstore.common.put_connection import PutConnectionPool, PutRequest
from txstore.common.policies import DEFAULT_POLICIES, ERASURE_CODING, ECParameters, PolicyCollection, StoragePolicy
from txstore.common.streaming import StreamingSite
from txstore.qos.classes import IOClass, IOClasses
from txstore.qos.scheduler import IOScheduler
from txstore.storage import diskfile as diskfile_module
from txstore.storage import object_server as object_server_module
from txstore.storage.diskfile import DiskFileManager
from txstore.storage.context import StorageContext
from txstore.storage.object_body import CHUNK_SIZE
from txstore.storage.object_server import ObjectServer
from txstore.node.server import NodeServer
from txstore.test.support import ChunkedBody, RawClient, clock_at


class FakeContainers:
    """Stands in for the BackendClient: records container updates, can be made to fail."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.fail = False

    async def request(self, method, host, port, path, headers=None, body=None, timeout=None):
        self.calls.append((method, host, port, path, dict(headers or {})))
        if self.fail:
            raise BackendError("refused")
        return BackendResponse(201, {}, b"")

    async def notify(self, method, host, port, path, headers, timeout=None):
        return await self.request(method, host, port, path, headers, timeout=timeout)

    def close(self):
        return Deferred.fromCoroutine(_nothing())


async def _nothing() -> None:
    return None


class ObjectServerTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.root = Path(self.mktemp()).absolute()
        (self.root / "d1").mkdir(parents=True)
        self.clock = clock_at(1_700_000_000.0)  # the node's time; its I/O is on the reactor
        self.pools = DeviceThreadPools(reactor)
        self.addCleanup(self.pools.stop)
        self.containers = FakeContainers()
        self.diskfiles = DiskFileManager(self.root, False, PathHasher(b"", b"suffix"))
        self.context = StorageContext(
            devices=self.root,
            mount_check=False,
            hasher=PathHasher(b"", b"suffix"),
            policies=DEFAULT_POLICIES,
            runner=self.pools,
            client=self.containers,
            reactor=self.clock,
            diskfiles=self.diskfiles,
        )
        self.objects = ObjectServer(self.context)
        site = StreamingSite(NodeServer(objects=self.objects).resource())
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.pool = HTTPConnectionPool(reactor)
        self.addCleanup(self.pool.closeCachedConnections)
        self.base = f"http://127.0.0.1:{self.port.getHost().port}"
        self.ts = 1_700_000_000

    def stamp(self) -> str:
        self.ts += 1
        return f"{self.ts}.00000"

    async def call(self, method: str, path: str, headers: dict | None = None, data=None):
        response = await treq.request(method, self.base + path, headers=headers or {}, data=data, pool=self.pool)
        body = await treq.content(response)
        return response, body

    async def put(self, path: str, data: bytes = b"hello", **headers: str):
        all_headers = {"X-Timestamp": self.stamp(), "Content-Type": "text/plain", **headers}
        return await self.call("PUT", path, all_headers, data)

    async def put_and_flip(self, path: str, data: bytes, offset: int) -> bytearray:
        """PUT ``data``, then flip the bits of one byte of the stored file (bit rot); its new bytes."""
        await self.put(path, data)
        [stored] = self.data_files()
        raw = bytearray(stored.read_bytes())
        raw[offset] ^= 0xFF
        stored.write_bytes(bytes(raw))
        return raw

    def files(self) -> list[str]:
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file())

    def data_files(self) -> list[Path]:
        return sorted(self.root.rglob("*.data"))

    def tmp_files(self) -> list[Path]:
        tmp = self.root / "d1" / "tmp"
        return list(tmp.iterdir()) if tmp.exists() else []

    # --- PUT / GET / HEAD ------------------------------------------------------------------

    async def test_a_small_put_takes_two_thread_calls(self) -> None:
        calls = self.count_thread_calls()
        response, _ = await self.put("/d1/3/a/c/small", b"s" * 4096)
        self.assertEqual(response.code, 201)
        self.assertEqual(calls, ["_open_for_put", "_finish_put"])  # open + admit + temp file; write + commit
        self.assertEqual(self.tmp_files(), [])

    async def test_large_bodies_are_read_past_the_page_cache(self) -> None:
        self.patch(object_server_module, "DIRECT_READ_MIN", 2 * 1024 * 1024)
        self.objects.context = attrs.evolve(self.context, keep_cache_size=1024 * 1024)
        big, middling = os.urandom(3 * 1024 * 1024 + 5), os.urandom(1024 * 1024 + 7)
        await self.put("/d1/3/a/c/big", big)
        await self.put("/d1/3/a/c/middling", middling)
        reads: list[bool] = []  # whether each read of a body (not of a footer) went direct
        preadv, pread = os.preadv, os.pread

        def recorded(read, length):
            def call(fd, *args):
                if length(*args) >= 64 * 1024:
                    reads.append(bool(fcntl.fcntl(fd, fcntl.F_GETFL) & getattr(os, "O_DIRECT", 0)))
                return read(fd, *args)
            return call

        self.patch(diskfile_module.os, "preadv", recorded(preadv, lambda buffers, offset: sum(map(len, buffers))))
        self.patch(diskfile_module.os, "pread", recorded(pread, lambda length, offset: length))

        async def get(name: str, **headers: str) -> bytes:
            reads.clear()
            response, got = await self.call("GET", f"/d1/3/a/c/{name}", headers)
            self.assertIn(response.code, (200, 206))
            return got

        self.assertEqual(await get("big"), big)
        self.assertEqual(reads, [True] * 3)  # 1 MiB each (and 5 bytes)
        got = await get("big", Range="bytes=1000000-2500000")
        self.assertEqual(got, big[1000000:2500001])
        self.assertEqual(reads, [True, True])
        self.assertEqual(await get("middling"), middling)  # past keep_cache_size only: through the cache
        self.assertEqual(set(reads), {False})
        self.objects.context = attrs.evolve(
            self.objects.context, diskfiles=DiskFileManager(self.root, False, PathHasher(b"", b"suffix"), direct_reads=False)
        )
        self.assertEqual(await get("big"), big)  # turned off
        self.assertEqual(set(reads), {False})

    async def test_bodies_go_through_the_io_scheduler_in_the_requests_class(self) -> None:
        scheduler = IOScheduler(self.pools, IOClasses({"gold": IOClass("gold", 4.0), "background": IOClass("background")},
                                                     "gold"), reactor)
        self.objects.context = attrs.evolve(self.context, scheduler=scheduler, keep_cache_size=2 * 1024 * 1024)
        body = os.urandom(3 * 1024 * 1024)
        io = {"X-Backend-Io-Class": "gold", "X-Backend-Io-Tenant": "AUTH_g"}
        response, _ = await self.put("/d1/3/a/c/big", body, **io)
        self.assertEqual(response.code, 201)
        counters = scheduler.counters()["d1"]
        self.assertEqual((counters.write_bytes, counters.read_bytes), (len(body), 0))
        dropped = []
        # (the size of the file whose pages are dropped, how many): the big GET's last call may come
        # after its response, while the small one is read
        self.patch(diskfile_module.os, "posix_fadvise",
                   lambda fd, offset, length, advice: dropped.append((os.fstat(fd).st_size, length)))
        response, got = await self.call("GET", "/d1/3/a/c/big", io)
        self.assertEqual(got, body)
        self.assertEqual((counters.read_bytes, scheduler.tenants()["AUTH_g"].bytes), (len(body), 2 * len(body)))
        self.assertEqual(sum(length for _, length in dropped), len(body))  # past keep_cache_size: let go as read
        # without X-Backend-Io-*: the default class, the account as tenant; small objects stay cached
        dropped.clear()
        await self.put("/d1/3/a/c/small", b"s" * (200 * 1024))
        response, got = await self.call("GET", "/d1/3/a/c/small")
        self.assertEqual((len(got), [d for d in dropped if d[0] < len(body)]), (200 * 1024, []))
        self.assertEqual(scheduler.tenants()["a"].bytes, 2 * 200 * 1024)
        self.assertEqual(counters.streams, 0)
        # an object of a lower class of its own is read in it
        opened = []
        stream = scheduler.stream
        self.patch(scheduler, "stream", lambda *args: opened.append(stream(*args)) or opened[-1])
        await self.put("/d1/3/a/c/own", body, **io, **{"X-Object-Sysmeta-Io-Class": "background"})
        response, got = await self.call("GET", "/d1/3/a/c/own", io)
        self.assertEqual(got, body)
        self.assertEqual([s.spec.io_class for s in opened], ["gold", "background"])  # the PUT's, the GET's

    def count_thread_calls(self) -> list[str]:
        calls: list[str] = []
        pools = self.pools

        class Counting:
            def run(self, key, function, *args, **kwargs):
                calls.append(getattr(function, "__name__", repr(function)))
                return pools.run(key, function, *args, **kwargs)

        self.objects.context = attrs.evolve(self.context, runner=Counting())
        return calls

    async def test_a_small_get_takes_one_thread_call(self) -> None:
        body = bytes(range(256)) * 256  # 64 KiB: the largest body read with its metadata
        await self.put("/d1/3/a/c/small", body, **{"X-Object-Meta-Color": "blue"})
        calls = self.count_thread_calls()
        response, got = await self.call("GET", "/d1/3/a/c/small")
        self.assertEqual((response.code, got), (200, body))
        self.assertEqual(response.headers.getRawHeaders("etag"), [hashlib.md5(body).hexdigest()])
        self.assertEqual(response.headers.getRawHeaders("x-object-meta-color"), ["blue"])
        response, got = await self.call("GET", "/d1/3/a/c/small", {"Range": "bytes=10-19,-5"})
        self.assertEqual(response.code, 206)
        self.assertIn(body[10:20], got)
        self.assertIn(body[-5:], got)
        response, got = await self.call("GET", "/d1/3/a/c/small", {"If-None-Match": hashlib.md5(body).hexdigest()})
        self.assertEqual((response.code, got), (304, b""))
        self.assertEqual(calls, ["_open_for_get"] * 3)
        # One byte more streams through the reader as before.
        await self.put("/d1/3/a/c/larger", body + b"!")
        del calls[:]
        response, got = await self.call("GET", "/d1/3/a/c/larger")
        self.assertEqual((response.code, got), (200, body + b"!"))
        self.assertEqual(calls[0], "_open_for_get")
        self.assertGreater(len(calls), 1)

    async def test_a_corrupt_small_body_is_quarantined_before_answering(self) -> None:
        """The whole body is checked before a byte goes out: a 404, so the proxy reads another replica."""
        data = b"small and rotten" * 100
        raw = await self.put_and_flip("/d1/3/a/c/rot", data, 7)
        response, got = await self.call("GET", "/d1/3/a/c/rot")
        self.assertEqual(response.code, 404)
        self.assertNotIn(bytes(raw[:len(data)]), got)
        self.assertEqual([p for p in self.data_files() if "quarantined" not in p.parts], [])
        self.assertEqual(len(list((self.root / "d1" / "quarantined" / "objects").iterdir())), 1)
        self.flushLoggedErrors()

    async def test_a_corrupt_one_chunk_body_is_a_404_too(self) -> None:
        """Larger than the one-call read, but read in one chunk: checked before any byte goes out."""
        data = b"one chunk, rotten" * (CHUNK_SIZE // 20)
        raw = await self.put_and_flip("/d1/3/a/c/rot", data, len(data) - 3)
        response, got = await self.call("GET", "/d1/3/a/c/rot", {"X-Object-Meta-Ignored": "x"})
        self.assertEqual(response.code, 404)
        self.assertNotIn(bytes(raw[: len(data)]), got)
        for name in ("X-Backend-Timestamp", "X-Backend-Data-Timestamp", "ETag", "X-Timestamp", "Last-Modified"):
            self.assertFalse(response.headers.hasHeader(name), name)  # nothing a proxy could take for a state
        self.assertEqual([p for p in self.data_files() if "quarantined" not in p.parts], [])
        self.flushLoggedErrors()

    async def test_put_get_head(self) -> None:
        body = b"x" * 3_000_000
        response, _ = await self.put("/d1/3/a/c/o", body, **{"X-Object-Meta-Color": "blue"})
        self.assertEqual(response.code, 201)
        etag = hashlib.md5(body).hexdigest()
        self.assertEqual(response.headers.getRawHeaders("etag"), [etag])
        response, got = await self.call("GET", "/d1/3/a/c/o")
        self.assertEqual((response.code, got == body), (200, True))
        h = response.headers
        self.assertEqual(h.getRawHeaders("etag"), [etag])
        self.assertEqual(h.getRawHeaders("content-type"), ["text/plain"])
        self.assertEqual(h.getRawHeaders("x-object-meta-color"), ["blue"])
        self.assertEqual(h.getRawHeaders("x-timestamp"), [f"{self.ts}.00000"])
        self.assertEqual(h.getRawHeaders("last-modified"), ["Tue, 14 Nov 2023 22:13:21 GMT"])
        response, got = await self.call("HEAD", "/d1/3/a/c/o")
        self.assertEqual((response.code, got), (200, b""))
        self.assertEqual(response.headers.getRawHeaders("content-length"), [str(len(body))])
        self.assertEqual(len(self.data_files()), 1)
        self.assertEqual(self.tmp_files(), [])

    async def test_empty_object(self) -> None:
        response, _ = await self.put("/d1/3/a/c/empty", b"")
        self.assertEqual(response.code, 201)
        response, got = await self.call("GET", "/d1/3/a/c/empty")
        self.assertEqual((response.code, got), (200, b""))
        self.assertEqual(response.headers.getRawHeaders("etag"), [hashlib.md5(b"").hexdigest()])

    async def test_chunked_put(self) -> None:
        response, _ = await self.call(
            "PUT", "/d1/3/a/c/chunked", {"X-Timestamp": self.stamp(), "Content-Type": "x/y"},
            ChunkedBody([b"abc"] * 1000),
        )
        self.assertEqual(response.code, 201)
        response, got = await self.call("GET", "/d1/3/a/c/chunked")
        self.assertEqual(got, b"abc" * 1000)

    async def put_with_digest(self, path: str, body: bytes, sent: tuple[str, str] | None = None,
                              known_length: bool = True, **headers: str):
        """
        PUT ``body`` as the proxy does (`txstore.common.body_digest`): chunked, its md5 and
        CRC-32 (or ``sent``; ("", "") sends none) as trailer fields after it, with
        ``known_length`` one chunk of the length ``X-Backend-Obj-Content-Length`` says. The
        node's answer.
        """
        md5, crc = sent or (hashlib.md5(body).hexdigest(), f"{zlib.crc32(body):08x}")
        length = {"X-Backend-Obj-Content-Length": str(len(body))} if known_length else {}
        pool = getattr(self, "digest_pool", None)
        if pool is None:
            pool = self.digest_pool = PutConnectionPool(reactor)
            self.addCleanup(pool.close)
        all_headers = {"X-Timestamp": self.stamp(), "Content-Type": "text/plain", "Transfer-Encoding": "chunked",
                       "X-Backend-Md5-Footer": "crc32", **length, "Expect": "100-continue", **WHERE, **headers}
        conn, reply = await pool.open("127.0.0.1", self.port.getHost().port,
                                      PutRequest.of(path, "127.0.0.1", all_headers), 10)
        if reply is not None:
            return reply
        for start in range(0, len(body), 100_000):
            conn.write(body[start:start + 100_000])
        fields = {"X-Backend-Body-Md5": md5, "X-Backend-Body-Crc32": crc}
        conn.finish({name: value for name, value in fields.items() if value})
        return await conn.answer

    async def test_put_with_the_proxys_md5(self) -> None:
        """The node checks the body against the proxy's CRC-32 and stores the proxy's md5."""
        body = bytes(range(256)) * 5000  # more than one write batch
        md5 = hashlib.md5(body).hexdigest()
        for known_length in (True, False):
            self.containers.calls.clear()
            answer = await self.put_with_digest("/d1/3/a/c/o", body, known_length=known_length)
            self.assertEqual((answer.status, answer.header("etag")), (201, md5))
            self.assertEqual([(m, sent["X-Etag"], sent["X-Size"]) for m, _, _, _, sent in self.containers.calls],
                             [("PUT", md5, str(len(body)))])
            response, got = await self.call("GET", "/d1/3/a/c/o")
            self.assertEqual((response.code, got, response.headers.getRawHeaders("etag")), (200, body, [md5]))
            answer = await self.put_with_digest("/d1/3/a/c/empty", b"", known_length=known_length)
            self.assertEqual((answer.status, answer.header("etag")), (201, hashlib.md5(b"").hexdigest()))

            # The md5 is the proxy's, not computed again: a node takes it once the CRC-32 agrees.
            told = "0123456789abcdef0123456789abcdef"
            answer = await self.put_with_digest("/d1/3/a/c/told", b"told", (told, f"{zlib.crc32(b'told'):08x}"),
                                                known_length=known_length)
            self.assertEqual((answer.status, answer.header("etag")), (201, told))
        self.assertEqual(self.digest_pool.connects, 1)  # one kept connection for all six

    async def test_a_body_stored_with_the_proxys_md5_is_read_against_its_crc32(self) -> None:
        """Reads check such a body against the CRC-32 the node confirmed, not the md5 (a sixth the cost)."""
        body = os.urandom(300_000)
        told = "0123456789abcdef0123456789abcdef"  # not the body's md5: only the CRC-32 can pass it
        answer = await self.put_with_digest("/d1/3/a/c/o", body, (told, f"{zlib.crc32(body):08x}"))
        self.assertEqual(answer.status, 201)
        [stored] = self.data_files()
        self.assertIn(f'"X-Body-Checksum":"crc32:{zlib.crc32(body):08x}"'.encode(), stored.read_bytes()[len(body):])
        response, got = await self.call("GET", "/d1/3/a/c/o")
        self.assertEqual((response.code, got, response.headers.getRawHeaders("etag")), (200, body, [told]))
        self.assertFalse(response.headers.hasHeader("X-Body-Checksum"))
        response, _ = await self.call("POST", "/d1/3/a/c/o", {"X-Timestamp": self.stamp(), "X-Object-Meta-A": "1"})
        self.assertEqual(response.code, 202)
        response, got = await self.call("GET", "/d1/3/a/c/o")  # kept through a POST
        self.assertEqual((response.code, got), (200, body))
        raw = bytearray(stored.read_bytes())
        raw[1000] ^= 0x01
        stored.write_bytes(bytes(raw))
        response, _ = await self.call("GET", "/d1/3/a/c/o")
        self.assertEqual(response.code, 404)
        self.assertEqual([p for p in self.data_files() if "quarantined" not in p.parts], [])

    async def test_put_whose_crc32_differs_from_the_proxys_leaves_nothing(self) -> None:
        body = b"bytes changed on the way" * 1000
        answer = await self.put_with_digest("/d1/3/a/c/o", body, (hashlib.md5(body).hexdigest(),
                                                                   f"{zlib.crc32(body) ^ 1:08x}"))
        self.assertEqual((answer.status, answer.body),
                         (422, b"Unprocessable Entity: the body's CRC-32 differs from the proxy's\n"))
        self.assertEqual((self.data_files(), self.tmp_files(), self.containers.calls), ([], [], []))

    async def test_put_with_the_proxys_md5_checks_the_clients_etag(self) -> None:
        answer = await self.put_with_digest("/d1/3/a/c/o", b"hello", ETag="0" * 32)
        self.assertEqual(answer.status, 422)
        self.assertEqual((self.data_files(), self.tmp_files()), ([], []))
        answer = await self.put_with_digest("/d1/3/a/c/o", b"hello", ETag=f'"{hashlib.md5(b"hello").hexdigest()}"')
        self.assertEqual(answer.status, 201)

    async def test_put_announcing_the_proxys_md5_without_it_is_refused(self) -> None:
        good = hashlib.md5(b"hello").hexdigest()
        for sent in (("", ""), (good, ""), ("not hex", f"{zlib.crc32(b'hello'):08x}")):
            answer = await self.put_with_digest("/d1/3/a/c/o", b"hello", sent)
            self.assertEqual(answer.status, 400, sent)
            self.assertIn(b"needs the body's md5 and CRC-32", answer.body)
        answer = await self.put_with_digest("/d1/3/a/c/o", b"hello", **{"X-Backend-Md5-Footer": "sha1"})
        self.assertEqual(answer.status, 400)
        response, body = await self.put("/d1/3/a/c/o", b"hello", **{"X-Backend-Md5-Footer": "crc32"})
        self.assertEqual((response.code, body), (400, b"X-Backend-Md5-Footer needs a chunked body\n"))
        self.assertEqual((self.data_files(), self.tmp_files()), ([], []))

    async def test_put_with_the_proxys_md5_checks_its_length(self) -> None:
        """A body shorter than the length the proxy said is a client that went away."""
        headers = {"X-Timestamp": self.stamp(), "Content-Type": "text/plain", "X-Backend-Md5-Footer": "crc32",
                   "X-Backend-Obj-Content-Length": "6"}
        response, _ = await self.call("PUT", "/d1/3/a/c/o", headers, ChunkedBody([b"hel", b"lo"]))
        self.assertEqual(response.code, 499)
        self.assertEqual((self.data_files(), self.tmp_files()), ([], []))

    async def test_bad_etag_leaves_nothing(self) -> None:
        response, body = await self.put("/d1/3/a/c/o", b"hello", ETag="0" * 32)
        self.assertEqual(response.code, 422)
        self.assertEqual(self.data_files(), [])
        self.assertEqual(self.tmp_files(), [])
        response, _ = await self.put("/d1/3/a/c/o", b"hello", ETag=hashlib.md5(b"hello").hexdigest())
        self.assertEqual(response.code, 201)

    async def test_put_checks(self) -> None:
        response, body = await self.call("PUT", "/d1/3/a/c/o", {"Content-Type": "x/y"}, b"a")
        self.assertEqual((response.code, body), (400, b"Missing X-Timestamp header\n"))
        response, body = await self.call("PUT", "/d1/3/a/c/o", {"X-Timestamp": "soon", "Content-Type": "x/y"}, b"a")
        self.assertEqual(response.code, 400)
        response, body = await self.call("PUT", "/d1/3/a/c/o", {"X-Timestamp": self.stamp()}, b"a")
        self.assertEqual((response.code, body), (400, b"No content type\n"))
        response, body = await self.put("/d1/3/a/c/o", b"a", **{"X-Object-Meta-Big": "v" * 257})
        self.assertEqual(response.code, 400)
        self.assertIn(b"Metadata value longer than 256", body)
        response, body = await self.put("/d1/3/a/c/o", b"a", **{"X-Delete-At": str(int(self.clock.seconds()) - 1)})
        self.assertEqual((response.code, body), (400, b"X-Delete-At in past\n"))
        response, body = await self.put("/d1/3/a/c/o", b"a", **{"X-Delete-At": "tomorrow"})
        self.assertEqual(response.code, 400)
        response, body = await self.put("/d1/3/a/c/" + "n" * 1025, b"a")
        self.assertEqual(response.code, 400)
        response, body = await self.put("/nodev/3/a/c/o", b"a")
        self.assertEqual(response.code, 507)
        self.assertEqual(self.files(), [])

    async def test_timestamps_and_if_none_match(self) -> None:
        response, _ = await self.put("/d1/3/a/c/o", b"new")
        newest = self.ts
        response, body = await self.call(
            "PUT", "/d1/3/a/c/o", {"X-Timestamp": f"{newest - 5}.00000", "Content-Type": "x/y"}, b"old"
        )
        self.assertEqual(response.code, 409)
        self.assertEqual(response.headers.getRawHeaders("x-backend-timestamp"), [f"{newest}.00000"])
        response, _ = await self.call(
            "PUT", "/d1/3/a/c/o", {"X-Timestamp": f"{newest}.00000", "Content-Type": "x/y"}, b"same"
        )
        self.assertEqual(response.code, 409)
        response, _ = await self.put("/d1/3/a/c/o", b"again", **{"If-None-Match": "*"})
        self.assertEqual(response.code, 412)
        response, _ = await self.put("/d1/3/a/c/other", b"first", **{"If-None-Match": "*"})
        self.assertEqual(response.code, 201)
        _, got = await self.call("GET", "/d1/3/a/c/o")
        self.assertEqual(got, b"new")

    async def test_the_same_write_found_stored_is_stored(self) -> None:
        """
        A PUT whose very write (its timestamp, its body) a replicator brought here first, before
        it began or while its body streamed: 201, as if it had written it, and one copy on disk.
        """
        response, _ = await self.put("/d1/3/a/c/o", b"the body", **WHERE)
        when = f"{self.ts}.00000"
        self.containers.calls.clear()
        response, _ = await self.call("PUT", "/d1/3/a/c/o",
                                      {"X-Timestamp": when, "Content-Type": "text/plain", **WHERE}, b"the body")
        self.assertEqual((response.code, response.headers.getRawHeaders("etag")),
                         (201, [hashlib.md5(b"the body").hexdigest()]))
        self.assertEqual((len(self.data_files()), self.tmp_files()), (1, []))
        self.assertEqual([(m, sent["X-Etag"]) for m, _, _, _, sent in self.containers.calls],
                         [("PUT", hashlib.md5(b"the body").hexdigest())])

        # While the body streams: the replica arrives between the PUT's start and its commit.
        body = bytes(range(256)) * 4096  # 1 MiB: more than one write batch
        when = self.stamp()
        pool = PutConnectionPool(reactor)
        self.addCleanup(pool.close)
        headers = {"X-Timestamp": when, "Content-Type": "text/plain", "Content-Length": str(len(body)),
                   "Expect": "100-continue"}
        conn, reply = await pool.open("127.0.0.1", self.port.getHost().port,
                                      PutRequest.of("/d1/3/a/c/p", "127.0.0.1", headers), 10)
        self.assertIsNone(reply)
        conn.write(body[:100_000])
        diskfile = self.diskfiles.get_diskfile("d1", 3, "a", "c", "p", 0)
        with diskfile.create_writer(len(body)) as copied:  # what the receiver of a replication does
            copied.write(body)
            copied.commit({"Content-Type": "text/plain", "Content-Length": str(len(body))}, when)
        conn.write(body[100_000:])
        conn.finish()
        answer = await conn.answer
        self.assertEqual((answer.status, answer.header("etag")), (201, hashlib.md5(body).hexdigest()))
        response, got = await self.call("GET", "/d1/3/a/c/p")
        self.assertEqual((response.code, got), (200, body))
        self.assertEqual((len(self.data_files()), self.tmp_files()), (2, []))

    async def test_concurrent_puts_newest_wins(self) -> None:
        stamps = [f"{self.ts + i}.00000" for i in (3, 1, 5, 2, 4)]
        calls = [
            self.call("PUT", "/d1/3/a/c/race", {"X-Timestamp": stamp, "Content-Type": "x/y"}, stamp.encode() * 20000)
            for stamp in stamps
        ]
        results = await gatherResults([Deferred.fromCoroutine(c) for c in calls])
        self.assertIn(201, [r.code for r, _ in results])
        self.assertTrue(all(r.code in (201, 409) for r, _ in results))
        _, got = await self.call("GET", "/d1/3/a/c/race")
        self.assertEqual(got, f"{self.ts + 5}.00000".encode() * 20000)
        self.assertEqual(len(self.data_files()), 1)
        self.assertEqual(self.tmp_files(), [])

    # --- ranges and conditions -------------------------------------------------------------

    async def test_ranges(self) -> None:
        data = bytes(range(256)) * 4
        await self.put("/d1/3/a/c/r", data)
        response, got = await self.call("GET", "/d1/3/a/c/r", {"Range": "bytes=10-19"})
        self.assertEqual((response.code, got), (206, data[10:20]))
        self.assertEqual(response.headers.getRawHeaders("content-range"), ["bytes 10-19/1024"])
        response, got = await self.call("GET", "/d1/3/a/c/r", {"Range": "bytes=-4"})
        self.assertEqual(got, data[-4:])
        response, got = await self.call("GET", "/d1/3/a/c/r", {"Range": "bytes=0-1,1000-"})
        self.assertEqual(response.code, 206)
        [ctype] = response.headers.getRawHeaders("content-type")
        self.assertTrue(ctype.startswith("multipart/byteranges;boundary="))
        boundary = ctype.split("=", 1)[1].encode()
        parts = got.split(b"--" + boundary)
        self.assertEqual(len(parts), 4)
        self.assertIn(b"Content-Range: bytes 0-1/1024\r\n\r\n" + data[:2] + b"\r\n", parts[1])
        self.assertIn(b"Content-Range: bytes 1000-1023/1024\r\n\r\n" + data[1000:] + b"\r\n", parts[2])
        self.assertEqual(parts[3], b"--\r\n")
        response, _ = await self.call("GET", "/d1/3/a/c/r", {"Range": "bytes=5000-"})
        self.assertEqual(response.code, 416)
        self.assertEqual(response.headers.getRawHeaders("content-range"), ["bytes */1024"])
        response, got = await self.call("GET", "/d1/3/a/c/r", {"Range": "bytes=garbage"})
        self.assertEqual((response.code, got), (200, data))

    async def test_conditions(self) -> None:
        await self.put("/d1/3/a/c/o", b"hello")
        etag = hashlib.md5(b"hello").hexdigest()
        for headers, status in [
            ({"If-None-Match": etag}, 304),
            ({"If-None-Match": '"other"'}, 200),
            ({"If-Match": etag}, 200),
            ({"If-Match": "other"}, 412),
            ({"If-Modified-Since": "Tue, 14 Nov 2023 22:13:21 GMT"}, 304),
            ({"If-Modified-Since": "Tue, 14 Nov 2023 22:13:20 GMT"}, 200),
            ({"If-Unmodified-Since": "Tue, 14 Nov 2023 22:13:20 GMT"}, 412),
        ]:
            response, body = await self.call("GET", "/d1/3/a/c/o", headers)
            self.assertEqual(response.code, status, headers)
            if status == 304:
                self.assertEqual(body, b"")
                self.assertEqual(response.headers.getRawHeaders("etag"), [etag])

    # --- POST, DELETE, expiry --------------------------------------------------------------

    async def test_post_replaces_metadata(self) -> None:
        await self.put("/d1/3/a/c/o", b"hello", **{"X-Object-Meta-A": "1", "X-Object-Meta-B": "2"})
        response, _ = await self.call(
            "POST", "/d1/3/a/c/o", {"X-Timestamp": self.stamp(), "X-Object-Meta-C": "3", "Content-Type": "x/new"}
        )
        self.assertEqual(response.code, 202)
        response, got = await self.call("GET", "/d1/3/a/c/o")
        self.assertEqual(got, b"hello")
        h = response.headers
        self.assertEqual(h.getRawHeaders("x-object-meta-c"), ["3"])
        self.assertIsNone(h.getRawHeaders("x-object-meta-a"))
        self.assertEqual(h.getRawHeaders("content-type"), ["x/new"])
        self.assertEqual(h.getRawHeaders("etag"), [hashlib.md5(b"hello").hexdigest()])
        response, _ = await self.call("POST", "/d1/3/a/c/missing", {"X-Timestamp": self.stamp()})
        self.assertEqual(response.code, 404)
        response, _ = await self.call("POST", "/d1/3/a/c/o", {"X-Timestamp": "1.00000"})
        self.assertEqual(response.code, 409)

    async def test_delete(self) -> None:
        await self.put("/d1/3/a/c/o", b"hello")
        response, _ = await self.call("DELETE", "/d1/3/a/c/o", {"X-Timestamp": self.stamp()})
        self.assertEqual(response.code, 204)
        deleted_at = f"{self.ts}.00000"
        response, _ = await self.call("GET", "/d1/3/a/c/o")
        self.assertEqual(response.code, 404)
        self.assertEqual(response.headers.getRawHeaders("x-backend-timestamp"), [deleted_at])
        response, _ = await self.call("DELETE", "/d1/3/a/c/o", {"X-Timestamp": self.stamp()})
        self.assertEqual(response.code, 404)
        response, _ = await self.call("DELETE", "/d1/3/a/c/o", {"X-Timestamp": "1.00000"})
        self.assertEqual(response.code, 409)
        self.assertEqual(self.data_files(), [])
        self.assertEqual(len(list(self.root.rglob("*.ts"))), 1)

    async def test_delete_if_delete_at(self) -> None:
        """As Swift's: only the object whose X-Delete-At is the one named is deleted."""
        at = str(int(self.clock.seconds()) + 100)
        response, _ = await self.call("DELETE", "/d1/3/a/c/o", {"X-Timestamp": self.stamp(), "X-If-Delete-At": at})
        self.assertEqual(response.code, 404)  # nothing there: no tombstone either
        self.assertEqual(list(self.root.rglob("*.ts")), [])
        await self.put("/d1/3/a/c/o", b"hello", **{"X-Delete-At": at})
        for value, status in (("bad", 400), (str(int(at) + 1), 412)):
            response, body = await self.call("DELETE", "/d1/3/a/c/o", {"X-Timestamp": self.stamp(),
                                                                       "X-If-Delete-At": value})
            self.assertEqual(response.code, status, value)
        self.assertEqual(body, b"X-If-Delete-At and X-Delete-At do not match\n")
        response, _ = await self.call("DELETE", "/d1/3/a/c/o", {"X-Timestamp": "1.00000", "X-If-Delete-At": at})
        self.assertEqual(response.code, 409)
        self.assertEqual(len(self.data_files()), 1)
        response, _ = await self.call("DELETE", "/d1/3/a/c/o", {"X-Timestamp": self.stamp(), "X-If-Delete-At": at})
        self.assertEqual(response.code, 204)
        self.assertEqual(self.data_files(), [])

    async def test_expiry(self) -> None:
        await self.put("/d1/3/a/c/o", b"hello", **{"X-Delete-At": str(int(self.clock.seconds()) + 10)})
        response, _ = await self.call("GET", "/d1/3/a/c/o")
        self.assertEqual(response.code, 200)
        [entry] = self.diskfiles.list_expiring("d1", self.clock.seconds() + 10)
        self.assertEqual(self.diskfiles.read_expiring(entry).delete_at, int(self.clock.seconds()) + 10)
        self.clock.advance(10)
        response, _ = await self.call("GET", "/d1/3/a/c/o")
        self.assertEqual(response.code, 404)
        response, _ = await self.call("POST", "/d1/3/a/c/o", {"X-Timestamp": self.stamp()})
        self.assertEqual(response.code, 404)
        response, _ = await self.put("/d1/3/a/c/o", b"again", **{"If-None-Match": "*"})
        self.assertEqual(response.code, 201)

    # --- names, container updates ----------------------------------------------------------

    async def test_odd_names_round_trip(self) -> None:
        for name in ["a//b", "dir/", "%252F", "\U0001f600 emoji", "n" * 1024, "<&>\"'", ".."]:
            quoted = "".join(c if c.isalnum() or c in "/." else "%%%02X" % b for c in name for b in c.encode())
            response, _ = await self.put(f"/d1/3/a/c/{quoted}", name.encode())
            self.assertEqual(response.code, 201, name)
            response, got = await self.call("GET", f"/d1/3/a/c/{quoted}")
            self.assertEqual((response.code, got), (200, name.encode()), name)
        self.assertEqual(len(self.data_files()), 7)

    async def test_container_update(self) -> None:
        headers = {
            "X-Container-Host": "127.0.0.1:6211, 127.0.0.2:6221",
            "X-Container-Device": "c1,c2",
            "X-Container-Partition": "7",
            "X-Trans-Id": "tx123",
        }
        response, _ = await self.put("/d1/3/a/c/o", b"hello", **headers)
        self.assertEqual(response.code, 201)
        self.assertEqual([c[:4] for c in self.containers.calls],
                         [("PUT", "127.0.0.1", 6211, "/c1/7/a/c/o"), ("PUT", "127.0.0.2", 6221, "/c2/7/a/c/o")])
        sent = self.containers.calls[0][4]
        self.assertEqual(sent["X-Size"], "5")
        self.assertEqual(sent["X-Etag"], hashlib.md5(b"hello").hexdigest())
        self.assertEqual(sent["X-Content-Type"], "text/plain")
        self.assertEqual(sent["X-Timestamp"], f"{self.ts}.00000")
        self.assertEqual(sent["X-Backend-Server-Type"], "container")
        self.assertEqual(sent["X-Trans-Id"], "tx123")
        self.containers.fail = True
        response, _ = await self.call("DELETE", "/d1/3/a/c/o", {"X-Timestamp": self.stamp(), **headers})
        self.assertEqual(response.code, 204)
        pendings = self.diskfiles.list_async_pendings("d1")
        self.assertEqual(len(pendings), 1)
        record = self.diskfiles.read_async_pending(pendings[0])
        self.assertEqual((record.op, record.account, record.container, record.obj), ("DELETE", "a", "c", "o"))

    async def test_container_update_carries_the_clients_bytes(self) -> None:
        """Issue 20: ``Content-Type: text/é€`` reached no listing (the update could not be sent)."""
        where = {"X-Container-Host": "127.0.0.1:6211", "X-Container-Device": "c1", "X-Container-Partition": "7"}
        response, _ = await self.put("/d1/3/a/c/o", b"hi", **where, **{"Content-Type": "text/\u00e9\u20ac".encode()})
        self.assertEqual(response.code, 201)
        sent = self.containers.calls[-1][4]
        self.assertEqual(sent["X-Content-Type"].encode("latin-1"), "text/\u00e9\u20ac".encode())  # wire form
        self.containers.fail = True
        await self.put("/d1/3/a/c/p", b"hi", **where, **{"Content-Type": "text/\u00e9".encode()})
        [pending] = self.diskfiles.list_async_pendings("d1")
        record = self.diskfiles.read_async_pending(pending)
        self.assertEqual(record.headers["X-Content-Type"].encode("latin-1"), "text/\u00e9".encode())

    async def test_metadata_bytes_that_are_not_utf8_round_trip(self) -> None:
        """As Swift's: an object's metadata is stored and sent back byte for byte (no 500)."""
        response, _ = await self.put("/d1/3/a/c/o", b"hi", **{"X-Object-Meta-Cut": b"ok\xc3", "X-Object-Meta-Ok": b"\xc3\xa9"})
        self.assertEqual(response.code, 201)
        response, _ = await self.call("HEAD", "/d1/3/a/c/o")
        self.assertEqual((response.code, response.headers.getRawHeaders(b"x-object-meta-cut"),
                          response.headers.getRawHeaders(b"x-object-meta-ok")), (200, [b"ok\xc3"], [b"\xc3\xa9"]))
        response, _ = await self.call("POST", "/d1/3/a/c/o", {"X-Timestamp": self.stamp(), "X-Object-Meta-Cut": b"\xff"})
        self.assertEqual(response.code, 202)
        response, body = await self.call("GET", "/d1/3/a/c/o")
        self.assertEqual((response.code, body, response.headers.getRawHeaders(b"x-object-meta-cut")), (200, b"hi", [b"\xff"]))

    async def test_container_row_overrides(self) -> None:
        """A middleware's Container-Update-Override sysmeta is what the row says, on PUT and POST."""
        where = {"X-Container-Host": "127.0.0.1:6211", "X-Container-Device": "c1", "X-Container-Partition": "7"}
        manifest_md5 = hashlib.md5(b"[]").hexdigest()
        response, _ = await self.put("/d1/3/a/c/big", b"[]", **where, **{
            "X-Object-Sysmeta-Container-Update-Override-Etag": f"{manifest_md5}; slo_etag=abc",
            "X-Object-Sysmeta-Container-Update-Override-Size": "5000000",
        })
        self.assertEqual(response.code, 201)
        self.assertEqual(response.headers.getRawHeaders("etag"), [manifest_md5])
        sent = self.containers.calls[-1][4]
        self.assertEqual((sent["X-Etag"], sent["X-Size"], sent["X-Content-Type"]),
                         (f"{manifest_md5}; slo_etag=abc", "5000000", "text/plain"))
        # A POST without a content type leaves the row alone ...
        calls = len(self.containers.calls)
        response, _ = await self.call("POST", "/d1/3/a/c/big", {"X-Timestamp": self.stamp(), **where})
        self.assertEqual((response.code, len(self.containers.calls)), (202, calls))
        # ... one with a content type sends the row again, overrides kept, at the POST's time.
        stamp = self.stamp()
        response, _ = await self.call("POST", "/d1/3/a/c/big", {"X-Timestamp": stamp, "Content-Type": "x/y", **where})
        self.assertEqual(response.code, 202)
        method, _, _, path, sent = self.containers.calls[-1]
        self.assertEqual((method, path, sent["X-Timestamp"]), ("PUT", "/c1/7/a/c/big", stamp))
        self.assertEqual((sent["X-Etag"], sent["X-Size"], sent["X-Content-Type"]),
                         (f"{manifest_md5}; slo_etag=abc", "5000000", "x/y"))
        # ... and a POST after it without one keeps that type (the row is left alone again).
        calls = len(self.containers.calls)
        response, _ = await self.call("POST", "/d1/3/a/c/big", {"X-Timestamp": self.stamp(), "X-Object-Meta-A": "1"})
        self.assertEqual((response.code, len(self.containers.calls)), (202, calls))
        response, _ = await self.call("HEAD", "/d1/3/a/c/big", {})
        self.assertEqual((response.headers.getRawHeaders("content-type"), response.headers.getRawHeaders("x-object-meta-a")),
                         (["x/y"], ["1"]))
        # An overridden content type wins over the stored one (a symlink's target's).
        await self.put("/d1/3/a/c/link", b"", **where, **{
            "X-Object-Sysmeta-Container-Update-Override-Content-Type": "image/png"})
        self.assertEqual(self.containers.calls[-1][4]["X-Content-Type"], "image/png")

    async def test_etag_is_at_and_ignored_ranges(self) -> None:
        """What a manifest's GET needs: conditionals on another stored value, the whole body for a range."""
        data = b"0123456789"
        md5 = hashlib.md5(data).hexdigest()
        await self.put("/d1/3/a/c/m", data, **{"X-Object-Sysmeta-Slo-Etag": "largeetag", "X-Static-Large-Object": "True"})
        await self.put("/d1/3/a/c/plain", data)
        at = {"X-Backend-Etag-Is-At": "X-Object-Sysmeta-Missing, x-object-sysmeta-slo-etag"}
        for headers, status in [
            ({**at, "If-Match": '"largeetag"'}, 200),
            ({**at, "If-Match": md5}, 412),
            ({**at, "If-None-Match": "largeetag"}, 304),
            ({**at, "If-None-Match": md5}, 200),
            ({"If-Match": md5}, 200),
        ]:
            response, body = await self.call("GET", "/d1/3/a/c/m", headers)
            self.assertEqual(response.code, status, headers)
            # The answer's ETag is the stored bytes' own whatever was compared.
            self.assertEqual(response.headers.getRawHeaders("etag"), [md5])
        # No named value stored: the object's ETag is compared.
        response, _ = await self.call("GET", "/d1/3/a/c/plain", {**at, "If-Match": md5})
        self.assertEqual(response.code, 200)
        ignore = {"X-Backend-Ignore-Range-If-Metadata-Present": "X-Object-Manifest, x-static-large-object",
                  "Range": "bytes=2-3"}
        response, body = await self.call("GET", "/d1/3/a/c/m", ignore)
        self.assertEqual((response.code, body), (200, data))
        self.assertIsNone(response.headers.getRawHeaders("content-range"))
        response, body = await self.call("GET", "/d1/3/a/c/plain", ignore)
        self.assertEqual((response.code, body), (206, b"23"))

    async def test_a_silent_container_replica_costs_at_most_the_update_timeout(self) -> None:
        """The row is left to the updater (an async pending) instead of holding the client's answer."""
        ports = []
        for _ in range(3):
            silent = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
            self.addCleanup(silent.stopListening)
            ports.append(silent.getHost().port)
        client = BackendClient(reactor)
        self.addCleanup(client.close)
        self.objects.context = attrs.evolve(self.context, client=client, container_update_timeout=0.5)
        headers = {
            "X-Container-Host": ",".join(f"127.0.0.1:{port}" for port in ports),
            "X-Container-Device": "c1,c2,c3",
            "X-Container-Partition": "7",
        }
        started = reactor.seconds()
        response, _ = await self.put("/d1/3/a/c/o", b"hello", **headers)
        self.assertEqual(response.code, 201)
        # The three wait together: about 0.5 s, not 3 × 0.5 s, nor the 3 s node_timeout.
        self.assertLess(reactor.seconds() - started, 1.4)
        [pending] = self.diskfiles.list_async_pendings("d1")
        self.assertEqual(self.diskfiles.read_async_pending(pending).op, "PUT")

    # --- faults ----------------------------------------------------------------------------

    async def test_client_gone_mid_put_leaves_nothing(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port.getHost().port))
        sock.sendall(
            b"PUT /d1/3/a/c/partial HTTP/1.1\r\nHost: x\r\nX-Timestamp: 1700000099.00000\r\n"
            b"Content-Type: x/y\r\nContent-Length: 100000\r\n\r\n" + b"z" * 5000
        )
        await deferLater(reactor, 0.3, lambda: None)
        self.assertEqual(len(self.tmp_files()), 1)  # the upload is in progress
        sock.close()
        for _ in range(100):
            await deferLater(reactor, 0.05, lambda: None)
            if not self.tmp_files():
                break
        self.assertEqual(self.tmp_files(), [])
        self.assertEqual(self.data_files(), [])
        response, _ = await self.call("GET", "/d1/3/a/c/partial")
        self.assertEqual(response.code, 404)
        self.flushLoggedErrors()

    async def test_corrupt_body_is_never_served_whole(self) -> None:
        data = b"0123456789" * (CHUNK_SIZE // 4)  # two and a half chunks: the rot is found mid-response
        await self.put_and_flip("/d1/3/a/c/rot", data, 2 * CHUNK_SIZE + 7)
        # a range read does not verify the whole body, and serves what is there
        response, got = await self.call("GET", "/d1/3/a/c/rot", {"Range": "bytes=0-9"})
        self.assertEqual(got, data[:10])
        with self.assertRaises(ResponseFailed):
            await self.call("GET", "/d1/3/a/c/rot")
        # the whole read found the rot: the object left service for replication to replace
        response, _ = await self.call("GET", "/d1/3/a/c/rot")
        self.assertEqual(response.code, 404)
        self.assertEqual([p for p in self.data_files() if "quarantined" not in p.parts], [])
        quarantined = list((self.root / "d1" / "quarantined" / "objects").iterdir())
        self.assertEqual(len(quarantined), 1)
        self.assertEqual(len(list(quarantined[0].glob("*.data"))), 1)


# A replicated default and an EC 2+1 policy, as a node serving both sees them.
EC_POLICIES = PolicyCollection((
    StoragePolicy(0, "gold", is_default=True),
    StoragePolicy(2, "ec21", ERASURE_CODING, ec=ECParameters("liberasurecode_rs_vand", 2, 1)),
))
EC = {"X-Backend-Storage-Policy-Index": "2"}
WHERE = {"X-Container-Host": "127.0.0.1:6211", "X-Container-Device": "c1", "X-Container-Partition": "7"}


class ECObjectServerTests(TestCase):
    """The object server of an EC policy: fragment archives, the durable mark, what is served."""

    timeout = 60
    stamp = ObjectServerTests.stamp
    call = ObjectServerTests.call
    files = ObjectServerTests.files
    tmp_files = ObjectServerTests.tmp_files

    def setUp(self) -> None:
        ObjectServerTests.setUp(self)
        self.diskfiles = DiskFileManager(self.root, False, PathHasher(b"", b"suffix"), ec_policies={2})
        self.objects.context = attrs.evolve(self.context, policies=EC_POLICIES, diskfiles=self.diskfiles)

    async def put_archive(self, path: str, body: bytes, index: int | str | None, **headers: str):
        """PUT fragment archive ``index`` of an object whose whole body is 1000 bytes."""
        all_headers = {
            "X-Timestamp": self.stamp(), "Content-Type": "text/plain", **EC, **WHERE,
            "X-Object-Sysmeta-Ec-Content-Length": "1000", "X-Object-Sysmeta-Ec-Etag": "e" * 32, **headers,
        }
        if index is not None:
            all_headers["X-Object-Sysmeta-Ec-Frag-Index"] = str(index)
        response, _ = await self.call("PUT", path, all_headers, body)
        return response, all_headers["X-Timestamp"]

    async def durable(self, path: str, when: str, index: int | str | None, **headers: str):
        all_headers = {"X-Backend-Ec-Durable": when, **EC, **WHERE, **headers}
        if index is not None:
            all_headers["X-Backend-Fragment-Index"] = str(index)
        response, body = await self.call("POST", path, all_headers)
        return response

    def object_files(self) -> list[str]:
        """The files in the EC policy's object directories (d1/objects-2/<part>/<suffix>/<hash>/)."""
        return [f.rsplit("/", 1)[1] for f in self.files() if f.startswith("d1/objects-2/") and f.count("/") == 5]

    async def test_an_archive_is_stored_non_durable_and_not_listed(self) -> None:
        response, when = await self.put_archive("/d1/3/a/c/o", b"fragment-3", 2)
        self.assertEqual(response.code, 201)
        self.assertEqual(response.headers.getRawHeaders("etag"), [f"crc32:{zlib.crc32(b'fragment-3'):08x}"])
        self.assertEqual(self.object_files(), [f"{when}#2.data"])
        self.assertEqual(self.containers.calls, [])  # listed only once durable
        for method in ("GET", "HEAD"):
            response, _ = await self.call(method, "/d1/3/a/c/o", EC)
            self.assertEqual(response.code, 404, method)
        response, _ = await self.call("POST", "/d1/3/a/c/o", {"X-Timestamp": self.stamp(), **EC})
        self.assertEqual(response.code, 404)

    async def test_a_put_without_a_valid_fragment_index_is_a_400(self) -> None:
        for index in (None, "", "x", "-1", "3", "01", "1.0"):
            response, _ = await self.put_archive("/d1/3/a/c/o", b"fragment", index)
            self.assertEqual(response.code, 400, index)
        self.assertEqual(self.object_files(), [])
        self.assertEqual(self.tmp_files(), [])

    async def test_the_durable_mark_serves_the_archive_and_lists_the_object(self) -> None:
        response, when = await self.put_archive("/d1/3/a/c/o", b"fragment-1", 1, **{"X-Object-Meta-Color": "blue"})
        response = await self.durable("/d1/3/a/c/o", when, 1, **{"X-Trans-Id": "tx9"})
        self.assertEqual(response.code, 202)
        self.assertEqual(self.object_files(), [f"{when}#1#d.data"])
        [(method, host, port, row_path, sent)] = self.containers.calls
        self.assertEqual((method, host, port, row_path), ("PUT", "127.0.0.1", 6211, "/c1/7/a/c/o"))
        # The whole object's length and ETag, not the archive's.
        self.assertEqual((sent["X-Size"], sent["X-Etag"], sent["X-Content-Type"]), ("1000", "e" * 32, "text/plain"))
        self.assertEqual((sent["X-Timestamp"], sent["X-Backend-Storage-Policy-Index"], sent["X-Trans-Id"]),
                         (when, "2", "tx9"))
        response, got = await self.call("GET", "/d1/3/a/c/o", EC)
        self.assertEqual((response.code, got), (200, b"fragment-1"))
        headers = response.headers
        self.assertEqual(headers.getRawHeaders("x-object-sysmeta-ec-frag-index"), ["1"])
        self.assertEqual(headers.getRawHeaders("x-object-sysmeta-ec-content-length"), ["1000"])
        self.assertEqual(headers.getRawHeaders("x-backend-durable-timestamp"), [when])
        self.assertEqual(headers.getRawHeaders("x-object-meta-color"), ["blue"])
        self.assertEqual(headers.getRawHeaders("etag"), [f"crc32:{zlib.crc32(b'fragment-1'):08x}"])
        response, got = await self.call("HEAD", "/d1/3/a/c/o", EC)
        self.assertEqual((response.code, response.headers.getRawHeaders("content-length")), (200, ["10"]))
        # Marking it again changes nothing on disk (the row is sent again: it is idempotent).
        self.assertEqual((await self.durable("/d1/3/a/c/o", when, 1)).code, 202)
        self.assertEqual(self.object_files(), [f"{when}#1#d.data"])

    async def commit_here(self, path: str, archive: bytes, then: list[bytes], **headers: str):
        """
        PUT archive 1 of a 1000-byte object made durable on its own connection: the archive and
        its footer line, then (once the node says it stored them) ``then``, then the body's end.
        The node's 100 Continue fields, whether it said it stored the archive, its answer.
        """
        pool = PutConnectionPool(reactor)
        self.addCleanup(pool.close)
        all_headers = {
            "X-Timestamp": self.stamp(), "Content-Type": "text/plain", **EC, **WHERE,
            "X-Object-Sysmeta-Ec-Frag-Index": "1", "Transfer-Encoding": "chunked", "Expect": "100-continue",
            "X-Backend-Ec-Commit": "on-connection", "X-Backend-Ec-Archive-Length": str(len(archive)), **headers,
        }
        footer = b'{"X-Object-Sysmeta-Ec-Etag": "%s", "X-Object-Sysmeta-Ec-Content-Length": "1000"}\n' % (b"e" * 32)
        conn, reply = await pool.open("127.0.0.1", self.port.getHost().port,
                                      PutRequest.of(path, "127.0.0.1", all_headers), 10)
        if reply is not None:
            return {}, False, reply, all_headers["X-Timestamp"]
        conn.write(archive + footer)  # in one piece: the node finds where the archive ends
        stored = await conn.wait_stored()
        self.stored_files = self.object_files()
        for line in then:
            conn.write(line)
        conn.finish()
        answer = await conn.answer
        return conn.continue_headers, stored is None, answer, all_headers["X-Timestamp"]

    async def test_an_archive_made_durable_on_its_own_connection(self) -> None:
        agreed, stored, answer, when = await self.commit_here("/d1/3/a/c/o", b"fragment-1", [b"commit\n"])
        self.assertEqual(agreed.get("x-backend-ec-commit"), "on-connection")
        self.assertTrue(stored)
        self.assertEqual(self.stored_files, [f"{when}#1.data"])  # on disk, not durable, before the commit
        self.assertEqual((answer.status, answer.header("x-backend-ec-committed")), (201, "yes"))
        self.assertEqual(answer.header("etag"), f"crc32:{zlib.crc32(b'fragment-1'):08x}")
        self.assertEqual(self.object_files(), [f"{when}#1#d.data"])
        [(method, _, _, row_path, sent)] = self.containers.calls
        self.assertEqual((method, row_path, sent["X-Size"], sent["X-Etag"]), ("PUT", "/c1/7/a/c/o", "1000", "e" * 32))
        response, got = await self.call("GET", "/d1/3/a/c/o", EC)
        self.assertEqual((response.code, got), (200, b"fragment-1"))
        self.assertEqual(response.headers.getRawHeaders("x-object-sysmeta-ec-etag"), ["e" * 32])

    async def test_an_archive_whose_commit_never_comes_stays_not_durable(self) -> None:
        _, stored, answer, when = await self.commit_here("/d1/3/a/c/o", b"fragment-1", [])
        self.assertTrue(stored)
        self.assertEqual((answer.status, answer.header("x-backend-ec-committed")), (201, None))
        self.assertEqual(self.object_files(), [f"{when}#1.data"])
        self.assertEqual(self.containers.calls, [])
        self.assertEqual((await self.call("GET", "/d1/3/a/c/o", EC))[0].code, 404)

    async def test_a_commit_on_the_connection_refused(self) -> None:
        # Something else than the commit line: 400, the archive stays stored, not durable.
        _, stored, answer, when = await self.commit_here("/d1/3/a/c/o", b"fragment-1", [b"commit now\n"])
        self.assertEqual((stored, answer.status), (True, 400))
        self.assertEqual(self.object_files(), [f"{when}#1.data"])
        _, _, answer, _ = await self.commit_here("/d1/3/a/c/p", b"fragment-1", [b"commit\n", b"more\n"])
        self.assertEqual(answer.status, 400)
        # No archive length, or not chunked: refused before the body.
        for missing in ({"X-Backend-Ec-Archive-Length": ""}, {"Transfer-Encoding": "", "Content-Length": "10"}):
            _, _, answer, _ = await self.commit_here("/d1/3/a/c/q", b"fragment-1", [], **missing)
            self.assertEqual(answer.status, 400, missing)
        self.assertNotIn("q", " ".join(self.files()))
        self.assertEqual(self.tmp_files(), [])

    async def test_a_bad_footer_line_stores_nothing(self) -> None:
        pool = PutConnectionPool(reactor)
        self.addCleanup(pool.close)
        headers = {
            "X-Timestamp": self.stamp(), "Content-Type": "text/plain", **EC, **WHERE,
            "X-Object-Sysmeta-Ec-Frag-Index": "1", "Transfer-Encoding": "chunked", "Expect": "100-continue",
            "X-Backend-Ec-Commit": "on-connection", "X-Backend-Ec-Archive-Length": "10",
        }
        for footer in (b"not json\n", b"[1, 2]\n", b'{"X-Object-Sysmeta-Ec-Etag": 5}\n', b"x" * 9000):
            conn, reply = await pool.open("127.0.0.1", self.port.getHost().port,
                                          PutRequest.of("/d1/3/a/c/o", "127.0.0.1", headers), 10)
            self.assertIsNone(reply)
            conn.write(b"fragment-1" + footer)
            conn.finish()
            answer = await conn.answer
            self.assertEqual(answer.status, 400, footer[:20])
        # A body that ends inside the archive is a client gone: nothing stored. PutConnection
        # never ends an archive short (its size line goes with the head), so another sender's
        # chunks go by hand.
        head = PutRequest.of("/d1/3/a/c/o", "127.0.0.1", {**headers, "Connection": "close"}).head()
        sender = RawClient(head[: head.index(b"\r\n\r\n") + 4] + b"4\r\nfrag\r\n0\r\n\r\n")
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port.getHost().port), sender)
        answer = await sender.done
        self.assertIn(b"HTTP/1.1 499 ", answer)
        self.assertEqual(self.object_files(), [])
        self.assertEqual(self.tmp_files(), [])

    async def test_a_given_fragment_index_is_served(self) -> None:
        """A handoff may hold several archives of one object: X-Backend-Fragment-Index picks one."""
        when = self.stamp()
        for index in (0, 2):
            response, _ = await self.put_archive("/d1/3/a/c/o", b"archive-%d" % index, index, **{"X-Timestamp": when})
            self.assertEqual(response.code, 201)
            self.assertEqual((await self.durable("/d1/3/a/c/o", when, index)).code, 202)
        for index in (0, 2):
            response, got = await self.call("GET", "/d1/3/a/c/o", {**EC, "X-Backend-Fragment-Index": str(index)})
            self.assertEqual((response.code, got), (200, b"archive-%d" % index))
            self.assertEqual(response.headers.getRawHeaders("x-object-sysmeta-ec-frag-index"), [str(index)])
        response, _ = await self.call("GET", "/d1/3/a/c/o", {**EC, "X-Backend-Fragment-Index": "1"})
        self.assertEqual(response.code, 404)
        response, _ = await self.call("GET", "/d1/3/a/c/o", {**EC, "X-Backend-Fragment-Index": "x"})
        self.assertEqual(response.code, 400)
        response, got = await self.call("GET", "/d1/3/a/c/o", EC)
        self.assertEqual((response.code, got), (200, b"archive-0"))

    async def test_the_durable_mark_refused(self) -> None:
        response = await self.durable("/d1/3/a/c/o", self.stamp(), 0)
        self.assertEqual(response.code, 404)  # no such archive
        _, when = await self.put_archive("/d1/3/a/c/o", b"fragment", 0)
        self.assertEqual((await self.durable("/d1/3/a/c/o", when, 1)).code, 404)  # another index
        self.assertEqual((await self.durable("/d1/3/a/c/o", when, None)).code, 400)
        self.assertEqual((await self.durable("/d1/3/a/c/o", when, 5)).code, 400)
        self.assertEqual((await self.durable("/d1/3/a/c/o", "soon", 0)).code, 400)
        replicated = await self.durable("/d1/3/a/c/o", when, 0, **{"X-Backend-Storage-Policy-Index": "0"})
        self.assertEqual(replicated.code, 400)
        self.assertEqual(self.object_files(), [f"{when}#0.data"])
        self.assertEqual(self.containers.calls, [])

    async def test_a_newer_delete_wins_over_the_mark(self) -> None:
        _, when = await self.put_archive("/d1/3/a/c/o", b"fragment", 0)
        deleted_at = self.stamp()
        response, _ = await self.call("DELETE", "/d1/3/a/c/o", {"X-Timestamp": deleted_at, **EC})
        self.assertEqual(response.code, 404)  # nothing durable was there
        response = await self.durable("/d1/3/a/c/o", when, 0)
        self.assertEqual(response.code, 409)
        self.assertEqual(response.headers.getRawHeaders("x-backend-timestamp"), [deleted_at])
        self.assertEqual(self.object_files(), [f"{deleted_at}.ts"])
        self.assertEqual(self.containers.calls, [])  # the object never shows in a listing
        response, _ = await self.call("GET", "/d1/3/a/c/o", EC)
        self.assertEqual(response.code, 404)
        self.assertEqual(response.headers.getRawHeaders("x-backend-delete-timestamp"), [deleted_at])

    async def test_a_newer_version_is_served_only_once_durable(self) -> None:
        """The proxy's second phase never came for the newer PUT (a crash): the older one is served."""
        _, old = await self.put_archive("/d1/3/a/c/o", b"old", 0)
        await self.durable("/d1/3/a/c/o", old, 0)
        _, new = await self.put_archive("/d1/3/a/c/o", b"new", 0)
        response, got = await self.call("GET", "/d1/3/a/c/o", EC)
        self.assertEqual((response.code, got), (200, b"old"))
        self.assertEqual(self.object_files(), [f"{old}#0#d.data", f"{new}#0.data"])
        response, _ = await self.put_archive("/d1/3/a/c/o", b"older", 0, **{"X-Timestamp": old})
        self.assertEqual(response.code, 409)
        await self.durable("/d1/3/a/c/o", new, 0)
        response, got = await self.call("GET", "/d1/3/a/c/o", EC)
        self.assertEqual((response.code, got), (200, b"new"))
        self.assertEqual(self.object_files(), [f"{new}#0#d.data"])

    async def test_a_failed_container_update_is_kept_for_the_updater(self) -> None:
        _, when = await self.put_archive("/d1/3/a/c/o", b"fragment", 0)
        self.containers.fail = True
        self.assertEqual((await self.durable("/d1/3/a/c/o", when, 0)).code, 202)
        [pending] = self.diskfiles.list_async_pendings("d1", 2)
        record = self.diskfiles.read_async_pending(pending)
        self.assertEqual((record.op, record.headers["X-Size"], record.headers["X-Etag"]), ("PUT", "1000", "e" * 32))

    async def test_a_post_and_delete_of_a_durable_object(self) -> None:
        _, when = await self.put_archive("/d1/3/a/c/o", b"fragment", 0)
        await self.durable("/d1/3/a/c/o", when, 0)
        response, _ = await self.call("POST", "/d1/3/a/c/o",
                                      {"X-Timestamp": self.stamp(), "Content-Type": "text/html", **EC, **WHERE})
        self.assertEqual(response.code, 202)
        sent = self.containers.calls[-1][4]
        self.assertEqual((sent["X-Size"], sent["X-Etag"], sent["X-Content-Type"]), ("1000", "e" * 32, "text/html"))
        response, _ = await self.call("DELETE", "/d1/3/a/c/o", {"X-Timestamp": self.stamp(), **EC, **WHERE})
        self.assertEqual(response.code, 204)
        self.assertEqual(self.containers.calls[-1][0], "DELETE")
        self.assertEqual([f.rsplit(".", 1)[1] for f in self.object_files()], ["ts"])

    async def test_replicated_policies_are_unchanged_beside_an_ec_one(self) -> None:
        when = self.stamp()
        headers = {"X-Timestamp": when, "Content-Type": "text/plain", **WHERE,
                   "X-Object-Sysmeta-Ec-Frag-Index": "1"}  # no meaning for a replicated policy
        response, _ = await self.call("PUT", "/d1/3/a/c/o", headers, b"whole")
        self.assertEqual(response.code, 201)
        self.assertEqual(self.containers.calls[-1][4]["X-Size"], "5")  # listed at once
        self.assertIn("d1/objects/3", [f.rsplit("/", 3)[0] for f in self.files() if f.endswith(f"{when}.data")])
        response, got = await self.call("GET", "/d1/3/a/c/o", {"X-Backend-Fragment-Index": "2"})
        self.assertEqual((response.code, got), (200, b"whole"))
