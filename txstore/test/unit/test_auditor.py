"""Tests for the object auditor: bit rot is found, quarantined, and good objects are left alone."""

from __future__ import annotations

import os
import time
from pathlib import Path

import attrs
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from txstore.common.hashing import PathHasher
from txstore.common.io import DeviceThreadPools, SynchronousRunner
from txstore.common.policies import DEFAULT_POLICIES
from txstore.daemons.auditor import CHUNK, ObjectAuditor
from txstore.daemons.pacing import Pacer, PassStopped
from txstore.daemons.periodic import PeriodicDaemon
from txstore.storage import diskfile as diskfile_module
from txstore.storage.config import DEFAULT_DAEMONS, ObjectAuditorSettings
from txstore.storage.diskfile import DiskFileManager
from txstore.storage.context import StorageContext
from txstore.test.support import clock_at


def auditor_settings(**changes: object) -> ObjectAuditorSettings:
    """The object auditor's default settings, with ``changes``."""
    return attrs.evolve(DEFAULT_DAEMONS.object_auditor, **changes)


def make_objects(case, runner, count: int = 5, size: int = 10_000) -> tuple[StorageContext, dict]:
    """A device d1 with ``count`` objects of about ``size`` bytes and one tombstone."""
    root = Path(case.mktemp()).absolute()
    (root / "d1").mkdir(parents=True)
    diskfiles = DiskFileManager(root, False, PathHasher(b"", b"s"), fsync=False)
    context = StorageContext(
        devices=root, mount_check=False, hasher=PathHasher(b"", b"s"), policies=DEFAULT_POLICIES,
        runner=runner, client=None, reactor=clock_at(1.0), diskfiles=diskfiles,
    )
    objects = {}
    for i in range(count):
        diskfile = diskfiles.get_diskfile("d1", 7, "AUTH_a", "c", f"o{i}")
        writer = diskfile.create_writer()
        writer.write((b"payload %d " % i * (size // 10 + 1))[:size])
        writer.commit({"Content-Type": "x/y"}, f"{10 + i}.00000")
        objects[i] = diskfile
    gone = diskfiles.get_diskfile("d1", 7, "AUTH_a", "c", "deleted")
    gone.delete("20.00000")
    return context, objects


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class AuditorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.context, self.objects = make_objects(self, SynchronousRunner())
        self.root = self.context.devices
        self.diskfiles = self.context.diskfiles

    def audit(self, **options) -> dict:
        auditor = ObjectAuditor(self.context, Clock(), settings=auditor_settings(files_per_second=0, bytes_per_second=0, **options))
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

    def test_what_it_reads_leaves_the_page_cache(self) -> None:
        dropped = []
        self.patch(diskfile_module.os, "posix_fadvise", lambda fd, offset, length, advice: dropped.append(advice))
        self.assertEqual(self.audit()["checked"], 5)
        self.assertGreaterEqual(dropped.count(os.POSIX_FADV_DONTNEED), 5)

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
        self.assertEqual(self.audit(zero_byte_only=True)["quarantined"], 0)
        [data] = list(self.objects[3].hash_dir.glob("*.data"))
        data.write_bytes(data.read_bytes()[:50])  # truncated: the footer no longer checks out
        self.assertEqual(self.audit(zero_byte_only=True)["quarantined"], 1)
        self.assertEqual([p.name for p in self.quarantined()], [self.objects[3].name_hash])


class ErasureCodedAuditTests(SynchronousTestCase):
    """Every archive an EC directory holds is checked against its own checksum, not only the one served."""

    def setUp(self) -> None:
        root = Path(self.mktemp()).absolute()
        (root / "d1").mkdir(parents=True)
        self.diskfiles = DiskFileManager(root, False, PathHasher(b"", b"s"), fsync=False, ec_policies={2})
        self.context = StorageContext(
            devices=root, mount_check=False, hasher=PathHasher(b"", b"s"), policies=DEFAULT_POLICIES,
            runner=SynchronousRunner(), client=None, reactor=clock_at(1.0), diskfiles=self.diskfiles,
        )
        # A handoff's directory: archives 0 and 1 of one durable version, 0 the one served.
        self.diskfile = self.diskfiles.get_diskfile("d1", 7, "AUTH_a", "c", "ec", 2)
        for index in (0, 1):
            writer = self.diskfile.create_writer(frag_index=index)
            writer.write(b"archive %d " % index * 5000)
            metadata = {"Content-Type": "x/y", "X-Object-Sysmeta-Ec-Frag-Index": str(index)}
            writer.commit(metadata, "1600000010.00000")
            self.diskfile.mark_durable("1600000010.00000", index)
        self.root = root

    def audit(self, **options) -> dict:
        auditor = ObjectAuditor(self.context, Clock(), settings=auditor_settings(files_per_second=0, bytes_per_second=0, **options))
        return self.successResultOf(Deferred.fromCoroutine(auditor.run_pass()))

    def archive(self, index: int) -> Path:
        return self.diskfile.hash_dir / f"1600000010.00000#{index}#d.data"

    def test_clean_archives_pass(self) -> None:
        self.assertEqual(self.diskfile.read_metadata().frag_index, 0)
        self.assertEqual(self.audit(), {"checked": 1, "quarantined": 0, "errors": 0})
        self.assertTrue(self.archive(1).exists())

    def test_a_rotten_archive_that_is_not_the_one_served_is_quarantined(self) -> None:
        raw = bytearray(self.archive(1).read_bytes())
        raw[4321] ^= 0x10
        self.archive(1).write_bytes(bytes(raw))
        self.assertEqual(self.audit(), {"checked": 1, "quarantined": 1, "errors": 0})
        [moved] = (self.root / "d1" / "quarantined" / "objects").iterdir()
        self.assertEqual(sorted(p.name for p in moved.iterdir()),
                         ["1600000010.00000#0#d.data", "1600000010.00000#1#d.data"])
        self.assertFalse(self.diskfile.hash_dir.exists())

    def test_zero_byte_mode_checks_every_archives_footer(self) -> None:
        self.archive(1).write_bytes(self.archive(1).read_bytes()[:100])
        self.assertEqual(self.audit(zero_byte_only=True)["quarantined"], 1)
        self.assertFalse(self.diskfile.hash_dir.exists())


class PacingTests(SynchronousTestCase):
    """The waits happen on the reactor (a Clock here) and `stop` ends a pass at once."""

    def test_files_are_paced_on_the_clock(self) -> None:
        context, _ = make_objects(self, SynchronousRunner())
        clock = Clock()
        auditor = ObjectAuditor(context, clock, settings=auditor_settings(files_per_second=2, bytes_per_second=0))
        done = Deferred.fromCoroutine(auditor.run_pass())
        clock.advance(2.9)  # 5 objects and a tombstone at 2/s: the pass ends at 3 s
        self.assertNoResult(done)
        clock.advance(0.1)
        self.assertEqual(self.successResultOf(done), {"checked": 5, "quarantined": 0, "errors": 0})
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_stop_ends_a_pass_waiting_between_files(self) -> None:
        context, _ = make_objects(self, SynchronousRunner())
        clock = Clock()
        auditor = ObjectAuditor(context, clock, settings=auditor_settings(files_per_second=1, bytes_per_second=0))
        done = Deferred.fromCoroutine(auditor.run_pass())
        clock.advance(1.0)
        self.assertNoResult(done)
        auditor.stop()
        result = self.successResultOf(done)
        self.assertTrue(result["stopped"])
        self.assertIn(result["checked"], (1, 2))  # two directories seen; one may be the tombstone
        self.assertEqual(clock.getDelayedCalls(), [])
        # A later pass (the service started again) runs in full.
        again = Deferred.fromCoroutine(auditor.run_pass())
        clock.advance(6.0)
        self.assertEqual(self.successResultOf(again), {"checked": 5, "quarantined": 0, "errors": 0})

    def test_stop_inside_a_large_object_closes_its_file(self) -> None:
        context, _ = make_objects(self, SynchronousRunner(), count=1, size=3 * CHUNK)
        clock = Clock()
        auditor = ObjectAuditor(context, clock, settings=auditor_settings(files_per_second=0, bytes_per_second=CHUNK))
        before = open_fds()
        done = Deferred.fromCoroutine(auditor.run_pass())
        self.assertNoResult(done)  # the first MiB read, waiting before the second
        self.assertEqual(open_fds(), before + 1)
        clock.advance(1.0)
        self.assertNoResult(done)
        auditor.stop()
        self.assertEqual(self.successResultOf(done)["stopped"], True)
        self.assertEqual(open_fds(), before)

    def test_byte_rate_over_a_large_object(self) -> None:
        context, _ = make_objects(self, SynchronousRunner(), count=1, size=3 * CHUNK)
        clock = Clock()
        auditor = ObjectAuditor(context, clock, settings=auditor_settings(files_per_second=0, bytes_per_second=CHUNK))
        done = Deferred.fromCoroutine(auditor.run_pass())
        clock.advance(2.9)
        self.assertNoResult(done)
        clock.advance(0.1)
        self.assertEqual(self.successResultOf(done)["checked"], 1)

    def test_the_daemon_stops_its_pass_at_service_stop(self) -> None:
        context, _ = make_objects(self, SynchronousRunner())
        clock = Clock()
        auditor = ObjectAuditor(context, clock, settings=auditor_settings(files_per_second=1, bytes_per_second=0))
        daemon = PeriodicDaemon("object-auditor", auditor.run_pass, 60.0, clock, jitter=lambda: 0.0,
                                stop_pass=auditor.stop)
        daemon.startService()
        clock.advance(0)
        self.assertEqual(daemon.last_pass, {})  # waiting after the first object
        stopping = daemon.stopService()
        if stopping is not None:
            self.successResultOf(stopping)
        self.assertTrue(daemon.last_pass["stopped"])
        self.assertEqual(clock.getDelayedCalls(), [])


class ThreadPoolTests(TestCase):
    """With real device pools: a waiting auditor holds no thread, and stopping is prompt."""

    async def test_waits_hold_no_thread_and_stop_is_prompt(self) -> None:
        runner = DeviceThreadPools(reactor, threads_per_device=1)
        self.addCleanup(runner.stop)
        context, _ = make_objects(self, runner)
        auditor = ObjectAuditor(context, reactor, settings=auditor_settings(files_per_second=0.5, bytes_per_second=0))
        done = Deferred.fromCoroutine(auditor.run_pass())
        self.addCleanup(auditor.stop)
        # The device's only thread is free while the auditor waits between files.
        other = runner.run("d1", lambda: "served")
        other.addTimeout(1.5, reactor)
        self.assertEqual(await other, "served")
        self.assertNoResult(done)
        started = time.monotonic()
        auditor.stop()
        figures = await done
        runner.stop()
        self.assertTrue(figures["stopped"])
        self.assertLess(figures["checked"], 5)
        self.assertLess(time.monotonic() - started, 1.0)


class PacerTests(SynchronousTestCase):
    def test_rates(self) -> None:
        clock = Clock()
        pacer = Pacer(clock, files_per_second=2, bytes_per_second=100)
        first = Deferred.fromCoroutine(pacer.file_done())
        self.assertNoResult(first)
        clock.advance(0.5)
        self.successResultOf(first)
        second = Deferred.fromCoroutine(pacer.file_done())
        clock.advance(0.5)
        self.successResultOf(second)
        bytes_wait = Deferred.fromCoroutine(pacer.bytes_read(150))  # due at 1.5 s; it is 1.0 s now
        clock.advance(0.49)
        self.assertNoResult(bytes_wait)
        clock.advance(0.01)
        self.successResultOf(bytes_wait)
        unlimited = Pacer(clock, 0, 0)
        self.successResultOf(Deferred.fromCoroutine(unlimited.file_done()))
        self.successResultOf(Deferred.fromCoroutine(unlimited.bytes_read(10**9)))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_stop_cancels_the_wait(self) -> None:
        clock = Clock()
        pacer = Pacer(clock, files_per_second=1, bytes_per_second=0)
        waiting = Deferred.fromCoroutine(pacer.file_done())
        pacer.stop()
        self.failureResultOf(waiting, PassStopped)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.failureResultOf(Deferred.fromCoroutine(pacer.bytes_read(0)), PassStopped)
