"""
``txstore-dispersion`` against a real all-in-one (four nodes, part power 6, a replicated and an
erasure-coded policy): populate, a full report, then a copy deleted from a node's disk and a
node stopped, each seen in the report with the right counts, and 100 % again once the
replicator has repaired the copy and the node is back.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

from twisted.trial.unittest import SynchronousTestCase

from txstore.aio.launcher import alive, read_pid
from txstore.common.cluster import load_cluster_config
from txstore.dispersion.names import objects_container
from txstore.ring.ring import Ring
from txstore.test.support import console_script, temp_dir
from txstore.test.integration.test_proxy_integration import Cluster

COVERAGE = 25  # of 64 partitions: 16 names per ring


class DispersionIntegrationTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = temp_dir(self) / "aio"
        self.cluster = Cluster(self.root)
        self.cluster.start()
        self.addCleanup(self.cluster.stop)
        etc = self.root / "etc"
        self.common = ["--auth-url", self.cluster.auth_url, "--auth-user", "test:tester", "--auth-key", "testing",
                       "--ring-dir", str(etc), "--coverage", str(COVERAGE)]
        self.hasher = load_cluster_config(etc / "txstore.conf").hasher
        self.rings = {name: Ring(etc / f"{name}.ring.gz", self.hasher) for name in ("container", "object", "object-2")}

    def tool(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([console_script("txstore-dispersion"), *args[:1], *self.common, *args[1:]],
                              capture_output=True, text=True, timeout=180)

    def report(self, *args: str) -> dict:
        result = self.tool("report", "--json", *args)
        self.assertEqual(result.returncode, 0, result.stderr)
        return json.loads(result.stdout)

    def assert_complete(self, part: dict | None, replicas: int = 3) -> None:
        self.assertIsNotNone(part)
        self.assertEqual((part["queried"], part["copies_expected"], part["copies_found"], part["pct_found"]),
                         (16, 16 * replicas, 16 * replicas, 100.0))
        self.assertEqual(part["missing_by_count"], {"0": 16, **{str(n): 0 for n in range(1, replicas + 1)}})
        self.assertEqual((part["errors"], part["missing_partitions"]), (0, []))

    def node_number(self, port: int) -> int:
        return (port - self.cluster.port) // 10

    def parts_on(self, ring: str, number: int, names: list[tuple[str, ...]]) -> list[int]:
        """The partitions of ``names`` that node ``number`` is a primary of."""
        found = set()
        for name in names:
            part, nodes = self.rings[ring].get_nodes("AUTH_test", *name)
            if any(self.node_number(node.port) == number for node in nodes):
                found.add(part)
        return sorted(found)

    def listed(self, *container: str) -> list[tuple[str, ...]]:
        """The sample's names, as the report lists them (the account's, or a container's)."""
        output = self.cluster.swift_cli("list", *container, "--prefix", "dispersion_").stdout.split()
        return [(*container, name) for name in output if name.split("_")[1].isdigit()]

    def stop_node(self, number: int) -> None:
        pid = read_pid(self.root / "run" / f"node{number}.pid")
        assert pid is not None
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertFalse(alive(pid))

    def test_populate_report_and_faults(self) -> None:
        result = self.tool("populate", "--json")
        self.assertEqual(result.returncode, 0, result.stderr)
        created = json.loads(result.stdout)
        self.assertEqual((created["container"]["created"], created["object"]["created"]), (16, 16))
        self.assertEqual((created["object"]["policy"], created["object"]["errors"]), ("gold", 0))
        result = self.tool("populate", "--policy-name", "ec", "--object-only")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("Created 16 objects for dispersion reporting", result.stdout)

        # All in place; the text form as Swift's
        full = self.report()
        self.assert_complete(full["container"])
        self.assert_complete(full["object"])
        ec = self.report("--policy-name", "ec", "--object-only")
        self.assertIsNone(ec["container"])
        self.assert_complete(ec["object"])
        self.assertEqual(ec["object"]["policy"], "ec")
        text = self.tool("report").stdout
        self.assertIn("100.00% of container copies found (48 of 48)", text)
        self.assertIn("100.00% of object copies found (48 of 48)", text)
        self.assertIn("Sample represents 25.00% of the object partition space", text)

        # One object's copy deleted from one node's disk: 1 partition missing 1 copy, until the
        # replicator puts it back
        container = objects_container(0)
        part, nodes = self.rings["object"].get_nodes("AUTH_test", container, "dispersion_0")
        number = self.node_number(nodes[0].port)
        copy = self.root / "srv" / f"node{number}" / f"d{number}" / "objects" / str(part)
        for _ in range(5):
            shutil.rmtree(copy)
            result = self.tool("report", "--json", "--object-only", "--require", "100")
            if not copy.exists():  # else the replicator was quicker than the report: again
                break
        self.assertFalse(copy.exists())
        self.assertEqual(result.returncode, 1, result.stderr)
        damaged = json.loads(result.stdout)["object"]
        self.assertEqual((damaged["copies_found"], damaged["missing_partitions"], damaged["errors"]),
                         (47, [part], 0))
        self.assertEqual(damaged["missing_by_count"], {"0": 15, "1": 1, "2": 0, "3": 0})
        deadline = time.monotonic() + 120
        while self.tool("report", "--object-only", "--require", "100").returncode != 0:
            self.assertLess(time.monotonic(), deadline, "the replicator did not restore the copy")
            time.sleep(1)

        # A node stopped: every name it is a primary of misses one copy, counted as an error too
        self.stop_node(2)
        down = self.report("--retries", "0")
        expected = {
            "container": self.parts_on("container", 2, self.listed()),
            "object": self.parts_on("object", 2, self.listed(container)),
        }
        for kind, parts in expected.items():
            self.assertTrue(parts)
            self.assertEqual(down[kind]["missing_partitions"], parts)
            self.assertEqual(down[kind]["missing_by_count"], {"0": 16 - len(parts), "1": len(parts), "2": 0, "3": 0})
            self.assertEqual((down[kind]["errors"], down[kind]["copies_found"]), (len(parts), 48 - len(parts)))
        ec_down = self.report("--retries", "0", "--policy-name", "ec", "--object-only")["object"]
        ec_parts = self.parts_on("object-2", 2, self.listed(objects_container(2)))
        self.assertEqual((ec_down["missing_partitions"], ec_down["errors"]), (ec_parts, len(ec_parts)))
        debug = self.tool("report", "--retries", "0", "--container-only", "--debug", "--partitions")
        self.assertIn(f"127.0.0.1:{self.cluster.port + 20}", debug.stderr)  # the node named
        self.assertIn("Container partitions missing copies: " + " ".join(map(str, expected["container"])),
                      debug.stdout)

        # The node back: all in place again
        self.cluster.start_node(self, 2)
        back = self.report()
        self.assert_complete(back["container"])
        self.assert_complete(back["object"])
        self.assert_complete(self.report("--policy-name", "ec", "--object-only")["object"])

    def test_report_before_populate_says_so(self) -> None:
        result = self.tool("report")
        self.assertEqual(result.returncode, 2)
        self.assertIn("no dispersion containers to query: has txstore-dispersion populate been run?",
                      result.stderr)
        wrong = subprocess.run([console_script("txstore-dispersion"), "report", *self.common[:4], "--auth-key",
                                "wrong", *self.common[6:]], capture_output=True, text=True, timeout=60)
        self.assertEqual(wrong.returncode, 2)
        self.assertIn("login as test:tester", wrong.stderr)
        self.assertIn("answered 401", wrong.stderr)
