"""
A real ``twistd objectnode`` on 127.0.0.1 driven over HTTP: accounts, containers and objects
through the backend API, container updates between the servers, and data that survives a
restart (and a kill -9 in the middle of a PUT, which leaves nothing partial).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from urllib.parse import quote

from twisted.trial.unittest import SynchronousTestCase

from txstore.common.cluster import load_cluster_config
from txstore.ring.ringset import RingSet
from txstore.test.support import console_script, free_port_block, small_cluster


class Node:
    def __init__(self, case: SynchronousTestCase, config, port: int, log) -> None:
        self.case, self.config, self.port, self.log = case, config, port, log
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as sink:
            self.process = subprocess.Popen(
                [console_script("twistd"), "--nodaemon", "--pidfile=", "objectnode", "--config", str(self.config)],
                stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        self.case.addCleanup(self.kill)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthcheck", timeout=1):
                    return
            except OSError:
                if self.process.poll() is not None:
                    raise AssertionError(open(self.log).read())
                time.sleep(0.05)
        raise AssertionError("node did not start")

    def stop(self, sig=signal.SIGTERM) -> None:
        assert self.process is not None
        self.process.send_signal(sig)
        self.process.wait(timeout=30)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def call(method: str, url: str, headers: dict | None = None, data: bytes | None = None):
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


class OneNodeCase(SynchronousTestCase):
    """A one-node, one-replica cluster on disk, its node running as a real process."""

    def setUp(self) -> None:
        base = free_port_block(2, step=10)
        self.layout = small_cluster(self, nodes=1, replicas=1, part_power=4, base_port=base)
        self.port = base + 10
        self.node = Node(self, self.layout.node_config(1), self.port, self.layout.log_file("node1"))
        self.node.start()


class NodeIntegrationTests(OneNodeCase):
    def setUp(self) -> None:
        super().setUp()
        cluster = load_cluster_config(self.layout.etc / "txstore.conf")
        self.rings = RingSet.load(self.layout.etc, cluster.hasher, cluster.policies)
        self.ts = 1_700_000_000

    def stamp(self) -> str:
        self.ts += 1
        return f"{self.ts}.00000"

    def url(self, account: str, container: str | None = None, obj: str | None = None) -> str:
        ring = self.rings.object_ring(0) if obj else self.rings.container if container else self.rings.account
        part = ring.get_part(account, container, obj)
        path = "/".join(quote(p, safe="") for p in (account, container, obj) if p is not None)
        return f"http://127.0.0.1:{self.port}/d1/{part}/{path}"

    def account_headers(self, account: str) -> dict:
        part = self.rings.account.get_part(account)
        return {"X-Account-Host": f"127.0.0.1:{self.port}", "X-Account-Device": "d1", "X-Account-Partition": str(part)}

    def container_headers(self, account: str, container: str) -> dict:
        part = self.rings.container.get_part(account, container)
        return {"X-Container-Host": f"127.0.0.1:{self.port}", "X-Container-Device": "d1",
                "X-Container-Partition": str(part)}

    def test_account_container_object_and_restart(self) -> None:
        status, _, _ = call("PUT", self.url("AUTH_t"), {"X-Timestamp": self.stamp()})
        self.assertEqual(status, 201)
        status, _, _ = call("PUT", self.url("AUTH_t", "c"), {"X-Timestamp": self.stamp(), **self.account_headers("AUTH_t")})
        self.assertEqual(status, 201)
        names = ["a//b", "dir/", "x%2Fy", "\U0001f600", "n" * 1024]
        for name in names:
            status, headers, _ = call(
                "PUT", self.url("AUTH_t", "c", name),
                {"X-Timestamp": self.stamp(), "Content-Type": "text/plain", **self.container_headers("AUTH_t", "c")},
                name.encode(),
            )
            self.assertEqual(status, 201, name)
        status, headers, body = call("GET", self.url("AUTH_t", "c") + "?format=json")
        self.assertEqual(status, 200)
        listing = json.loads(body)
        self.assertEqual(sorted(e["name"] for e in listing), sorted(names, key=lambda n: n.encode()))
        self.assertEqual(headers["X-Container-Object-Count"], "5")
        status, headers, _ = call("HEAD", self.url("AUTH_t"))
        self.assertEqual((status, headers["X-Account-Container-Count"]), (204, "1"))

        self.node.stop()
        self.node.start()
        for name in names:
            status, _, body = call("GET", self.url("AUTH_t", "c", name))
            self.assertEqual((status, body), (200, name.encode()), name)
        status, _, body = call("GET", self.url("AUTH_t", "c") + "?format=json&prefix=a")
        self.assertEqual([e["name"] for e in json.loads(body)], ["a//b"])

    def test_kill_9_mid_put_leaves_nothing_visible(self) -> None:
        url = self.url("AUTH_t", "c", "big")
        path = url.split(str(self.port), 1)[1]
        sock = socket.create_connection(("127.0.0.1", self.port))
        sock.sendall(
            f"PUT {path} HTTP/1.1\r\nHost: x\r\nX-Timestamp: {self.stamp()}\r\nContent-Type: x/y\r\n"
            f"Content-Length: {50 * 1024 * 1024}\r\n\r\n".encode() + b"z" * (4 * 1024 * 1024)
        )
        tmp = self.layout.devices(1) / "d1" / "tmp"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (tmp.exists() and any(tmp.iterdir())):
            time.sleep(0.05)
        self.assertTrue(any(tmp.iterdir()), "the upload should be in progress")
        self.node.stop(signal.SIGKILL)
        sock.close()
        self.assertEqual(list(self.layout.devices(1).rglob("*.data")), [])
        self.node.start()
        status, _, _ = call("GET", url)
        self.assertEqual(status, 404)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(tmp.iterdir()):
            time.sleep(0.05)
        self.assertEqual(list(tmp.iterdir()), [], "the start-up sweep removes the orphaned temp file")


class ReconTests(OneNodeCase):
    def recon(self, what: str, method: str = "GET"):
        status, headers, body = call(method, f"http://127.0.0.1:{self.port}/recon/{what}")
        return status, json.loads(body) if status == 200 and body else body

    def test_checks(self) -> None:
        import hashlib

        status, disks = self.recon("diskusage")
        self.assertEqual(status, 200)
        [disk] = disks
        self.assertEqual((disk["device"], disk["mounted"]), ("d1", True))
        self.assertGreater(disk["size"], disk["avail"])
        self.assertEqual(self.recon("async"), (200, {"async_pending": 0}))
        self.assertEqual(self.recon("quarantined"), (200, {"accounts": 0, "containers": 0, "objects": 0}))
        status, sums = self.recon("ringmd5")
        ring = self.layout.etc / "object.ring.gz"
        self.assertEqual(sums[str(ring)], hashlib.md5(ring.read_bytes()).hexdigest())
        self.assertEqual(set(self.recon("load")[1]), {"1m", "5m", "15m"})
        self.assertIn("MemTotal", self.recon("mem")[1])
        self.assertEqual(self.recon("unmounted"), (200, []))
        self.assertIn("version", self.recon("version")[1])
        self.assertGreater(self.recon("time")[1]["time"], 1.7e9)
        status, daemons = self.recon("daemons")
        self.assertEqual(set(daemons), {
            "container-updater", "object-updater", "object-auditor", "object-replicator", "container-replicator",
            "account-replicator", "object-expirer", "container-auditor", "account-auditor", "account-reaper",
        })
        self.assertEqual(daemons["object-updater"]["interval"], 5.0)
        status, replication = self.recon("replication")
        self.assertEqual(set(replication), {"object", "container", "account"})
        self.assertEqual(replication["object"]["interval"], 10.0)
        self.assertEqual(set(self.recon("auditor")[1]), {"object", "container", "account"})
        self.assertEqual(self.recon("nonsense")[0], 404)
        self.assertEqual(self.recon("time", method="POST")[0], 405)

    def test_txstore_recon(self) -> None:
        import subprocess

        command = [console_script("txstore-recon"), "--ring-dir", str(self.layout.etc), "--timeout", "3"]
        result = subprocess.run(command + ["--all"], capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        for words in ("1 nodes in the rings", "Disk usage:", "127.0.0.1:%d/d1:" % self.port, "average",
                      "Load:", "Async pendings:", "total 0", "Quarantined:", "objects 0",
                      "1/1 reachable nodes have the same rings", "Daemons:", "object-auditor",
                      "Unmounted devices:", "Memory:", "GiB available of", "Clock offsets", "Versions:"):
            self.assertIn(words, result.stdout)
        # The daemons are a table, not JSON.
        self.assertRegex(result.stdout, r"\n  node +daemon +passes +last pass +took +figures\n")
        self.assertNotIn('{"', result.stdout)
        result = subprocess.run(command + ["-q", "--json"], capture_output=True, text=True, timeout=60)
        self.assertEqual(json.loads(result.stdout)["quarantined"][f"127.0.0.1:{self.port}"]["objects"], 0)
        self.node.stop()
        result = subprocess.run(command + ["-a"], capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 1)
        self.assertIn(f"127.0.0.1:{self.port}: unreachable", result.stdout)
        self.assertIn("total unknown: none of the 1 nodes answered", result.stdout)  # never "total 0"
        self.assertNotIn("Traceback", result.stdout + result.stderr)
        result = subprocess.run([console_script("txstore-recon"), "--ring-dir", "/nonexistent", "-d"],
                                capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 2)
        self.assertIn("no rings", result.stderr)
