"""Tests for txstore.ring.reloader: servers' rings reloaded in a thread, installed between requests."""

from __future__ import annotations

import os
import threading

from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from txstore.common.hashing import PathHasher
from txstore.ring.reloader import RingReloader
from txstore.ring.ring import Ring, RingData
from txstore.ring.ringfile import write_atomically
from txstore.test.support import temp_dir
from txstore.test.unit.test_ring import small_ring

HASHER = PathHasher(b"pre", b"suf")


def replacement() -> RingData:
    return RingData(small_ring().devices, [[3, 3, 3, 3], [0, 0, 0, 0]], 30)


class ReloaderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = temp_dir(self) / "object.ring.gz"
        small_ring().save(self.path)
        self.clock = Clock()
        self.ring = Ring(self.path, HASHER, auto_reload=False)
        self.threaded: list[object] = []

        def run_in_thread(function):
            self.threaded.append(function)
            return succeed(function())

        self.reloader = RingReloader([self.ring], self.clock, 15.0, run_in_thread)
        self.reloader.startService()
        self.addCleanup(self.reloader.stopService)

    def test_a_changed_file_is_read_in_a_thread_and_installed_at_the_next_pass(self) -> None:
        replacement().save(self.path)
        self.assertEqual(self.ring.get_part_nodes(0)[0].id, 0)  # a server's ring never reads on access
        self.clock.advance(14.9)
        self.assertEqual((self.ring.get_part_nodes(0)[0].id, self.threaded), (0, []))
        self.clock.advance(0.1)
        self.assertEqual(self.threaded, [self.ring.read_if_changed])  # (bound methods compare equal)
        self.assertEqual(self.ring.get_part_nodes(0)[0].id, 3)

    def test_an_unchanged_or_broken_file_keeps_the_table(self) -> None:
        self.clock.advance(15)
        self.assertEqual([n.id for n in self.ring.get_part_nodes(1)], [1, 3])
        write_atomically(self.path, b"not a ring")
        self.clock.advance(15)
        self.assertEqual([n.id for n in self.ring.get_part_nodes(1)], [1, 3])
        os.unlink(self.path)
        self.clock.advance(15)
        self.assertEqual([n.id for n in self.ring.get_part_nodes(1)], [1, 3])
        self.assertEqual(len(self.threaded), 3)
        replacement().save(self.path)
        self.clock.advance(15)
        self.assertEqual(self.ring.get_part_nodes(0)[0].id, 3)

    def test_a_failing_check_does_not_stop_the_passes(self) -> None:
        def explode(ring):
            raise RuntimeError("boom")

        self.patch(Ring, "read_if_changed", explode)
        self.clock.advance(15)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.clock.advance(15)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_stop_waits_for_a_pass_in_progress(self) -> None:
        pending: Deferred = Deferred()
        self.reloader._run_in_thread = lambda function: pending
        self.clock.advance(15)
        stopped = self.reloader.stopService()
        self.assertIsInstance(stopped, Deferred)
        self.assertNoResult(stopped)
        pending.callback(None)
        self.successResultOf(stopped)
        self.clock.advance(60)  # no more passes


class RealThreadTests(TestCase):
    async def test_the_file_is_read_off_the_reactor_thread(self) -> None:
        path = temp_dir(self) / "object.ring.gz"
        small_ring().save(path)
        ring = Ring(path, HASHER, auto_reload=False)
        readers = []
        original = Ring.read_if_changed

        def watched(self):
            readers.append(threading.current_thread() is threading.main_thread())
            return original(self)

        self.patch(Ring, "read_if_changed", watched)
        replacement().save(path)
        reloader = RingReloader([ring], reactor, 15.0)
        await reloader.check()
        self.assertEqual(readers, [False])
        self.assertEqual(ring.get_part_nodes(0)[0].id, 3)
