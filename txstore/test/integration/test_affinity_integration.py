"""
Read and write affinity on a real all-in-one of six nodes whose object ring has two regions
(nodes 1-3 in region 1, 4-6 in region 2), its proxy told ``sorting_method = affinity``,
``read_affinity = r1=100``, ``write_affinity = r1``: with region 2 down, PUTs succeed on
region 1's nodes (handoffs standing in for the remote primaries); once region 2 is back, the
object replicator moves every copy to its primaries; then every GET is answered by a node of
region 1 (the nodes' access lines, by the transaction id), though ring order would often have
asked region 2 first.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import signal
import time
from pathlib import Path

from swiftclient import client as swift
from twisted.python import log

from txstore.common.cluster import load_cluster_config
from txstore.ring.builder import RingBuilder
from txstore.ring.ring import Ring
from txstore.ring.ringset import RingSet
from txstore.test.integration.test_proxy_integration import Cluster, ClusterCase
from txstore.test.integration.test_replication_integration import Drill

NODES = 6
LOCAL = (1, 2, 3)  # region 1
REMOTE = (4, 5, 6)  # region 2
CONTAINER = "drill"  # the replication drills' container: their view of the disks is used
AFFINITY = "sorting_method = affinity\nread_affinity = r1=100\nwrite_affinity = r1\n"


class TwoRegionAffinityTests(ClusterCase):
    def setUp(self) -> None:
        self.cluster = Cluster(Path(self.mktemp()).absolute() / "aio", nodes=NODES)
        self.addCleanup(self.cluster.stop)
        self.cluster.start()
        self.root = self.cluster.root
        self.etc = self.root / "etc"
        cluster = load_cluster_config(self.etc / "txstore.conf")
        self.hasher = cluster.hasher
        # Account and container rings too: built by the aio with a random seed, a partition of
        # theirs could sit wholly in region 2, and the drill's container vanish with it (1 in 20).
        for kind in ("account", "container"):
            self.two_region_ring(kind)
        self.ring = self.two_region_ring("object")
        self.rings = RingSet.load(self.etc, cluster.hasher, cluster.policies)
        for number in LOCAL + REMOTE:  # the nodes take the new ring now (SIGHUP: reload)
            os.kill(self.pid(f"node{number}"), signal.SIGHUP)
        self.restart_proxy_after("[proxy]\n", AFFINITY)

    # --- the cluster -----------------------------------------------------------------------

    def two_region_ring(self, kind: str) -> Ring:
        """The ``kind`` ring (policy 0's for objects) again, the same devices, nodes 4-6 in region 2."""
        builder = RingBuilder(6, 3, 1)
        for number in range(1, NODES + 1):
            port = self.cluster.port + 10 * number
            builder.add_dev(region=1 if number in LOCAL else 2, zone=number, ip="127.0.0.1", port=port,
                            replication_ip="127.0.0.1", replication_port=port + 1, device=f"d{number}", weight=100)
        builder.rebalance(seed=3)
        fresh = self.etc / f"{kind}.ring.gz.new"
        builder.get_ring().save(fresh)
        os.replace(fresh, self.etc / f"{kind}.ring.gz")
        return Ring(self.etc / f"{kind}.ring.gz", self.hasher)

    def pid(self, name: str) -> int:
        return int((self.root / "run" / f"{name}.pid").read_text())

    # --- where things are --------------------------------------------------------------------

    def region(self, number: int) -> int:
        return 1 if number in LOCAL else 2

    def primaries(self, name: str) -> list[int]:
        part = self.ring.get_part("AUTH_test", CONTAINER, name)
        return [(node.port - self.cluster.port) // 10 for node in self.ring.get_part_nodes(part)]

    # the replication drills' view of the disks: {node number: ("data", md5) or ("ts", None)}
    copies = Drill.copies
    stop_node = Drill.stop_node

    def node_numbers(self) -> range:
        return range(1, NODES + 1)

    def devices(self, number: int) -> Path:
        return self.root / "srv" / f"node{number}"

    def holders(self, name: str) -> dict[int, str]:
        """node number → md5 of the body it holds, for every node holding ``name``."""
        return {number: md5 for number, (kind, md5) in self.copies(name).items() if kind == "data"}

    def answered_by(self, trans_id: str, method: str, name: str) -> set[int]:
        """
        The nodes whose access lines show ``method`` on object ``name`` in transaction
        ``trans_id`` (its object partition: not the container updates the PUT causes).
        """
        part = self.ring.get_part("AUTH_test", CONTAINER, name)
        nodes = set()
        for path in (self.root / "log").glob("node*.log"):
            number = int(path.name[4:].split(".")[0].split("-")[0])
            for line in path.read_text(errors="replace").splitlines():
                if line.endswith(f" {trans_id}") and f" {method} /d{number}/{part}/AUTH_test/{CONTAINER}/{name} " in line:
                    nodes.add(number)
        return nodes

    def request(self, method: str, name: str, token: str, body: bytes | None = None) -> tuple[int, bytes, set[int]]:
        """A request through the proxy: its status, body, and the nodes that served it (access lines)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.cluster.port, timeout=30)
        try:
            conn.request(method, f"/v1/AUTH_test/{CONTAINER}/{name}", body=body, headers={"X-Auth-Token": token})
            response = conn.getresponse()
            status, data, trans_id = response.status, response.read(), response.getheader("X-Trans-Id")
        finally:
            conn.close()
        # a node writes its access line as its answer ends: until no more come for a second (10 s at most)
        nodes: set[int] = set()
        deadline, quiet = time.monotonic() + 10, time.monotonic() + 1
        while time.monotonic() < min(deadline, quiet) or not nodes and time.monotonic() < deadline:
            time.sleep(0.2)
            seen = self.answered_by(trans_id, method, name)
            if seen != nodes:
                nodes, quiet = seen, time.monotonic() + 1
        return status, data, nodes

    def names(self) -> list[str]:
        """Objects to write: four whose first primary is in region 2 (ring order would read there), two others."""
        remote_first, local_first = [], []
        for number in range(10_000):
            name = f"obj-{number}"
            first = self.primaries(name)[0]
            (remote_first if self.region(first) == 2 else local_first).append(name)
            if len(remote_first) >= 4 and len(local_first) >= 2:
                return remote_first[:4] + local_first[:2]
        raise AssertionError("the ring has no such partitions")

    # --- the drill -------------------------------------------------------------------------------

    def test_local_writes_replicated_across_then_local_reads(self) -> None:
        url, token = self.cluster.token()
        swift.put_container(url, token, CONTAINER)
        for number in REMOTE:
            self.stop_node(number)
        bodies = {name: os.urandom(3000) + name.encode() for name in self.names()}

        # region 2 is down: every PUT is 201, its three copies on region 1's three nodes
        for name, body in bodies.items():
            etag = swift.put_object(url, token, CONTAINER, name, body)
            self.assertEqual(etag, hashlib.md5(body).hexdigest())
        for name, body in bodies.items():
            held = self.holders(name)
            self.assertEqual(held, {number: hashlib.md5(body).hexdigest() for number in LOCAL}, name)
            handoffs = set(held) - set(self.primaries(name))
            self.assertTrue(handoffs, f"{name}: no handoff holds it ({self.primaries(name)})")

        # region 2 back: the replicators (every 10 s) move the handoffs' copies to the primaries
        for number in REMOTE:
            self.cluster.start_node(self, number)
        started = time.monotonic()
        deadline = started + 180
        while True:
            placed = {name: set(self.holders(name)) == set(self.primaries(name)) for name in bodies}
            if all(placed.values()):
                break
            self.assertLess(time.monotonic(), deadline, f"not on their primaries: {placed}")
            time.sleep(1)
        log.msg(f"affinity drill: every copy on its primaries {time.monotonic() - started:.1f} s after region 2 came back")
        for name, body in bodies.items():
            self.assertEqual(set(self.holders(name).values()), {hashlib.md5(body).hexdigest()})

        # reads: region 1 answers, also for the objects whose first primary is in region 2
        for name, body in bodies.items():
            status, data, nodes = self.request("GET", name, token)
            self.assertEqual((status, data), (200, body))
            self.assertEqual(len(nodes), 1)
            self.assertEqual({self.region(n) for n in nodes}, {1}, f"{name}: read from {nodes}")

        # with region 2 up as well, a PUT still goes to region 1's nodes only
        container_part = Ring(self.etc / "container.ring.gz", self.hasher).get_part("AUTH_test", CONTAINER)
        name = next(name for name in bodies if self.region(self.primaries(name)[0]) == 2
                    and self.ring.get_part("AUTH_test", CONTAINER, name) != container_part)
        status, _, nodes = self.request("PUT", name, token, b"again")
        self.assertEqual((status, nodes), (201, set(LOCAL)))
