"""Tests for the object updater: async pendings replayed to every container replica."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from txstore.common.hashing import PathHasher
from txstore.common.io import SynchronousRunner
from txstore.common.policies import DEFAULT_POLICIES
from txstore.common.timestamps import Timestamp
from txstore.daemons.object_updater import ObjectUpdater
from txstore.storage.diskfile import DiskFileManager
from txstore.storage.http_support import StorageContext
from txstore.test.test_container_updater import RecordingClient
from txstore.test.test_proxy_controllers import build_ring


class ObjectUpdaterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = Path(self.mktemp()).absolute()
        (self.root / "d1").mkdir(parents=True)
        hasher = PathHasher(b"", b"s")
        self.client = RecordingClient()
        self.diskfiles = DiskFileManager(self.root, False, hasher)
        self.context = StorageContext(
            devices=self.root, mount_check=False, hasher=hasher, policies=DEFAULT_POLICIES,
            runner=SynchronousRunner(), client=self.client, clock=lambda: 1.0, diskfiles=self.diskfiles,
        )
        self.ring = build_ring(self.root / "container.ring.gz", ["127.0.0.1"] * 6, [7101 + i for i in range(6)])
        self.updater = ObjectUpdater(self.context, self.ring)
        self.diskfiles.write_async_pending(
            "d1", 0, "PUT", "AUTH_a", "c", "dir/o\u00e9",
            {"X-Size": "5", "X-Etag": "e", "X-Content-Type": "text/plain", "X-Container-Host": "127.0.0.9:1",
             "X-Trans-Id": "tx1"},
            Timestamp.parse("5.00000"),
        )

    def run_pass(self) -> dict:
        return self.successResultOf(Deferred.fromCoroutine(self.updater.run_pass()))

    def test_replays_to_every_replica_then_forgets(self) -> None:
        self.assertEqual(self.run_pass(), {"pending": 1, "delivered": 1, "failed": 0})
        part, nodes = self.ring.get_nodes("AUTH_a", "c")
        self.assertEqual(sorted(c[1] for c in self.client.calls), sorted(n.port for n in nodes))
        method, _, path, headers = self.client.calls[0]
        self.assertEqual(method, "PUT")
        self.assertTrue(path.endswith(f"/{part}/AUTH_a/c/dir/o\u00e9"))
        self.assertEqual(headers["X-Backend-Server-Type"], "container")
        self.assertEqual(headers["X-Timestamp"], "0000000005.00000")
        self.assertEqual((headers["X-Size"], headers["X-Etag"], headers["X-Trans-Id"]), ("5", "e", "tx1"))
        self.assertNotIn("X-Container-Host", headers)
        self.assertEqual(self.diskfiles.list_async_pendings("d1"), [])
        self.client.calls.clear()
        self.assertEqual(self.run_pass(), {"pending": 0, "delivered": 0, "failed": 0})

    def test_kept_until_every_replica_took_it(self) -> None:
        _, nodes = self.ring.get_nodes("AUTH_a", "c")
        self.client.failing = {nodes[2].port}
        self.assertEqual(self.run_pass(), {"pending": 1, "delivered": 0, "failed": 1})
        self.assertEqual(len(self.diskfiles.list_async_pendings("d1")), 1)
        self.client.failing = set()
        self.assertEqual(self.run_pass()["delivered"], 1)
        self.assertEqual(self.diskfiles.list_async_pendings("d1"), [])
