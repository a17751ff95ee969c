"""Tests for the container updater and the periodic daemon that runs it."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import generate_latest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from txstore.common.backend_client import BackendError, BackendResponse
from txstore.common.hashing import PathHasher
from txstore.common.io import SynchronousRunner
from txstore.common.metrics import node_metrics
from txstore.common.policies import DEFAULT_POLICIES
from txstore.daemons.container_updater import ContainerUpdater, read_info
from txstore.daemons.periodic import PeriodicDaemon
from txstore.storage.db import ContainerBroker
from txstore.storage.db.files import database_path
from txstore.storage.diskfile import DiskFileManager
from txstore.storage.context import StorageContext
from txstore.test.support import clock_at
from txstore.test.unit.test_proxy_controllers import build_ring


class RecordingClient:
    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.failing: set[int] = set()

    async def request(self, method, host, port, path, headers=None, body=None, timeout=None, query=""):
        self.calls.append((method, port, path, dict(headers or {})))
        if port in self.failing:
            raise BackendError("refused")
        return BackendResponse(201, {}, b"")


class ContainerUpdaterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = Path(self.mktemp()).absolute()
        (self.root / "d1").mkdir(parents=True)
        hasher = PathHasher(b"", b"s")
        self.client = RecordingClient()
        self.context = StorageContext(
            devices=self.root, mount_check=False, hasher=hasher, policies=DEFAULT_POLICIES,
            runner=SynchronousRunner(), client=self.client, reactor=clock_at(1.0),
            diskfiles=DiskFileManager(self.root, False, hasher),
        )
        ports = [7001, 7002, 7003, 7004, 7005, 7006]
        self.ring = build_ring(self.root / "account.ring.gz", ["127.0.0.1"] * 6, ports)
        self.updater = ContainerUpdater(self.context, self.ring)
        db_hash = hasher.hash_path("AUTH_a", "c")
        self.db = database_path(self.root / "d1", "containers", 3, db_hash)
        broker = ContainerBroker(self.db)
        broker.initialize("AUTH_a", "c", "1.00000")
        broker.put_object("o1", "2.00000", 10, "text/plain", "e1")
        broker.put_object("o2", "3.00000", 32, "text/plain", "e2")
        broker.close()

    def run_pass(self) -> dict:
        return self.successResultOf(Deferred.fromCoroutine(self.updater.run_pass()))

    def test_reports_changes_to_every_account_replica_once(self) -> None:
        figures = self.run_pass()
        self.assertEqual((figures["checked"], figures["reported"]), (1, 1))
        part, nodes = self.ring.get_nodes("AUTH_a")
        self.assertEqual(sorted(c[1] for c in self.client.calls), sorted(n.port for n in nodes))
        method, _, path, headers = self.client.calls[0]
        self.assertEqual(method, "PUT")
        self.assertTrue(path.endswith(f"/{part}/AUTH_a/c"))
        self.assertEqual((headers["X-Object-Count"], headers["X-Bytes-Used"]), ("2", "42"))
        self.assertEqual(headers["X-Put-Timestamp"], "0000000001.00000")
        info = read_info(self.db)
        self.assertEqual((info.reported_object_count, info.reported_bytes_used), (2, 42))
        self.client.calls.clear()
        self.assertEqual(self.run_pass()["reported"], 0)
        self.assertEqual(self.client.calls, [])
        broker = ContainerBroker(self.db)
        broker.delete_object("o1", "4.00000")
        broker.close()
        self.assertEqual(self.run_pass()["reported"], 1)
        self.assertEqual(self.client.calls[0][3]["X-Object-Count"], "1")

    def test_only_a_deleted_container_overrides_a_deleted_account(self) -> None:
        self.run_pass()
        self.assertNotIn("X-Account-Override-Deleted", self.client.calls[0][3])
        self.client.calls.clear()
        broker = ContainerBroker(self.db)
        for name, ts in (("o1", "4.00000"), ("o2", "4.00001")):
            broker.delete_object(name, ts)
        broker.mark_deleted("5.00000")
        broker.close()
        self.assertEqual(self.run_pass()["reported"], 1)
        headers = self.client.calls[0][3]
        self.assertEqual((headers["X-Delete-Timestamp"], headers["X-Account-Override-Deleted"]),
                         ("0000000005.00000", "yes"))

    def test_without_a_majority_it_tries_again(self) -> None:
        _, nodes = self.ring.get_nodes("AUTH_a")
        self.client.failing = {nodes[0].port, nodes[1].port}
        figures = self.run_pass()
        self.assertEqual((figures["reported"], figures["failed"]), (0, 1))
        self.assertEqual(read_info(self.db).reported_object_count, 0)
        self.client.failing = {nodes[0].port}
        self.assertEqual(self.run_pass()["reported"], 1)
        self.flushLoggedErrors()


class PeriodicDaemonTests(SynchronousTestCase):
    def test_jittered_start_and_errors_do_not_stop_it(self) -> None:
        clock = Clock()
        runs: list[float] = []

        async def run_pass() -> dict:
            runs.append(clock.seconds())
            if len(runs) == 2:
                raise RuntimeError("a bad pass")
            return {"n": len(runs)}

        daemon = PeriodicDaemon("test", run_pass, 10.0, clock, jitter=lambda: 0.5)
        daemon.startService()
        clock.advance(4.9)
        self.assertEqual(runs, [])
        clock.advance(0.1)
        self.assertEqual(runs, [5.0])
        clock.advance(10)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertTrue(daemon.last_pass["failed"])
        clock.advance(10)
        self.assertEqual(runs, [5.0, 15.0, 25.0])
        self.assertEqual(daemon.last_pass["n"], 3)
        self.assertEqual(daemon.passes, 3)
        # the last few, newest last, for whoever polls less often than passes end
        self.assertEqual([(p.get("n"), p.get("failed"), p["finished_at"]) for p in daemon.recent_passes],
                         [(1, None, 5.0), (None, True, 15.0), (3, None, 25.0)])
        for _ in range(10):
            clock.advance(10)
        self.assertEqual([p["n"] for p in daemon.recent_passes], list(range(6, 14)))
        daemon.stopService()
        clock.advance(100)
        self.assertEqual(len(runs), 13)

    def test_a_pass_is_timed_on_the_reactor(self) -> None:
        clock = Clock()

        async def run_pass() -> dict:
            await deferLater(clock, 2.5)
            return {}

        daemon = PeriodicDaemon("test", run_pass, 10.0, clock, jitter=lambda: 0.1)
        daemon.startService()
        self.addCleanup(daemon.stopService)
        clock.advance(1.0)
        clock.advance(2.5)
        self.assertEqual(daemon.last_pass, {"duration": 2.5, "finished_at": 3.5})

    def test_a_pass_is_one_readable_line_and_its_metrics(self) -> None:
        clock = Clock()
        metrics = node_metrics()
        lines: list[str] = []
        observer = lambda event: lines.append(formatEvent(event))  # noqa: E731
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        outcomes = [{"objects": 12, "failures": 0, "per_device": {"d1": 3, "d2": 9}, "rate": 1.5}, None]

        async def run_pass() -> dict:
            figures = outcomes.pop(0)
            if figures is None:
                raise RuntimeError("a bad pass")
            return figures

        daemon = PeriodicDaemon("object-updater", run_pass, 10.0, clock, jitter=lambda: 0.0, metrics=metrics)
        daemon.startService()
        self.addCleanup(daemon.stopService)
        clock.advance(0)
        done = [line for line in lines if "pass done" in line]
        self.assertEqual(len(done), 1)
        self.assertRegex(done[0], r"^object-updater pass done in \d+\.\d\ds: objects 12, failures 0, "
                                  r"per device \(d1 3, d2 9\), rate 1\.50$")
        clock.advance(10)
        self.flushLoggedErrors(RuntimeError)
        text = generate_latest(metrics.registry).decode()
        self.assertIn('txstore_daemon_passes_total{daemon="object-updater",result="done"} 1.0', text)
        self.assertIn('txstore_daemon_passes_total{daemon="object-updater",result="failed"} 1.0', text)
        self.assertIn('txstore_daemon_pass_figure{daemon="object-updater",figure="objects"} 12.0', text)
        self.assertIn('txstore_daemon_last_success_timestamp_seconds{daemon="object-updater"}', text)
