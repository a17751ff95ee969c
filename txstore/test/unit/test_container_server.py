"""
Tests for txstore.storage.container_server (and the shared db_server and broker_cache): the
container half of a storage node's backend API, driven over HTTP in memory.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.etree import ElementTree

from attrs import define, field, frozen
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from txstore.common.backend_client import BackendError, BackendResponse, BackendTimeout
from txstore.common.hashing import PathHasher
from txstore.common.io import SynchronousRunner
from txstore.common.paths import BackendPath
from txstore.common.policies import PolicyCollection, StoragePolicy
from txstore.common.timestamps import Timestamp
from txstore.storage.account_server import AccountServer
from txstore.storage.broker_cache import BrokerCache
from txstore.storage.container_server import ContainerServer
from txstore.storage.db import ContainerBroker, DatabaseAlreadyExists, DatabaseBusy, DatabaseCorrupt
from txstore.storage.db_server import DatabaseAccess
from txstore.storage.db.files import database_path, quarantine_database
from txstore.storage.diskfile import DiskFileManager
from txstore.storage.context import StorageContext
from txstore.node.server import NodeServer
from txstore.test.backend_fake import Call, FakeBackend, in_turn
from txstore.test.support import clock_at, temp_dir

NOW = 1700000000.0
HASHER = PathHasher(suffix=b"testsuffix")
POLICIES = PolicyCollection((StoragePolicy(0, "gold", is_default=True), StoragePolicy(1, "silver")))


def ts(offset: float = 0.0) -> str:
    """A timestamp ``offset`` seconds after NOW, as a proxy sends it."""
    return Timestamp.from_seconds(NOW + offset).internal


# -- test doubles and harness (the account server tests use them too) ---------------------------


def make_context(case: SynchronousTestCase, client: Any = None, devices: tuple[str, ...] = ("sda",)) -> StorageContext:
    root = temp_dir(case) / "devices"
    for device in devices:
        (root / device).mkdir(parents=True)
    return StorageContext(
        devices=root,
        mount_check=False,
        hasher=HASHER,
        policies=POLICIES,
        runner=SynchronousRunner(),
        client=client if client is not None else FakeBackend(),
        reactor=clock_at(NOW),
        diskfiles=DiskFileManager(root, False, HASHER),
        node_timeout=2.5,
    )


@define
class ObjectRows:
    """What the lead's routing does for container-row updates: hand them to the container server."""

    server: ContainerServer

    async def handle(self, request: Any, path: BackendPath) -> bytes:
        return await self.server.handle_object_row(request, path)


@define
class ContainerReports:
    """What the lead's routing does for container reports: hand them to the account server."""

    server: AccountServer

    async def handle(self, request: Any, path: BackendPath) -> bytes:
        return await self.server.handle_container_report(request, path)


@frozen
class Answer:
    status: int
    headers: Headers
    body: bytes
    length: int | None = None  # the Content-Length, which the client takes out of the headers

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name.encode("latin-1"))
        return values[-1].decode("utf-8") if values else None

    def json(self) -> Any:
        return json.loads(self.body)


def http(case: SynchronousTestCase, node: NodeServer, method: str, path: str, headers: dict | None = None) -> Answer:
    client = StubTreq(node.resource())
    raw = {k: [v.encode("utf-8") if isinstance(v, str) else v] for k, v in (headers or {}).items()}
    response = case.successResultOf(client.request(method, "http://node" + path, headers=raw))
    body = case.successResultOf(response.content())
    length = response.length if isinstance(response.length, int) else None
    return Answer(response.code, response.headers, body, length)


def capture_logs(case: SynchronousTestCase, cls: type) -> list[dict]:
    events: list[dict] = []
    case.patch(cls, "log", Logger(observer=events.append))
    return events


def message(event: dict) -> str:
    from twisted.logger import formatEvent

    return formatEvent(event)


# -- container server tests ----------------------------------------------------------------------


class ContainerServerTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.client = FakeBackend()
        self.context = make_context(self, self.client)
        self.server = ContainerServer(self.context)
        self.node = NodeServer(containers=self.server, objects=ObjectRows(self.server))

    def request(self, method: str, url: str, headers: dict | None = None, **query: str) -> Answer:
        if query:
            url += "?" + "&".join(f"{k}={quote(v.encode('utf-8'), safe='')}" for k, v in query.items())
        return http(self, self.node, method, url, headers)

    def put(self, container: str = "c", offset: float = 0.0, **headers: str) -> Answer:
        return self.request("PUT", f"/sda/1/a/{container}", {"X-Timestamp": ts(offset), **_h(headers)})

    def put_row(self, name: str, offset: float = 1.0, size: int = 5, container: str = "c", **headers: str) -> Answer:
        return self.request(
            "PUT",
            f"/sda/1/a/{container}/{name}",
            {
                "X-Timestamp": ts(offset),
                "X-Size": str(size),
                "X-Content-Type": "text/plain",
                "X-Etag": "d41d8cd98f00b204e9800998ecf8427e",
                **_h(headers),
            },
        )

    def db_path(self, container: str = "c", device: str = "sda") -> Path:
        db_hash = HASHER.hash_path("a", container)
        assert isinstance(db_hash, str)
        return database_path(self.context.devices / device, "containers", 1, db_hash)

    def broker(self, container: str = "c") -> ContainerBroker:
        return ContainerBroker(self.db_path(container))


def _h(headers: dict[str, str]) -> dict[str, str]:
    """Keyword arguments to header names: X_Container_Read → X-Container-Read."""
    return {name.replace("_", "-"): value for name, value in headers.items()}


class CreateTests(ContainerServerTestCase):
    def test_put_creates_then_accepts(self) -> None:
        self.assertEqual(self.put(offset=0).status, 201)
        self.assertTrue(self.db_path().exists())
        self.assertEqual(self.put(offset=1).status, 202)
        head = self.request("HEAD", "/sda/1/a/c")
        self.assertEqual(head.status, 204)
        self.assertEqual(head.header("X-Container-Object-Count"), "0")
        self.assertEqual(head.header("X-Container-Bytes-Used"), "0")
        self.assertEqual(head.header("X-Timestamp"), Timestamp.from_seconds(NOW).normal)
        self.assertEqual(head.header("X-Put-Timestamp"), ts(1))
        self.assertEqual(head.header("X-Backend-Put-Timestamp"), ts(1))
        self.assertEqual(head.header("X-Backend-Delete-Timestamp"), Timestamp(0).internal)
        self.assertEqual(head.header("X-Backend-Storage-Policy-Index"), "0")
        self.assertEqual(head.header("X-Storage-Policy"), "gold")
        self.assertEqual(head.header("Last-Modified"), Timestamp.parse(ts(1)).last_modified)
        self.assertEqual(head.header("Content-Type"), "text/plain; charset=utf-8")

    def test_an_older_put_is_accepted_but_changes_nothing(self) -> None:
        self.put(offset=5)
        self.assertEqual(self.put(offset=1).status, 202)
        self.assertEqual(self.request("HEAD", "/sda/1/a/c").header("X-Put-Timestamp"), ts(5))

    def test_timestamp_is_required_and_checked(self) -> None:
        answer = self.request("PUT", "/sda/1/a/c")
        self.assertEqual((answer.status, answer.body), (400, b"Missing X-Timestamp header\n"))
        answer = self.request("PUT", "/sda/1/a/c", {"X-Timestamp": "yesterday"})
        self.assertEqual(answer.status, 400)
        self.assertIn(b"Invalid X-Timestamp", answer.body)
        for method in ("DELETE", "POST"):
            self.assertEqual(self.request(method, "/sda/1/a/c").status, 400)
        self.assertFalse(self.db_path().exists())

    def test_policy_chosen_at_creation(self) -> None:
        self.assertEqual(self.put(X_Backend_Storage_Policy_Index="1").status, 201)
        head = self.request("HEAD", "/sda/1/a/c")
        self.assertEqual(head.header("X-Backend-Storage-Policy-Index"), "1")
        self.assertEqual(head.header("X-Storage-Policy"), "silver")
        # Without the header an existing container keeps its policy; the same one is fine.
        self.assertEqual(self.put(offset=1).status, 202)
        self.assertEqual(self.put(offset=2, X_Backend_Storage_Policy_Index="1").status, 202)

    def test_another_policy_for_a_live_container_conflicts(self) -> None:
        self.put(X_Backend_Storage_Policy_Index="1")
        answer = self.put(offset=1, X_Backend_Storage_Policy_Index="0")
        self.assertEqual(answer.status, 409)
        self.assertEqual(answer.header("X-Backend-Storage-Policy-Index"), "1")
        head = self.request("HEAD", "/sda/1/a/c")
        self.assertEqual(head.header("X-Backend-Storage-Policy-Index"), "1")
        self.assertEqual(head.header("X-Put-Timestamp"), ts(0))

    def test_unknown_or_bad_policy_index(self) -> None:
        self.assertEqual(self.put(X_Backend_Storage_Policy_Index="7").status, 503)
        self.assertEqual(self.put(X_Backend_Storage_Policy_Index="x").status, 400)
        self.assertFalse(self.db_path().exists())

    def test_deleted_container_recreated_by_a_newer_put(self) -> None:
        self.put(offset=0)
        self.assertEqual(self.request("DELETE", "/sda/1/a/c", {"X-Timestamp": ts(1)}).status, 204)
        answer = self.put(offset=0.5)  # older than the DELETE: still deleted
        self.assertEqual(answer.status, 409)
        self.assertEqual(answer.header("X-Backend-Delete-Timestamp"), ts(1))
        answer = self.put(offset=2, X_Backend_Storage_Policy_Index="1")
        self.assertEqual(answer.status, 201)
        head = self.request("HEAD", "/sda/1/a/c")
        self.assertEqual(head.status, 204)
        self.assertEqual(head.header("X-Backend-Storage-Policy-Index"), "1")
        self.assertEqual(head.header("X-Put-Timestamp"), ts(2))

    def test_creation_race_lost_is_an_update(self) -> None:
        # Another request creates the database between our check and our link.
        original = ContainerBroker.initialize

        def racing(broker: ContainerBroker, *args: Any, **kwargs: Any) -> None:
            original(broker, *args, **kwargs)
            raise DatabaseAlreadyExists(str(broker.path))

        self.patch(ContainerBroker, "initialize", racing)
        self.assertEqual(self.put(offset=3).status, 202)
        self.assertEqual(self.request("HEAD", "/sda/1/a/c").header("X-Put-Timestamp"), ts(3))

    def test_container_name_limit(self) -> None:
        self.assertEqual(self.put("c" * 256).status, 201)
        answer = self.put("c" * 257)
        self.assertEqual(answer.status, 400)
        self.assertIn(b"Container name longer than 256 bytes", answer.body)
        snakes = "\N{SNAKE}" * 64  # 256 bytes of UTF-8
        self.assertEqual(self.put(quote(snakes.encode("utf-8"))).status, 201)
        self.assertTrue(self.db_path(snakes).exists())
        self.assertEqual(self.put(quote(("\N{SNAKE}" * 65).encode("utf-8"))).status, 400)

    def test_unknown_method(self) -> None:
        answer = self.request("PATCH", "/sda/1/a/c")
        self.assertEqual(answer.status, 405)
        self.assertEqual(answer.header("Allow"), "DELETE, GET, HEAD, POST, PUT")


class DeleteTests(ContainerServerTestCase):
    def test_missing(self) -> None:
        self.assertEqual(self.request("DELETE", "/sda/1/a/c", {"X-Timestamp": ts()}).status, 404)

    def test_delete_then_gone(self) -> None:
        self.put()
        self.assertEqual(self.request("DELETE", "/sda/1/a/c", {"X-Timestamp": ts(1)}).status, 204)
        for method in ("HEAD", "GET"):
            answer = self.request(method, "/sda/1/a/c")
            self.assertEqual(answer.status, 404)
            self.assertEqual(answer.header("X-Backend-Put-Timestamp"), ts(0))
            self.assertEqual(answer.header("X-Backend-Delete-Timestamp"), ts(1))
            self.assertEqual(answer.header("X-Backend-Timestamp"), Timestamp.from_seconds(NOW).internal)
            self.assertIsNone(answer.header("X-Container-Object-Count"))
        # Deleting again: 404 (it was already gone), with the newer delete time kept.
        answer = self.request("DELETE", "/sda/1/a/c", {"X-Timestamp": ts(2)})
        self.assertEqual(answer.status, 404)
        self.assertEqual(answer.header("X-Backend-Delete-Timestamp"), ts(2))

    def test_not_empty(self) -> None:
        self.put()
        self.put_row("o")
        answer = self.request("DELETE", "/sda/1/a/c", {"X-Timestamp": ts(2)})
        self.assertEqual((answer.status, answer.body), (409, b"Conflict: the container is not empty\n"))
        self.request("DELETE", "/sda/1/a/c/o", {"X-Timestamp": ts(3)})
        self.assertEqual(self.request("DELETE", "/sda/1/a/c", {"X-Timestamp": ts(4)}).status, 204)

    def test_delete_older_than_the_put(self) -> None:
        self.put(offset=5)
        answer = self.request("DELETE", "/sda/1/a/c", {"X-Timestamp": ts(1)})
        self.assertEqual(answer.status, 409)
        self.assertEqual(answer.header("X-Backend-Put-Timestamp"), ts(5))
        self.assertEqual(self.request("HEAD", "/sda/1/a/c").status, 204)


class MetadataTests(ContainerServerTestCase):
    def test_stored_headers_read_back(self) -> None:
        self.put(
            X_Container_Meta_Color="blue",
            X_Container_Read=".r:*",
            X_Container_Write="AUTH_other",
            X_Container_Sync_To="//realm/cluster/AUTH_b/c",
            X_Container_Sync_Key="secret",
            X_Versions_Location="versions",
            X_History_Location="history",
            X_Container_Sysmeta_Versions_Mode="stack",
            X_Unrelated="dropped",
        )
        head = self.request("HEAD", "/sda/1/a/c")
        expected = {
            "X-Container-Meta-Color": "blue",
            "X-Container-Read": ".r:*",
            "X-Container-Write": "AUTH_other",
            "X-Container-Sync-To": "//realm/cluster/AUTH_b/c",
            "X-Container-Sync-Key": "secret",
            "X-Versions-Location": "versions",
            "X-History-Location": "history",
            "X-Container-Sysmeta-Versions-Mode": "stack",
        }
        for name, value in expected.items():
            self.assertEqual(head.header(name), value, name)
        self.assertIsNone(head.header("X-Unrelated"))
        get = self.request("GET", "/sda/1/a/c")
        self.assertEqual(get.header("X-Container-Meta-Color"), "blue")

    def test_post_updates_and_removes(self) -> None:
        self.put(X_Container_Meta_Color="blue", X_Container_Meta_Size="big", X_Container_Read=".r:*")
        answer = self.request(
            "POST",
            "/sda/1/a/c",
            {
                "X-Timestamp": ts(1),
                "X-Remove-Container-Meta-Color": "x",
                "X-Container-Meta-Size": "",
                "X-Remove-Container-Read": "x",
                "X-Container-Meta-Shape": "round",
            },
        )
        self.assertEqual((answer.status, answer.body), (204, b""))
        head = self.request("HEAD", "/sda/1/a/c")
        self.assertIsNone(head.header("X-Container-Meta-Color"))
        self.assertIsNone(head.header("X-Container-Meta-Size"))
        self.assertIsNone(head.header("X-Container-Read"))
        self.assertEqual(head.header("X-Container-Meta-Shape"), "round")
        # A value in the same request wins over a removal.
        self.request(
            "POST",
            "/sda/1/a/c",
            {"X-Timestamp": ts(2), "X-Remove-Container-Meta-Shape": "x", "X-Container-Meta-Shape": "square"},
        )
        self.assertEqual(self.request("HEAD", "/sda/1/a/c").header("X-Container-Meta-Shape"), "square")

    def test_older_post_does_not_win(self) -> None:
        self.put(offset=0, X_Container_Meta_Color="blue")
        self.request("POST", "/sda/1/a/c", {"X-Timestamp": ts(5), "X-Container-Meta-Color": "red"})
        self.request("POST", "/sda/1/a/c", {"X-Timestamp": ts(3), "X-Container-Meta-Color": "green"})
        self.assertEqual(self.request("HEAD", "/sda/1/a/c").header("X-Container-Meta-Color"), "red")

    def test_post_is_the_last_modification(self) -> None:
        """As Swift's: a POST moves the put timestamp (``Last-Modified``), unless told not to."""
        self.put(offset=0)
        self.request("POST", "/sda/1/a/c", {"X-Timestamp": ts(5), "X-Container-Meta-A": "1"})
        head = self.request("HEAD", "/sda/1/a/c")
        self.assertEqual((head.header("X-Put-Timestamp"), head.header("Last-Modified")),
                         (ts(5), Timestamp.parse(ts(5)).last_modified))
        self.request("POST", "/sda/1/a/c", {"X-Timestamp": ts(9), "X-Backend-No-Timestamp-Update": "true"})
        self.request("POST", "/sda/1/a/c", {"X-Timestamp": ts(3)})  # older: changes nothing
        self.assertEqual(self.request("HEAD", "/sda/1/a/c").header("X-Put-Timestamp"), ts(5))
        self.assertEqual(self.request("HEAD", "/sda/1/a/c").header("X-Timestamp"), Timestamp.from_seconds(NOW).normal)

    def test_non_ascii_value_round_trips(self) -> None:
        self.put(X_Container_Meta_Pet="\N{SNAKE} caf\N{LATIN SMALL LETTER E WITH ACUTE}")
        head = self.request("HEAD", "/sda/1/a/c")
        self.assertEqual(head.header("X-Container-Meta-Pet"), "\N{SNAKE} caf\N{LATIN SMALL LETTER E WITH ACUTE}")

    def test_invalid_utf8_value(self) -> None:
        answer = self.put(X_Container_Meta_Pet=b"\xff\xfe")  # type: ignore[arg-type]
        self.assertEqual(answer.status, 400)
        self.assertFalse(self.db_path().exists())

    def test_limits(self) -> None:
        cases = {
            "Metadata name too long": {"X-Container-Meta-" + "n" * 129: "v"},
            "Metadata value longer than 256": {"X-Container-Meta-Big": "v" * 257},
            "Too many metadata items": {f"X-Container-Meta-K{i}": "v" for i in range(91)},
            "Total metadata too large": {f"X-Container-Meta-K{i}": "v" * 250 for i in range(17)},
        }
        for reason, headers in cases.items():
            answer = self.request("PUT", "/sda/1/a/c", {"X-Timestamp": ts(), **headers})
            self.assertEqual(answer.status, 400, reason)
            self.assertIn(reason.encode("ascii"), answer.body)
        self.assertFalse(self.db_path().exists())
        self.put()
        answer = self.request("POST", "/sda/1/a/c", {"X-Timestamp": ts(1), "X-Container-Meta-Big": "v" * 257})
        self.assertEqual(answer.status, 400)
        # At the limits exactly: accepted.
        answer = self.request(
            "POST", "/sda/1/a/c", {"X-Timestamp": ts(2), "X-Container-Meta-" + "n" * 128: "v" * 256}
        )
        self.assertEqual(answer.status, 204)
        # and for the stored total (Swift's test_POST_bad_metadata3): 384 + 14 x 260 = 4024 bytes
        answer = self.request("POST", "/sda/1/a/c", {"X-Timestamp": ts(3), **{
            f"X-Container-Meta-{i:04d}": "k" * 256 for i in range(14)}})
        self.assertEqual(answer.status, 204)
        before = self.request("HEAD", "/sda/1/a/c").header("X-Put-Timestamp")
        answer = self.request("POST", "/sda/1/a/c", {"X-Timestamp": ts(4), "X-Container-Meta-K": "x" * 72})
        self.assertEqual((answer.status, answer.body), (400, b"Total metadata too large; max 4096\n"))
        head = self.request("HEAD", "/sda/1/a/c")
        self.assertEqual((head.header("X-Container-Meta-K"), head.header("X-Put-Timestamp")), (None, before))
        answer = self.request("POST", "/sda/1/a/c", {"X-Timestamp": ts(5), "X-Container-Meta-K": "x" * 71})
        self.assertEqual(answer.status, 204)

    def test_post_to_missing_or_deleted(self) -> None:
        self.assertEqual(self.request("POST", "/sda/1/a/c", {"X-Timestamp": ts()}).status, 404)
        self.put()
        self.request("DELETE", "/sda/1/a/c", {"X-Timestamp": ts(1)})
        answer = self.request("POST", "/sda/1/a/c", {"X-Timestamp": ts(2), "X-Container-Meta-A": "b"})
        self.assertEqual(answer.status, 404)
        self.assertEqual(answer.header("X-Backend-Delete-Timestamp"), ts(1))


class ObjectRowTests(ContainerServerTestCase):
    def test_put_and_delete_rows(self) -> None:
        self.put()
        self.assertEqual(self.put_row("o1", size=10).status, 201)
        self.assertEqual(self.put_row("o2", size=32).status, 201)
        head = self.request("HEAD", "/sda/1/a/c")
        self.assertEqual(head.header("X-Container-Object-Count"), "2")
        self.assertEqual(head.header("X-Container-Bytes-Used"), "42")
        answer = self.request("DELETE", "/sda/1/a/c/o1", {"X-Timestamp": ts(2)})
        self.assertEqual((answer.status, answer.body), (204, b""))
        head = self.request("HEAD", "/sda/1/a/c")
        self.assertEqual(head.header("X-Container-Object-Count"), "1")
        self.assertEqual(head.header("X-Container-Bytes-Used"), "32")
        # Object rows are never reported to the account one by one.
        self.assertEqual(self.client.calls, [])

    def test_row_fields_in_listing(self) -> None:
        self.put()
        self.put_row("o", offset=1.5, size=7, X_Backend_Storage_Policy_Index="0")
        entries = self.request("GET", "/sda/1/a/c", format="json").json()
        self.assertEqual(
            entries,
            [
                {
                    "name": "o",
                    "hash": "d41d8cd98f00b204e9800998ecf8427e",
                    "bytes": 7,
                    "content_type": "text/plain",
                    "last_modified": Timestamp.parse(ts(1.5)).isoformat,
                }
            ],
        )

    def test_newest_update_wins(self) -> None:
        self.put()
        self.put_row("o", offset=5, size=50)
        self.assertEqual(self.put_row("o", offset=3, size=30).status, 201)
        self.request("DELETE", "/sda/1/a/c/o", {"X-Timestamp": ts(4)})
        self.assertEqual(self.request("HEAD", "/sda/1/a/c").header("X-Container-Bytes-Used"), "50")

    def test_missing_container(self) -> None:
        self.assertEqual(self.put_row("o").status, 404)
        self.assertEqual(self.request("DELETE", "/sda/1/a/c/o", {"X-Timestamp": ts()}).status, 404)
        self.assertFalse(self.db_path().exists())

    def test_bad_requests(self) -> None:
        self.put()
        row = {"X-Timestamp": ts(1), "X-Size": "1", "X-Content-Type": "a/b", "X-Etag": "e"}
        for missing in row:
            headers = {k: v for k, v in row.items() if k != missing}
            answer = self.request("PUT", "/sda/1/a/c/o", headers)
            self.assertEqual(answer.status, 400, missing)
            self.assertIn(missing.encode("ascii"), answer.body)
        self.assertEqual(self.request("PUT", "/sda/1/a/c/o", {**row, "X-Size": "-1"}).status, 400)
        self.assertEqual(self.request("PUT", "/sda/1/a/c/o", {**row, "X-Content-Type": b"\xff"}).status, 400)
        self.assertEqual(self.request("PUT", "/sda/1/a/c/" + "o" * 1025, row).status, 400)
        self.assertEqual(self.request("PUT", "/sda/1/a/c/" + "o" * 1024, row).status, 201)
        answer = self.request("GET", "/sda/1/a/c/o")
        self.assertEqual((answer.status, answer.header("Allow")), (405, "DELETE, PUT"))
        self.assertEqual(self.request("HEAD", "/sda/1/a/c").header("X-Container-Object-Count"), "1")

    def test_rows_in_a_deleted_container_revive_it(self) -> None:
        # An object update that arrives after the container's DELETE (out of order) is kept,
        # and the container is visible again, holding it.
        self.put()
        self.request("DELETE", "/sda/1/a/c", {"X-Timestamp": ts(1)})
        self.assertEqual(self.put_row("late", offset=0.5).status, 201)
        self.assertEqual(self.request("HEAD", "/sda/1/a/c").header("X-Container-Object-Count"), "1")


class ListingTests(ContainerServerTestCase):
    names = ["a", "b/1", "b/2", "c", "d/x/1", "e"]

    def setUp(self) -> None:
        super().setUp()
        self.put()
        for name in self.names:
            self.put_row(name)

    def listing(self, **query: str) -> list[str]:
        answer = self.request("GET", "/sda/1/a/c", **query)
        self.assertIn(answer.status, (200, 204))
        return answer.body.decode("utf-8").splitlines()

    def test_plain(self) -> None:
        answer = self.request("GET", "/sda/1/a/c")
        self.assertEqual(answer.status, 200)
        self.assertEqual(answer.body, "".join(f"{n}\n" for n in self.names).encode("utf-8"))
        self.assertEqual(answer.header("Content-Type"), "text/plain; charset=utf-8")
        self.assertEqual(answer.length, len(answer.body))
        self.assertEqual(answer.header("X-Container-Object-Count"), "6")

    def test_json(self) -> None:
        answer = self.request("GET", "/sda/1/a/c", format="json")
        self.assertEqual(answer.status, 200)
        self.assertEqual(answer.header("Content-Type"), "application/json; charset=utf-8")
        self.assertEqual([e["name"] for e in answer.json()], self.names)
        self.assertEqual(answer.json()[0]["bytes"], 5)

    def test_xml(self) -> None:
        answer = self.request("GET", "/sda/1/a/c", format="xml", delimiter="/")
        self.assertEqual(answer.header("Content-Type"), "application/xml; charset=utf-8")
        root = ElementTree.fromstring(answer.body)
        self.assertEqual((root.tag, root.get("name")), ("container", "c"))
        self.assertEqual(
            [(child.tag, child.findtext("name")) for child in root],
            [("object", "a"), ("subdir", "b/"), ("object", "c"), ("subdir", "d/"), ("object", "e")],
        )
        self.assertEqual(root.find("object/bytes").text, "5")  # type: ignore[union-attr]

    def test_accept_header(self) -> None:
        answer = self.request("GET", "/sda/1/a/c", {"Accept": "application/json"})
        self.assertEqual(answer.header("Content-Type"), "application/json; charset=utf-8")
        answer = self.request("GET", "/sda/1/a/c", {"Accept": "text/xml"})
        self.assertEqual(answer.header("Content-Type"), "text/xml; charset=utf-8")
        answer = self.request("GET", "/sda/1/a/c", {"Accept": "application/json"}, format="plain")
        self.assertEqual(answer.header("Content-Type"), "text/plain; charset=utf-8")
        answer = self.request("GET", "/sda/1/a/c", {"Accept": "image/png"})
        self.assertEqual(answer.status, 406)
        head = self.request("HEAD", "/sda/1/a/c", {"Accept": "application/xml"})
        self.assertEqual((head.status, head.header("Content-Type")), (204, "application/xml; charset=utf-8"))
        self.assertEqual(self.request("HEAD", "/sda/1/a/c", {"Accept": "image/png"}).status, 406)

    def test_parameters(self) -> None:
        self.assertEqual(self.listing(limit="2"), ["a", "b/1"])
        self.assertEqual(self.listing(marker="b/2"), ["c", "d/x/1", "e"])
        self.assertEqual(self.listing(end_marker="c"), ["a", "b/1", "b/2"])
        self.assertEqual(self.listing(prefix="b/"), ["b/1", "b/2"])
        self.assertEqual(self.listing(delimiter="/"), ["a", "b/", "c", "d/", "e"])
        self.assertEqual(self.listing(prefix="d/", delimiter="/"), ["d/x/"])
        self.assertEqual(self.listing(reverse="true", limit="3"), ["e", "d/x/1", "c"])
        self.assertEqual(self.listing(reverse="on", marker="c"), ["b/2", "b/1", "a"])
        self.assertEqual(self.listing(path="b"), ["b/1", "b/2"])
        self.assertEqual(self.listing(path="d"), [])
        self.assertEqual(self.listing(limit="0"), [])

    def test_bad_parameters(self) -> None:
        answer = self.request("GET", "/sda/1/a/c", limit="10001")
        self.assertEqual((answer.status, answer.body), (412, b"Maximum limit is 10000\n"))
        self.assertEqual(self.request("GET", "/sda/1/a/c", limit="ten").status, 400)
        answer = http(self, self.node, "GET", "/sda/1/a/c?prefix=%FF")
        self.assertEqual(answer.status, 400)

    def test_long_delimiters(self) -> None:
        # as Swift's container listings (its object versioning functional tests list with "-&")
        for name in ("test", "test-&bar", "test-&foo", "off-&xyz"):
            self.put_row(name)
        self.assertEqual(self.listing(delimiter="-&"), [*self.names, "off-&", "test", "test-&"])

    def test_empty_listings(self) -> None:
        self.put("empty")
        plain = self.request("GET", "/sda/1/a/empty")
        self.assertEqual((plain.status, plain.body), (204, b""))
        self.assertEqual(plain.header("Content-Type"), "text/plain; charset=utf-8")
        self.assertEqual(plain.header("X-Container-Object-Count"), "0")
        as_json = self.request("GET", "/sda/1/a/empty", format="json")
        self.assertEqual((as_json.status, as_json.body), (200, b"[]"))
        as_xml = self.request("GET", "/sda/1/a/empty", format="xml")
        self.assertEqual(as_xml.status, 200)
        self.assertEqual(list(ElementTree.fromstring(as_xml.body)), [])
        # Parameters that select nothing from a full container: empty as well.
        self.assertEqual(self.request("GET", "/sda/1/a/c", prefix="zzz").status, 204)

    def test_missing_container(self) -> None:
        self.assertEqual(self.request("GET", "/sda/1/a/nothing").status, 404)
        self.assertEqual(self.request("HEAD", "/sda/1/a/nothing").status, 404)


class OddNameTests(ContainerServerTestCase):
    def test_object_names_round_trip(self) -> None:
        self.put()
        names = {
            "a//b": "a//b",
            "dir/": "dir/",
            "x%2Fy": "x/y",  # an encoded slash is a slash in the name
            "%252F": "%2F",  # and an encoded percent sign a percent sign
            "//lead": "//lead",
            quote("\N{SNAKE}/caf\N{LATIN SMALL LETTER E WITH ACUTE}".encode("utf-8")): "\N{SNAKE}/caf\N{LATIN SMALL LETTER E WITH ACUTE}",
            quote(" <&>\"'\t".encode("utf-8")): " <&>\"'\t",
        }
        for raw in names:
            self.assertEqual(self.put_row(raw).status, 201, raw)
        expected = sorted(names.values())
        plain = self.request("GET", "/sda/1/a/c")
        self.assertEqual(plain.body.decode("utf-8").splitlines(), expected)
        self.assertEqual([e["name"] for e in self.request("GET", "/sda/1/a/c", format="json").json()], expected)
        root = ElementTree.fromstring(self.request("GET", "/sda/1/a/c", format="xml").body)
        self.assertEqual([o.findtext("name") for o in root], expected)
        for raw in names:
            self.assertEqual(self.request("DELETE", f"/sda/1/a/c/{raw}", {"X-Timestamp": ts(2)}).status, 204)
        self.assertEqual(self.request("GET", "/sda/1/a/c").status, 204)

    def test_container_names(self) -> None:
        long_name = "\N{SNAKE}" * 64
        encoded = quote(long_name.encode("utf-8"))
        self.put(encoded)
        self.put_row("o", container=encoded)
        root = ElementTree.fromstring(self.request("GET", f"/sda/1/a/{encoded}", format="xml").body)
        self.assertEqual(root.get("name"), long_name)
        self.assertEqual(self.put("with%20space").status, 201)
        self.assertEqual(self.request("HEAD", "/sda/1/a/with%20space").status, 204)


class AccountReportTests(ContainerServerTestCase):
    account_headers = {
        "X-Account-Host": "10.0.0.1:6200",
        "X-Account-Partition": "7",
        "X-Account-Device": "sdb",
    }

    def test_put_reports(self) -> None:
        answer = self.request(
            "PUT",
            "/sda/1/a/c",
            {"X-Timestamp": ts(), "X-Backend-Storage-Policy-Index": "1", "X-Trans-Id": "tx1", **self.account_headers},
        )
        self.assertEqual(answer.status, 201)
        self.assertEqual(
            self.client.calls,
            [
                Call(
                    "PUT",
                    "10.0.0.1:6200/sdb",
                    "/sdb/7/a/c",
                    {
                        "X-Put-Timestamp": ts(),
                        "X-Delete-Timestamp": Timestamp(0).internal,
                        "X-Object-Count": "0",
                        "X-Bytes-Used": "0",
                        "X-Backend-Storage-Policy-Index": "1",
                        "X-Trans-Id": "tx1",
                    },
                    None,
                    "",
                    2.5,
                )
            ],
        )

    def test_delete_reports_with_stats(self) -> None:
        self.put()
        self.put_row("o")
        self.request("DELETE", "/sda/1/a/c/o", {"X-Timestamp": ts(2)})
        self.assertEqual(
            self.request("DELETE", "/sda/1/a/c", {"X-Timestamp": ts(3), **self.account_headers}).status, 204
        )
        (call,) = self.client.calls
        self.assertEqual(call.headers["X-Put-Timestamp"], ts(0))
        self.assertEqual(call.headers["X-Delete-Timestamp"], ts(3))
        self.assertEqual(call.path, "/sdb/7/a/c")

    def test_existing_container_reports_with_its_stats(self) -> None:
        self.put()
        self.put_row("o", size=9)
        self.request("PUT", "/sda/1/a/c", {"X-Timestamp": ts(5), **self.account_headers})
        (call,) = self.client.calls
        self.assertEqual((call.headers["X-Object-Count"], call.headers["X-Bytes-Used"]), ("1", "9"))
        self.assertEqual(call.headers["X-Put-Timestamp"], ts(5))

    def test_several_account_nodes(self) -> None:
        headers = {
            "X-Timestamp": ts(),
            "X-Account-Host": "10.0.0.1:6200, [fe80::1]:6201",
            "X-Account-Partition": "7",
            "X-Account-Device": "sdb,sdc",
            "X-Backend-Auto-Create": "true",
        }
        self.assertEqual(self.request("PUT", "/sda/1/a/c", headers).status, 201)
        self.assertEqual(
            [(c.node, c.path) for c in self.client.calls],
            [("10.0.0.1:6200/sdb", "/sdb/7/a/c"), ("fe80::1:6201/sdc", "/sdc/7/a/c")],
        )
        self.assertEqual(self.client.calls[0].headers["X-Backend-Auto-Create"], "true")

    def test_no_account_headers_no_report(self) -> None:
        self.put()
        self.request("PUT", "/sda/1/a/c", {"X-Timestamp": ts(1), "X-Account-Host": "10.0.0.1:6200"})
        self.assertEqual(self.client.calls, [])

    def test_failures_are_logged_not_answered(self) -> None:
        events = capture_logs(self, ContainerServer)
        self.client.default = in_turn(
            BackendTimeout("no answer within 2.5s"),
            BackendResponse(404, {}, b""),
            BackendError("connection refused"),
            BackendResponse(507, {}, b""),
        )
        self.assertEqual(self.request("PUT", "/sda/1/a/c", {"X-Timestamp": ts(), **self.account_headers}).status, 201)
        self.assertEqual(self.request("PUT", "/sda/1/a/c", {"X-Timestamp": ts(1), **self.account_headers}).status, 202)
        self.assertEqual(self.request("POST", "/sda/1/a/c", {"X-Timestamp": ts(2)}).status, 204)
        self.assertEqual(
            self.request("DELETE", "/sda/1/a/c", {"X-Timestamp": ts(3), **self.account_headers}).status, 204
        )
        self.request("PUT", "/sda/1/a/c", {"X-Timestamp": ts(4), **self.account_headers})
        texts = [message(e) for e in events]
        self.assertEqual(len(texts), 4)
        self.assertIn("no answer within 2.5s", texts[0])
        self.assertIn("the account does not exist there (404)", texts[1])
        self.assertIn("connection refused", texts[2])
        self.assertIn("status 507", texts[3])
        self.assertIn("a/c to 10.0.0.1:6200/sdb", texts[0])
        # The broker's reported state is the container updater's: never touched here.
        info = self.broker().get_info()
        self.assertEqual((info.reported_put_timestamp, info.reported_object_count), (Timestamp(0), 0))

    def test_mismatched_or_bad_account_headers(self) -> None:
        events = capture_logs(self, ContainerServer)
        headers = {**self.account_headers, "X-Account-Device": "sdb,sdc"}
        self.assertEqual(self.request("PUT", "/sda/1/a/c", {"X-Timestamp": ts(), **headers}).status, 201)
        headers = {**self.account_headers, "X-Account-Host": "nohost"}
        self.assertEqual(self.request("PUT", "/sda/1/a/c", {"X-Timestamp": ts(1), **headers}).status, 202)
        self.assertEqual(self.client.calls, [])
        texts = [message(e) for e in events]
        self.assertIn("1 account hosts but 2 devices", texts[0])
        self.assertIn("not host:port", texts[1])

    def test_no_report_when_nothing_changed(self) -> None:
        self.put(offset=0)
        self.request("DELETE", "/sda/1/a/c", {"X-Timestamp": ts(1)})
        # Refused requests are not reported.
        self.request("PUT", "/sda/1/a/c", {"X-Timestamp": ts(0.5), **self.account_headers})
        self.put(offset=2)
        self.put_row("o", offset=3)
        self.request("DELETE", "/sda/1/a/c", {"X-Timestamp": ts(4), **self.account_headers})
        self.assertEqual(self.client.calls, [])

    def test_reaches_a_real_account_server(self) -> None:
        account_context = make_context(self, devices=("sdb",))
        accounts = AccountServer(account_context)
        account_node = NodeServer(accounts=accounts, containers=ContainerReports(accounts))

        def forward(call: Call) -> BackendResponse:
            answer = http(self, account_node, call.method, call.path, call.headers)
            return BackendResponse(answer.status, {}, answer.body)

        self.client.default = forward
        self.assertEqual(http(self, account_node, "PUT", "/sdb/7/a", {"X-Timestamp": ts()}).status, 201)
        self.request("PUT", "/sda/1/a/c", {"X-Timestamp": ts(1), **self.account_headers})
        self.put_row("o", offset=2, size=11)
        self.request("PUT", "/sda/1/a/c", {"X-Timestamp": ts(3), **self.account_headers})
        listing = http(self, account_node, "GET", "/sdb/7/a?format=json").json()
        self.assertEqual(
            listing,
            [{"name": "c", "count": 1, "bytes": 11, "last_modified": Timestamp.parse(ts(3)).isoformat,
              "storage_policy": "gold"}],
        )
        self.request("DELETE", "/sda/1/a/c/o", {"X-Timestamp": ts(4)})
        self.request("DELETE", "/sda/1/a/c", {"X-Timestamp": ts(5), **self.account_headers})
        head = http(self, account_node, "HEAD", "/sdb/7/a")
        self.assertEqual(head.header("X-Account-Container-Count"), "0")
        self.assertEqual(http(self, account_node, "GET", "/sdb/7/a").status, 204)


class DeviceAndDatabaseErrorTests(ContainerServerTestCase):
    def test_missing_device(self) -> None:
        for method in ("PUT", "DELETE", "POST", "GET", "HEAD"):
            answer = self.request(method, "/sdz/1/a/c", {"X-Timestamp": ts()})
            self.assertEqual(answer.status, 507, method)
        self.assertEqual(self.request("PUT", "/sdz/1/a/c/o", {"X-Timestamp": ts(), "X-Size": "1",
                                                               "X-Content-Type": "a/b", "X-Etag": "e"}).status, 507)

    def test_unmounted_device(self) -> None:
        context = make_context(self)
        server = ContainerServer(
            StorageContext(
                devices=context.devices,
                mount_check=True,
                hasher=HASHER,
                policies=POLICIES,
                runner=SynchronousRunner(),
                client=FakeBackend(),
                reactor=clock_at(NOW),
                diskfiles=DiskFileManager(context.devices, True, HASHER),
            )
        )
        answer = http(self, NodeServer(containers=server), "PUT", "/sda/1/a/c", {"X-Timestamp": ts()})
        self.assertEqual(answer.status, 507)

    def test_corrupt_database_is_quarantined(self) -> None:
        events = capture_logs(self, DatabaseAccess)
        self.put()
        self.put_row("o")
        db = self.db_path()
        db.write_bytes(b"this is not a database at all" * 200)
        # A node that has not opened it yet (a broker that has keeps its cached pages).
        server = ContainerServer(self.context)
        answer = http(self, NodeServer(containers=server), "GET", "/sda/1/a/c")
        self.assertEqual((answer.status, answer.body), (404, b"Not Found\n"))
        quarantined = self.context.devices / "sda" / "quarantined" / "containers" / db.parent.name
        self.assertEqual((quarantined / db.name).read_bytes()[:12], b"this is not ")
        self.assertFalse(db.parent.exists())
        self.assertIn("quarantined the damaged database", message(events[0]))
        self.assertIn("not a database", message(events[0]))
        # A new PUT starts a good database in its place; replication would refill it.
        self.assertEqual(self.put(offset=5).status, 201)
        self.assertEqual(self.request("GET", "/sda/1/a/c").status, 204)

    def test_quarantine_drops_the_cached_broker(self) -> None:
        capture_logs(self, DatabaseAccess)
        self.put()
        cache = self.server._db.cache
        self.assertIn(self.db_path(), cache)

        def corrupt(broker: ContainerBroker) -> None:
            raise DatabaseCorrupt("database disk image is malformed")

        with_idle = ContainerBroker.get_info
        self.patch(ContainerBroker, "get_info", corrupt)
        self.assertEqual(self.request("HEAD", "/sda/1/a/c").status, 404)
        self.assertNotIn(self.db_path(), cache)
        self.assertFalse(self.db_path().exists())
        self.patch(ContainerBroker, "get_info", with_idle)
        self.assertEqual(self.put(offset=1).status, 201)
        self.assertIn(self.db_path(), cache)

    def test_second_quarantine_of_the_same_hash(self) -> None:
        capture_logs(self, DatabaseAccess)
        for round_ in range(2):
            self.put(offset=round_)
            self.db_path().write_bytes(b"garbage" * 100)
            server = ContainerServer(self.context)
            self.assertEqual(http(self, NodeServer(containers=server), "HEAD", "/sda/1/a/c").status, 404)
        kept = sorted(p.name for p in (self.context.devices / "sda" / "quarantined" / "containers").iterdir())
        self.assertEqual(len(kept), 2)
        self.assertTrue(kept[1].startswith(kept[0] + "-"))

    def test_a_database_of_the_wrong_kind_is_corrupt(self) -> None:
        from txstore.storage.db import AccountBroker

        capture_logs(self, DatabaseAccess)
        db = self.db_path()
        AccountBroker(db).initialize("a", ts())
        self.assertEqual(self.put_row("o").status, 404)
        self.assertFalse(db.exists())

    def test_busy_database(self) -> None:
        self.put()

        def busy(broker: ContainerBroker) -> None:
            raise DatabaseBusy("database is locked")

        self.patch(ContainerBroker, "get_info", busy)
        answer = self.request("GET", "/sda/1/a/c")
        self.assertEqual(answer.status, 503)
        self.assertIn(b"busy", answer.body)

    def test_full_disk(self) -> None:
        def full(broker: ContainerBroker, *args: Any, **kwargs: Any) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(ContainerBroker, "initialize", full)
        self.assertEqual(self.put().status, 507)

    def test_brokers_are_reused(self) -> None:
        opened: list[Path] = []
        original = ContainerBroker._open

        def counting(broker: ContainerBroker) -> Any:
            opened.append(broker.path)
            return original(broker)

        self.patch(ContainerBroker, "_open", counting)
        self.put()
        for _ in range(5):
            self.put_row("o")
            self.request("HEAD", "/sda/1/a/c")
        self.assertEqual(len(opened), 1)

    def test_close(self) -> None:
        self.put()
        self.successResultOf(self.server.close())


class QuarantineHelperTests(SynchronousTestCase):
    def test_missing_source(self) -> None:
        device = temp_dir(self)
        self.assertIsNone(quarantine_database(device, "containers", device / "x" / "1" / "abc" / "h" / "h.db"))


# -- the broker cache ----------------------------------------------------------------------------


@define
class FakeBroker:
    path: Path
    closed: int = 0

    def close(self) -> None:
        self.closed += 1


@define
class RecordingRunner:
    keys: list[str] = field(factory=list)

    def run(self, key: str, function: Any, *args: Any) -> Deferred:
        self.keys.append(key)
        return succeed(function(*args))


class BrokerCacheTests(SynchronousTestCase):
    def test_lru_eviction_closes_in_the_devices_pool(self) -> None:
        runner = RecordingRunner()
        cache: BrokerCache[Any] = BrokerCache(runner, capacity=2)
        a = cache.get("sda", Path("/a"), FakeBroker)
        b = cache.get("sdb", Path("/b"), FakeBroker)
        self.assertIs(cache.get("sda", Path("/a"), FakeBroker), a)  # /a is now the most recent
        c = cache.get("sdc", Path("/c"), FakeBroker)
        self.assertEqual((a.closed, b.closed, c.closed), (0, 1, 0))
        self.assertEqual(runner.keys, ["sdb"])
        self.assertNotIn(Path("/b"), cache)
        self.assertEqual(len(cache), 2)
        self.assertIsNot(cache.get("sdb", Path("/b"), FakeBroker), b)  # a new broker
        self.assertEqual(a.closed, 1)

    def test_discard_and_close(self) -> None:
        cache: BrokerCache[Any] = BrokerCache(RecordingRunner(), capacity=4)
        a = cache.get("sda", Path("/a"), FakeBroker)
        b = cache.get("sda", Path("/b"), FakeBroker)
        self.successResultOf(cache.discard(Path("/a")))
        self.successResultOf(cache.discard(Path("/nothing")))
        self.assertEqual((a.closed, len(cache)), (1, 1))
        self.successResultOf(cache.close())
        self.assertEqual((b.closed, len(cache)), (1, 0))

    def test_capacity_checked(self) -> None:
        self.assertRaises(ValueError, BrokerCache, RecordingRunner(), 0)
