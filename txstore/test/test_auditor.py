"""Tests for the object auditor: bit rot is found, quarantined, and good objects are left alone."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from txstore.common.hashing import PathHasher
from txstore.common.io import SynchronousRunner
from txstore.common.policies import DEFAULT_POLICIES
from txstore.daemons.auditor import ObjectAuditor, Pacer
from txstore.storage.diskfile import DiskFileManager
from txstore.storage.http_support import StorageContext


class AuditorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = Path(self.mktemp()).absolute()
        (self.root / "d1").mkdir(parents=True)
        self.diskfiles = DiskFileManager(self.root, False, PathHasher(b"", b"s"), fsync=False)
        self.context = StorageContext(
            devices=self.root, mount_check=False, hasher=PathHasher(b"", b"s"), policies=DEFAULT_POLICIES,
            runner=SynchronousRunner(), client=None, clock=lambda: 1.0, diskfiles=self.diskfiles,
        )
        self.objects = {}
        for i in range(5):
            diskfile = self.diskfiles.get_diskfile("d1", 7, "AUTH_a", "c", f"o{i}")
            writer = diskfile.create_writer()
            writer.write(b"payload %d " % i * 1000)
            writer.commit({"Content-Type": "x/y"}, f"{10 + i}.00000")
            self.objects[i] = diskfile
        gone = self.diskfiles.get_diskfile("d1", 7, "AUTH_a", "c", "deleted")
        gone.delete("20.00000")

    def audit(self, **options) -> dict:
        auditor = ObjectAuditor(self.context, files_per_second=0, bytes_per_second=0, **options)
        return self.successResultOf(Deferred.fromCoroutine(auditor.run_pass()))

    def flip_a_byte(self, i: int, at: int = 100) -> Path:
        [data] = list(self.objects[i].hash_dir.glob("*.data"))
        raw = bytearray(data.read_bytes())
        raw[at] ^= 0x01
        data.write_bytes(bytes(raw))
        return data

    def quarantined(self) -> list[Path]:
        directory = self.root / "d1" / "quarantined" / "objects"
        return sorted(directory.iterdir()) if directory.exists() else []

    def test_clean_objects_pass(self) -> None:
        self.assertEqual(self.audit(), {"checked": 5, "quarantined": 0, "errors": 0})
        self.assertEqual(self.quarantined(), [])

    def test_bit_rot_is_quarantined_and_the_suffix_invalidated(self) -> None:
        self.flip_a_byte(2)
        self.assertEqual(self.audit(), {"checked": 5, "quarantined": 1, "errors": 0})
        [moved] = self.quarantined()
        self.assertEqual(moved.name, self.objects[2].name_hash)
        self.assertFalse(self.objects[2].hash_dir.exists())
        self.assertFalse(self.objects[2].read_metadata().exists)
        invalid = (self.objects[2].partition_path / "hashes.invalid").read_text()
        self.assertIn(self.objects[2].suffix, invalid)
        self.assertEqual(self.audit()["checked"], 4)

    def test_zero_byte_mode_checks_sizes_not_md5(self) -> None:
        self.flip_a_byte(1)
        self.assertEqual(self.audit(zero_byte=True)["quarantined"], 0)
        [data] = list(self.objects[3].hash_dir.glob("*.data"))
        data.write_bytes(data.read_bytes()[:50])  # truncated: the footer no longer checks out
        self.assertEqual(self.audit(zero_byte=True)["quarantined"], 1)
        self.assertEqual([p.name for p in self.quarantined()], [self.objects[3].name_hash])


class PacerTests(SynchronousTestCase):
    def test_rates(self) -> None:
        now = [0.0]
        slept: list[float] = []

        def sleep(seconds: float) -> None:
            slept.append(round(seconds, 3))
            now[0] += seconds

        pacer = Pacer(files_per_second=2, bytes_per_second=100, clock=lambda: now[0], sleep=sleep)
        pacer.file_done()
        pacer.file_done()
        self.assertEqual(slept, [0.5, 0.5])
        pacer.bytes_read(150)  # 150 bytes at 100/s are due at 1.5 s; it is 1.0 s now
        self.assertEqual(slept[-1], 0.5)
        unlimited = Pacer(0, 0, clock=lambda: 0.0, sleep=lambda s: self.fail("no sleep without limits"))
        unlimited.file_done()
        unlimited.bytes_read(10**9)
