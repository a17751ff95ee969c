"""Tests for the expiry queue the storage layer keeps, and the expirer that works through it."""

from __future__ import annotations

from pathlib import Path

import attrs
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from txstore.common.hashing import PathHasher
from txstore.common.io import SynchronousRunner
from txstore.common.policies import DEFAULT_POLICIES
from txstore.common.timestamps import Timestamp
from txstore.daemons.expirer import ObjectExpirer
from txstore.storage import expiring
from txstore.storage.config import DEFAULT_DAEMONS, ExpirerSettings
from txstore.storage.diskfile import DiskFile, DiskFileConflict, DiskFileManager
from txstore.storage.context import StorageContext
from txstore.test.support import clock_at

DUE = 1_700_000_100


def expirer_settings(objects_per_second: float) -> ExpirerSettings:
    return attrs.evolve(DEFAULT_DAEMONS.object_expirer, objects_per_second=objects_per_second)


class QueueTests(SynchronousTestCase):
    """The storage layer records every installed .data or .meta carrying X-Delete-At."""

    def setUp(self) -> None:
        self.root = Path(self.mktemp()).absolute()
        (self.root / "d1").mkdir(parents=True)
        self.diskfiles = DiskFileManager(self.root, False, PathHasher(b"", b"s"), fsync=False)
        self.diskfile = self.diskfiles.get_diskfile("d1", 5, "AUTH_a", "c", "o\u00e9", policy_index=0)

    def put(self, diskfile: DiskFile, timestamp: str, **metadata: str) -> None:
        writer = diskfile.create_writer()
        writer.write(b"body")
        writer.commit({"Content-Type": "x/y", **metadata}, timestamp)

    def entries(self, now: float = 2e9) -> list[Path]:
        return self.diskfiles.list_expiring("d1", now)

    def test_put_with_delete_at_is_queued(self) -> None:
        self.put(self.diskfile, "1700000000.00000", **{"X-Delete-At": str(DUE)})
        [path] = self.entries()
        bucket = DUE - DUE % 3600
        self.assertEqual(path.relative_to(self.root).parts,
                         ("d1", "expiring", f"{bucket:010d}", f"{DUE:010d}-{self.diskfile.name_hash}"))
        entry = self.diskfiles.read_expiring(path)
        self.assertEqual(
            (entry.account, entry.container, entry.obj, entry.partition, entry.policy_index, entry.delete_at),
            ("AUTH_a", "c", "o\u00e9", 5, 0, DUE),
        )
        self.assertEqual(list((self.root / "d1" / "tmp").iterdir()), [])

    def test_post_with_delete_at_is_queued_and_plain_writes_are_not(self) -> None:
        self.put(self.diskfile, "1700000000.00000")
        self.diskfile.write_metadata({"X-Object-Meta-A": "1"}, "1700000001.00000")
        self.diskfile.delete("1700000002.00000")
        self.assertEqual(self.entries(), [])
        self.put(self.diskfile, "1700000003.00000")
        self.diskfile.write_metadata({"X-Delete-At": str(DUE)}, "1700000004.00000")
        [path] = self.entries()
        self.assertEqual(self.diskfiles.read_expiring(path).delete_at, DUE)

    def test_a_refused_write_queues_nothing(self) -> None:
        self.put(self.diskfile, "1700000005.00000")
        self.assertRaises(DiskFileConflict, self.put, self.diskfile, "1700000001.00000", **{"X-Delete-At": str(DUE)})
        self.assertEqual(self.entries(), [])

    def test_policies_have_their_own_queue(self) -> None:
        other = self.diskfiles.get_diskfile("d1", 5, "AUTH_a", "c", "o", policy_index=2)
        self.put(other, "1700000000.00000", **{"X-Delete-At": str(DUE)})
        [path] = self.entries()
        self.assertEqual(path.parent.parent.name, "expiring-2")
        self.assertEqual(self.diskfiles.read_expiring(path).policy_index, 2)

    def test_only_due_entries_are_listed_oldest_first(self) -> None:
        times = [DUE + 7200, DUE, DUE + 10, DUE - 5000]
        for i, at in enumerate(times):
            df = self.diskfiles.get_diskfile("d1", 5, "AUTH_a", "c", f"o{i}")
            self.put(df, "1700000000.00000", **{"X-Delete-At": str(at)})
        due = [self.diskfiles.read_expiring(p).delete_at for p in self.entries(now=DUE + 10)]
        self.assertEqual(due, [DUE - 5000, DUE, DUE + 10])
        self.assertEqual(len(self.entries(now=DUE + 7200)), 4)
        self.assertEqual(self.entries(now=DUE - 5001), [])

    def test_entry_names_and_paths_are_checked(self) -> None:
        self.assertEqual(expiring.parse_entry_name(f"{DUE:010d}-{'a' * 32}"), (DUE, "a" * 32))
        for junk in ("x", f"{DUE}-{'A' * 32}", f"{DUE:010d}-{'a' * 31}", f"expiring-{'a' * 32}.tmp"):
            self.assertIsNone(expiring.parse_entry_name(junk))
        self.assertRaises(ValueError, self.diskfiles.remove_expiring, self.root / "d1" / "objects" / "x")
        self.assertEqual(expiring.delete_at_of({"x-delete-at": "12"}), 12)
        self.assertIsNone(expiring.delete_at_of({"X-Delete-At": "soon"}))
        self.assertRaises(expiring.EntryCorrupt, expiring.decode_entry, b"{}", f"{DUE:010d}-{'a' * 32}")


class ExpirerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = Path(self.mktemp()).absolute()
        for device in ("d1", "d2"):
            (self.root / device).mkdir(parents=True)
        hasher = PathHasher(b"", b"s")
        self.diskfiles = DiskFileManager(self.root, False, hasher, fsync=False)
        self.clock = clock_at(DUE - 100)  # the node's one clock: due entries and pacing
        self.context = StorageContext(
            devices=self.root, mount_check=False, hasher=hasher, policies=DEFAULT_POLICIES,
            runner=SynchronousRunner(), client=None, reactor=self.clock, diskfiles=self.diskfiles,
        )
        self.expirer = ObjectExpirer(self.context, self.clock, settings=expirer_settings(0))

    def at(self, seconds: float) -> None:
        self.clock.advance(seconds - self.clock.seconds())

    def put(self, device: str, name: str, timestamp: str, **metadata: str) -> DiskFile:
        diskfile = self.diskfiles.get_diskfile(device, 3, "AUTH_a", "c", name)
        writer = diskfile.create_writer()
        writer.write(b"body")
        writer.commit({"Content-Type": "x/y", **metadata}, timestamp)
        return diskfile

    def run_pass(self) -> dict:
        return self.successResultOf(Deferred.fromCoroutine(self.expirer.run_pass()))

    def files(self, diskfile: DiskFile) -> list[str]:
        return sorted(p.name for p in diskfile.hash_dir.iterdir())

    def pendings(self, device: str) -> list:
        return [self.diskfiles.read_async_pending(p) for p in self.diskfiles.list_async_pendings(device)]

    def test_every_replica_writes_the_same_tombstone_and_a_container_update(self) -> None:
        replicas = [self.put(d, "o", "1700000000.00000", **{"X-Delete-At": str(DUE)}) for d in ("d1", "d2")]
        keep = self.put("d1", "keep", "1700000000.00000", **{"X-Delete-At": str(DUE + 60)})
        self.assertEqual(self.run_pass(), {"due": 0, "expired": 0, "stale": 0, "errors": 0})
        self.at(DUE)
        self.assertEqual(self.run_pass(), {"due": 2, "expired": 2, "stale": 0, "errors": 0})
        tombstone = Timestamp.from_seconds(DUE)
        for diskfile in replicas:
            self.assertEqual(self.files(diskfile), [f"{tombstone.internal}.ts"])
            [pending] = self.pendings(diskfile.device)
            self.assertEqual((pending.op, pending.account, pending.container, pending.obj, pending.timestamp),
                             ("DELETE", "AUTH_a", "c", "o", tombstone))
        self.assertTrue(keep.read_metadata().exists)
        self.assertEqual(len(self.diskfiles.list_expiring("d1", DUE + 60)), 1)
        self.assertEqual(self.run_pass()["due"], 0)

    def test_stale_entries_are_dropped_without_deleting(self) -> None:
        overwritten = self.put("d1", "overwritten", "1700000000.00000", **{"X-Delete-At": str(DUE)})
        self.put("d1", "overwritten", "1700000001.00000")
        posted = self.put("d1", "posted", "1700000000.00000", **{"X-Delete-At": str(DUE)})
        posted.write_metadata({"X-Delete-At": str(DUE + 500)}, "1700000001.00000")
        deleted = self.put("d1", "deleted", "1700000000.00000", **{"X-Delete-At": str(DUE)})
        deleted.delete("1700000001.00000")
        self.at(DUE)
        self.assertEqual(self.run_pass(), {"due": 3, "expired": 0, "stale": 3, "errors": 0})
        self.assertTrue(overwritten.read_metadata().exists)
        self.assertTrue(posted.read_metadata().exists)
        self.assertEqual(self.files(deleted), ["1700000001.00000.ts"])
        self.assertEqual(self.pendings("d1"), [])
        self.at(DUE + 500)
        self.assertEqual(self.run_pass()["expired"], 1)
        self.assertFalse(posted.read_metadata().exists)

    def test_a_crash_after_the_tombstone_still_sends_the_container_update(self) -> None:
        diskfile = self.put("d1", "o", "1700000000.00000", **{"X-Delete-At": str(DUE)})
        diskfile.delete(Timestamp.from_seconds(DUE))
        self.at(DUE + 1)
        self.assertEqual(self.run_pass()["expired"], 1)
        [pending] = self.pendings("d1")
        self.assertEqual(pending.timestamp, Timestamp.from_seconds(DUE))
        self.assertEqual(self.diskfiles.list_expiring("d1", DUE + 1), [])

    def test_data_newer_than_its_expiry_is_left_alone(self) -> None:
        diskfile = self.put("d1", "skewed", f"{DUE + 1}.00000", **{"X-Delete-At": str(DUE)})
        self.at(DUE + 2)
        self.assertEqual(self.run_pass()["stale"], 1)
        self.assertEqual(self.files(diskfile), [f"{DUE + 1}.00000.data"])

    def test_unreadable_entries_are_removed(self) -> None:
        self.put("d1", "o", "1700000000.00000", **{"X-Delete-At": str(DUE)})
        [path] = self.diskfiles.list_expiring("d1", DUE)
        path.write_bytes(b"not json")
        self.at(DUE)
        self.assertEqual(self.run_pass(), {"due": 1, "expired": 0, "stale": 1, "errors": 0})
        self.assertEqual(self.diskfiles.list_expiring("d1", DUE), [])
        self.assertFalse(path.parent.exists())

    def test_paced(self) -> None:
        for i in range(3):
            self.put("d1", f"o{i}", "1700000000.00000", **{"X-Delete-At": str(DUE)})
        self.expirer = ObjectExpirer(self.context, self.clock, settings=expirer_settings(2))
        self.at(DUE)
        passing = Deferred.fromCoroutine(self.expirer.run_pass())
        self.assertNoResult(passing)  # waiting on the reactor after the first, not sleeping in a thread
        self.clock.advance(1.0)
        self.assertNoResult(passing)
        self.clock.advance(0.5)
        self.assertEqual(self.successResultOf(passing)["expired"], 3)  # 3 objects at 2 a second: 1.5 s

    def test_stop_ends_a_pass_at_its_next_wait(self) -> None:
        for i in range(3):
            self.put("d1", f"o{i}", "1700000000.00000", **{"X-Delete-At": str(DUE)})
        self.expirer = ObjectExpirer(self.context, self.clock, settings=expirer_settings(1))
        self.at(DUE)
        passing = Deferred.fromCoroutine(self.expirer.run_pass())
        self.expirer.stop()
        figures = self.successResultOf(passing)
        self.assertEqual((figures["expired"], figures["stopped"]), (1, True))
