"""
Tests for txstore.storage.diskfile: what is on disk after every write, failure and crash.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import mmap
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from txstore.common.hashing import PathHasher
from txstore.common.timestamps import Timestamp
from txstore.storage import diskfile as dfmod
from txstore.storage import objmeta
from txstore.storage.checksum import Md5, SentMd5
from txstore.storage.diskfile import (
    DATA,
    META,
    TOMBSTONE,
    DiskFile,
    DiskFileConflict,
    DiskFileCorrupt,
    DiskFileDeviceUnavailable,
    DiskFileError,
    DiskFileLockTimeout,
    DiskFileManager,
    DiskFileNoSpace,
    DiskFileNotFound,
    ObjectState,
    OnDiskFile,
    parse_file_name,
    select_files,
)
from txstore.test.support import temp_dir
from txstore.test.unit.test_objmeta import at_limits, system_metadata

HASHER = PathHasher(b"pre", b"suf")


def ts(n: float, offset: int = 0) -> Timestamp:
    return Timestamp.from_seconds(1_700_000_000 + n, offset)


def expected_hash(account: str, container: str, obj: str) -> str:
    return hashlib.md5(f"pre/{account}/{container}/{obj}suf".encode()).hexdigest()


class DiskFileTestCase(SynchronousTestCase):
    fsync = False

    def setUp(self) -> None:
        self.devices = temp_dir(self) / "devices"
        (self.devices / "sda").mkdir(parents=True)
        self.manager = DiskFileManager(self.devices, False, HASHER, fsync=self.fsync)

    def diskfile(self, obj: str = "o", policy_index: int = 0, partition: int = 17) -> DiskFile:
        return self.manager.get_diskfile("sda", partition, "AUTH_test", "c", obj, policy_index)

    def put(self, df: DiskFile, body: bytes, when: Timestamp, chunk: int = 7, **metadata: str) -> ObjectState:
        writer = df.create_writer(len(body))
        for start in range(0, len(body), chunk):
            writer.write(body[start : start + chunk])
        return writer.commit({"Content-Type": "application/octet-stream", **metadata}, when)

    def files(self, df: DiskFile) -> list[str]:
        try:
            return sorted(os.listdir(df.hash_dir))
        except FileNotFoundError:
            return []

    def tmp_files(self) -> list[str]:
        try:
            return os.listdir(self.devices / "sda" / "tmp")
        except FileNotFoundError:
            return []

    def read_all(self, df: DiskFile) -> bytes:
        state = df.read_metadata()
        with df.open_reader(state) as reader:
            return reader.read(0, state.content_length)

    def place(self, df: DiskFile, when: Timestamp, ext: str, body: bytes = b"", **metadata: str) -> Path:
        """Put a file straight into the object directory, as replication or a crash might."""
        stamped = {"name": df.name, "X-Timestamp": when.internal, **metadata}
        if ext == DATA:
            stamped.setdefault("Content-Length", str(len(body)))
            stamped.setdefault("ETag", hashlib.md5(body).hexdigest())
        df.hash_dir.mkdir(parents=True, exist_ok=True)
        path = df.hash_dir / OnDiskFile(when, ext).name
        path.write_bytes(body + objmeta.encode_footer(stamped))
        return path


class DeviceTests(DiskFileTestCase):
    def test_device_path(self) -> None:
        self.assertEqual(self.manager.device_path("sda"), self.devices / "sda")
        self.assertIsNone(self.manager.device_path("sdb"))
        (self.devices / "afile").write_bytes(b"")
        self.assertIsNone(self.manager.device_path("afile"))

    def test_bad_device_names(self) -> None:
        for bad in ("", ".", "..", "../sda", "a/b", "sd\0a", None):
            self.assertRaises(ValueError, self.manager.device_path, bad)

    def test_mount_check_refuses_a_plain_directory(self) -> None:
        checked = DiskFileManager(self.devices, True, HASHER)
        self.assertIsNone(checked.device_path("sda"))
        self.assertRaises(DiskFileDeviceUnavailable, checked.get_diskfile, "sda", 1, "a", "c", "o")

    def test_mount_check_accepts_a_mount_point(self) -> None:
        for name in ("proc", "sys", "dev"):
            if os.path.ismount(f"/{name}"):
                break
        else:
            raise self.skipTest("no mount point to test with")
        checked = DiskFileManager(Path("/"), True, HASHER)
        self.assertEqual(checked.device_path(name), Path("/") / name)

    def test_get_diskfile_checks(self) -> None:
        self.assertRaises(DiskFileDeviceUnavailable, self.manager.get_diskfile, "sdb", 1, "a", "c", "o")
        for part, policy in ((-1, 0), ("1", 0), (1, -1), (True, 0), (1, "0")):
            self.assertRaises(ValueError, self.manager.get_diskfile, "sda", part, "a", "c", "o", policy)
        self.assertRaises(ValueError, self.manager.get_diskfile, "sda", 1, "a", "c", "")


class LayoutTests(DiskFileTestCase):
    def test_exact_paths(self) -> None:
        obj_hash = expected_hash("AUTH_test", "c", "o")
        df = self.diskfile()
        self.assertEqual(df.name_hash, obj_hash)
        self.assertEqual(df.hash_dir, self.devices / "sda" / "objects" / "17" / obj_hash[-3:] / obj_hash)
        self.put(df, b"abc", ts(1))
        df.write_metadata({"X-Object-Meta-A": "1"}, ts(2))
        self.assertEqual(self.files(df), ["1700000001.00000.data", "1700000002.00000.meta"])
        self.assertEqual(df.read_metadata().data_path, df.hash_dir / "1700000001.00000.data")
        df.delete(ts(3, offset=5))
        self.assertEqual(self.files(df), ["1700000003.00000_0000000000000005.ts"])
        part = self.devices / "sda" / "objects" / "17"
        self.assertEqual(sorted(os.listdir(part)), [obj_hash[-3:], "hashes.invalid"])
        self.assertEqual(sorted(os.listdir(self.devices / "sda")), ["objects", "tmp"])
        self.assertEqual(self.tmp_files(), [])

    def test_policy_directories(self) -> None:
        df = self.diskfile(policy_index=2, partition=0)
        self.put(df, b"x", ts(1))
        obj_hash = expected_hash("AUTH_test", "c", "o")
        policy_dir = self.devices / "sda" / "objects-2"
        self.assertTrue((policy_dir / "0" / obj_hash[-3:] / obj_hash / "1700000001.00000.data").is_file())
        self.assertEqual(dfmod.objects_dir_name(0), "objects")
        self.assertEqual(dfmod.objects_dir_name(5), "objects-5")

    def test_names_never_reach_paths(self) -> None:
        names = ("../../../../etc/passwd", "/", ".", "a//b", "dir/", "%2F..", "ø/日本/\u2028x", "a\0b")
        for name in names:
            df = self.diskfile(obj=name)
            self.assertEqual(df.hash_dir.parent.parent.parent, self.devices / "sda" / "objects")
            self.assertEqual(df.hash_dir.name, expected_hash("AUTH_test", "c", name))
            self.put(df, b"body", ts(1))
            state = df.read_metadata()
            self.assertEqual(state.metadata["name"], f"/AUTH_test/c/{name}")
        self.assertEqual(sorted(os.listdir(self.devices / "sda")), ["objects", "tmp"])


class WriteReadTests(DiskFileTestCase):
    def test_round_trip_in_chunks(self) -> None:
        df = self.diskfile()
        body = os.urandom(200_000)
        writer = df.create_writer(len(body))
        for start in range(0, len(body), 65536):
            writer.write(body[start : start + 65536])
            self.assertEqual(writer.bytes_written, min(start + 65536, len(body)))
        self.assertEqual(writer.etag, hashlib.md5(body).hexdigest())
        previous = writer.commit({"Content-Type": "image/png", "X-Object-Meta-Color": "blue"}, ts(1))
        self.assertEqual(previous, ObjectState())
        state = df.read_metadata()
        self.assertTrue(state.exists)
        self.assertFalse(state.deleted)
        self.assertEqual(state.timestamp, ts(1))
        self.assertEqual(state.newest_timestamp, ts(1))
        self.assertEqual(state.content_length, len(body))
        self.assertEqual(
            dict(state.metadata),
            {
                "name": "/AUTH_test/c/o",
                "X-Timestamp": "1700000001.00000",
                "Content-Length": str(len(body)),
                "ETag": hashlib.md5(body).hexdigest(),
                "Content-Type": "image/png",
                "X-Object-Meta-Color": "blue",
            },
        )
        footer = objmeta.encode_footer(state.metadata)
        self.assertEqual(os.path.getsize(state.data_path), len(body) + len(footer))
        with df.open_reader(state) as reader:
            self.assertEqual(reader.read(0, 10**9), body)
            self.assertEqual(reader.read(1000, 10), body[1000:1010])
            self.assertEqual(reader.read(len(body) - 3, 100), body[-3:])
            self.assertEqual(reader.read(len(body), 100), b"")
            self.assertEqual(reader.read(len(body) + 50, 100), b"")
            self.assertRaises(ValueError, reader.read, -1, 5)

    def test_a_body_checksum_is_stored_only_when_computed_here(self) -> None:
        df, body = self.diskfile(), b"replicated" * 100
        writer = df.create_writer(len(body))  # hashed here with md5: a checksum given is not this body's
        writer.write(body)
        writer.commit({"Content-Type": "x/y", "X-Body-Checksum": "crc32:00000000"}, ts(1))
        self.assertNotIn("X-Body-Checksum", df.read_metadata().metadata)
        sent = SentMd5()  # the proxy's md5, taken once the CRC-32 of what arrived agrees
        writer = df.create_writer(len(body), body_checksum=sent)
        writer.write(body)
        self.assertTrue(sent.confirm(hashlib.md5(body).hexdigest(), f"{zlib.crc32(body):08x}"))
        writer.commit({"Content-Type": "x/y"}, ts(2))
        state = df.read_metadata()
        self.assertEqual(state.metadata["X-Body-Checksum"], f"crc32:{zlib.crc32(body):08x}")
        self.assertEqual(state.metadata["ETag"], hashlib.md5(body).hexdigest())
        with df.open_reader(state) as reader:
            self.assertEqual(reader.read(0, len(body)), body)
            self.assertIs(reader.etag_verified(), True)

    def test_a_reader_told_to_drop_the_cache_drops_what_it_read(self) -> None:
        df = self.diskfile()
        self.put(df, b"0123456789" * 10, Timestamp(1))
        state = df.read_metadata()
        advised = []
        self.patch(dfmod.os, "posix_fadvise", lambda fd, offset, length, advice: advised.append((offset, length, advice)))
        with df.open_reader(state) as reader:
            reader.read(0, 30)
            reader.drop_cache = True
            self.assertEqual(reader.read(30, 50), b"0123456789" * 5)
            reader.read(80, 100)  # short at the body's end
        self.assertEqual(advised, [(30, 50, os.POSIX_FADV_DONTNEED), (80, 20, os.POSIX_FADV_DONTNEED),
                                   (0, 0, os.POSIX_FADV_DONTNEED)])  # the whole file at close

    def _record_writeback(self, sync_file_range_result: int | None) -> list[tuple]:
        """Record fadvise and sync_file_range calls (the latter answering as told, or absent)."""
        calls: list[tuple] = []
        real = os.posix_fadvise

        def fadvise(fd: int, offset: int, length: int, advice: int) -> None:
            calls.append(("fadvise", offset, length, advice))
            real(fd, offset, length, advice)

        def sync_file_range(fd: int, offset: int, length: int, flags: int) -> int:
            calls.append(("sfr", offset, length, flags))
            if sync_file_range_result:
                ctypes.set_errno(sync_file_range_result)
                return -1
            return 0

        self.patch(dfmod.os, "posix_fadvise", fadvise)
        self.patch(dfmod, "_sync_file_range", None if sync_file_range_result is None else sync_file_range)
        self.patch(dfmod, "WRITEBACK_EVERY", 100_000)
        return calls

    def _write_in_pieces(self) -> None:
        df = self.diskfile()
        body = os.urandom(350_000)
        writer = df.create_writer(len(body))
        for start in range(0, len(body), 60_000):
            writer.write(body[start : start + 60_000])
        writer.commit({"Content-Type": "application/octet-stream"}, ts(1))
        state = df.read_metadata()
        with df.open_reader(state) as reader:
            self.assertEqual(reader.read(0, len(body)), body)
            self.assertIs(reader.etag_verified(), True)

    def test_a_large_body_streams_to_the_disk_as_it_is_written(self) -> None:
        """
        Every WRITEBACK_EVERY bytes, the piece written since the last time is started and the
        piece before it waited for and dropped from the cache: two pieces dirty at most.
        """
        calls = self._record_writeback(0)
        self._write_in_pieces()
        write, wait_all = 2, 1 | 2 | 4
        dontneed = os.POSIX_FADV_DONTNEED
        self.assertEqual(calls, [
            ("sfr", 0, 120_000, write),
            ("sfr", 120_000, 120_000, write), ("sfr", 0, 120_000, wait_all), ("fadvise", 0, 120_000, dontneed),
            ("sfr", 240_000, 110_000, write), ("sfr", 120_000, 120_000, wait_all),
            ("fadvise", 120_000, 120_000, dontneed),
        ])

    def test_the_real_sync_file_range_streams_a_body(self) -> None:
        """The libc binding itself, on this system's filesystem: the body reads back whole."""
        if not sys.platform.startswith("linux"):
            raise SkipTest("sync_file_range is Linux's")
        self.assertIsNotNone(dfmod._sync_file_range)
        self.patch(dfmod, "WRITEBACK_EVERY", 100_000)
        self._write_in_pieces()

    def test_without_sync_file_range_writeback_is_advised(self) -> None:
        """Where the call does not exist (not Linux), every piece is handed to fadvise."""
        calls = self._record_writeback(None)
        self._write_in_pieces()
        dontneed = os.POSIX_FADV_DONTNEED
        self.assertEqual(calls, [
            ("fadvise", 0, 120_000, dontneed), ("fadvise", 120_000, 120_000, dontneed),
            ("fadvise", 240_000, 110_000, dontneed),
        ])

    def test_sync_file_range_unsupported_by_the_file_falls_back_to_fadvise(self) -> None:
        calls = self._record_writeback(errno.EINVAL)
        self._write_in_pieces()
        dontneed = os.POSIX_FADV_DONTNEED
        self.assertEqual(calls, [
            ("sfr", 0, 120_000, 2), ("fadvise", 0, 120_000, dontneed),
            ("fadvise", 120_000, 120_000, dontneed), ("fadvise", 240_000, 110_000, dontneed),
        ])

    def test_a_failed_writeback_fails_the_write_and_leaves_no_temp_file(self) -> None:
        self._record_writeback(errno.EIO)
        df = self.diskfile()
        writer = df.create_writer(None)
        writer.write(b"x" * 60_000)
        error = self.assertRaises(OSError, writer.write, b"x" * 60_000)
        self.assertEqual(error.errno, errno.EIO)
        self.assertFalse(writer.temp_path.exists())

    def test_a_full_disk_at_writeback_is_no_space(self) -> None:
        self._record_writeback(errno.ENOSPC)
        df = self.diskfile()
        writer = df.create_writer(None)
        writer.write(b"x" * 60_000)
        self.assertRaises(dfmod.DiskFileNoSpace, writer.write, b"x" * 60_000)
        self.assertFalse(writer.temp_path.exists())

    def test_empty_object(self) -> None:
        df = self.diskfile()
        writer = df.create_writer(0)
        writer.commit({}, ts(1))
        state = df.read_metadata()
        self.assertEqual((state.content_length, state.metadata["ETag"]), (0, hashlib.md5(b"").hexdigest()))
        with df.open_reader(state) as reader:
            self.assertEqual(reader.read(0, 100), b"")
            self.assertTrue(reader.etag_verified())

    def test_size_hint_larger_or_smaller_than_body(self) -> None:
        for hint in (None, 1, 3, 10**6):
            df = self.diskfile(obj=f"o{hint}")
            writer = df.create_writer(hint)
            writer.write(b"abc")
            writer.commit({}, ts(1))
            self.assertEqual(self.read_all(df), b"abc")
            state = df.read_metadata()
            self.assertEqual(os.path.getsize(state.data_path), 3 + len(objmeta.encode_footer(state.metadata)))

    def test_given_etag_and_length_are_checked(self) -> None:
        df = self.diskfile()
        quoted = '"' + hashlib.md5(b"abc").hexdigest().upper() + '"'
        self.put(df, b"abc", ts(1), **{"ETag": quoted, "content-length": "3"})
        self.assertEqual(df.read_metadata().metadata["ETag"], hashlib.md5(b"abc").hexdigest())
        self.assertNotIn("content-length", df.read_metadata().metadata)
        self.assertRaises(ValueError, self.put, df, b"abc", ts(2), ETag="0" * 32)
        self.assertRaises(ValueError, self.put, df, b"abc", ts(3), **{"Content-Length": "4"})
        self.assertEqual(df.read_metadata().timestamp, ts(1))
        self.assertEqual(self.tmp_files(), [])

    def test_reader_keeps_serving_a_replaced_file(self) -> None:
        df = self.diskfile()
        self.put(df, b"first version", ts(1))
        state = df.read_metadata()
        reader = df.open_reader(state)
        self.addCleanup(reader.close)
        self.put(df, b"second", ts(2))
        self.assertFalse(state.data_path.exists())
        self.assertEqual(reader.read(0, 100), b"first version")
        df.delete(ts(3))
        self.assertEqual(reader.read(6, 100), b"version")
        self.assertRaises(DiskFileNotFound, df.open_reader, state)
        self.assertRaises(DiskFileNotFound, df.open_reader, df.read_metadata())

    def test_etag_verified_on_whole_reads(self) -> None:
        df = self.diskfile()
        body = b"0123456789" * 1000
        self.put(df, body, ts(1))
        state = df.read_metadata()
        with df.open_reader(state) as reader:
            for offset in range(0, len(body), 3000):
                self.assertIsNone(reader.etag_verified())
                reader.read(offset, 3000)
            self.assertTrue(reader.etag_verified())
        with df.open_reader(state) as reader:
            reader.read(0, 10)
            reader.read(20, 10**6)
            self.assertIsNone(reader.etag_verified())
        with df.open_reader(state) as reader:
            reader.read(5, 10**6)
            self.assertIsNone(reader.etag_verified())

    def test_bit_rot_noticed(self) -> None:
        df = self.diskfile()
        self.put(df, b"precious data", ts(1))
        state = df.read_metadata()
        with open(state.data_path, "r+b") as handle:
            handle.seek(3)
            handle.write(b"X")
        with df.open_reader(df.read_metadata()) as reader:
            self.assertEqual(reader.read(0, 100), b"preXious data")
            self.assertIs(reader.etag_verified(), False)

    def test_verifier(self) -> None:
        verifier = dfmod.EtagVerifier(hashlib.md5(b"abcdef").hexdigest().upper(), 6)
        verifier.feed(b"abc")
        self.assertFalse(verifier.complete)
        verifier.feed(b"def")
        self.assertTrue(verifier.complete)
        self.assertTrue(verifier.matches())
        verifier.feed(b"g")
        self.assertFalse(verifier.matches())

    def test_closed_reader(self) -> None:
        df = self.diskfile()
        self.put(df, b"abc", ts(1))
        reader = df.open_reader(df.read_metadata())
        reader.close()
        reader.close()
        self.assertRaises(DiskFileError, reader.read, 0, 1)

    def test_metadata_at_limits_and_unicode(self) -> None:
        for kind in ("many", "long-values", "unicode", "beyond"):
            df = self.diskfile(obj=f"日本/{kind}/ü😀")
            owned = ("name", "X-Timestamp", "Content-Length", "ETag")  # the writer's own
            system = {k: v for k, v in system_metadata().items() if k not in owned}
            user = at_limits(kind)
            self.put(df, b"body", ts(1), **system, **user)
            state = df.read_metadata()
            for key, value in {**system, **user}.items():
                self.assertEqual(state.metadata[key], value)
            self.assertEqual(state.metadata["name"], f"/AUTH_test/c/日本/{kind}/ü😀")
            post = {k + "-Posted": v for k, v in user.items()}
            df.write_metadata(post, ts(2))
            state = df.read_metadata()
            for key, value in post.items():
                self.assertEqual(state.metadata[key], value)
            self.assertEqual(state.metadata["Content-Type"], system["Content-Type"])

    def test_metadata_types(self) -> None:
        df = self.diskfile()
        self.assertRaises(TypeError, self.put, df, b"abc", ts(1), **{"X-Object-Meta-N": 5})
        self.assertEqual(self.tmp_files(), [])
        self.assertFalse(df.read_metadata().exists)

    def test_fsync_order(self) -> None:
        """
        The object's new directories are made before the file's fsync (whose log force then
        carries them), their parents fsynced after it, then the rename and the directory's fsync.
        """
        events: list[tuple[str, str]] = []
        real_fsync, real_rename, real_mkdir = os.fsync, os.rename, os.mkdir

        def fsync(fd: int) -> None:
            events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
            real_fsync(fd)

        def rename(src: str, dst: str) -> None:
            events.append(("rename", str(dst)))
            real_rename(src, dst)

        def mkdir(path: str, *args: object, **kwargs: object) -> None:
            if "/objects" in str(path):
                events.append(("mkdir", str(path)))
            real_mkdir(path, *args, **kwargs)

        self.patch(os, "fsync", fsync)
        self.patch(os, "rename", rename)
        self.patch(os, "mkdir", mkdir)
        manager = DiskFileManager(self.devices, False, HASHER)
        df = manager.get_diskfile("sda", 3, "a", "c", "o")
        writer = df.create_writer(3)
        writer.write(b"abc")
        temp = str(writer.temp_path)
        writer.commit({}, ts(1))
        dev = self.devices / "sda"
        objects = dev / "objects"
        self.assertEqual(
            events,
            [
                # every directory made first, the shallowest first
                ("mkdir", str(objects)),
                ("mkdir", str(objects / "3")),
                ("mkdir", str(objects / "3" / df.suffix)),
                ("mkdir", str(df.hash_dir)),
                ("fsync", temp),
                # then their parents fsynced, deepest first
                ("fsync", str(objects / "3" / df.suffix)),
                ("fsync", str(objects / "3")),
                ("fsync", str(objects)),
                ("fsync", str(dev)),
                ("rename", str(df.hash_dir / "1700000001.00000.data")),
                ("fsync", str(df.hash_dir)),
            ],
        )
        del events[:]
        df.write_metadata({}, ts(2))
        self.assertEqual([kind for kind, _ in events], ["fsync", "rename", "fsync"])
        self.assertEqual(events[-1], ("fsync", str(df.hash_dir)))
        # A tombstone in a new directory: the same order as a new object's.
        other = manager.get_diskfile("sda", 3, "a", "c", "never-stored")
        del events[:]
        other.delete(ts(3))
        kinds = [kind for kind, _ in events]
        self.assertEqual(kinds[: kinds.index("fsync")], ["mkdir"] * kinds.count("mkdir"))
        self.assertIn(("mkdir", str(other.hash_dir)), events)
        self.assertEqual(events[-2:], [("rename", str(other.hash_dir / "1700000003.00000.ts")),
                                       ("fsync", str(other.hash_dir))])


class FailureTests(DiskFileTestCase):
    def test_abort(self) -> None:
        df = self.diskfile()
        writer = df.create_writer(100)
        writer.write(b"abc")
        self.assertEqual(len(self.tmp_files()), 1)
        writer.abort()
        writer.abort()
        self.assertEqual(self.tmp_files(), [])
        self.assertRaises(DiskFileError, writer.write, b"x")
        self.assertRaises(DiskFileError, writer.commit, {}, ts(1))
        self.assertEqual(self.files(df), [])

    def test_context_manager_aborts_unless_committed(self) -> None:
        df = self.diskfile()
        with self.assertRaises(ZeroDivisionError):
            with df.create_writer() as writer:
                writer.write(b"abc")
                1 / 0
        self.assertEqual(self.tmp_files(), [])
        with df.create_writer() as writer:
            writer.write(b"abc")
            writer.commit({}, ts(1))
        self.assertEqual(self.read_all(df), b"abc")
        self.assertRaises(DiskFileError, writer.commit, {}, ts(2))

    def test_no_space_on_fallocate(self) -> None:
        def full(fd: int, offset: int, length: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(os, "posix_fallocate", full)
        self.assertRaises(DiskFileNoSpace, self.diskfile().create_writer, 10**9)
        self.assertEqual(self.tmp_files(), [])
        writer = self.diskfile().create_writer(None)  # no size known: nothing reserved
        writer.abort()

    def test_without_fallocate_nothing_is_reserved(self) -> None:
        """Swift's disable_fallocate: a declared size past the free space is not refused up front."""
        calls = []
        self.patch(os, "posix_fallocate", lambda *args: calls.append(args))
        self.manager = DiskFileManager(self.devices, False, HASHER, fsync=self.fsync, fallocate=False)
        writer = self.diskfile().create_writer(10**15)
        self.assertFalse(writer.allocated)
        writer.abort()
        df = self.diskfile()
        self.put(df, b"abc", ts(1))
        self.assertEqual((self.read_all(df), calls), (b"abc", []))
        self.manager = DiskFileManager(self.devices, False, HASHER, fsync=self.fsync)
        self.put(self.diskfile(), b"abcd", ts(2))
        self.assertEqual(len(calls), 1)

    def test_fallocate_unsupported_is_fine(self) -> None:
        def unsupported(fd: int, offset: int, length: int) -> None:
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")

        self.patch(os, "posix_fallocate", unsupported)
        df = self.diskfile()
        self.put(df, b"abc", ts(1))
        self.assertEqual(self.read_all(df), b"abc")

    def test_no_space_on_write(self) -> None:
        df = self.diskfile()
        writer = df.create_writer()
        writer.write(b"abc")
        real_write = os.write

        def full(fd: int, data: bytes) -> int:
            if fd == writer._fd:
                raise OSError(errno.EDQUOT, "Disk quota exceeded")
            return real_write(fd, data)

        self.patch(os, "write", full)
        self.assertRaises(DiskFileNoSpace, writer.write, b"more")
        self.assertEqual(self.tmp_files(), [])
        writer.abort()

    def test_fsync_failure_leaves_nothing(self) -> None:
        df = DiskFileManager(self.devices, False, HASHER).get_diskfile("sda", 1, "a", "c", "o")
        writer = df.create_writer()
        writer.write(b"abc")

        def broken(fd: int) -> None:
            raise OSError(errno.EIO, "Input/output error")

        self.patch(os, "fsync", broken)
        self.assertRaises(OSError, writer.commit, {}, ts(1))
        self.assertEqual(self.tmp_files(), [])
        self.assertEqual(self.files(df), [])
        self.assertRaises(OSError, df.delete, ts(2))
        self.assertEqual(self.tmp_files(), [])
        self.assertEqual(self.files(df), [])

    def test_rename_failure_leaves_nothing(self) -> None:
        df = self.diskfile()

        def broken(src: str, dst: str) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(os, "rename", broken)
        self.assertRaises(DiskFileNoSpace, self.put, df, b"abc", ts(1))
        self.assertRaises(DiskFileNoSpace, df.delete, ts(1))
        self.assertEqual(self.tmp_files(), [])
        self.assertEqual(self.files(df), [])

    def test_lock_timeout(self) -> None:
        manager = DiskFileManager(self.devices, False, HASHER, fsync=False, lock_timeout=0.05)
        df = manager.get_diskfile("sda", 1, "a", "c", "o")
        self.put(df, b"abc", ts(1))
        fd = os.open(df.hash_dir, os.O_RDONLY)
        self.addCleanup(os.close, fd)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self.assertRaises(DiskFileLockTimeout, self.put, df, b"new", ts(2))
        self.assertRaises(DiskFileLockTimeout, df.delete, ts(2))
        self.assertEqual(self.tmp_files(), [])
        self.assertEqual(self.files(df), ["1700000001.00000.data"])

    def test_crash_mid_put_leaves_only_a_temp_file(self) -> None:
        """A PUT killed (SIGKILL) before its commit: no visible object; cleanup_tmp removes it."""
        script = textwrap.dedent(
            f"""
            import os, signal
            from pathlib import Path
            from txstore.common.hashing import PathHasher
            from txstore.storage.diskfile import DiskFileManager
            manager = DiskFileManager(Path({str(self.devices)!r}), False, PathHasher(b"pre", b"suf"))
            writer = manager.get_diskfile("sda", 17, "AUTH_test", "c", "o").create_writer(1 << 20)
            for _ in range(16):
                writer.write(b"x" * 65536)
            os.kill(os.getpid(), signal.SIGKILL)
            """
        )
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
        self.assertEqual(result.returncode, -signal.SIGKILL, result.stderr)
        self.assertEqual(len(self.tmp_files()), 1)
        df = self.diskfile()
        self.assertEqual(df.read_metadata(), ObjectState())
        self.assertEqual(self.files(df), [])
        self.assertEqual(self.manager.cleanup_tmp("sda", time.time()), 1)
        self.assertEqual(self.tmp_files(), [])

    def test_cleanup_tmp_spares_recent_files(self) -> None:
        old = self.diskfile("old").create_writer()
        old.write(b"abc")
        recent = self.diskfile("recent").create_writer()
        recent.write(b"abc")
        past = time.time() - 3600
        os.utime(old.temp_path, (past, past))
        (self.devices / "sda" / "tmp" / "subdir").mkdir()
        self.assertEqual(self.manager.cleanup_tmp("sda", time.time() - 600), 1)
        self.assertEqual(sorted(self.tmp_files()), sorted([recent.temp_path.name, "subdir"]))
        self.assertRaises(FileNotFoundError, old.commit, {}, ts(1))
        recent.commit({}, ts(1))
        self.assertEqual(self.read_all(self.diskfile("recent")), b"abc")
        self.assertEqual(self.manager.cleanup_tmp("sda", time.time()), 0)
        (self.devices / "sdb").mkdir()
        self.assertEqual(self.manager.cleanup_tmp("sdb", time.time()), 0)


class RulesTests(DiskFileTestCase):
    # (data, meta, tombstone) times -> (exists, data ts, meta ts, tombstone ts, files kept)
    cases = [
        ((None, None, None), (False, None, None, None, [])),
        ((1, None, None), (True, 1, None, None, ["1.data"])),
        ((None, 1, None), (False, None, None, None, ["1.meta"])),
        ((None, None, 1), (False, None, None, 1, ["1.ts"])),
        ((1, 2, None), (True, 1, 2, None, ["1.data", "2.meta"])),
        ((2, 1, None), (True, 2, None, None, ["2.data"])),
        ((1, None, 2), (False, None, None, 2, ["2.ts"])),
        ((2, None, 1), (True, 2, None, None, ["2.data"])),
        ((None, 1, 2), (False, None, None, 2, ["2.ts"])),
        ((None, 2, 1), (False, None, None, 1, ["1.ts", "2.meta"])),
        ((1, 2, 3), (False, None, None, 3, ["3.ts"])),
        ((1, 3, 2), (False, None, None, 2, ["2.ts", "3.meta"])),
        ((2, 1, 3), (False, None, None, 3, ["3.ts"])),
        ((2, 3, 1), (True, 2, 3, None, ["2.data", "3.meta"])),
        ((3, 1, 2), (True, 3, None, None, ["3.data"])),
        ((3, 2, 1), (True, 3, None, None, ["3.data"])),
        ((1, None, 1), (False, None, None, 1, ["1.ts"])),
        ((1, 1, None), (True, 1, None, None, ["1.data"])),
        ((1, 1, 1), (False, None, None, 1, ["1.ts"])),
    ]

    def short(self, item: OnDiskFile) -> str:
        return f"{int(item.timestamp.seconds) - 1_700_000_000}{item.ext}"

    def test_every_combination(self) -> None:
        for index, ((data, meta, tomb), expected) in enumerate(self.cases):
            df = self.diskfile(obj=f"case{index}")
            if data is not None:
                metadata = {"X-Object-Meta-From": "data", "Content-Type": "a/b"}
                self.place(df, ts(data), DATA, b"data", **metadata)
            if meta is not None:
                self.place(df, ts(meta), META, **{"X-Object-Meta-From": "meta"})
            if tomb is not None:
                self.place(df, ts(tomb), TOMBSTONE)
            exists, data_ts, meta_ts, tomb_ts, kept = expected
            state = df.read_metadata()
            label = f"case {(data, meta, tomb)}"
            self.assertEqual(state.exists, exists, label)
            self.assertEqual(state.timestamp, ts(data_ts) if data_ts else None, label)
            self.assertEqual(state.meta_timestamp, ts(meta_ts) if meta_ts else None, label)
            self.assertEqual(state.tombstone_timestamp, ts(tomb_ts) if tomb_ts else None, label)
            if exists:
                self.assertEqual(state.metadata["X-Object-Meta-From"], "meta" if meta_ts else "data", label)
                self.assertEqual(state.metadata["X-Timestamp"], ts(meta_ts or data_ts).internal, label)
                self.assertEqual(state.metadata["Content-Type"], "a/b", label)
                self.assertEqual(state.content_length, 4, label)
                self.assertEqual(self.read_all(df), b"data", label)
            elif tomb_ts:
                self.assertEqual(state.metadata["X-Timestamp"], ts(tomb_ts).internal, label)
            else:
                self.assertEqual(state, ObjectState(), label)
            selection = select_files(df.list_files())
            kept_now = sorted(self.short(f) for f in df.list_files() if f not in selection.obsolete)
            self.assertEqual(kept_now, kept, label)

    def test_newest_of_each_kind(self) -> None:
        kinds = [(1, DATA), (2, DATA), (3, META), (4, META), (1, TOMBSTONE)]
        files = [OnDiskFile(ts(n), ext) for n, ext in kinds]
        selection = select_files(files)
        self.assertEqual((selection.data, selection.meta, selection.tombstone), (files[1], files[3], None))
        self.assertEqual(set(selection.obsolete), {files[0], files[2], files[4]})

    def test_only_metas(self) -> None:
        files = [OnDiskFile(ts(1), META), OnDiskFile(ts(2), META)]
        self.assertEqual(select_files(files), dfmod.FileSelection(None, files[1], None, (files[0],)))

    def test_offsets_order(self) -> None:
        df = self.diskfile()
        self.place(df, ts(1), DATA, b"a")
        self.place(df, ts(1, offset=1), META, **{"X-Object-Meta-X": "1"})
        self.place(df, ts(1, offset=2), TOMBSTONE)
        self.assertEqual(df.read_metadata().tombstone_timestamp, ts(1, offset=2))

    def test_foreign_files_ignored(self) -> None:
        df = self.diskfile()
        self.place(df, ts(1), DATA, b"a")
        junk_names = (
            "1700000009.00000.data.tmp",
            ".lock",
            "hashes.pkl",
            "1700000009.00000#2#d.data",
            "1700000009.00000#1.data",
            "170000009.00000.data",
            "1700000009.00000_0000000000000000.ts",
        )
        for junk in junk_names:
            (df.hash_dir / junk).write_bytes(b"junk")
        self.assertEqual(df.read_metadata().timestamp, ts(1))
        self.put(df, b"b", ts(2))
        self.assertEqual(len(self.files(df)), 8)
        self.assertNotIn("1700000001.00000.data", self.files(df))

    def test_parse_file_name(self) -> None:
        when = Timestamp.parse("1700000000.12345")
        self.assertEqual(parse_file_name("1700000000.12345.data"), OnDiskFile(when, DATA))
        self.assertEqual(
            parse_file_name("1700000000.12345_00000000000000ff.meta"),
            OnDiskFile(Timestamp.parse("1700000000.12345_ff"), META),
        )
        self.assertEqual(parse_file_name("0000000001.00000.ts"), OnDiskFile(Timestamp.parse("1"), TOMBSTONE))
        self.assertEqual(parse_file_name("1700000000.12345#3#d.data"), OnDiskFile(when, DATA, 3, True))
        self.assertEqual(parse_file_name("1700000000.12345#0.data"), OnDiskFile(when, DATA, 0, False))
        bad_names = (
            "1700000000.12345.dat",
            "1700000000.1234.data",
            "1700000000.12345#3.meta",
            "1700000000.12345#03.data",
            "1700000000.12345_0000000000000000.data",
            "1700000000.12345_00000000000000FF.data",
            "x.data",
            "../1700000000.12345.data",
            "1700000000.12345.data\n",
        )
        for bad in bad_names:
            self.assertIsNone(parse_file_name(bad), bad)


class ChangeTests(DiskFileTestCase):
    def test_put_conflicts(self) -> None:
        df = self.diskfile()
        self.put(df, b"two", ts(2))
        for when in (ts(1), ts(2)):
            error = self.assertRaises(DiskFileConflict, self.put, df, b"old", when)
            self.assertEqual(error.previous.timestamp, ts(2))
        previous = self.put(df, b"two again", ts(2, offset=1))
        self.assertEqual(previous.timestamp, ts(2))
        self.assertEqual(previous.metadata["ETag"], hashlib.md5(b"two").hexdigest())
        df.delete(ts(3))
        self.assertRaises(DiskFileConflict, self.put, df, b"x", ts(3))
        self.put(df, b"four", ts(4))
        self.assertEqual(self.read_all(df), b"four")
        self.assertEqual(self.files(df), ["1700000004.00000.data"])
        self.assertEqual(self.tmp_files(), [])

    def test_post(self) -> None:
        df = self.diskfile()
        self.assertRaises(DiskFileNotFound, df.write_metadata, {}, ts(1))
        self.assertFalse(df.hash_dir.exists())
        self.put(df, b"abc", ts(2), **{"X-Object-Meta-A": "1", "X-Delete-At": "1800000000"})
        self.assertRaises(DiskFileConflict, df.write_metadata, {}, ts(1))
        self.assertRaises(DiskFileConflict, df.write_metadata, {}, ts(2))
        previous = df.write_metadata({"X-Object-Meta-B": "2", "Content-Type": "text/x"}, ts(3))
        self.assertEqual(previous.metadata["X-Object-Meta-A"], "1")
        self.assertEqual(previous.meta_timestamp, None)
        self.assertRaises(DiskFileConflict, df.write_metadata, {}, ts(3))
        previous = df.write_metadata({"X-Object-Meta-C": "3"}, ts(4))
        self.assertEqual(previous.meta_timestamp, ts(3))
        state = df.read_metadata()
        times = (state.timestamp, state.meta_timestamp, state.newest_timestamp)
        self.assertEqual(times, (ts(2), ts(4), ts(4)))
        mutable = {
            k: v
            for k, v in state.metadata.items()
            if k.startswith("X-Object-Meta") or k in ("Content-Type", "X-Delete-At")
        }
        self.assertEqual(mutable, {"X-Object-Meta-C": "3", "Content-Type": "application/octet-stream"})
        self.assertEqual(self.files(df), ["1700000002.00000.data", "1700000004.00000.meta"])
        df.delete(ts(5))
        self.assertRaises(DiskFileNotFound, df.write_metadata, {}, ts(6))
        self.assertEqual(self.files(df), ["1700000005.00000.ts"])
        self.assertEqual(self.tmp_files(), [])

    def test_delete(self) -> None:
        df = self.diskfile()
        previous = df.delete(ts(1), {"X-Backend-Reason": "test"})
        self.assertEqual(previous, ObjectState())
        state = df.read_metadata()
        self.assertEqual((state.exists, state.deleted, state.tombstone_timestamp), (False, True, ts(1)))
        self.assertEqual(state.metadata["X-Backend-Reason"], "test")
        error = self.assertRaises(DiskFileConflict, df.delete, ts(1))
        self.assertEqual(error.previous.tombstone_timestamp, ts(1))
        previous = df.delete(ts(2))
        self.assertTrue(previous.deleted)
        self.put(df, b"abc", ts(3))
        self.assertRaises(DiskFileConflict, df.delete, ts(3))
        previous = df.delete(ts(4))
        self.assertTrue(previous.exists)
        self.assertEqual(previous.content_length, 3)
        self.assertEqual(self.files(df), ["1700000004.00000.ts"])

    def test_late_writes_converge(self) -> None:
        """Changes arriving out of order leave what arriving in order would have."""
        df = self.diskfile()
        self.put(df, b"one", ts(1))
        df.write_metadata({"X-Object-Meta-Posted": "at 5"}, ts(5))
        df.delete(ts(3))  # older than the POST but newer than the data: allowed
        self.assertEqual(self.files(df), ["1700000003.00000.ts", "1700000005.00000.meta"])
        self.assertFalse(df.read_metadata().exists)
        self.put(df, b"four", ts(4))  # a PUT made before the POST: the POST applies to it
        state = df.read_metadata()
        self.assertEqual((state.timestamp, state.meta_timestamp), (ts(4), ts(5)))
        self.assertEqual(state.metadata["X-Object-Meta-Posted"], "at 5")
        self.assertEqual(self.files(df), ["1700000004.00000.data", "1700000005.00000.meta"])
        self.put(df, b"six", ts(6))
        self.assertEqual(self.files(df), ["1700000006.00000.data"])
        self.assertNotIn("X-Object-Meta-Posted", df.read_metadata().metadata)

    def test_every_change_invalidates_the_suffix(self) -> None:
        df = self.diskfile()
        invalid = df.partition_path / "hashes.invalid"
        self.put(df, b"abc", ts(1))
        self.assertEqual(invalid.read_text(), f"{df.suffix}\n")
        df.write_metadata({}, ts(2))
        df.delete(ts(3))
        self.assertEqual(invalid.read_text(), f"{df.suffix}\n" * 3)
        self.assertRaises(DiskFileConflict, df.delete, ts(3))
        self.assertEqual(invalid.read_text(), f"{df.suffix}\n" * 3)
        other = self.diskfile(obj="other")
        self.put(other, b"abc", ts(1))
        self.assertEqual(invalid.read_text(), f"{df.suffix}\n" * 3 + f"{other.suffix}\n")
        self.manager.invalidate_suffix("sda", 0, 17, "fff")
        self.assertTrue(invalid.read_text().endswith("fff\n"))
        self.manager.invalidate_suffix("sda", 0, 18, "fff")
        self.assertFalse((invalid.parent.parent / "18").exists())
        self.assertRaises(ValueError, self.manager.invalidate_suffix, "sda", 0, 17, "../x")


class ConcurrencyTests(DiskFileTestCase):
    def run_threads(self, actions: list) -> list:
        barrier = threading.Barrier(len(actions))
        results: list = [None] * len(actions)

        def run(index: int) -> None:
            try:
                results[index] = actions[index](barrier)
            except BaseException as error:
                results[index] = error

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(actions))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        return results

    def test_concurrent_puts_leave_the_newest(self) -> None:
        rng = random.Random(7)
        for round_ in range(5):
            df = self.diskfile(obj=f"o{round_}")
            times = list(range(1, 9))
            rng.shuffle(times)

            def putter(n: int):
                def action(barrier: threading.Barrier) -> str:
                    writer = df.create_writer(5)
                    writer.write(b"body-%d" % n)
                    barrier.wait()
                    try:
                        writer.commit({}, ts(n))
                    except DiskFileConflict:
                        return "conflict"
                    return "ok"

                return action

            results = self.run_threads([putter(n) for n in times])
            self.assertEqual([r for r in results if r not in ("ok", "conflict")], [])
            self.assertEqual(self.read_all(df), b"body-8")
            self.assertEqual(self.files(df), ["1700000008.00000.data"])
        self.assertEqual(self.tmp_files(), [])

    def test_an_older_commit_waits_for_the_lock_and_conflicts(self) -> None:
        """A commit paused in its rename holds the object: an older one waits, then gets 409."""
        df = self.diskfile()
        in_rename, release = threading.Event(), threading.Event()
        real_rename = os.rename

        def slow_rename(src: str, dst: str) -> None:
            if str(dst).endswith("1700000002.00000.data"):
                in_rename.set()
                release.wait(10)
            real_rename(src, dst)

        self.patch(os, "rename", slow_rename)
        results: dict[str, object] = {}

        def commit(n: int) -> None:
            try:
                results[n] = self.put(df, b"body", ts(n))
            except DiskFileConflict as error:
                results[n] = error

        newer = threading.Thread(target=commit, args=(2,))
        newer.start()
        self.assertTrue(in_rename.wait(10))
        older = threading.Thread(target=commit, args=(1,))
        older.start()
        older.join(0.2)
        self.assertTrue(older.is_alive())
        release.set()
        newer.join(10)
        older.join(10)
        self.assertIsInstance(results[2], ObjectState)
        self.assertIsInstance(results[1], DiskFileConflict)
        self.assertEqual(results[1].previous.timestamp, ts(2))
        self.assertEqual(self.files(df), ["1700000002.00000.data"])

    def test_concurrent_puts_posts_and_deletes(self) -> None:
        df = self.diskfile()
        self.put(df, b"base", ts(1))

        def change(kind: str, n: int):
            def action(barrier: threading.Barrier) -> str:
                barrier.wait()
                try:
                    if kind == "put":
                        self.put(df, b"put-%d" % n, ts(n))
                    elif kind == "post":
                        df.write_metadata({"X-Object-Meta-N": str(n)}, ts(n))
                    else:
                        df.delete(ts(n))
                except (DiskFileConflict, DiskFileNotFound):
                    return "refused"
                return "ok"

            return action

        results = self.run_threads(
            [
                change("put", 2),
                change("delete", 3),
                change("post", 4),
                change("put", 5),
                change("post", 6),
                change("delete", 7),
                change("put", 8),
                change("post", 9),
            ]
        )
        self.assertEqual([r for r in results if r not in ("ok", "refused")], [])
        state = df.read_metadata()
        if results[-1] == "ok":  # the POST at 9 found the PUT at 8
            self.assertEqual((state.timestamp, state.meta_timestamp), (ts(8), ts(9)))
            self.assertEqual(self.files(df), ["1700000008.00000.data", "1700000009.00000.meta"])
        else:
            self.assertEqual(state.timestamp, ts(8))
            self.assertEqual(self.files(df), ["1700000008.00000.data"])
        self.assertEqual(self.read_all(df), b"put-8")


class CorruptTests(DiskFileTestCase):
    def damage(self, path: Path, position: int) -> None:
        raw = bytearray(path.read_bytes())
        raw[position] ^= 0xFF
        path.write_bytes(bytes(raw))

    def test_damaged_data_footer(self) -> None:
        df = self.diskfile()
        self.put(df, b"abc", ts(1))
        path = df.read_metadata().data_path
        self.damage(path, 5)
        error = self.assertRaises(DiskFileCorrupt, df.read_metadata)
        self.assertEqual(error.path, path)
        self.assertIn("checksum", str(error))

    def test_damaged_meta_footer(self) -> None:
        df = self.diskfile()
        self.put(df, b"abc", ts(1))
        df.write_metadata({"X-Object-Meta-A": "1"}, ts(2))
        meta = df.hash_dir / "1700000002.00000.meta"
        self.damage(meta, -1)
        error = self.assertRaises(DiskFileCorrupt, df.read_metadata)
        self.assertEqual(error.path, meta)

    def test_truncated_and_extended(self) -> None:
        df = self.diskfile()
        self.put(df, b"abc", ts(1))
        path = df.read_metadata().data_path
        raw = path.read_bytes()
        path.write_bytes(b"extra" + raw)
        self.assertIn("Content-Length", str(self.assertRaises(DiskFileCorrupt, df.read_metadata)))
        path.write_bytes(raw[1:])
        self.assertIn("Content-Length", str(self.assertRaises(DiskFileCorrupt, df.read_metadata)))
        path.write_bytes(raw[:10])
        self.assertRaises(DiskFileCorrupt, df.read_metadata)
        path.write_bytes(b"")
        self.assertRaises(DiskFileCorrupt, df.read_metadata)

    def test_file_name_and_footer_disagree(self) -> None:
        df = self.diskfile()
        self.put(df, b"abc", ts(1))
        os.rename(df.hash_dir / "1700000001.00000.data", df.hash_dir / "1700000002.00000.data")
        self.assertIn("X-Timestamp", str(self.assertRaises(DiskFileCorrupt, df.read_metadata)))

    def test_tombstone_with_a_body(self) -> None:
        df = self.diskfile()
        path = self.place(df, ts(1), TOMBSTONE)
        path.write_bytes(b"x" + path.read_bytes())
        self.assertRaises(DiskFileCorrupt, df.read_metadata)

    def test_changes_still_work_over_corrupt_files(self) -> None:
        df = self.diskfile()
        self.put(df, b"abc", ts(1))
        self.damage(df.read_metadata().data_path, -3)
        previous = df.write_metadata({"X-Object-Meta-A": "1"}, ts(2))
        self.assertTrue(previous.exists)
        self.assertEqual(dict(previous.metadata), {})
        previous = self.put(df, b"new", ts(3))
        self.assertEqual(previous.timestamp, ts(1))
        self.assertEqual(self.files(df), ["1700000003.00000.data"])
        self.assertEqual(self.read_all(df), b"new")


class AsyncPendingTests(DiskFileTestCase):
    headers = {
        "X-Size": "3",
        "X-Etag": "e",
        "X-Content-Type": "text/plain",
        "X-Timestamp": "1700000001.00000",
    }

    def test_layout_and_content(self) -> None:
        write = self.manager.write_async_pending
        path = write("sda", 0, "PUT", "AUTH_test", "c", "o/ü", self.headers, ts(1))
        obj_hash = expected_hash("AUTH_test", "c", "o/ü")
        expected = self.devices / "sda" / "async_pending" / obj_hash[-3:] / f"{obj_hash}-1700000001.00000"
        self.assertEqual(path, expected)
        self.assertTrue(path.is_file())
        record = self.manager.read_async_pending(path)
        names = (record.op, record.account, record.container, record.obj)
        self.assertEqual(names, ("PUT", "AUTH_test", "c", "o/ü"))
        self.assertEqual(dict(record.headers), self.headers)
        self.assertEqual((record.timestamp, record.policy_index), (ts(1), 0))
        path2 = self.manager.write_async_pending("sda", 3, "DELETE", "AUTH_test", "c", "o/ü", {}, ts(2))
        self.assertEqual(path2.parent.parent.name, "async_pending-3")
        self.assertEqual(self.tmp_files(), [])

    def test_list_read_remove(self) -> None:
        paths = [
            self.manager.write_async_pending("sda", 0, "PUT", "a", "c", "o", self.headers, ts(2)),
            self.manager.write_async_pending("sda", 0, "DELETE", "a", "c", "o", {}, ts(1)),
            self.manager.write_async_pending("sda", 1, "PUT", "a", "c", "p", self.headers, ts(1)),
        ]
        self.assertEqual(self.manager.list_async_pendings("sda", 0), [paths[1], paths[0]])
        self.assertEqual(self.manager.list_async_pendings("sda", 1), [paths[2]])
        self.assertEqual(self.manager.list_async_pendings("sda", 4), [])
        self.assertEqual(self.manager.list_async_pendings("sda"), [paths[1], paths[0], paths[2]])
        for path in paths:
            self.manager.remove_async_pending(path)
        self.manager.remove_async_pending(paths[0])
        self.assertEqual(self.manager.list_async_pendings("sda"), [])
        self.assertEqual(os.listdir(self.devices / "sda" / "async_pending"), [])
        again = self.manager.write_async_pending("sda", 0, "PUT", "a", "c", "o", self.headers, ts(3))
        self.assertTrue(again.is_file())

    def test_same_name_is_replaced(self) -> None:
        first = self.manager.write_async_pending("sda", 0, "PUT", "a", "c", "o", self.headers, ts(1))
        second = self.manager.write_async_pending("sda", 0, "DELETE", "a", "c", "o", {}, ts(1))
        self.assertEqual(first, second)
        self.assertEqual(self.manager.read_async_pending(first).op, "DELETE")

    def test_checks(self) -> None:
        write = self.manager.write_async_pending
        self.assertRaises(ValueError, write, "sda", 0, "GET", "a", "c", "o", {}, ts(1))
        self.assertRaises(DiskFileDeviceUnavailable, write, "sdb", 0, "PUT", "a", "c", "o", {}, ts(1))
        path = self.manager.write_async_pending("sda", 0, "PUT", "a", "c", "o", {}, ts(1))
        elsewhere = self.devices.parent / "other" / "sda" / "async_pending" / path.parent.name / path.name
        in_objects = self.devices / "sda" / "objects" / path.parent.name / path.name
        for bad in (in_objects, path.parent / "x", Path("/etc/passwd"), elsewhere):
            self.assertRaises(ValueError, self.manager.remove_async_pending, bad)
        path.write_bytes(b"\x80\x04pickle")
        self.assertRaises(DiskFileCorrupt, self.manager.read_async_pending, path)

    def test_the_two_queues_keep_to_their_own_records(self) -> None:
        """An expiry entry is not an async pending, and neither sits in the other's group."""
        pending = self.manager.write_async_pending("sda", 0, "PUT", "a", "c", "o", {}, ts(1))
        df = self.diskfile()
        entry = self.manager.write_expiring(df.device_path, df.expiring_entry(1_700_003_600))
        self.assertRaises(ValueError, self.manager.remove_expiring, pending)
        self.assertRaises(ValueError, self.manager.remove_async_pending, entry)
        misplaced = entry.parent.parent / "0000000000" / entry.name  # a bucket that is not its hour
        self.assertRaises(ValueError, self.manager.read_expiring, misplaced)
        self.manager.remove_expiring(entry)
        self.assertFalse(entry.parent.exists())  # the emptied hour goes with its last entry
        self.assertEqual(self.manager.read_async_pending(pending).obj, "o")

    def test_suffix_dir_removed_meanwhile(self) -> None:
        """The updater removing an emptied suffix directory between mkdir and rename."""
        real_rename = os.rename
        state = {"first": True}

        def racing(src: str, dst: str) -> None:
            if state["first"] and "async_pending" in str(dst):
                state["first"] = False
                os.rmdir(os.path.dirname(dst))
            real_rename(src, dst)

        self.patch(os, "rename", racing)
        path = self.manager.write_async_pending("sda", 0, "PUT", "a", "c", "o", {}, ts(1))
        self.assertTrue(path.is_file())
        self.assertFalse(state["first"])


class FsyncTests(WriteReadTests, ChangeTests):
    """The same behaviour with fsync on (as in production)."""

    fsync = True


def require_o_direct(directory: Path) -> None:
    """Skip unless a file in ``directory`` can be written and read with O_DIRECT."""
    if not dfmod._O_DIRECT:
        raise SkipTest("no O_DIRECT on this platform")
    probe = directory / "probe"
    try:
        fd = os.open(probe, os.O_RDWR | os.O_CREAT | dfmod._O_DIRECT, 0o600)
        try:
            block = mmap.mmap(-1, dfmod.DIRECT_ALIGN)
            os.write(fd, block)
            os.preadv(fd, [block], 0)
        finally:
            os.close(fd)
            probe.unlink()
    except OSError as error:
        raise SkipTest(f"this filesystem refuses O_DIRECT: {error}")


def is_direct(fd: int) -> bool:
    return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & dfmod._O_DIRECT)


class DirectReadTests(DiskFileTestCase):
    """A reader told to go direct reads the body with O_DIRECT, at any offset, the same bytes."""

    def setUp(self) -> None:
        super().setUp()
        require_o_direct(self.devices / "sda")
        self.body = os.urandom(3 * dfmod.DIRECT_ALIGN + 1234)
        self.df = self.diskfile()
        self.put(self.df, self.body, ts(1), chunk=5000)
        self.reads: list[bool] = []  # whether each pread / preadv went direct
        real_preadv, real_pread = os.preadv, os.pread
        self.patch(dfmod.os, "preadv", lambda fd, *a: self.reads.append(is_direct(fd)) or real_preadv(fd, *a))
        self.patch(dfmod.os, "pread", lambda fd, *a: self.reads.append(is_direct(fd)) or real_pread(fd, *a))

    def reader(self, direct: bool = True) -> dfmod.DiskFileReader:
        reader = self.df.open_reader(self.df.read_metadata())
        reader.direct = direct
        self.addCleanup(reader.close)
        self.reads.clear()  # (the footer's read)
        return reader

    def test_unaligned_pieces_read_directly_are_the_stored_bytes(self) -> None:
        reader, body = self.reader(), self.body
        for offset, length in [(0, 10), (1, dfmod.DIRECT_ALIGN), (4095, 2), (5000, 7000), (len(body) - 3, 100),
                               (0, len(body)), (len(body), 10)]:
            self.assertEqual(reader.read(offset, length), body[offset : offset + length], (offset, length))
        self.assertEqual(set(self.reads), {True})
        self.assertTrue(reader.direct)

    def test_a_read_larger_than_the_stage_and_the_etag_check(self) -> None:
        self.patch(dfmod, "DIRECT_CHUNK", dfmod.DIRECT_ALIGN)
        reader = self.reader()
        self.assertEqual(reader.read(0, 100) + reader.read(100, 10**6), self.body)  # the stage grows
        self.assertIs(reader.etag_verified(), True)
        self.assertEqual(set(self.reads), {True})

    def test_a_body_that_differs_from_its_etag_fails_the_check(self) -> None:
        path = self.df.read_metadata().data_path
        with open(path, "r+b") as f:
            f.seek(5000)
            f.write(b"X" if self.body[5000:5001] != b"X" else b"Y")
        reader = self.reader()
        reader.read(0, 8192)
        reader.read(8192, len(self.body))
        self.assertIs(reader.etag_verified(), False)

    def test_not_told_to_the_page_cache(self) -> None:
        reader = self.reader(direct=False)
        self.assertEqual(reader.read(0, len(self.body)), self.body)
        self.assertEqual(set(self.reads), {False})

    def test_a_filesystem_refusing_the_flag_gets_the_page_cache(self) -> None:
        real_fcntl = fcntl.fcntl

        def refuse(fd: int, command: int, *arg: int) -> int:
            if command == fcntl.F_SETFL and arg[0] & dfmod._O_DIRECT:
                raise OSError(errno.EINVAL, "Invalid argument")
            return real_fcntl(fd, command, *arg)

        self.patch(dfmod.fcntl, "fcntl", refuse)
        reader = self.reader()
        self.assertEqual(reader.read(7, 100), self.body[7:107])
        self.assertFalse(reader.direct)
        self.assertEqual(set(self.reads), {False})

    def test_a_filesystem_refusing_the_first_direct_read_gets_the_page_cache(self) -> None:
        real_preadv = os.preadv

        def refuse(fd: int, *args):
            if is_direct(fd):
                raise OSError(errno.EINVAL, "Invalid argument")
            return real_preadv(fd, *args)

        self.patch(dfmod.os, "preadv", refuse)
        reader = self.reader()
        self.assertEqual(reader.read(0, len(self.body)), self.body)
        self.assertFalse(reader.direct)
        self.assertIs(reader.etag_verified(), True)

    def test_a_failing_direct_read_is_an_error(self) -> None:
        def fail(fd: int, *args):
            raise OSError(errno.EIO, "Input/output error")

        self.patch(dfmod.os, "preadv", fail)
        reader = self.reader()
        self.assertEqual(self.assertRaises(OSError, reader.read, 0, 100).errno, errno.EIO)

    def test_direct_reads_can_be_turned_off(self) -> None:
        self.assertTrue(self.manager.direct_reads)
        self.assertFalse(DiskFileManager(self.devices, False, HASHER, direct_reads=False).direct_reads)


class DirectWriteTests(DiskFileTestCase):
    """Large bodies of known length go to the disk with O_DIRECT through an aligned stage."""

    def setUp(self) -> None:
        super().setUp()
        require_o_direct(self.devices / "sda")
        self.patch(dfmod, "DIRECT_WRITE_MIN", 64 * 1024)
        self.patch(dfmod, "DIRECT_CHUNK", 16 * 1024)
        self.writes: list[tuple[int, bool]] = []
        real_write = os.write

        def write(fd: int, data) -> int:
            direct = bool(fcntl.fcntl(fd, fcntl.F_GETFL) & dfmod._O_DIRECT)
            written = real_write(fd, data)
            self.writes.append((written, direct))
            return written

        self.patch(dfmod.os, "write", write)

    def put_in_pieces(self, body: bytes, hint: int | None, piece: int = 10_000, obj: str = "o") -> ObjectState:
        df = self.diskfile(obj)
        writer = df.create_writer(hint)
        for start in range(0, len(body), piece):
            writer.write_many([body[start : start + piece // 2], body[start + piece // 2 : start + piece]])
        writer.commit({"Content-Type": "application/octet-stream"}, ts(1))
        state = df.read_metadata()
        self.assertEqual(self.read_all(df), body)
        self.assertEqual(state.metadata["ETag"], hashlib.md5(body).hexdigest())
        with df.open_reader(state) as reader:
            reader.read(0, state.content_length)
            self.assertIs(reader.etag_verified(), True)
        return state

    def test_a_large_body_is_written_directly_in_aligned_pieces(self) -> None:
        body = os.urandom(100_003)
        self.put_in_pieces(body, len(body))
        direct = [length for length, is_direct in self.writes if is_direct]
        self.assertEqual(direct, [16 * 1024] * 6)  # 98,304 bytes; the tail of 1,699 is under one block
        cached = [length for length, is_direct in self.writes if not is_direct]
        self.assertEqual(sum(direct) + cached[0], len(body))  # the unaligned tail, then the footer
        self.assertLess(cached[0], dfmod.DIRECT_ALIGN)
        self.assertEqual(self.tmp_files(), [])

    def test_small_and_unknown_length_bodies_use_the_page_cache(self) -> None:
        for hint in (None, 1000, 64 * 1024 - 1):
            self.writes.clear()
            self.put_in_pieces(os.urandom(70_000), hint, obj=f"o{hint}")
            self.assertFalse(any(is_direct for _, is_direct in self.writes), hint)

    def test_direct_writes_can_be_turned_off(self) -> None:
        self.manager = DiskFileManager(self.devices, False, HASHER, fsync=False, direct_writes=False)
        self.put_in_pieces(os.urandom(100_000), 100_000)
        self.assertFalse(any(is_direct for _, is_direct in self.writes))

    def test_a_filesystem_refusing_the_first_direct_write_gets_the_page_cache(self) -> None:
        patched_write = dfmod.os.write

        def refuse_direct(fd: int, data) -> int:
            if fcntl.fcntl(fd, fcntl.F_GETFL) & dfmod._O_DIRECT:
                raise OSError(errno.EINVAL, "Invalid argument")
            return patched_write(fd, data)

        self.patch(dfmod.os, "write", refuse_direct)
        self.put_in_pieces(os.urandom(100_000), 100_000)
        # Also when the first direct write would be the commit's (a body under one stage).
        self.patch(dfmod, "DIRECT_CHUNK", 1024 * 1024)
        self.put_in_pieces(os.urandom(100_000), 100_000, obj="whole")

    def test_a_direct_write_failing_later_fails_the_upload(self) -> None:
        patched_write = dfmod.os.write
        calls = []

        def fail_second(fd: int, data) -> int:
            calls.append(len(data))
            if len(calls) == 2:
                raise OSError(errno.EIO, "Input/output error")
            return patched_write(fd, data)

        self.patch(dfmod.os, "write", fail_second)
        df = self.diskfile()
        writer = df.create_writer(100_000)
        writer.write(b"x" * 16 * 1024)
        error = self.assertRaises(OSError, writer.write, b"x" * 16 * 1024)
        self.assertEqual(error.errno, errno.EIO)
        self.assertEqual(self.tmp_files(), [])

    def test_abort_mid_body_leaves_nothing(self) -> None:
        df = self.diskfile()
        writer = df.create_writer(100_000)
        writer.write(os.urandom(40_000))
        writer.abort()
        self.assertEqual(self.tmp_files(), [])
        self.assertEqual(self.files(df), [])


class ECRulesTests(SynchronousTestCase):
    """select_ec_files: which fragment archives of an EC object count (pure: file names only)."""

    def select(self, *names: str):
        files = []
        for name in names:
            stamp, _, rest = name.partition(":")  # "<n>:<suffix>", n seconds after 1700000000
            parsed = parse_file_name(f"{ts(int(stamp)).internal}{rest}")
            self.assertIsNotNone(parsed, name)
            files.append(parsed)
        return dfmod.select_ec_files(files)

    def short(self, items) -> list[str]:
        """Names as `select` takes them: ``<n>:<what follows the timestamp>``."""
        return [f"{int(f.timestamp.seconds) - 1_700_000_000}:{f.name[len(f.timestamp.internal):]}" for f in items]

    def test_the_newest_durable_version_wins_with_all_its_archives(self) -> None:
        chosen = self.select("1:#0#d.data", "2:#0#d.data", "2:#3.data", "3:#0.data")
        self.assertEqual(chosen.durable_timestamp, ts(2))
        self.assertEqual(sorted(chosen.fragments), [0, 3])  # a handoff holding two indexes
        self.assertEqual(self.short(chosen.non_durable), ["3:#0.data"])  # its commit may still come
        self.assertEqual(self.short(chosen.obsolete), ["1:#0#d.data"])
        self.assertIsNone(chosen.tombstone)

    def test_nothing_durable_yet_is_never_served_and_never_removed(self) -> None:
        chosen = self.select("1:#2.data", "2:#2.data")
        self.assertIsNone(chosen.durable_timestamp)
        self.assertEqual(dict(chosen.fragments), {})
        self.assertEqual(self.short(chosen.non_durable), ["1:#2.data", "2:#2.data"])
        self.assertEqual(chosen.obsolete, ())

    def test_a_marked_archive_wins_over_its_unmarked_twin(self) -> None:
        chosen = self.select("5:#1.data", "5:#1#d.data")
        self.assertTrue(chosen.fragments[1].durable)
        self.assertEqual(self.short(chosen.obsolete), ["5:#1.data"])

    def test_tombstones(self) -> None:
        chosen = self.select("1:#0#d.data", "2:.ts", "3:#0.data")
        self.assertEqual((chosen.durable_timestamp, dict(chosen.fragments)), (None, {}))
        self.assertEqual(chosen.tombstone.timestamp, ts(2))
        self.assertEqual(self.short(chosen.non_durable), ["3:#0.data"])
        self.assertEqual(self.short(chosen.obsolete), ["1:#0#d.data"])
        tie = self.select("2:#0#d.data", "2:.ts")  # a tombstone wins a tie, as for replicas
        self.assertEqual((tie.tombstone.timestamp, self.short(tie.obsolete)), (ts(2), ["2:#0#d.data"]))
        newer = self.select("1:.ts", "2:#4#d.data")
        self.assertEqual((newer.tombstone, sorted(newer.fragments)), (None, [4]))
        self.assertEqual(self.short(newer.obsolete), ["1:.ts"])

    def test_meta_applies_when_newer_than_the_winner(self) -> None:
        chosen = self.select("2:#0#d.data", "1:.meta", "3:.meta", "4:.meta")
        self.assertEqual(chosen.meta.timestamp, ts(4))
        self.assertEqual(self.short(chosen.obsolete), ["1:.meta", "3:.meta"])
        orphan = self.select("3:.meta")  # before its data arrives (replication): kept
        self.assertEqual((orphan.meta.timestamp, orphan.obsolete), (ts(3), ()))

    def test_replicated_files_and_fragment_archives_do_not_mix(self) -> None:
        """The replication rules leave fragment archives alone; the EC rules drop whole .data files."""
        files = [parse_file_name(f"{ts(1).internal}#0#d.data"), parse_file_name(f"{ts(2).internal}.data")]
        self.assertEqual(dfmod.select_files(files).data, files[1])
        self.assertEqual(dfmod.select_ec_files(files).obsolete, (files[1],))


EC = 2  # the erasure-coded policy of these tests


class ECDiskFileTests(DiskFileTestCase):
    """An EC policy's objects: fragment archives, written, marked durable, read and cleaned up."""

    def setUp(self) -> None:
        super().setUp()
        self.manager = DiskFileManager(self.devices, False, HASHER, fsync=self.fsync, ec_policies={EC})

    def ec(self, obj: str = "o") -> DiskFile:
        return self.diskfile(obj, policy_index=EC)

    def put_archive(self, df: DiskFile, body: bytes, when: Timestamp, index: int, **metadata: str) -> ObjectState:
        with df.create_writer(len(body), frag_index=index) as writer:
            writer.write(body)
            return writer.commit({"Content-Type": "text/plain", **metadata}, when)

    def test_the_policy_decides_the_rules(self) -> None:
        self.assertTrue(self.ec().ec)
        self.assertFalse(self.diskfile().ec)
        self.assertFalse(DiskFileManager(self.devices, False, HASHER).get_diskfile("sda", 1, "a", "c", "o", EC).ec)

    def test_a_fragment_index_is_required_for_ec_and_refused_for_replicas(self) -> None:
        self.assertRaises(ValueError, self.ec().create_writer, 3)
        self.assertRaises(ValueError, self.ec().create_writer, 3, frag_index=-1)
        self.assertRaises(ValueError, self.diskfile().create_writer, 3, frag_index=0)
        self.assertRaises(ValueError, self.diskfile().read_metadata, 0)
        self.assertRaises(ValueError, self.diskfile().mark_durable, ts(1), 0)
        self.assertEqual(self.tmp_files(), [])

    def test_an_archive_is_served_only_once_durable(self) -> None:
        df = self.ec()
        previous = self.put_archive(df, b"frag-3", ts(1), 3)
        self.assertEqual(previous, ObjectState())
        self.assertEqual(self.files(df), ["1700000001.00000#3.data"])
        self.assertEqual(df.read_metadata(), ObjectState())
        self.assertEqual(df.read_metadata(3), ObjectState())
        self.assertRaises(DiskFileNotFound, df.open_reader, df.read_metadata())
        durable = df.mark_durable(ts(1), 3)
        self.assertEqual(self.files(df), ["1700000001.00000#3#d.data"])
        self.assertEqual((durable.exists, durable.frag_index, durable.timestamp), (True, 3, ts(1)))
        self.assertEqual(durable.metadata["Content-Type"], "text/plain")
        state = df.read_metadata()
        self.assertEqual((state.frag_index, state.content_length, state.metadata["ETag"]),
                         (3, 6, f"crc32:{zlib.crc32(b'frag-3'):08x}"))
        self.assertEqual(self.read_all(df), b"frag-3")
        self.assertEqual(df.read_metadata(3), state)
        self.assertEqual(df.read_metadata(4), ObjectState())  # not held here
        self.assertEqual(df.mark_durable(ts(1), 3), durable)  # again: nothing changes
        self.assertEqual(self.files(df), ["1700000001.00000#3#d.data"])
        self.assertEqual(self.tmp_files(), [])

    def verified(self, df: DiskFile) -> bool | None:
        state = df.read_metadata()
        with df.open_reader(state) as reader:
            reader.read(0, state.content_length)
            return reader.etag_verified()

    def flip(self, df: DiskFile, at: int) -> None:
        [data] = df.hash_dir.glob("*.data")
        raw = bytearray(data.read_bytes())
        raw[at] ^= 0x01
        data.write_bytes(bytes(raw))

    def test_an_archive_is_checked_by_its_crc32_and_one_stored_with_an_md5_by_that(self) -> None:
        """Archives written before CRC-32 sums keep their md5 ETag and are checked with it."""
        body = bytes(range(256)) * 64
        new, old = self.ec("new"), self.ec("old")
        self.put_archive(new, body, ts(1), 2)
        with old.create_writer(len(body), frag_index=2, body_checksum=Md5()) as writer:
            writer.write(body)
            writer.commit({"Content-Type": "text/plain"}, ts(1))
        for df in (new, old):
            df.mark_durable(ts(1), 2)
        self.assertEqual(new.read_metadata().metadata["ETag"], f"crc32:{zlib.crc32(body):08x}")
        self.assertEqual(old.read_metadata().metadata["ETag"], hashlib.md5(body).hexdigest())
        self.assertEqual([self.verified(new), self.verified(old)], [True, True])
        for df in (new, old):
            self.flip(df, 5000)
        self.assertEqual([self.verified(new), self.verified(old)], [False, False])

    def test_a_handoff_holding_several_archives(self) -> None:
        df = self.ec()
        for index in (4, 1):
            self.put_archive(df, b"frag-%d" % index, ts(1), index)
        df.mark_durable(ts(1), 4)
        # The version is durable: both archives count; the marked one is served by default.
        self.assertEqual(df.read_metadata().frag_index, 4)
        self.assertEqual(df.read_metadata(1).frag_index, 1)
        with df.open_reader(df.read_metadata(1)) as reader:
            self.assertEqual(reader.read(0, 100), b"frag-1")
        df.mark_durable(ts(1), 1)
        self.assertEqual(self.files(df), ["1700000001.00000#1#d.data", "1700000001.00000#4#d.data"])
        self.assertEqual(df.read_metadata().frag_index, 1)  # both marked: the lowest index

    def test_a_newer_version_replaces_the_old_only_when_durable(self) -> None:
        df = self.ec()
        self.put_archive(df, b"old", ts(1), 0)
        df.mark_durable(ts(1), 0)
        self.put_archive(df, b"new", ts(2), 0)
        self.assertEqual(self.files(df), ["1700000001.00000#0#d.data", "1700000002.00000#0.data"])
        self.assertEqual(self.read_all(df), b"old")  # the new one's commit may never come
        df.mark_durable(ts(2), 0)
        self.assertEqual(self.files(df), ["1700000002.00000#0#d.data"])
        self.assertEqual(self.read_all(df), b"new")

    def test_changes_not_newer_than_the_durable_version_conflict(self) -> None:
        df = self.ec()
        self.put_archive(df, b"v2", ts(2), 0)
        df.mark_durable(ts(2), 0)
        self.assertRaises(DiskFileConflict, self.put_archive, df, b"v1", ts(1), 0)
        self.assertRaises(DiskFileConflict, self.put_archive, df, b"v2", ts(2), 0)  # held already
        self.assertRaises(DiskFileConflict, df.mark_durable, ts(1), 0)
        self.assertRaises(DiskFileNotFound, df.mark_durable, ts(3), 0)
        self.assertEqual(self.files(df), ["1700000002.00000#0#d.data"])
        self.assertEqual(self.tmp_files(), [])
        # Another archive of the durable version is welcome (a handoff may hold several).
        self.put_archive(df, b"v2-1", ts(2), 1)
        self.assertEqual(df.read_metadata().fragments, (0, 1))
        self.assertEqual(df.read_metadata(1).frag_index, 1)
        self.assertRaises(DiskFileConflict, self.put_archive, df, b"v2-1", ts(2), 1)
        # Not after a tombstone of the same time, though.
        other = self.ec("other")
        other.delete(ts(2))
        self.assertRaises(DiskFileConflict, self.put_archive, other, b"x", ts(2), 0)
        self.assertEqual(self.files(other), ["1700000002.00000.ts"])

    def test_mark_durable_of_nothing_is_not_found_and_leaves_no_directory(self) -> None:
        df = self.ec()
        self.assertRaises(DiskFileNotFound, df.mark_durable, ts(1), 0)
        self.assertFalse(df.hash_dir.exists())
        self.put_archive(df, b"x", ts(1), 0)
        self.assertRaises(DiskFileNotFound, df.mark_durable, ts(1), 1)  # another index
        self.assertEqual(self.files(df), ["1700000001.00000#0.data"])

    def test_tombstones_and_meta_as_for_replicas(self) -> None:
        df = self.ec()
        self.put_archive(df, b"x", ts(1), 2, **{"X-Object-Meta-Color": "blue"})
        df.mark_durable(ts(1), 2)
        df.write_metadata({"X-Object-Meta-Color": "red"}, ts(2))
        state = df.read_metadata()
        self.assertEqual((state.meta_timestamp, state.metadata["X-Object-Meta-Color"], state.frag_index),
                         (ts(2), "red", 2))
        self.assertEqual(self.files(df), ["1700000001.00000#2#d.data", "1700000002.00000.meta"])
        previous = df.delete(ts(3))
        self.assertTrue(previous.exists)
        self.assertEqual(self.files(df), ["1700000003.00000.ts"])
        state = df.read_metadata()
        self.assertEqual((state.exists, state.tombstone_timestamp), (False, ts(3)))
        self.assertRaises(DiskFileNotFound, df.write_metadata, {}, ts(4))

    def test_post_to_a_non_durable_object_is_not_found(self) -> None:
        df = self.ec()
        self.put_archive(df, b"x", ts(1), 0)
        self.assertRaises(DiskFileNotFound, df.write_metadata, {}, ts(2))
        self.assertEqual(self.files(df), ["1700000001.00000#0.data"])

    def test_a_newer_tombstone_wins_over_the_durable_mark(self) -> None:
        """A DELETE between the write and the mark: the archive goes, and the mark conflicts."""
        df = self.ec()
        self.put_archive(df, b"x", ts(1), 0)
        df.delete(ts(2))
        self.assertEqual(self.files(df), ["1700000002.00000.ts"])
        with self.assertRaises(DiskFileConflict) as caught:
            df.mark_durable(ts(1), 0)
        self.assertEqual(caught.exception.previous.tombstone_timestamp, ts(2))
        self.assertRaises(DiskFileConflict, df.mark_durable, ts(2), 0)  # a tie: the tombstone wins
        self.assertEqual(self.files(df), ["1700000002.00000.ts"])
        # An archive newer than the tombstone is kept, and becomes the object once marked.
        self.put_archive(df, b"y", ts(3), 0)
        self.assertEqual(df.read_metadata().tombstone_timestamp, ts(2))
        df.mark_durable(ts(3), 0)
        self.assertEqual(self.files(df), ["1700000003.00000#0#d.data"])
        self.assertEqual(self.read_all(df), b"y")

    def test_a_tombstone_racing_the_mark(self) -> None:
        """The mark and a newer DELETE at once, under the lock: either order leaves only the tombstone."""
        for round_ in range(6):
            df = self.ec(f"o{round_}")
            self.put_archive(df, b"x", ts(1), 0)
            barrier = threading.Barrier(2)
            results: list = [None, None]

            def mark() -> None:
                barrier.wait()
                try:
                    results[0] = df.mark_durable(ts(1), 0).exists
                except DiskFileError as error:
                    results[0] = type(error)

            def delete() -> None:
                barrier.wait()
                results[1] = df.delete(ts(2)).exists

            threads = [threading.Thread(target=mark), threading.Thread(target=delete)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            # Marked first: the DELETE saw the object; else the mark saw the tombstone.
            self.assertIn(results, ([True, True], [DiskFileConflict, False]))
            self.assertEqual(self.files(df), ["1700000002.00000.ts"])
            self.assertEqual(df.read_metadata().tombstone_timestamp, ts(2))

    def test_crash_between_the_write_and_the_mark(self) -> None:
        """A node killed (SIGKILL) after the archive's commit, before its mark: never served."""
        script = textwrap.dedent(
            f"""
            import os, signal
            from pathlib import Path
            from txstore.common.hashing import PathHasher
            from txstore.storage.diskfile import DiskFileManager
            manager = DiskFileManager(Path({str(self.devices)!r}), False, PathHasher(b"pre", b"suf"),
                                      ec_policies={{{EC}}})
            df = manager.get_diskfile("sda", 17, "AUTH_test", "c", "o", {EC})
            for n, index in ((1, 0), (2, 0)):
                writer = df.create_writer(5, frag_index=index)
                writer.write(b"arch%d" % n)
                writer.commit({{}}, "170000000%d.00000" % n)
                if n == 1:
                    df.mark_durable("1700000001.00000", 0)
            os.kill(os.getpid(), signal.SIGKILL)
            """
        )
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
        self.assertEqual(result.returncode, -signal.SIGKILL, result.stderr)
        df = self.ec()
        self.assertEqual(self.files(df), ["1700000001.00000#0#d.data", "1700000002.00000#0.data"])
        self.assertEqual(df.read_metadata().timestamp, ts(1))
        self.assertEqual(self.read_all(df), b"arch1")
        self.assertEqual(df.read_metadata(0).timestamp, ts(1))
        # A later change keeps the orphan (its mark may still come) and still never serves it.
        df.write_metadata({"X-Object-Meta-A": "b"}, ts(3))
        self.assertEqual(self.read_all(df), b"arch1")
        self.assertIn("1700000002.00000#0.data", self.files(df))

    def test_replicated_objects_ignore_fragment_archives(self) -> None:
        """A replicated policy's rules are unchanged, even next to an EC policy on the same node."""
        df = self.diskfile()
        self.put(df, b"whole", ts(1))
        self.assertEqual(self.files(df), ["1700000001.00000.data"])
        self.assertIsNone(df.read_metadata().frag_index)
        self.assertEqual(self.read_all(df), b"whole")


class ECSuffixHashTests(DiskFileTestCase):
    """Suffix hashes of an EC partition tell fragment indexes and durable marks apart."""

    def setUp(self) -> None:
        super().setUp()
        (self.devices / "sdb").mkdir()
        self.manager = DiskFileManager(self.devices, False, HASHER, fsync=False, ec_policies={EC})

    def archive(self, device: str, index: int, when: Timestamp, durable: bool = True) -> DiskFile:
        df = self.manager.get_diskfile(device, 17, "AUTH_test", "c", "o", EC)
        with df.create_writer(1, frag_index=index) as writer:
            writer.write(b"x")
            writer.commit({}, when)
        if durable:
            df.mark_durable(when, index)
        return df

    def hashes(self, device: str, now: float = 1_700_000_100.0) -> dict[str, str]:
        from txstore.storage.partitions import get_hashes

        return get_hashes(self.manager.partition_path(device, EC, 17), now=now)

    def test_different_fragments_never_look_in_sync(self) -> None:
        self.archive("sda", 0, ts(1))
        self.archive("sdb", 1, ts(1))
        self.assertNotEqual(self.hashes("sda"), self.hashes("sdb"))

    def test_the_durable_mark_is_part_of_the_hash(self) -> None:
        self.archive("sda", 0, ts(1))
        df = self.archive("sdb", 0, ts(1), durable=False)
        self.assertNotEqual(self.hashes("sda"), self.hashes("sdb"))
        df.mark_durable(ts(1), 0)
        self.assertEqual(self.hashes("sda"), self.hashes("sdb"))

    def test_the_hash_pass_cleans_by_the_ec_rules(self) -> None:
        df = self.archive("sda", 0, ts(1))
        self.archive("sda", 0, ts(2), durable=False)
        older = df.hash_dir / OnDiskFile(ts(0), DATA, 0, durable=True).name
        older.write_bytes(b"left by a crash")
        self.hashes("sda")
        self.assertEqual(self.files(df), ["1700000001.00000#0#d.data", "1700000002.00000#0.data"])
        # A mark that never came within reclaim_age: the orphan goes, the durable version stays.
        self.hashes("sda", now=1_700_000_000.0 + 8 * 24 * 3600)
        self.assertEqual(self.files(df), ["1700000001.00000#0#d.data"])


class ECFsyncTests(ECDiskFileTests):
    """The same, with fsync on; and the mark is made durable by an fsync of the directory."""

    fsync = True

    def test_the_mark_fsyncs_the_directory(self) -> None:
        df = self.ec()
        self.put_archive(df, b"x", ts(1), 0)
        synced: list[bool] = []
        real_fsync = os.fsync

        def fsync(fd: int) -> None:
            synced.append(os.path.samestat(os.fstat(fd), os.stat(df.hash_dir)))
            real_fsync(fd)

        self.patch(os, "fsync", fsync)
        df.mark_durable(ts(1), 0)
        self.assertIn(True, synced)
