"""Tests for the container and account auditors: damaged databases leave service, sound ones stay."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txstore.common.hashing import PathHasher
from txstore.common.io import SynchronousRunner
from txstore.common.policies import DEFAULT_POLICIES
from txstore.daemons.db_auditor import DatabaseAuditor
from txstore.storage.account_server import AccountServer
from txstore.storage.config import DEFAULT_DAEMONS
from txstore.storage.container_server import ContainerServer
from txstore.storage.db import AccountBroker, ContainerBroker
from txstore.storage.db.files import database_path
from txstore.storage.diskfile import DiskFileManager
from txstore.storage.context import StorageContext
from txstore.test.support import clock_at

HASHER = PathHasher(b"", b"s")


def damage(db: Path, page: int = 2) -> None:
    """Overwrite one page of the file in the middle of a b-tree."""
    raw = bytearray(db.read_bytes())
    size = 4096
    assert len(raw) > (page + 1) * size, "the database is too small to damage a middle page"
    raw[page * size:(page + 1) * size] = b"\x55" * size
    db.write_bytes(bytes(raw))


class DatabaseAuditorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = Path(self.mktemp()).absolute()
        for device in ("d1", "d2"):
            (self.root / device).mkdir(parents=True)
        self.context = StorageContext(
            devices=self.root, mount_check=False, hasher=HASHER, policies=DEFAULT_POLICIES,
            runner=SynchronousRunner(), client=None, reactor=clock_at(1.0),
            diskfiles=DiskFileManager(self.root, False, HASHER),
        )
        self.containers = ContainerServer(self.context)
        self.dbs = {}
        for i, device in enumerate(["d1", "d1", "d2"]):
            name = f"c{i}"
            db = database_path(self.root / device, "containers", i, HASHER.hash_path("AUTH_a", name))
            broker = ContainerBroker(db)
            broker.initialize("AUTH_a", name, "1.00000")
            broker.merge_items(
                {"name": f"object-{n:05d}-" + "x" * 40, "created_at": "2.00000", "size": n,
                 "content_type": "text/plain", "etag": "e" * 32, "deleted": 0}
                for n in range(400)
            )
            broker.close()
            self.dbs[name] = (device, db)
        self.clock = Clock()

    def auditor(self, kind: str = "containers", **options) -> DatabaseAuditor:
        broker, server = (ContainerBroker, self.containers) if kind == "containers" else (
            AccountBroker, AccountServer(self.context))
        options.setdefault("databases_per_second", 0)
        settings = attrs.evolve(DEFAULT_DAEMONS.section(f"{kind[:-1]}-auditor"), **options)
        return DatabaseAuditor(self.context, self.clock, kind, broker, server.databases.quarantine, settings=settings)

    def run_pass(self, auditor: DatabaseAuditor) -> dict:
        return self.successResultOf(Deferred.fromCoroutine(auditor.run_pass()))

    def quarantined(self, device: str, kind: str = "containers") -> list[str]:
        directory = self.root / device / "quarantined" / kind
        return sorted(p.name for p in directory.iterdir()) if directory.exists() else []

    def test_sound_databases_pass(self) -> None:
        self.assertEqual(self.run_pass(self.auditor()), {"checked": 3, "passed": 3, "quarantined": 0, "errors": 0})
        self.assertEqual(self.run_pass(self.auditor(integrity_check=True))["passed"], 3)
        self.assertEqual(self.quarantined("d1") + self.quarantined("d2"), [])

    def test_a_damaged_database_is_quarantined_and_its_cached_broker_closed(self) -> None:
        device, db = self.dbs["c1"]
        cache = self.containers._db.cache
        cache.get(device, db, ContainerBroker)
        damage(db)
        self.assertEqual(self.run_pass(self.auditor()), {"checked": 3, "passed": 2, "quarantined": 1, "errors": 0})
        self.assertEqual(self.quarantined("d1"), [db.parent.name])
        self.assertFalse(db.exists())
        self.assertNotIn(db, cache)
        self.assertTrue(self.dbs["c0"][1].exists())
        self.assertEqual(self.run_pass(self.auditor())["checked"], 2)

    def test_a_file_that_is_not_ours_is_quarantined(self) -> None:
        _, db = self.dbs["c2"]
        for leftover in db.parent.iterdir():
            leftover.unlink()
        conn = sqlite3.connect(db)
        conn.execute("CREATE TABLE t (x)")
        conn.commit()
        conn.close()
        self.assertEqual(self.run_pass(self.auditor())["quarantined"], 1)
        self.assertEqual(self.quarantined("d2"), [db.parent.name])

    def test_account_databases(self) -> None:
        db = database_path(self.root / "d2", "accounts", 9, HASHER.hash_path("AUTH_a"))
        broker = AccountBroker(db)
        broker.initialize("AUTH_a", "1.00000")
        broker.close()
        auditor = self.auditor("accounts")
        self.assertEqual(self.run_pass(auditor), {"checked": 1, "passed": 1, "quarantined": 0, "errors": 0})
        db.write_bytes(b"\0" * 8192)
        self.assertEqual(self.run_pass(auditor)["quarantined"], 1)
        self.assertEqual(self.quarantined("d2", "accounts"), [db.parent.name])
        self.assertEqual(self.quarantined("d2"), [])

    def test_paced_on_the_reactor(self) -> None:
        passing = Deferred.fromCoroutine(self.auditor(databases_per_second=4).run_pass())
        self.clock.advance(0.5)
        self.assertNoResult(passing)  # 3 databases at 4 a second: the last waits until 0.75 s
        self.clock.advance(0.25)
        self.assertEqual(self.successResultOf(passing)["checked"], 3)

    def test_stop_ends_a_pass_at_its_next_wait(self) -> None:
        auditor = self.auditor(databases_per_second=1)
        passing = Deferred.fromCoroutine(auditor.run_pass())
        auditor.stop()
        figures = self.successResultOf(passing)
        self.assertEqual((figures["checked"], figures["stopped"]), (1, True))
