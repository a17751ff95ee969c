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
from txstore.storage.context import StorageContext
from txstore.test.support import clock_at
from txstore.test.unit.test_container_updater import RecordingClient
from txstore.test.unit.test_proxy_controllers import build_ring


class ObjectUpdaterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = Path(self.mktemp()).absolute()
        (self.root / "d1").mkdir(parents=True)
        hasher = PathHasher(b"", b"s")
        self.client = RecordingClient()
        self.diskfiles = DiskFileManager(self.root, False, hasher)
        self.context = StorageContext(
            devices=self.root, mount_check=False, hasher=hasher, policies=DEFAULT_POLICIES,
            runner=SynchronousRunner(), client=self.client, reactor=clock_at(1.0), diskfiles=self.diskfiles,
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

    def test_old_records_of_node_text_are_sent_as_utf8_and_one_bad_record_stops_nothing(self) -> None:
        """Issue 20: pendings saved with ``text/é€`` as text crashed every pass at that record."""
        self.diskfiles.remove_async_pending(self.diskfiles.list_async_pendings("d1")[0])
        for obj, content_type in (("a", "text/\u00e9\u20ac"), ("b", "text/\u00e9"),
                                  ("c", "text/\u00c3\u00a9")):  # c: wire form ("text/é" as bytes)
            self.diskfiles.write_async_pending("d1", 0, "PUT", "AUTH_a", "c", obj,
                                               {"X-Size": "1", "X-Etag": "e", "X-Content-Type": content_type},
                                               Timestamp.parse("5.00000"))
        self.assertEqual(self.run_pass(), {"pending": 3, "delivered": 3, "failed": 0})
        sent = {path.rsplit("/", 1)[1]: headers["X-Content-Type"].encode("latin-1").decode("utf-8")
                for _, _, path, headers in self.client.calls}
        self.assertEqual(sent, {"a": "text/\u00e9\u20ac", "b": "text/\u00e9", "c": "text/\u00e9"})

    def test_a_record_that_fails_oddly_is_counted_and_the_pass_goes_on(self) -> None:
        self.diskfiles.write_async_pending("d1", 0, "PUT", "AUTH_a", "c", "second", {"X-Size": "1"},
                                           Timestamp.parse("6.00000"))
        calls = []

        async def odd(method, host, port, path, headers=None, body=None, timeout=None, query=""):
            calls.append(path)
            if path.endswith("/c/second"):
                raise RuntimeError("something unexpected")
            return await RecordingClient.request(self.client, method, host, port, path, headers)

        self.client.request = odd
        figures = self.run_pass()
        self.assertEqual((figures["pending"], figures["delivered"], figures["failed"]), (2, 1, 1))
        self.assertEqual(len(self.flushLoggedErrors()), 1)  # logged once, as a failure
