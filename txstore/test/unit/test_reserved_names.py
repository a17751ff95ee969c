"""
Reserved names (``txstore.common.paths``): names holding NUL are refused from clients and
admitted for requests carrying ``X-Backend-Allow-Reserved-Names: true``, through the proxy's
request values, the backend client, the storage nodes' servers and the brokers; listings hide
names that begin with NUL unless the request allows them.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import HTTPConnectionPool

from txstore.common.backend_client import with_reserved
from txstore.common.hashing import PathHasher
from txstore.common.io import DeviceThreadPools
from txstore.common.paths import (
    ALLOW_RESERVED, BackendPath, BadPath, decode_path, is_reserved, parse_backend_path, reserved_name,
    split_reserved_name,
)
from txstore.common.policies import DEFAULT_POLICIES
from txstore.common.streaming import StreamingSite
from txstore.middleware.gatekeeper import Gatekeeper
from txstore.proxy.messages import HeaderMap, SwiftRequest, SwiftResponse
from txstore.storage.account_server import AccountServer
from txstore.storage.container_server import ContainerServer
from txstore.storage.db import ContainerBroker
from txstore.storage.db.broker import Subdir
from txstore.storage.diskfile import DiskFileManager
from txstore.storage.context import StorageContext
from txstore.storage.object_server import ObjectServer
from txstore.node.server import NodeServer
from txstore.test.backend_fake import FakeBackend
from txstore.test.support import clock_at
from txstore.test.unit.test_account_server import ZERO
from txstore.test.unit.test_container_server import ContainerReports, ObjectRows, http, make_context, ts
from txstore.test.unit.test_object_server import FakeContainers

ALLOW = {ALLOW_RESERVED: "true"}
VERSIONS = reserved_name("versions", "c")  # "\x00versions\x00c"
Q_VERSIONS = quote(VERSIONS)  # "%00versions%00c"


class NameTests(SynchronousTestCase):
    def test_reserved_name_and_split(self) -> None:
        self.assertEqual(reserved_name("versions", "c"), "\x00versions\x00c")
        self.assertEqual(reserved_name("o", ""), "\x00o\x00")
        self.assertEqual(split_reserved_name("\x00versions\x00c"), ["versions", "c"])
        self.assertTrue(is_reserved(VERSIONS))
        self.assertFalse(is_reserved("c\x00"))
        self.assertRaises(ValueError, split_reserved_name, "plain")
        self.assertRaises(ValueError, reserved_name, "a\x00b")
        self.assertRaises(ValueError, reserved_name)

    def test_decode_path(self) -> None:
        err = self.assertRaises(BadPath, decode_path, b"/v1/a/%00versions%00c")
        self.assertEqual((err.status, err.reason), (412, "Invalid UTF8 or contains NULL"))
        self.assertEqual(decode_path(b"/v1/a/%00versions%00c", allow_reserved=True), "/v1/a/\x00versions\x00c")
        # invalid UTF-8 stays refused either way
        self.assertEqual(self.assertRaises(BadPath, decode_path, b"/a/%FF", True).status, 412)

    def test_backend_path(self) -> None:
        self.assertEqual(self.assertRaises(BadPath, parse_backend_path, b"/d1/1/a/%00c").status, 412)
        self.assertEqual(parse_backend_path(b"/d1/1/a/%00c/%00o%001", allow_reserved=True),
                         BackendPath("d1", 1, "a", "\x00c", "\x00o\x001"))
        # never a device
        self.assertEqual(self.assertRaises(BadPath, parse_backend_path, b"/d%001/1/a", True).status, 400)


class RequestTests(SynchronousTestCase):
    def test_client_request_refused(self) -> None:
        request = SwiftRequest("GET", "/v1/a/%00versions%00c")
        self.assertEqual(self.assertRaises(BadPath, request.split, 2, 4).status, 412)
        self.assertFalse(request.allow_reserved)

    def test_allowed_request(self) -> None:
        request = SwiftRequest("GET", "/v1/a/%00versions%00c", HeaderMap(ALLOW))
        self.assertTrue(request.allow_reserved)
        self.assertEqual(request.split(2, 4), ["v1", "a", VERSIONS, None])

    def test_decision_follows_the_header(self) -> None:
        # the decoded path is cached: taking the header away must refuse again
        request = SwiftRequest("GET", "/v1/a/%00c", HeaderMap(ALLOW))
        self.assertEqual(request.decoded_path, "/v1/a/\x00c")
        request.headers.pop(ALLOW_RESERVED)
        self.assertRaises(BadPath, lambda: request.decoded_path)

    def test_gatekeeper_takes_the_header_from_clients(self) -> None:
        seen = []

        async def inner(request: SwiftRequest) -> SwiftResponse:
            seen.append(request)
            return SwiftResponse.empty(204)

        request = SwiftRequest("GET", "/v1/a/%00versions%00c", HeaderMap(ALLOW))
        self.successResultOf(Deferred.fromCoroutine(Gatekeeper(inner)(request)))
        self.assertFalse(seen[0].allow_reserved)
        self.assertEqual(self.assertRaises(BadPath, seen[0].split, 2, 4).status, 412)

    def test_backend_client_says_so(self) -> None:
        self.assertEqual(with_reserved("/d/1/a/c/o", {"X-A": "1"}), {"X-A": "1"})
        self.assertEqual(with_reserved("/d/1/a/\x00v\x00c", {"X-A": "1"}), {"X-A": "1", ALLOW_RESERVED: "true"})
        self.assertEqual(with_reserved("/d/1/a/\x00v\x00c", None), {ALLOW_RESERVED: "true"})


class BrokerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.broker = ContainerBroker(Path(self.mktemp()) / "c.db")
        self.broker.initialize("a", "c", ts())
        for name in ("\x00o\x001", "\x00o\x002", "\x00p\x001", "a", "b/c", "\x01x"):
            self.broker.put_object(name, ts(1), 3, "text/plain", "etag")

    def names(self, **kwargs) -> list[str]:
        return [row.name if not isinstance(row, Subdir) else "subdir:" + row.name
                for row in self.broker.list(**kwargs)]

    def test_names_with_nul_are_stored_whole(self) -> None:
        self.assertEqual(self.names(), ["\x00o\x001", "\x00o\x002", "\x00p\x001", "\x01x", "a", "b/c"])
        self.assertEqual(self.names(prefix="\x00o\x00"), ["\x00o\x001", "\x00o\x002"])
        self.assertEqual(self.names(marker="\x00o\x001", limit=2), ["\x00o\x002", "\x00p\x001"])
        self.assertEqual(self.names(prefix="\x00", delimiter="\x00"), ["subdir:\x00o\x00", "subdir:\x00p\x00"])
        self.assertEqual(self.names(reverse=True, limit=4), ["b/c", "a", "\x01x", "\x00p\x001"])
        self.assertEqual(self.broker.get_info().object_count, 6)

    def test_hidden_unless_allowed(self) -> None:
        self.assertEqual(self.names(allow_reserved=False), ["\x01x", "a", "b/c"])
        self.assertEqual(self.names(allow_reserved=False, reverse=True), ["b/c", "a", "\x01x"])
        self.assertEqual(self.names(allow_reserved=False, prefix="\x00o"), [])
        self.assertEqual(self.names(allow_reserved=False, delimiter="/"), ["\x01x", "a", "subdir:b/"])
        self.assertEqual(self.names(allow_reserved=False, end_marker="a"), ["\x01x"])

    def test_deleted(self) -> None:
        self.broker.delete_object("\x00o\x001", ts(2))
        self.assertEqual(self.names(prefix="\x00o"), ["\x00o\x002"])


class ContainerNodeTests(SynchronousTestCase):
    """The container server through the node's HTTP front, in memory."""

    def setUp(self) -> None:
        self.client = FakeBackend()
        self.server = ContainerServer(make_context(self, self.client))
        self.node = NodeServer(containers=self.server, objects=ObjectRows(self.server))

    def request(self, method: str, path: str, headers: dict | None = None):
        return http(self, self.node, method, path, headers)

    def row(self, container: str, name: str, headers: dict | None = None):
        return self.request("PUT", f"/sda/1/a/{container}/{name}", {
            "X-Timestamp": ts(1), "X-Size": "4", "X-Content-Type": "text/plain",
            "X-Etag": "d41d8cd98f00b204e9800998ecf8427e", **(headers or {})})

    def test_reserved_container(self) -> None:
        refused = self.request("PUT", f"/sda/1/a/{Q_VERSIONS}", {"X-Timestamp": ts()})
        self.assertEqual((refused.status, refused.body), (412, b"Invalid UTF8 or contains NULL\n"))
        self.assertEqual(self.request("PUT", f"/sda/1/a/{Q_VERSIONS}", {"X-Timestamp": ts(), **ALLOW}).status, 201)
        self.assertEqual(self.request("HEAD", f"/sda/1/a/{Q_VERSIONS}").status, 412)
        self.assertEqual(self.request("HEAD", f"/sda/1/a/{Q_VERSIONS}", ALLOW).status, 204)
        # an object server's row update says the name is allowed (the backend client adds it)
        self.assertEqual(self.row(Q_VERSIONS, "%00o%001").status, 412)
        self.assertEqual(self.row(Q_VERSIONS, "%00o%001", ALLOW).status, 201)
        listing = self.request("GET", f"/sda/1/a/{Q_VERSIONS}?format=json", ALLOW)
        self.assertEqual([e["name"] for e in json.loads(listing.body)], ["\x00o\x001"])

    def test_listing_hides_reserved_names(self) -> None:
        self.request("PUT", "/sda/1/a/c", {"X-Timestamp": ts()})
        self.row("c", "%00o%001", ALLOW)
        self.row("c", "visible")
        hidden = self.request("GET", "/sda/1/a/c?format=json")
        self.assertEqual([e["name"] for e in json.loads(hidden.body)], ["visible"])
        self.assertEqual(self.request("GET", "/sda/1/a/c").body, b"visible\n")
        shown = self.request("GET", "/sda/1/a/c?format=json", ALLOW)
        self.assertEqual([e["name"] for e in json.loads(shown.body)], ["\x00o\x001", "visible"])
        # bounds may hold NUL (as Swift's), but only an allowed listing shows reserved names
        for query in ("prefix=%00o", "marker=%00", "end_marker=%00z&reverse=on", "prefix=%00&delimiter=o"):
            answer = self.request("GET", f"/sda/1/a/c?format=json&{query}")
            self.assertEqual(answer.status, 200, query)
            self.assertNotIn("\x00", answer.body.decode("unicode_escape"), query)
        shown = self.request("GET", "/sda/1/a/c?format=json&prefix=%00o&marker=%00o%000", ALLOW)
        self.assertEqual([e["name"] for e in json.loads(shown.body)], ["\x00o\x001"])
        # counted either way: the bytes are the container's
        self.assertEqual(hidden.header("X-Container-Object-Count"), "2")


class AccountNodeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.server = AccountServer(make_context(self))
        self.node = NodeServer(accounts=self.server, containers=ContainerReports(self.server))

    def request(self, method: str, path: str, headers: dict | None = None):
        return http(self, self.node, method, path, headers)

    def report(self, container: str, headers: dict | None = None):
        return self.request("PUT", f"/sda/1/a/{container}", {
            "X-Put-Timestamp": ts(1), "X-Delete-Timestamp": ZERO, "X-Object-Count": "1", "X-Bytes-Used": "7",
            "X-Backend-Storage-Policy-Index": "0", **(headers or {})})

    def test_reports_and_listings(self) -> None:
        self.request("PUT", "/sda/1/a", {"X-Timestamp": ts()})
        self.assertEqual(self.report(Q_VERSIONS).status, 412)
        self.assertEqual(self.report(Q_VERSIONS, ALLOW).status, 201)
        self.assertEqual(self.report("c").status, 201)
        self.assertEqual(self.request("GET", "/sda/1/a").body, b"c\n")
        shown = self.request("GET", "/sda/1/a?format=json", ALLOW)
        self.assertEqual([e["name"] for e in json.loads(shown.body)], [VERSIONS, "c"])
        head = self.request("HEAD", "/sda/1/a")
        self.assertEqual((head.header("X-Account-Container-Count"), head.header("X-Account-Bytes-Used")), ("2", "14"))


class ObjectNodeTests(TestCase):
    """The object server over real HTTP: a reserved name is an object like any other, once allowed."""

    def setUp(self) -> None:
        root = Path(self.mktemp()).absolute()
        (root / "d1").mkdir(parents=True)
        self.pools = DeviceThreadPools(reactor)
        self.addCleanup(self.pools.stop)
        self.containers = FakeContainers()
        context = StorageContext(
            devices=root, mount_check=False, hasher=PathHasher(b"", b"suffix"), policies=DEFAULT_POLICIES,
            runner=self.pools, client=self.containers, reactor=clock_at(1_700_000_000.0),
            diskfiles=DiskFileManager(root, False, PathHasher(b"", b"suffix")),
        )
        site = StreamingSite(NodeServer(objects=ObjectServer(context)).resource())
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.pool = HTTPConnectionPool(reactor)
        self.addCleanup(self.pool.closeCachedConnections)
        self.base = f"http://127.0.0.1:{self.port.getHost().port}"

    async def call(self, method: str, path: str, headers: dict | None = None, data: bytes | None = None):
        response = await treq.request(method, self.base + path, headers=headers or {}, data=data, pool=self.pool)
        return response.code, await treq.content(response)

    async def test_put_get_delete(self) -> None:
        path = f"/d1/3/a/{Q_VERSIONS}/%00o%001"
        put = {"X-Timestamp": "1700000001.00000", "Content-Type": "text/plain",
               "X-Container-Host": "127.0.0.1:1", "X-Container-Device": "sdc", "X-Container-Partition": "2"}
        self.assertEqual(await self.call("PUT", path, put, b"data"),
                         (412, b"Invalid UTF8 or contains NULL\n"))
        self.assertEqual((await self.call("PUT", path, {**put, **ALLOW}, b"data"))[0], 201)
        self.assertEqual(await self.call("GET", path, ALLOW), (200, b"data"))
        self.assertEqual((await self.call("GET", path))[0], 412)
        # the container update names the reserved row
        [(method, _host, _port, update_path, _headers)] = self.containers.calls
        self.assertEqual((method, update_path), ("PUT", f"/sdc/2/a/{VERSIONS}/\x00o\x001"))
        deleted = await self.call("DELETE", path, {"X-Timestamp": "1700000002.00000", **ALLOW})
        self.assertEqual(deleted[0], 204)
        self.assertEqual((await self.call("GET", path, ALLOW))[0], 404)
