"""
Replication on a real all-in-one (4 nodes, 3 replicas): the drills of the replication issue,
checked object by object on disk.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from swiftclient import client as swift

from txstore.common.cluster import load_cluster_config
from txstore.ring.ringset import RingSet
from txstore.storage.diskfile import DiskFileManager
from txstore.storage.partitions import list_objects, list_partitions, list_suffixes
from txstore.test.support import console_script
from txstore.test.integration.test_proxy_integration import ClusterCase

NODES = 4


class Drill(ClusterCase):
    node_count = NODES  # a test that adds a node raises it

    def node_numbers(self) -> range:
        return range(1, self.node_count + 1)
    def setUp(self) -> None:
        super().setUp()
        self.etc = self.cluster.root / "etc"
        cluster = load_cluster_config(self.etc / "txstore.conf")
        self.hasher = cluster.hasher
        self.rings = RingSet.load(self.etc, cluster.hasher, cluster.policies)
        self.url, self.token = self.cluster.token()

    def devices(self, number: int) -> Path:
        return self.cluster.root / "srv" / f"node{number}"

    def node_number(self, node) -> int:
        return (node.port - self.cluster.port) // 10

    def stop_node(self, number: int, sig: int = signal.SIGTERM) -> None:
        pid = int((self.cluster.root / "run" / f"node{number}.pid").read_text())
        os.kill(pid, sig)
        for _ in range(400):
            try:
                os.kill(pid, 0)
                time.sleep(0.05)
            except ProcessLookupError:
                return
        raise AssertionError(f"node{number} did not stop")

    def start_node(self, number: int) -> subprocess.Popen:
        return self.cluster.start_node(self, number)

    # --- what is on disk --------------------------------------------------------------------

    def copies(self, name: str) -> dict[int, tuple[str, str | None]]:
        """node number → ("data", md5 of the body) or ("ts", None), for every node holding it."""
        part = self.rings.object_ring(0).get_part("AUTH_test", "drill", name)
        found = {}
        for number in self.node_numbers():
            manager = DiskFileManager(self.devices(number), False, self.hasher, fsync=False)
            diskfile = manager.get_diskfile(f"d{number}", part, "AUTH_test", "drill", name)
            state = diskfile.read_metadata()
            if state.exists:
                md5 = hashlib.md5(usedforsecurity=False)
                with diskfile.open_reader(state) as reader:
                    offset = 0
                    while chunk := reader.read(offset, 1 << 20):
                        md5.update(chunk)
                        offset += len(chunk)
                found[number] = ("data", md5.hexdigest())
            elif state.deleted:
                found[number] = ("ts", None)
        return found

    def primaries(self, name: str) -> set[int]:
        ring = self.rings.object_ring(0)
        return {self.node_number(n) for n in ring.get_part_nodes(ring.get_part("AUTH_test", "drill", name))}

    def misplaced(self) -> list[str]:
        """Object directories on a device that is not one of their partition's primaries."""
        ring = self.rings.object_ring(0)
        wrong = []
        for number in self.node_numbers():
            device = self.devices(number) / f"d{number}"
            for part in list_partitions(device, 0):
                holders = {self.node_number(n) for n in ring.get_part_nodes(part)}
                if number not in holders:
                    part_dir = device / "objects" / str(part)
                    wrong += [f"node{number}:{o.name_hash}" for o in list_objects(part_dir, list_suffixes(part_dir))]
        return wrong

    def container_listings(self) -> list[list]:
        ring = self.rings.container
        part, nodes = ring.get_nodes("AUTH_test", "drill")
        listings = []
        for node in nodes:
            conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
            try:
                conn.request("GET", f"/{node.device_name}/{part}/AUTH_test/drill?format=json")
                response = conn.getresponse()
                body = response.read()
                listings.append(json.loads(body) if response.status == 200 else [response.status])
            finally:
                conn.close()
        return listings


class DowntimeDrillTests(Drill):
    def test_a_node_that_was_down_catches_up(self) -> None:
        """
        Stop a node; upload 200 objects of 1 byte to 5 MiB and delete 20; start it again: within
        two replicator passes (every 10 s in the all-in-one) each survivor has exactly its 3
        primary copies with identical md5s, each deleted one is a tombstone on its 3 primaries,
        nothing is left on handoffs, and the 3 container replicas list the same.
        """
        self.stop_node(2)
        swift.put_container(self.url, self.token, "drill")
        rng = random.Random(7)
        sizes = [1, 5 * 1024 * 1024] + [rng.choice([1, 100, 4096, 65536, 300_000, 1_500_000]) for _ in range(198)]
        expected = {}
        for i, size in enumerate(sizes):
            body = rng.randbytes(size)
            name = f"obj-{i:03d}"
            swift.put_object(self.url, self.token, "drill", name, contents=body)
            expected[name] = hashlib.md5(body, usedforsecurity=False).hexdigest()
        deleted = sorted(rng.sample(sorted(expected), 20))
        for name in deleted:
            swift.delete_object(self.url, self.token, "drill", name)
        self.assertTrue(self.misplaced(), "with node2 down, some writes went to handoffs")
        self.start_node(2)

        deadline = time.monotonic() + 2 * 10 + 25  # two passes, their jitter, and slack for a slow CI
        while time.monotonic() < deadline:
            if not self.misplaced() and self._all_placed(expected, deleted):
                break
            time.sleep(2)
        self.assertEqual(self.misplaced(), [])
        for name, md5 in expected.items():
            want = {n: ("ts", None) for n in self.primaries(name)} if name in deleted else \
                {n: ("data", md5) for n in self.primaries(name)}
            self.assertEqual(self.copies(name), want, name)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            listings = self.container_listings()
            if all(listing == listings[0] for listing in listings) and len(listings[0]) == 180:
                break
            time.sleep(1)
        self.assertEqual([len(listing) for listing in listings], [180] * 3)
        self.assertTrue(all(listing == listings[0] for listing in listings))

    def _all_placed(self, expected: dict, deleted: list) -> bool:
        for name in expected:
            copies = self.copies(name)
            if set(copies) != self.primaries(name):
                return False
            kinds = {kind for kind, _ in copies.values()}
            if kinds != ({"ts"} if name in deleted else {"data"}):
                return False
        return True


PACED_SENDER = r"""
import json, sys
from pathlib import Path
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import react
from txstore.common.cluster import load_cluster_config
from txstore.common.io import DeviceThreadPools
from txstore.replication.sender import BytePacer, Connector, ObjectSender
from txstore.ring.ringset import RingSet
from txstore.storage.diskfile import DiskFileManager
from txstore.storage.context import StorageContext
from txstore.storage.partitions import get_hashes

etc, devices, device, partition, peer_device, rate = sys.argv[1:]
partition, rate = int(partition), float(rate)

async def main(reactor):
    cluster = load_cluster_config(Path(etc) / "txstore.conf")
    ring = RingSet.load(Path(etc), cluster.hasher, cluster.policies).object_ring(0)
    peer = next(n for n in ring.get_part_nodes(partition) if n.device_name == peer_device)
    diskfiles = DiskFileManager(Path(devices), False, cluster.hasher)
    runner = DeviceThreadPools(reactor)
    context = StorageContext(devices=Path(devices), mount_check=False, hasher=cluster.hasher,
                             policies=cluster.policies, runner=runner, client=None, reactor=reactor,
                             diskfiles=diskfiles)
    sender = ObjectSender(context, Connector(reactor, 2.0, 10.0), BytePacer(reactor, rate))
    hashes = get_hashes(diskfiles.partition_path(device, 0, partition))
    outcome = await sender.sync(peer, device, partition, 0, local_hashes=hashes)
    runner.stop()
    print(json.dumps({"ok": outcome.ok, "reason": outcome.reason, "bytes": outcome.bytes_sent}), flush=True)

react(lambda reactor: ensureDeferred(main(reactor)))
"""


class ReceiverKilledTests(Drill):
    def test_kill_9_mid_session(self) -> None:
        """
        A receiver killed (-9) in the middle of a 32 MiB object: nothing partial becomes visible,
        the sender reports the failure, and the next replicator pass completes the sync.
        """
        swift.put_container(self.url, self.token, "drill")
        ring = self.rings.object_ring(0)
        part = ring.get_part("AUTH_test", "drill", "big")
        receiver, source, _third = (self.node_number(n) for n in ring.get_part_nodes(part))
        self.stop_node(receiver)
        body = random.Random(3).randbytes(32 * 1024 * 1024)
        swift.put_object(self.url, self.token, "drill", "big", contents=body)
        md5 = hashlib.md5(body, usedforsecurity=False).hexdigest()
        # Only the test's paced sender may push to the receiver: stop every other holder.
        for number in self.node_numbers():
            if number != receiver:
                self.stop_node(number)
        restarted = self.start_node(receiver)
        sender = subprocess.Popen(
            [sys.executable, "-c", PACED_SENDER, str(self.etc), str(self.devices(source)), f"d{source}",
             str(part), f"d{receiver}", str(8 * 1024 * 1024)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.addCleanup(lambda: (sender.poll() is None and sender.kill(), sender.wait()))
        tmp = self.devices(receiver) / f"d{receiver}" / "tmp"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(p.stat().st_size > 4 * 1024 * 1024 for p in tmp.glob("*")):
            time.sleep(0.1)
        os.kill(restarted.pid, signal.SIGKILL)
        restarted.wait()
        out, err = sender.communicate(timeout=60)
        result = json.loads(out.strip().splitlines()[-1])
        self.assertFalse(result["ok"], result)
        self.assertLess(result["bytes"], len(body))
        self.assertNotIn(receiver, self.copies("big"), "no partial object is visible")
        self.assertTrue(list(tmp.glob("*")), "the body in flight was still a temp file")

        self.start_node(receiver)  # the start-up sweep removes the orphaned temp file
        deadline = time.monotonic() + 10  # it runs in a device thread, perhaps after the node answers
        while time.monotonic() < deadline and list(tmp.glob("*")):
            time.sleep(0.1)
        self.assertEqual(list(tmp.glob("*")), [])
        for number in self.node_numbers():  # the holders' replicators complete the sync
            if number != receiver:
                self.start_node(number)
        deadline = time.monotonic() + 2 * 10 + 25
        while time.monotonic() < deadline and self.copies("big").get(receiver) != ("data", md5):
            time.sleep(1)
        self.assertEqual(self.copies("big").get(receiver), ("data", md5))


class BitRotDrillTests(Drill):
    def test_flipped_bytes_are_quarantined_and_restored(self) -> None:
        """
        Flip a byte in one replica's .data: no GET ever completes with the bad bytes, the
        auditor quarantines it, txstore-recon -q shows it, and the replicator restores it.
        """
        swift.put_container(self.url, self.token, "drill")
        body = random.Random(5).randbytes(256 * 1024)
        md5 = hashlib.md5(body, usedforsecurity=False).hexdigest()
        swift.put_object(self.url, self.token, "drill", "rot", contents=body)
        ring = self.rings.object_ring(0)
        part = ring.get_part("AUTH_test", "drill", "rot")
        victim = self.node_number(ring.get_part_nodes(part)[0])  # the replica GETs ask first
        # The victim's auditor every 2 s instead of the all-in-one's 60 s.
        self.stop_node(victim)
        conf = self.etc / f"node{victim}.conf"
        conf.write_text(conf.read_text().replace("[object-auditor]\ninterval = 60", "[object-auditor]\ninterval = 2"))
        [data] = self.devices(victim).glob(f"d{victim}/objects/{part}/*/*/*.data")
        raw = bytearray(data.read_bytes())
        raw[1000] ^= 0x01
        data.write_bytes(bytes(raw))
        self.start_node(victim)

        quarantined = self.devices(victim) / f"d{victim}" / "quarantined" / "objects"
        # The auditor alone (no GET touches the object yet) quarantines it within its first passes.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (quarantined.is_dir() and any(quarantined.iterdir())):
            time.sleep(0.2)
        self.assertTrue(quarantined.is_dir() and any(quarantined.iterdir()), "the auditor quarantined it")
        # Then, until a replicator pass restores the copy, GETs never complete with wrong bytes.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.copies("rot").get(victim) != ("data", md5):
            try:
                _headers, got = swift.get_object(self.url, self.token, "drill", "rot")
                self.assertEqual(hashlib.md5(got, usedforsecurity=False).hexdigest(), md5)
            except swift.ClientException:
                pass  # an aborted response is allowed; a complete wrong one is not
            time.sleep(0.5)
        self.assertTrue(any(quarantined.iterdir()), "the bad copy is in quarantine")
        self.assertEqual(self.copies("rot").get(victim), ("data", md5), "a good copy is back")
        recon = subprocess.run(
            [console_script("txstore-recon"), "--ring-dir", str(self.etc), "-q", "--json"],
            capture_output=True, text=True, timeout=60,
        )
        by_node = {int(address.rsplit(":", 1)[1]): counts
                   for address, counts in json.loads(recon.stdout)["quarantined"].items()}
        victim_port = self.cluster.port + 10 * victim
        self.assertEqual(by_node[victim_port]["objects"], 1, recon.stdout)
        self.assertEqual(sum(c["objects"] for p, c in by_node.items() if p != victim_port), 0)
