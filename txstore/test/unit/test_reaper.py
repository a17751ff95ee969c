"""Tests for the account reaper: a deleted account's objects and containers go, on every replica."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qsl

import attrs
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from txstore.common.backend_client import BackendResponse
from txstore.common.io import SynchronousRunner
from txstore.common.policies import DEFAULT_POLICIES
from txstore.daemons.reaper import AccountReaper
from txstore.storage.config import DEFAULT_DAEMONS
from txstore.storage.db import AccountBroker
from txstore.storage.db.files import database_path
from txstore.storage.diskfile import DiskFileManager
from txstore.storage.context import StorageContext
from txstore.storage.local_devices import local_device_matcher
from txstore.test.support import clock_at, temp_dir
from txstore.test.unit.test_proxy_controllers import HASHER, Call, FakeBackend, down, fake_rings, key

ACCOUNT = "AUTH_gone"
DELETED_AT = 1_700_000_000.0


class ListingBackend(FakeBackend):
    """Container servers that list ``objects`` (per container) in pages, and accept DELETEs."""

    def __init__(self, objects: dict[str, list[str]]) -> None:
        super().__init__()
        self.objects = objects
        self.default = self.answer

    def answer(self, call: Call) -> BackendResponse:
        parts = call.path.split("/")
        if call.method == "GET":
            container = parts[4]
            query = dict(parse_qsl(call.query.lstrip("?"), keep_blank_values=True))
            names = [n for n in self.objects.get(container, []) if n > query.get("marker", "")]
            page = names[: int(query["limit"])]
            body = json.dumps([{"name": n, "bytes": 1} for n in page]).encode()
            return BackendResponse(200, {"x-backend-storage-policy-index": "0"}, body)
        return BackendResponse(204, {}, b"")

    def deletes(self, depth: int) -> list[Call]:
        """The DELETEs of paths with ``depth`` segments after the partition (2: containers, 3: objects)."""
        return [c for c in self.calls if c.method == "DELETE" and len(c.path.split("/")) == 3 + depth]


class ReaperTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = temp_dir(self)
        self.rings = fake_rings(temp_dir(self))
        self.apart, account_nodes = self.rings.account.get_nodes(ACCOUNT)
        self.first = account_nodes[0]
        self.second = account_nodes[1]
        self.clock = clock_at(DELETED_AT + 10)
        self.backend = ListingBackend({"c1": ["a", "b", "c\u00e9"], "c2": [], "c3": [f"o{i:02d}" for i in range(5)]})
        self.context = StorageContext(
            devices=self.root, mount_check=False, hasher=HASHER, policies=DEFAULT_POLICIES,
            runner=SynchronousRunner(), client=self.backend, reactor=self.clock,
            diskfiles=DiskFileManager(self.root, False, HASHER),
        )
        self.db = self.make_account(self.first.device_name)

    def make_account(self, device: str, deleted: bool = True) -> Path:
        (self.root / device).mkdir(exist_ok=True)
        db = database_path(self.root / device, "accounts", self.apart, HASHER.hash_path(ACCOUNT))
        broker = AccountBroker(db)
        broker.initialize(ACCOUNT, "1600000000.00000")
        for name in ("c1", "c2", "c3"):
            broker.put_container(name, "1600000001.00000", "0", 1, 1)
        if deleted:
            broker.mark_deleted(DELETED_AT)
        broker.close()
        return db

    def reaper(self, node=None, **options) -> AccountReaper:
        node = node or self.first
        return AccountReaper(self.context, self.rings, local_device_matcher(node.ip, node.port),
                             settings=attrs.evolve(DEFAULT_DAEMONS.account_reaper, **options), listing_limit=2)

    def run_pass(self, reaper: AccountReaper) -> dict:
        return self.successResultOf(Deferred.fromCoroutine(reaper.run_pass()))

    def test_every_object_replica_then_every_container_replica(self) -> None:
        figures = self.run_pass(self.reaper())
        self.assertEqual(figures, {"accounts": 1, "containers_deleted": 3, "objects_deleted": 8,
                                   "container_failures": 0, "object_failures": 0})
        object_deletes = self.backend.deletes(3)
        self.assertEqual(len(object_deletes), 8 * 3)
        ring = self.rings.object_ring(0)
        cpart, cnodes = self.rings.container.get_nodes(ACCOUNT, "c1")
        part, nodes = ring.get_nodes(ACCOUNT, "c1", "c\u00e9")
        calls = [c for c in object_deletes if c.path.endswith("/c1/c\u00e9")]
        self.assertEqual(sorted(c.node for c in calls), sorted(key(n) for n in nodes))
        for call in calls:
            self.assertEqual(call.path.split("/")[2], str(part))
            self.assertEqual(call.headers["X-Backend-Storage-Policy-Index"], "0")
            self.assertEqual(call.headers["X-Container-Partition"], str(cpart))
            self.assertIn("X-Timestamp", call.headers)
        # one container replica per object replica, so every container replica loses the row
        self.assertEqual(sorted(c.headers["X-Container-Device"] for c in calls), sorted(n.device_name for n in cnodes))
        container_deletes = self.backend.deletes(2)
        self.assertEqual(len(container_deletes), 3 * 3)
        for call in container_deletes:
            self.assertEqual(call.headers["X-Account-Override-Deleted"], "yes")
            self.assertEqual(call.headers["X-Account-Partition"], str(self.apart))
        # containers go only after their objects
        last_object = max(i for i, c in enumerate(self.backend.calls) if c in object_deletes and "/c3/" in c.path)
        first_c3 = min(i for i, c in enumerate(self.backend.calls) if c in container_deletes and c.path.endswith("/c3"))
        self.assertLess(last_object, first_c3)

    def test_only_the_first_primary_reaps(self) -> None:
        self.make_account(self.second.device_name)
        self.assertEqual(self.run_pass(self.reaper(self.second))["accounts"], 0)
        self.assertEqual(self.backend.calls, [])
        self.assertEqual(self.run_pass(self.reaper())["accounts"], 1)
        self.assertEqual(len(self.backend.deletes(2)), 9)

    def test_live_accounts_and_the_delay(self) -> None:
        self.db.unlink()
        self.make_account(self.first.device_name, deleted=False)
        self.assertEqual(self.run_pass(self.reaper())["accounts"], 0)
        self.db.unlink()
        self.make_account(self.first.device_name)
        self.assertEqual(self.run_pass(self.reaper(delay_reaping=60))["accounts"], 0)
        self.assertEqual(self.backend.calls, [])
        self.clock.advance(51)  # DELETED_AT + 61
        self.assertEqual(self.run_pass(self.reaper(delay_reaping=60))["accounts"], 1)

    def test_failures_are_counted_and_the_container_kept(self) -> None:
        ring = self.rings.object_ring(0)
        broken = key(ring.get_nodes(ACCOUNT, "c1", "a")[1][1])
        self.backend.nodes[broken] = down
        failing = {
            (c, o) for c, names in self.backend.objects.items() for o in names
            if broken in [key(n) for n in ring.get_nodes(ACCOUNT, c, o)[1]]
        }
        kept = {c for c, _ in failing}
        figures = self.run_pass(self.reaper())
        self.assertEqual((figures["objects_deleted"], figures["object_failures"]), (8 - len(failing), len(failing)))
        # a container keeps until a later pass deleted every one of its objects
        self.assertEqual((figures["containers_deleted"], figures["container_failures"]), (3 - len(kept), len(kept)))
        self.assertEqual({c.path.split("/")[-1] for c in self.backend.deletes(2)}, {"c1", "c2", "c3"} - kept)
        del self.backend.nodes[broken]
        figures = self.run_pass(self.reaper())
        self.assertEqual((figures["object_failures"], figures["containers_deleted"]), (0, 3))
