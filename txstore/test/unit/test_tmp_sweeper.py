"""
Tests for txstore.node.assembly.TmpSweeper: the temp files of writes that never finished are
removed, and never the file of a write in flight.
"""

from __future__ import annotations

import os
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from txstore.common.hashing import PathHasher
from txstore.common.io import SynchronousRunner
from txstore.common.policies import DEFAULT_POLICIES
from txstore.node.assembly import TMP_MAX_AGE, TmpSweeper
from txstore.storage.context import StorageContext
from txstore.storage.diskfile import DiskFileManager
from txstore.test.support import clock_at

STARTED = 1_800_000_000.0  # the node's start, on the wall clock the files' times are on


class TmpSweeperTests(SynchronousTestCase):
    def setUp(self) -> None:
        root = Path(self.mktemp()).absolute()
        (root / "d1").mkdir(parents=True)
        self.diskfiles = DiskFileManager(root, False, PathHasher(b"", b"s"), fsync=False)
        self.clock = clock_at(STARTED)
        context = StorageContext(
            devices=root, mount_check=False, hasher=PathHasher(b"", b"s"), policies=DEFAULT_POLICIES,
            runner=SynchronousRunner(), client=None, reactor=self.clock, diskfiles=self.diskfiles,
        )
        self.sweeper = TmpSweeper(context)
        self.tmp = root / "d1" / "tmp"

    def temp_file(self, name: str, modified: float):
        writer = self.diskfiles.get_diskfile("d1", 7, "AUTH_a", "c", name).create_writer()
        writer.write(b"partial")
        os.utime(writer.temp_path, (modified, modified))
        return writer

    def test_the_first_sweep_spares_writes_begun_since_the_start(self) -> None:
        """It may run after the node answers its first requests (seen in a drill)."""
        self.temp_file("orphan", STARTED - 0.5)
        in_flight = self.temp_file("in-flight", STARTED + 0.5)
        self.clock.advance(2.0)
        self.successResultOf(self.sweeper.sweep())
        self.assertEqual(len(list(self.tmp.iterdir())), 1)
        in_flight.commit({}, "1800000001.00000")
        self.assertEqual(list(self.tmp.iterdir()), [])

    def test_later_sweeps_remove_what_is_older_than_the_max_age(self) -> None:
        self.successResultOf(self.sweeper.sweep())
        self.temp_file("slow", STARTED + 10)
        self.temp_file("stale", STARTED + 10 - TMP_MAX_AGE - 1)
        self.clock.advance(10.0)
        self.successResultOf(self.sweeper.sweep())
        self.assertEqual(len(list(self.tmp.iterdir())), 1)
        self.clock.advance(TMP_MAX_AGE + 1)
        self.successResultOf(self.sweeper.sweep())
        self.assertEqual(list(self.tmp.iterdir()), [])
