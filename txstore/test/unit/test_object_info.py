"""Tests for txstore-object-info: an object file's metadata and where the ring puts it."""

from __future__ import annotations

import contextlib
import io
import os
import shutil

from twisted.trial.unittest import SynchronousTestCase

from txstore.common.cluster import load_cluster_config
from txstore.object_info import main
from txstore.ring.ring import Ring
from txstore.storage.diskfile import DiskFileManager
from txstore.test.support import small_cluster


class ObjectInfoTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.layout = small_cluster(self, nodes=3)
        hasher = load_cluster_config(self.layout.etc / "txstore.conf").hasher
        self.ring = Ring(self.layout.etc / "object.ring.gz", hasher)
        self.part = self.ring.get_part("AUTH_test", "c", "caf\u00e9")
        devices = self.layout.devices(1)
        manager = DiskFileManager(devices, False, hasher, fsync=False)
        device = sorted(p.name for p in devices.iterdir())[0]
        diskfile = manager.get_diskfile(device, self.part, "AUTH_test", "c", "caf\u00e9", 0)
        writer = diskfile.create_writer(5)
        writer.write(b"hello")
        writer.commit({"Content-Type": "text/plain", "X-Object-Meta-Color": "blue",
                       "X-Object-Sysmeta-Thing": "x"}, "1700000000.00000")
        self.data = diskfile.read_metadata().data_path

    def run_tool(self, *args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main([*args, "--ring-dir", str(self.layout.etc)])
        return status, out.getvalue(), err.getvalue()

    def test_metadata_placement_and_a_checked_etag(self) -> None:
        status, out, err = self.run_tool(str(self.data), "--verify")
        self.assertEqual(status, 0, err)
        for line in ("Path: /AUTH_test/c/caf\u00e9", f"Partition: {self.part}  Policy index: 0",
                     "Content-Type: text/plain", "Content-Length: 5",
                     "ETag: 5d41402abc4b2a76b9719d911017c592 (valid)", "  X-Object-Meta-Color: blue",
                     "  X-Object-Sysmeta-Thing: x", "the name's hash and partition match"):
            self.assertIn(line, out)
        for node in self.ring.get_part_nodes(self.part):
            self.assertIn(f"primary {node.index}  {node.ip}:{node.port}/{node.device_name}", out)
        self.assertIn(f'/{self.part}/AUTH_test/c/caf%C3%A9" -H "X-Backend-Storage-Policy-Index: 0"', out)

    def test_rot_and_misplacement_are_named(self) -> None:
        with open(self.data, "r+b") as handle:
            handle.write(b"J")
        other = (self.part + 1) % self.ring.partition_count
        moved = self.data.parents[3] / str(other) / self.data.parent.parent.name / self.data.parent.name
        moved.mkdir(parents=True)
        shutil.copy(self.data, moved / self.data.name)
        status, out, _ = self.run_tool(str(moved / self.data.name), "--verify")
        self.assertEqual(status, 0)
        self.assertIn("(INVALID: the body's checksum is", out)
        self.assertIn(f"MISPLACED: with this secret the name hashes to {self.data.parent.name} in partition"
                      f" {self.part}, not {self.data.parent.name} in {other}", out)

    def test_not_an_object_file(self) -> None:
        status, _, err = self.run_tool(str(self.layout.etc / "txstore.conf"))
        self.assertEqual(status, 2)
        self.assertIn("is not an object file name", err)
        junk = self.data.parent / "1700000001.00000.data"
        junk.write_bytes(b"no footer")
        status, _, err = self.run_tool(str(junk))
        self.assertEqual((status, "unreadable metadata" in err), (2, True))
        os.unlink(junk)
