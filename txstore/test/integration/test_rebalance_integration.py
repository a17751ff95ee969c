"""
A rebalance on a real all-in-one (4 nodes, 3 replicas, then a fifth): the drill of the
replication issue, checked object by object on disk.
"""

from __future__ import annotations

import hashlib
import random
import re
import time
from concurrent.futures import ThreadPoolExecutor

from swiftclient import client as swift
from twisted.logger import Logger

from txstore.storage.db.files import database_partition, find_databases
from txstore.ring.builder import RingBuilder
from txstore.ring.ringfile import write_atomically
from txstore.test.integration.test_replication_integration import Drill

log = Logger()


class GrowingDrill(Drill):
    """``Drill`` for a cluster whose number of nodes changes during the test."""

    def misplaced_databases(self) -> list[str]:
        """Container and account databases on a device that is not one of their primaries."""
        wrong = []
        for kind, ring in (("containers", self.rings.container), ("accounts", self.rings.account)):
            for number in self.node_numbers():
                for path in find_databases(self.devices(number) / f"d{number}", kind):
                    part = database_partition(path)
                    if number not in {self.node_number(n) for n in ring.get_part_nodes(part)}:
                        wrong.append(f"node{number}:{kind}/{part}/{path.name}")
        return wrong

    def add_node(self, number: int) -> None:
        """
        Write ``etc/node<number>.conf`` (node 4's, with this node's ports and devices) and its
        device directory. The ports are free: the cluster's block was chosen with room for six.
        """
        base = self.cluster.port
        template = (self.etc / "node4.conf").read_text(encoding="utf-8")
        ports = {str(base + 40): str(base + 10 * number), str(base + 41): str(base + 10 * number + 1)}
        text = re.sub(r"^(bind_port\s*=\s*)(\d+)\s*$", lambda m: m.group(1) + ports[m.group(2)], template,
                      flags=re.M)
        text = re.sub(r"^(devices\s*=\s*.*)/node4\s*$", rf"\1/node{number}", text, flags=re.M)
        text = text.replace("node4.conf", f"node{number}.conf").replace("node 4", f"node {number}")
        self.assertEqual(len(re.findall(r"^bind_ip\s*=\s*127\.0\.0\.1\s*$", text, flags=re.M)), 2, text)
        self.assertIn(f"bind_port = {base + 10 * number}\n", text)
        self.assertIn(f"bind_port = {base + 10 * number + 1}\n", text)
        self.assertIn(f"devices = {self.devices(number)}\n", text)
        write_atomically(self.etc / f"node{number}.conf", text.encode("utf-8"))
        (self.devices(number) / f"d{number}").mkdir(parents=True, exist_ok=True)
        self.node_count = max(self.node_count, number)

    def add_to_rings(self, number: int) -> dict[str, object]:
        """Add d<number> to the three builders, rebalance, save builders then rings (atomically)."""
        port = self.cluster.port + 10 * number
        results = {}
        for name in ("account", "container", "object"):
            builder = RingBuilder.load(self.etc / f"{name}.builder")
            builder.add_dev({"region": 1, "zone": number, "ip": "127.0.0.1", "port": port,
                             "replication_ip": "127.0.0.1", "replication_port": port + 1,
                             "device": f"d{number}", "weight": 100.0})
            builder.pretend_min_part_hours_passed()
            results[name] = builder.rebalance(seed=number)
            builder.save(self.etc / f"{name}.builder")
            # RingData.save writes a temporary file and renames it: running servers, which
            # reload on a change of mtime, size or inode, never see half a ring.
            builder.get_ring().save(self.etc / f"{name}.ring.gz")
        for ring in (self.rings.account, self.rings.container, *self.rings.objects.values()):
            ring.reload()
        return results


class AddANodeDrillTests(GrowingDrill):
    def test_a_fifth_node_takes_its_share(self) -> None:
        """
        Add a fifth node to the rings and rebalance: within a few passes the data follows the
        ring, GETs succeed during the move, and no object is lost (checked object by object).
        """
        began = time.monotonic()
        swift.put_container(self.url, self.token, "drill")
        rng = random.Random(5)
        sizes = [0, 1, 1 << 20, 1 << 20, 1 << 20] + [rng.choice([1, 100, 4096, 65536, 300_000]) for _ in range(95)]
        bodies = {f"obj-{i:03d}": rng.randbytes(size) for i, size in enumerate(sizes)}
        expected = {name: hashlib.md5(body, usedforsecurity=False).hexdigest() for name, body in bodies.items()}
        # More containers, so that some databases surely move too (each ~3/5 likely to).
        for i in range(8):
            swift.put_container(self.url, self.token, f"more-{i}")
        # node5 starts while the uploads go on; no ring names it yet, so it gets nothing.
        self.add_node(5)
        with ThreadPoolExecutor(1) as background, ThreadPoolExecutor(4) as pool:
            node5 = background.submit(self.start_node, 5)
            etags = dict(zip(bodies, pool.map(
                lambda item: swift.put_object(self.url, self.token, "drill", item[0], contents=item[1]),
                bodies.items())))
            node5.result()
        self.assertEqual(etags, expected)
        del bodies
        self.assertEqual(self.misplaced(), [])
        self.assertEqual(self.misplaced_databases(), [])
        old_primaries = {name: self.primaries(name) for name in expected}
        old_parts = {p: {n.id for n in self.rings.object_ring(0).get_part_nodes(p)}
                     for p in range(self.rings.object_ring(0).partition_count)}

        # Now the rings name node5 (already listening, so nothing is sent to a closed port); the
        # servers reload them within their reload interval (15 s).
        started = time.monotonic()
        results = self.add_to_rings(5)
        object_ring = self.rings.object_ring(0)
        counts = {}
        for part in range(object_ring.partition_count):
            new = {n.id for n in object_ring.get_part_nodes(part)}
            # min_part_hours: one replica of a partition in flight at a time, so two of its old
            # primaries still hold every object while the third copy moves.
            self.assertGreaterEqual(len(new & old_parts[part]), 2, (part, old_parts[part], new))
            for dev_id in new:
                counts[dev_id] = counts.get(dev_id, 0) + 1
        share = 3 * object_ring.partition_count / 5
        self.assertTrue(all(abs(c - share) <= 3 for c in counts.values()), counts)
        moving = [name for name in expected if self.primaries(name) != old_primaries[name]]
        self.assertGreater(len(moving), 30, "a fifth of the replicas move: ~3/5 of the objects")
        log.info("rebalanced: {results}; {moving} objects to move", results=results, moving=len(moving))

        # Read everything through the proxy, again and again, until the data is home.
        failures: list[tuple[int, str, str]] = []
        rounds = rounds_while_misplaced = 0
        settled = False
        deadline = started + 90
        while True:
            rounds += 1
            rounds_while_misplaced += bool(self.misplaced())
            for name, md5 in expected.items():
                try:
                    _, body = swift.get_object(self.url, self.token, "drill", name)
                except Exception as error:
                    failures.append((rounds, name, repr(error)))
                    continue
                if hashlib.md5(body, usedforsecurity=False).hexdigest() != md5:
                    failures.append((rounds, name, f"wrong body of {len(body)} bytes"))
            if settled:
                break  # one more whole round once everything is in place
            settled = not self.misplaced() and self._all_placed(expected)
            if settled:
                elapsed = time.monotonic() - started
            elif time.monotonic() > deadline:
                elapsed = time.monotonic() - started
                break
        log.info("rebalance drill: uploads took {upload:.1f}s, {rounds} GET rounds, objects settled {elapsed:.1f}s"
                 " after the rebalance", upload=started - began, rounds=rounds, elapsed=elapsed)
        self.assertEqual(failures, [])
        self.assertGreater(rounds_while_misplaced, 0, "the GETs should overlap the move")
        self.assertEqual(self.misplaced(), [])
        for name, md5 in expected.items():
            self.assertEqual(self.copies(name), {n: ("data", md5) for n in self.primaries(name)}, name)
        on_node5 = sum(5 in self.primaries(name) for name in expected)
        self.assertEqual(on_node5, sum(5 in self.copies(name) for name in expected))
        # node5 holds ~3/5 of the objects (one of their three copies); 100 objects leave room.
        self.assertTrue(35 <= on_node5 <= 85, on_node5)

        # The databases follow their rings too, and the listing is whole on every replica.
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            listings = self.container_listings()
            if not self.misplaced_databases() and all(
                [o["name"] for o in listing if isinstance(o, dict)] == sorted(expected) for listing in listings
            ):
                break
            time.sleep(1)
        self.assertEqual(self.misplaced_databases(), [])
        for listing in self.container_listings():
            self.assertEqual([(o["name"], o["hash"]) for o in listing], sorted(expected.items()))
        _, listing = swift.get_container(self.url, self.token, "drill")
        self.assertEqual([(o["name"], o["hash"]) for o in listing], sorted(expected.items()))
        log.info("rebalance drill: databases settled {elapsed:.1f}s after the rebalance",
                 elapsed=time.monotonic() - started)

    def _all_placed(self, expected: dict[str, str]) -> bool:
        for name, md5 in expected.items():
            if self.copies(name) != {n: ("data", md5) for n in self.primaries(name)}:
                return False
        return True
