"""
The expirer and the reaper on a real all-in-one (``txstore-aio``, daemons every 5 s): what a
user sees in listings, and what is left on the disks of the replicas.
"""

from __future__ import annotations

import http.client
import time
from pathlib import Path

from swiftclient import client as swift

from txstore.test.integration.test_proxy_integration import ClusterCase

DEADLINE = 25.0


class DaemonCase(ClusterCase):
    def setUp(self) -> None:
        super().setUp()
        from txstore.common.cluster import load_cluster_config
        from txstore.ring.ringset import RingSet

        etc = self.cluster.root / "etc"
        cluster = load_cluster_config(etc / "txstore.conf")
        self.rings = RingSet.load(etc, cluster.hasher, cluster.policies)
        self.hasher = cluster.hasher

    def replica_dirs(self, account: str, container: str, obj: str) -> list[Path]:
        """The object's directory on each of its primaries."""
        part, nodes = self.rings.object_ring(0).get_nodes(account, container, obj)
        name_hash = self.hasher.hash_path(account, container, obj)
        dirs = []
        for node in nodes:
            number = (node.port - self.cluster.port) // 10
            device = self.cluster.root / "srv" / f"node{number}" / node.device_name
            dirs.append(device / "objects" / str(part) / name_hash[-3:] / name_hash)
        return dirs

    @staticmethod
    def files(directory: Path) -> list[str]:
        return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []

    def wait_for(self, condition, what: str) -> None:
        deadline = time.monotonic() + DEADLINE
        while not condition():
            if time.monotonic() > deadline:
                self.fail(f"not within {DEADLINE}s: {what}")
            time.sleep(0.5)


class ExpiryTests(DaemonCase):
    def test_an_expired_object_leaves_the_listing_and_is_a_tombstone_everywhere(self) -> None:
        url, token = self.cluster.token()
        swift.put_container(url, token, "exp")
        swift.put_object(url, token, "exp", "stays", contents=b"kept")
        swift.put_object(url, token, "exp", "goes", contents=b"short-lived", headers={"X-Delete-After": "2"})
        delete_at = int(swift.head_object(url, token, "exp", "goes")["x-delete-at"])
        replicas = self.replica_dirs("AUTH_test", "exp", "goes")
        for directory in replicas:
            self.assertEqual(len([f for f in self.files(directory) if f.endswith(".data")]), 1)
        _, listing = swift.get_container(url, token, "exp")
        self.assertEqual([o["name"] for o in listing], ["goes", "stays"])

        tombstone = f"{delete_at:010d}.00000.ts"
        self.wait_for(lambda: all(self.files(d) == [tombstone] for d in replicas),
                      f"a {tombstone} alone on every replica: {[self.files(d) for d in replicas]}")
        self.wait_for(lambda: [o["name"] for o in swift.get_container(url, token, "exp")[1]] == ["stays"],
                      "the expired object gone from the listing")
        self.assertRaises(swift.ClientException, swift.get_object, url, token, "exp", "goes")
        self.assertEqual(swift.get_object(url, token, "exp", "stays")[1], b"kept")
        # The queue entry goes last, after the tombstone and the container update.
        self.wait_for(lambda: list(self.cluster.root.glob("srv/node*/d*/expiring*/*/*")) == [],
                      "every expiry queue entry removed")


class ReaperTests(DaemonCase):
    def test_a_deleted_accounts_objects_become_tombstones(self) -> None:
        url, _ = self.cluster.token()
        _, admin = self.cluster.token("admin:admin", "admin")
        auth = {"X-Auth-Token": admin}
        status, _, _ = self.cluster.http("PUT", "/v1/AUTH_doomed", auth)
        self.assertEqual(status, 201)
        doomed_url = url.replace("AUTH_test", "AUTH_doomed")
        names = [("c1", "o1"), ("c1", "o2"), ("c2", "deep/o\u00e9")]
        for container, obj in names:
            swift.put_container(doomed_url, admin, container)
            swift.put_object(doomed_url, admin, container, obj, contents=b"data")
        replicas = {name: self.replica_dirs("AUTH_doomed", *name) for name in names}
        for dirs in replicas.values():
            self.assertTrue(all(self.files(d) for d in dirs))
        status, _, _ = self.cluster.http("DELETE", "/v1/AUTH_doomed", auth)
        self.assertEqual(status, 204)

        def all_tombstones() -> bool:
            return all(
                (files := self.files(d)) and all(f.endswith(".ts") for f in files)
                for dirs in replicas.values() for d in dirs
            )

        self.wait_for(all_tombstones, "every replica of every object a tombstone")
        # and the containers themselves are deleted on their replicas
        for container in ("c1", "c2"):
            part, nodes = self.rings.container.get_nodes("AUTH_doomed", container)
            self.wait_for(lambda: all(self.node_status(n, part, container) == 404 for n in nodes),
                          f"container {container} deleted on its replicas")

    def node_status(self, node, part: int, container: str) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
        try:
            conn.request("HEAD", f"/{node.device_name}/{part}/AUTH_doomed/{container}")
            return conn.getresponse().status
        finally:
            conn.close()

