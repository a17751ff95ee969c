"""hashes.json and the object directories as the replicator sees them."""

from __future__ import annotations

import json
import os

from twisted.trial.unittest import SynchronousTestCase

from txstore.common.hashing import PathHasher
from txstore.storage.diskfile import DiskFileManager
from txstore.storage.partitions import (
    HASHES_FILE,
    get_hashes,
    list_objects,
    list_partitions,
    list_suffixes,
    object_files,
    remove_if_unchanged,
    remove_partition_if_empty,
)
from txstore.test.support import temp_dir

DAY = 86400.0


class HashesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = temp_dir(self)
        (self.root / "d1").mkdir()
        self.diskfiles = DiskFileManager(self.root, False, PathHasher(b"", b"s"), fsync=False)
        self.part = self.diskfiles.partition_path("d1", 0, 5)

    def put(self, name: str, ts: str, body: bytes = b"x"):
        diskfile = self.diskfiles.get_diskfile("d1", 5, "a", "c", name)
        writer = diskfile.create_writer()
        writer.write(body)
        writer.commit({"Content-Type": "t/t"}, ts)
        return diskfile

    def hashes(self, now: float = 100.0) -> dict:
        return get_hashes(self.part, reclaim_age=DAY, now=now)

    def test_missing_partition(self) -> None:
        self.assertEqual(self.hashes(), {})
        self.assertFalse(self.part.exists())

    def test_same_files_same_hash(self) -> None:
        first = self.put("o1", "0000000001.00000")
        hashes = self.hashes()
        self.assertEqual(list(hashes), [first.suffix])
        self.assertTrue((self.part / HASHES_FILE).exists())
        self.assertEqual(self.hashes(), hashes)
        # The same file names elsewhere hash the same: that is what replicas compare.
        other = DiskFileManager(temp_dir(self), False, PathHasher(b"", b"s"), fsync=False)
        (other.devices / "d1").mkdir()
        twin = other.get_diskfile("d1", 5, "a", "c", "o1")
        writer = twin.create_writer()
        writer.write(b"different bytes, same name")
        writer.commit({}, "0000000001.00000")
        self.assertEqual(get_hashes(other.partition_path("d1", 0, 5), DAY, 100.0), hashes)

    def test_a_write_changes_only_its_suffix(self) -> None:
        self.put("o1", "0000000001.00000")
        self.put("o2", "0000000001.00000")
        before = self.hashes()
        changed = self.put("o1", "0000000002.00000")
        after = self.hashes()
        self.assertNotEqual(after[changed.suffix], before[changed.suffix])
        for suffix in set(before) - {changed.suffix}:
            self.assertEqual(after[suffix], before[suffix])

    def test_only_invalidated_suffixes_are_rehashed(self) -> None:
        diskfile = self.put("o1", "0000000001.00000")
        self.hashes()
        # A change nobody recorded (no hashes.invalid line) is not noticed...
        os.rename(diskfile.hash_dir / "0000000001.00000.data", diskfile.hash_dir / "0000000003.00000.data")
        stale = self.hashes()
        self.assertEqual(stale, self.hashes())
        # ... until the suffix is invalidated, which every write does.
        self.diskfiles.invalidate_suffix("d1", 0, 5, diskfile.suffix)
        self.assertNotEqual(self.hashes(), stale)

    def test_everything_is_rehashed_once_a_day(self) -> None:
        diskfile = self.put("o1", "0000000001.00000")
        self.hashes(now=100.0)
        os.rename(diskfile.hash_dir / "0000000001.00000.data", diskfile.hash_dir / "0000000003.00000.data")
        stale = self.hashes(now=100.0 + DAY - 1)
        self.assertNotEqual(self.hashes(now=100.0 + DAY + 1), stale)

    def test_unreadable_hashes_file_means_full_rehash(self) -> None:
        self.put("o1", "0000000001.00000")
        good = self.hashes()
        (self.part / HASHES_FILE).write_text("{torn")
        self.assertEqual(self.hashes(), good)
        self.assertEqual(json.loads((self.part / HASHES_FILE).read_text())["hashes"], good)

    def test_old_tombstones_are_reclaimed(self) -> None:
        diskfile = self.put("o1", "0000000001.00000")
        diskfile.delete("0000000002.00000")
        self.assertEqual(list(self.hashes(now=2 + DAY - 1)), [diskfile.suffix])
        self.assertTrue(diskfile.hash_dir.exists())
        self.diskfiles.invalidate_suffix("d1", 0, 5, diskfile.suffix)
        self.assertEqual(self.hashes(now=2 + DAY + 1), {})
        self.assertFalse(diskfile.hash_dir.exists())
        self.assertEqual(list_suffixes(self.part), [])
        self.assertTrue(remove_partition_if_empty(self.part))
        self.assertEqual(list_partitions(self.root / "d1", 0), [])

    def test_listing_and_removing(self) -> None:
        diskfile = self.put("o1", "0000000001.00000")
        diskfile.write_metadata({"X-Object-Meta-A": "b"}, "0000000002.00000")
        listed = list(list_objects(self.part, list_suffixes(self.part)))
        self.assertEqual(len(listed), 1)
        self.assertEqual(listed[0].offer(), {"data": "0000000001.00000", "meta": "0000000002.00000"})
        self.put("o1", "0000000003.00000")  # changed since listed: kept
        self.assertFalse(remove_if_unchanged(listed[0]))
        current = object_files(diskfile.hash_dir)
        self.assertTrue(remove_if_unchanged(current))
        self.assertFalse(diskfile.hash_dir.exists())
        self.assertEqual(self.hashes(), {})
        self.assertTrue(remove_partition_if_empty(self.part))

    def test_a_write_survives_its_parent_directory_being_reclaimed(self) -> None:
        """The replicator may remove an empty partition between a write's mkdirs: it makes them again."""
        real = DiskFileManager._make_dirs
        calls = []

        def racing(manager, path, root):
            calls.append(path)
            if len(calls) == 1:
                real(manager, path.parent, root)
                remove_partition_if_empty(self.part)  # a replicator pass, right in between
                raise FileNotFoundError(path)
            return real(manager, path, root)

        self.patch(DiskFileManager, "_make_dirs", racing)
        diskfile = self.put("o1", "0000000001.00000")
        self.assertTrue(diskfile.read_metadata().exists)
        self.assertGreaterEqual(len(calls), 2)
