"""
Bandwidth-aware selection on an all-in-one: while a large GET streams, the node serving it
reports its device's read bandwidth at ``/recon/bandwidth``, and object answers carry the
device's load figure. Polled with a deadline, every request with a timeout.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from pathlib import Path

from swiftclient import client as swift
from twisted.trial.unittest import SynchronousTestCase

from txstore.test.integration.test_proxy_integration import Cluster

MiB = 1024 * 1024
SIZE = 48 * MiB


def get_json(port: int, path: str):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


class SelectionIntegrationTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.cluster = Cluster(Path(self.mktemp()).absolute() / "aio", nodes=3)
        self.addCleanup(self.cluster.stop)
        self.cluster.start()
        self.url, self.token = self.cluster.token()
        self.node_ports = [self.cluster.port + 10 * number for number in (1, 2, 3)]

    def test_a_streaming_get_shows_in_recon_bandwidth(self) -> None:
        swift.put_container(self.url, self.token, "sel")
        swift.put_object(self.url, self.token, "sel", "big", contents=b"b" * SIZE)
        done = threading.Event()
        received = []

        def slow_reader() -> None:
            # About 16 MiB/s, so the stream lasts some seconds; the socket times out if the proxy stalls.
            conn = http.client.HTTPConnection("127.0.0.1", self.cluster.port, timeout=30)
            try:
                conn.request("GET", self.url.removeprefix(f"http://127.0.0.1:{self.cluster.port}") + "/sel/big",
                             headers={"X-Auth-Token": self.token})
                response = conn.getresponse()
                while not done.is_set() and (piece := response.read(MiB)):
                    received.append(len(piece))
                    time.sleep(1 / 16)
            finally:
                conn.close()

        reader = threading.Thread(target=slow_reader, daemon=True)
        reader.start()
        self.addCleanup(reader.join, 60)
        self.addCleanup(done.set)
        seen = None
        deadline = time.monotonic() + 20
        while seen is None and time.monotonic() < deadline and reader.is_alive():
            for port in self.node_ports:
                status, report = get_json(port, "/recon/bandwidth")
                self.assertEqual(status, 200)
                self.assertEqual(set(report), {"interval", "devices", "tenants"})
                for device, figures in report["devices"].items():
                    if figures["read_bps"] > 0 and figures["streams"] >= 1:
                        seen = (port, device, figures, report["tenants"])
            time.sleep(0.25)
        self.assertIsNotNone(seen, "no node reported the GET's reads")
        port, device, figures, tenants = seen
        self.assertGreater(figures["load"], 0.0)
        self.assertEqual(set(figures), {"read_bps", "write_bps", "queued", "running", "streams", "slowness", "load"})
        self.assertIn("AUTH_test", tenants)
        self.assertGreater(tenants["AUTH_test"]["bps"], 0.0)
        # the node's object answers tell its device's load
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("HEAD", f"/{device}/0/AUTH_test/sel/nothing-here")
            response = conn.getresponse()
            response.read()
            self.assertIsNotNone(response.getheader("X-Backend-Device-Load"))
            float(response.getheader("X-Backend-Device-Load"))
        finally:
            conn.close()
        done.set()
        reader.join(60)
        self.assertFalse(reader.is_alive())
