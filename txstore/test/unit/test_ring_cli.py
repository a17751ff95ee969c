"""Tests for txstore.ring.cli: the txstore-ring command, as an operator uses it."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from txstore.common.hashing import PathHasher
from txstore.ring.builder import RingBuilder
from txstore.ring import cli
from txstore.ring.cli import EXIT_ERROR, EXIT_OK, EXIT_WARNING, main, parse_overload, ring_path_for
from txstore.ring.errors import RingError
from txstore.ring.ring import Ring, RingData
from txstore.test.support import temp_dir, write_file

DEVICES = [
    "r1z1-127.0.0.1:6200/d1",
    "100",
    "r1z2-127.0.0.1:6201/d2",
    "100",
    "r1z3-127.0.0.1:6202R127.0.0.2:6302/d3_ssd",
    "100",
    "r1z4-127.0.0.1:6203/d4",
    "100",
]


class RingCliTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = temp_dir(self)
        self.builder = str(self.directory / "object.builder")
        self.ring = str(self.directory / "object.ring.gz")

    def cli(self, *args: str) -> tuple[int, str, str]:
        """Run ``main(args)`` the way the console script does, capturing sys.stdout/stderr."""
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        status = main(list(args))
        return status, out.getvalue(), err.getvalue()

    def ok(self, *args: str) -> str:
        status, out, err = self.cli(*args)
        self.assertEqual((status, err), (EXIT_OK, ""), out)
        return out

    def fails(self, status: int, *args: str) -> str:
        """The command fails with ``status`` and one line on stderr, no traceback."""
        got, out, err = self.cli(*args)
        self.assertEqual(got, status, (out, err))
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertNotIn("Traceback", err)
        return err

    def make(self, part_power: str = "6", replicas: str = "3", hours: str = "1") -> None:
        self.ok(self.builder, "create", part_power, replicas, hours)
        self.ok(self.builder, "add", *DEVICES)

    def load(self) -> RingBuilder:
        return RingBuilder.load(self.builder)

    # -- create and add --------------------------------------------------------------------

    def test_create(self) -> None:
        out = self.ok(self.builder, "create", "10", "3", "1")
        self.assertIn("1024 partitions", out)
        builder = self.load()
        self.assertEqual((builder.part_power, builder.replicas, builder.min_part_hours), (10, 3, 1))

    def test_create_errors(self) -> None:
        self.assertIn(
            "part_power must be between 1 and 24",
            self.fails(EXIT_ERROR, self.builder, "create", "25", "3", "1"),
        )
        self.fails(EXIT_ERROR, self.builder, "create", "ten", "3", "1")
        self.fails(EXIT_ERROR, self.builder, "create", "10", "3")
        self.fails(EXIT_ERROR, self.builder, "create", "10", "0", "1")
        self.assertFalse(os.path.exists(self.builder))
        self.ok(self.builder, "create", "10", "3", "1")
        self.assertIn(
            "already exists", self.fails(EXIT_ERROR, self.builder, "create", "8", "3", "1")
        )
        self.assertEqual(self.load().part_power, 10)

    def test_add(self) -> None:
        self.ok(self.builder, "create", "6", "3", "1")
        out = self.ok(self.builder, "add", *DEVICES)
        self.assertIn(
            "d2r1z3-127.0.0.1:6202R127.0.0.2:6302/d3_ssd with 100.00 weight got id 2", out
        )
        builder = self.load()
        self.assertEqual([builder.get_dev(i).device for i in range(4)], ["d1", "d2", "d3", "d4"])
        third, first = builder.get_dev(2), builder.get_dev(0)
        self.assertEqual(
            (third.replication_ip, third.replication_port, third.meta), ("127.0.0.2", 6302, "ssd")
        )
        self.assertEqual((first.replication_ip, first.replication_port), ("127.0.0.1", 6200))
        self.ok(self.builder, "add", "z5-[::1]:6300/sdb", "50.5")
        self.assertEqual(self.load().get_dev(4).region, 1)
        self.assertEqual(self.load().get_dev(4).ip, "::1")
        self.assertEqual(self.load().get_dev(4).weight, 50.5)

    def test_add_is_all_or_nothing(self) -> None:
        self.ok(self.builder, "create", "6", "3", "1")
        err = self.fails(
            EXIT_ERROR, self.builder, "add", "r1z1-127.0.0.1:6200/d1", "100", "r1z1-bad", "100"
        )
        self.assertIn("invalid device 'r1z1-bad'", err)
        self.assertEqual(self.load().devs, [])
        self.fails(EXIT_ERROR, self.builder, "add", "r1z1-127.0.0.1:6200/d1", "heavy")
        self.fails(EXIT_ERROR, self.builder, "add", "r1z1-127.0.0.1:6200/d1", "-1")
        self.fails(EXIT_ERROR, self.builder, "add", "r1z1-127.0.0.1:6200/d1")
        self.ok(self.builder, "add", "r1z1-127.0.0.1:6200/d1", "100")
        self.assertIn(
            "duplicates", self.fails(EXIT_ERROR, self.builder, "add", "r2z2-127.0.0.1:6200/d1", "1")
        )

    # -- rebalance and the ring file -------------------------------------------------------

    def test_rebalance_writes_ring(self) -> None:
        self.make()
        out = self.ok(self.builder, "rebalance", "--seed", "3")
        self.assertIn("Placed 192 replicas of 64 partitions", out)
        self.assertIn("Wrote " + self.ring, out)
        self.assertIn("seed 3", out)
        ring = RingData.load(self.ring)
        self.assertEqual(ring.replica_count, 3)
        self.assertEqual([list(row) for row in ring.replica2part2dev], self.load().get_table())

    def test_a_long_rebalance_shows_its_phases_and_its_time(self) -> None:
        self.make()
        self.patch(cli, "PROGRESS_AFTER", 0.0)  # every run counts as long
        status, out, err = self.cli(self.builder, "rebalance", "--seed", "3")
        self.assertEqual(status, EXIT_OK, err)
        self.assertRegex(err, r"(?m)^  +\d+\.\ds  placing: cluster split among its regions$")
        self.assertRegex(err, r"(?m)^  +\d+\.\ds  placed 192 replicas$")
        self.assertRegex(out, r"Balance is now \d+\.\d\d\. Dispersion is now \d+\.\d\d \(\d+\.\ds\)")
        self.patch(cli, "PROGRESS_AFTER", 3600.0)  # a short run says nothing on stderr
        self.ok(self.builder, "add", "r1z3-10.0.0.9:6200/sdz", "100")
        self.ok(self.builder, "pretend-min-part-hours-passed")
        self.ok(self.builder, "rebalance", "--seed", "4")

    def test_rebalance_seed_is_deterministic(self) -> None:
        self.make()
        self.ok(self.builder, "rebalance", "--seed=9")
        first = self.load().get_table()
        os.unlink(self.builder)
        self.make()
        self.ok(self.builder, "rebalance", "-s", "9")
        self.assertEqual(self.load().get_table(), first)
        self.fails(EXIT_ERROR, self.builder, "rebalance", "--seed", "x")
        self.fails(EXIT_ERROR, self.builder, "rebalance", "--bogus")

    def test_rebalance_nothing_to_do(self) -> None:
        self.make()
        self.ok(self.builder, "rebalance")
        err = self.fails(EXIT_WARNING, self.builder, "rebalance")
        self.assertIn("No partitions could be reassigned", err)

    def test_rebalance_min_part_hours(self) -> None:
        self.make()
        self.ok(self.builder, "add", "r1z5-127.0.0.1:6204/d5", "100")
        self.ok(self.builder, "rebalance")
        self.ok(self.builder, "set-weight", "d4", "0")
        out = self.ok(self.builder, "rebalance")
        self.assertIn("Reassigned", out)
        self.ok(self.builder, "set-weight", "d3", "0")
        status, out, err = self.cli(self.builder, "rebalance")
        builder = self.load()
        self.assertGreater(
            builder.part_counts().get(3, 0), 0, "min_part_hours did not hold d3's partitions"
        )
        if status == EXIT_WARNING:
            self.assertIn("min_part_hours is 1", err)
        self.ok(self.builder, "pretend-min-part-hours-passed")
        self.ok(self.builder, "rebalance")
        self.assertNotIn(3, self.load().part_counts())

    def test_rebalance_too_few_devices(self) -> None:
        self.ok(self.builder, "create", "6", "3", "1")
        self.ok(self.builder, "add", "r1z1-127.0.0.1:6200/d1", "100")
        self.assertIn("at least 3 devices", self.fails(EXIT_ERROR, self.builder, "rebalance"))
        self.assertFalse(os.path.exists(self.ring))

    def test_write_ring(self) -> None:
        self.make()
        self.assertIn("rebalance first", self.fails(EXIT_ERROR, self.builder, "write-ring"))
        self.ok(self.builder, "rebalance")
        os.unlink(self.ring)
        self.assertIn("Wrote", self.ok(self.builder, "write_ring"))
        self.assertEqual(RingData.load(self.ring).part_power, 6)
        self.assertEqual(ring_path_for("/x/account.builder"), "/x/account.ring.gz")
        self.assertEqual(ring_path_for("odd"), "odd.ring.gz")

    # -- changing devices ------------------------------------------------------------------

    def test_remove_by_search_forms(self) -> None:
        self.make()
        self.ok(
            self.builder, "add", "r1z5-127.0.0.9:6200/d9", "100", "r1z5-127.0.0.9:6201/d10", "100"
        )
        self.ok(self.builder, "rebalance")
        out = self.ok(self.builder, "remove", "d3")
        self.assertIn("d3r1z4-127.0.0.1:6203/d4 marked for removal", out)
        self.ok(self.builder, "remove", "/d1")
        self.ok(self.builder, "remove", "r1z2-127.0.0.1:6201/d2")
        self.assertEqual([d.id for d in self.load().devs if d is not None], [2, 4, 5])
        self.ok(self.builder, "remove", "127.0.0.9")
        self.assertEqual([d.id for d in self.load().devs if d is not None], [2])
        self.assertIn("no device matches", self.fails(EXIT_ERROR, self.builder, "remove", "d42"))
        self.assertIn(
            "invalid search value", self.fails(EXIT_ERROR, self.builder, "remove", "what")
        )
        self.fails(EXIT_ERROR, self.builder, "remove")

    def test_remove_then_rebalance(self) -> None:
        self.make()
        self.ok(self.builder, "add", "r1z5-127.0.0.1:6204/d5", "100")
        self.ok(self.builder, "rebalance", "--seed", "1")
        out = self.ok(self.builder, "list")
        self.assertIn("127.0.0.1:6204", out)
        self.ok(self.builder, "remove", "d4")
        self.assertIn("removing", self.ok(self.builder))
        self.assertIn("Reassigned", self.ok(self.builder, "rebalance"))
        builder = self.load()
        self.assertNotIn(4, builder.part_counts())
        devices = RingData.load(self.ring).devices
        self.assertTrue(len(devices) <= 4 or devices[4] is None)

    def test_set_weight(self) -> None:
        self.make()
        out = self.ok(self.builder, "set-weight", "d0", "50", "/d2", "25")
        self.assertIn("weight 100.00 -> 50.00", out)
        builder = self.load()
        self.assertEqual((builder.get_dev(0).weight, builder.get_dev(1).weight), (50.0, 25.0))
        self.ok(self.builder, "set_weight", "127.0.0.1", "10")
        self.assertEqual({dev.weight for dev in self.load().devs if dev}, {10.0})
        self.fails(EXIT_ERROR, self.builder, "set-weight", "d0")
        self.fails(EXIT_ERROR, self.builder, "set-weight", "d0", "-3")
        self.fails(EXIT_ERROR, self.builder, "set-weight", "d17", "3")

    def test_set_overload(self) -> None:
        self.make()
        self.assertIn("10.00%", self.ok(self.builder, "set-overload", "10%"))
        self.assertEqual(self.load().overload, 0.1)
        self.ok(self.builder, "set_overload", "0.25")
        self.assertEqual(self.load().overload, 0.25)
        self.assertIn("25.00% (0.250000)", self.ok(self.builder, "list"))
        self.fails(EXIT_ERROR, self.builder, "set-overload", "lots")
        self.fails(EXIT_ERROR, self.builder, "set-overload", "-5%")
        self.assertEqual(parse_overload("12.5%"), 0.125)

    def test_set_min_part_hours(self) -> None:
        self.make()
        self.ok(self.builder, "set-min-part-hours", "4")
        self.assertEqual(self.load().min_part_hours, 4)
        self.fails(EXIT_ERROR, self.builder, "set-min-part-hours", "-1")

    # -- reports ---------------------------------------------------------------------------

    def test_list_is_default(self) -> None:
        self.make()
        self.ok(self.builder, "rebalance")
        out = self.ok(self.builder)
        self.assertEqual(out, self.ok(self.builder, "list"))
        self.assertIn("64 partitions, 3 replicas, 1 regions, 4 zones, 4 devices", out)
        self.assertIn("balance", out)
        self.assertIn("dispersion", out)
        self.assertIn("The overload factor is 0.00%", out)
        self.assertIn("127.0.0.2:6302", out)
        self.assertIn("ssd", out)
        lines = [line.split() for line in out.splitlines()]
        header = next(i for i, line in enumerate(lines) if line[:2] == ["id", "region"])
        self.assertEqual(len(lines) - header - 1, 4)
        self.assertEqual(sum(int(line[7]) for line in lines[header + 1 :]), 192)

    def test_list_before_rebalance(self) -> None:
        self.make()
        self.assertIn("not been rebalanced yet", self.ok(self.builder, "list"))

    def test_dispersion(self) -> None:
        self.make()
        self.assertIn("not been rebalanced", self.fails(EXIT_ERROR, self.builder, "dispersion"))
        self.ok(self.builder, "rebalance")
        out = self.ok(self.builder, "dispersion")
        self.assertIn("Dispersion is 0.00", out)
        self.assertIn("r1z3", out)
        self.assertIn("r1z3-127.0.0.1/d2", out)
        row = next(line.split() for line in out.splitlines() if line.split()[:1] == ["r1"])
        self.assertEqual(row, ["r1", "region", "3", "0", "0", "0", "0", "64"])

    # -- get-nodes -------------------------------------------------------------------------

    def test_get_nodes(self) -> None:
        self.make()
        self.ok(self.builder, "rebalance")
        conf = write_file(
            self.directory,
            "txstore.conf",
            "[txstore-hash]\nhash_path_prefix = pre\nhash_path_suffix = suf\n",
        )
        out = self.ok(self.ring, "get-nodes", "--txstore-conf", str(conf), "AUTH_test", "c", "o")
        hasher = PathHasher(b"pre", b"suf")
        ring = Ring(self.ring, hasher)
        part, nodes = ring.get_nodes("AUTH_test", "c", "o")
        self.assertIn(f"Partition\t{part}\n", out)
        digest = hasher.hash_path("AUTH_test", "c", "o")
        assert isinstance(digest, str)
        self.assertIn(f"Hash     \t{digest}\n", out)
        for node in nodes:
            self.assertIn(f"{node.ip}:{node.port}/{node.device_name}  primary {node.index}", out)
        handoff = next(ring.get_more_nodes(part))
        self.assertIn(f"{handoff.ip}:{handoff.port}/{handoff.device_name}  handoff 0", out)

    def test_get_nodes_reads_the_secret_beside_the_ring_or_refuses(self) -> None:
        """A partition hashed without the cluster's secret would be wrong: never print one."""
        self.make()
        self.ok(self.builder, "rebalance")
        self.patch(cli, "DEFAULT_TXSTORE_CONF", str(self.directory / "etc-txstore.conf"))
        error = self.fails(EXIT_ERROR, self.ring, "get-nodes", "AUTH_test")
        self.assertIn("get-nodes needs the cluster's hash secret", error)
        self.assertIn(str(self.directory / "txstore.conf"), error)
        write_file(self.directory, "txstore.conf", "[txstore-hash]\nhash_path_suffix = suf\n")
        part = PathHasher(b"", b"suf").partition(6, "AUTH_test")
        self.assertIn(f"Partition\t{part}\n", self.ok(self.ring, "get-nodes", "AUTH_test"))
        self.assertIn(f"Partition\t{part}\n", self.ok(self.builder, "get-nodes", "AUTH_test"))
        out = self.ok(self.ring, "get-nodes", "--handoffs", "0", "AUTH_test", "c")
        self.assertNotIn("handoff", out)

    def test_get_nodes_prints_a_curl_line_per_node(self) -> None:
        self.make()
        self.ok(self.builder, "rebalance")
        conf = write_file(self.directory, "txstore.conf", "[txstore-hash]\nhash_path_suffix = suf\n")
        out = self.ok(self.ring, "get-nodes", "--handoffs", "1", "AUTH_test", "c", "o b")
        ring = Ring(self.ring, PathHasher(b"", b"suf"))
        part, nodes = ring.get_nodes("AUTH_test", "c", "o b")
        for node in nodes:
            self.assertIn(
                f'curl -g -I -XHEAD "http://{node.ip}:{node.port}/{node.device_name}/{part}/AUTH_test/c/o%20b"\n', out
            )
        self.assertEqual(out.count("  # handoff"), 1)
        self.assertTrue(conf.exists())

    def test_get_nodes_errors(self) -> None:
        self.make()
        self.ok(self.builder, "rebalance")
        missing = str(self.directory / "nope.conf")
        self.assertIn(
            "cannot read",
            self.fails(EXIT_ERROR, self.ring, "get-nodes", "--txstore-conf", missing, "a"),
        )
        bare = write_file(self.directory, "bare.conf", "[other]\nx = 1\n")
        self.assertIn(
            "no [txstore-hash]",
            self.fails(EXIT_ERROR, self.ring, "get-nodes", "--txstore-conf", str(bare), "a"),
        )
        self.fails(EXIT_ERROR, self.ring, "get-nodes")
        self.fails(EXIT_ERROR, self.ring, "get-nodes", "a", "c", "o", "extra")
        self.fails(EXIT_ERROR, self.ring, "get-nodes", "--frobnicate", "a")
        self.assertIn(
            "does not exist",
            self.fails(EXIT_ERROR, str(self.directory / "x.ring.gz"), "get-nodes", "a"),
        )
        garbage = write_file(self.directory, "garbage.ring.gz", "nonsense")
        self.assertIn("not a gzip file", self.fails(EXIT_ERROR, str(garbage), "get-nodes", "a"))

    # -- usage and errors ------------------------------------------------------------------

    def test_usage(self) -> None:
        status, out, err = self.cli()
        self.assertEqual(status, EXIT_ERROR)
        self.assertIn("usage: txstore-ring BUILDER create", err)
        self.assertIn("Exit status: 0", err)
        status, out, err = self.cli("--help")
        self.assertEqual((status, err), (EXIT_OK, ""))
        self.assertIn("get-nodes", out)

    def test_bad_input_is_one_line(self) -> None:
        self.assertIn("does not exist", self.fails(EXIT_ERROR, self.builder))
        self.make()
        self.assertIn("unknown command 'frob'", self.fails(EXIT_ERROR, self.builder, "frob"))
        self.fails(EXIT_ERROR, self.builder, "list", "extra")
        self.fails(EXIT_ERROR, self.builder, "dispersion", "extra")
        self.fails(EXIT_ERROR, self.builder, "pretend-min-part-hours-passed", "now")
        Path(self.builder).write_bytes(b"corrupt")
        self.assertIn("not a gzip file", self.fails(EXIT_ERROR, self.builder, "list"))
        self.assertRaises(RingError, RingBuilder.load, self.builder)

    def test_streams_can_be_passed(self) -> None:
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(
            main([self.builder, "create", "4", "1", "0"], stdout=out, stderr=err), EXIT_OK
        )
        self.assertIn("16 partitions", out.getvalue())
        self.assertEqual(main([self.builder, "nope"], stdout=out, stderr=err), EXIT_ERROR)
        self.assertIn("unknown command", err.getvalue())


class ConsoleScriptTests(SynchronousTestCase):
    """The installed ``txstore-ring`` script, run as a process."""

    def test_builder_commands_leave_twisted_out(self) -> None:
        # Twisted and zope.interface (txstore.ring.ring, for get-nodes) would add ~10 MB to
        # the peak memory of every rebalance, hashlib (with OpenSSL, for get-nodes' hashes)
        # ~4 MB, tempfile (with the compression modules shutil brings) ~1 MB.
        code = (
            "import sys, txstore.ring.cli\n"
            "print(sorted({m.split('.')[0] for m in sys.modules}"
            " & {'twisted', 'zope', 'hashlib', 'tempfile'}))"
        )
        found = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
        )
        self.assertEqual(found.stdout.strip(), "[]")

    def test_script(self) -> None:
        script = Path(sys.executable).parent / "txstore-ring"
        if not script.exists():
            raise SkipTest(f"no console script at {script}")
        directory = temp_dir(self)
        builder = str(directory / "account.builder")

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [str(script), *args], capture_output=True, text=True, timeout=60, check=False
            )

        self.assertEqual(run(builder, "create", "4", "2", "0").returncode, 0)
        added = run(builder, "add", "r1z1-127.0.0.1:6202/sdb", "1", "r1z2-127.0.0.1:6202/sdc", "1")
        self.assertEqual(added.returncode, 0, added.stderr)
        rebalanced = run(builder, "rebalance", "--seed", "1")
        self.assertEqual(rebalanced.returncode, 0, rebalanced.stderr)
        write_file(directory, "txstore.conf", "[txstore-hash]\nhash_path_suffix = s\n")  # the secret beside the ring
        nodes = run(str(directory / "account.ring.gz"), "get-nodes", "AUTH_test")
        self.assertEqual(nodes.returncode, 0, nodes.stderr)
        self.assertIn("127.0.0.1:6202/sdb", nodes.stdout)
        bad = run(builder, "add", "garbage", "1")
        self.assertEqual(bad.returncode, EXIT_ERROR)
        self.assertEqual(len(bad.stderr.splitlines()), 1, bad.stderr)
        self.assertNotIn("Traceback", bad.stderr)
