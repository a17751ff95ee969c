"""
Erasure-coded objects as users meet them: an all-in-one of eight nodes whose ``ec`` policy is
4+2 (so two handoffs exist), driven by python-swiftclient and plain HTTP; what the nodes hold
is read from their devices.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from swiftclient import client as swift
from twisted.trial.unittest import SynchronousTestCase

from txstore.test.support import console_script
from txstore.test.test_proxy_integration import Cluster

SEGMENT = 1024 * 1024


class ECCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.cluster = Cluster(Path(self.mktemp()).absolute() / "aio", nodes=8)
        self.addCleanup(self.cluster.stop)
        self.cluster.start()
        self.url, self.token = self.cluster.token()
        swift.put_container(self.url, self.token, "ec", headers={"X-Storage-Policy": "ec"})

    def archives(self, name: str) -> dict[int, list[str]]:
        """The fragment archive files of object ``ec/<name>`` on every node, by node number."""
        found: dict[int, list[str]] = {}
        for path in (self.cluster.root / "srv").glob("node*/d*/objects-2/*/*/*/*.data"):
            node = int(re.match(r"node(\d+)", path.parts[-7]).group(1))
            found.setdefault(node, []).append(path)
        wanted = self.object_hash(name)
        return {node: sorted(p.name for p in paths if p.parent.name == wanted)
                for node, paths in found.items() if any(p.parent.name == wanted for p in paths)}

    def placement(self, name: str) -> tuple[str, list[int], list[int]]:
        """The object's hash, and the node numbers of its primaries (by index) and handoffs."""
        out = subprocess.run(
            [console_script("txstore-ring"), str(self.cluster.root / "etc" / "object-2.ring.gz"), "get-nodes",
             "AUTH_test", "ec", name], capture_output=True, text=True, timeout=60, check=True,
        ).stdout
        digest = re.search(r"^Hash\s+(\w+)", out, re.M).group(1)
        primaries, handoffs = [], []
        for port, role in re.findall(r"^127\.0\.0\.1:(\d+)/d\d+\s+(primary|handoff)", out, re.M):
            number = (int(port) - self.cluster.port) // 10
            (primaries if role == "primary" else handoffs).append(number)
        return digest, primaries, handoffs

    def object_hash(self, name: str) -> str:
        return self.placement(name)[0]

    def stop_node(self, number: int) -> None:
        pid = int((self.cluster.root / "run" / f"node{number}.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        self.fail(f"node {number} did not stop")

    def start_node(self, number: int) -> None:
        self.cluster.start_node(self, number)

    def get(self, name: str, **headers: str):
        return self.cluster.http("GET", f"/v1/AUTH_test/ec/{name}", {"X-Auth-Token": self.token, **headers})


class ECObjectTests(ECCase):
    def test_objects_of_every_shape_round_trip(self) -> None:
        sizes = {"empty": 0, "one": 1, "small": 4096, "segment": SEGMENT, "several": 2 * SEGMENT + SEGMENT // 2 + 7}
        bodies = {name: os.urandom(size) for name, size in sizes.items()}
        for name, body in bodies.items():
            etag = swift.put_object(self.url, self.token, "ec", name, body)
            self.assertEqual(etag, hashlib.md5(body).hexdigest(), name)
        for name, body in bodies.items():
            headers, got = swift.get_object(self.url, self.token, "ec", name)
            self.assertEqual(got, body, name)
            self.assertEqual((headers["etag"], headers["content-length"]), (hashlib.md5(body).hexdigest(), str(len(body))))
            self.assertFalse([h for h in headers if h.startswith("x-object-sysmeta")])
            head = swift.head_object(self.url, self.token, "ec", name)
            self.assertEqual((head["etag"], head["content-length"]), (headers["etag"], str(len(body))))
        _, listing = swift.get_container(self.url, self.token, "ec")
        self.assertEqual({e["name"]: (e["bytes"], e["hash"]) for e in listing},
                         {name: (len(b), hashlib.md5(b).hexdigest()) for name, b in bodies.items()})
        # One durable archive per index, each on its primary: 1.5x the bytes, not 3x.
        digest, primaries, _ = self.placement("several")
        archives = self.archives("several")
        self.assertEqual(sorted(archives), sorted(primaries))
        for index, node in enumerate(primaries):
            [name] = archives[node]
            self.assertRegex(name, rf"^\d+\.\d+#{index}#d\.data$")

        body = bodies["several"]
        for asked, first, last in [("bytes=1048570-1048580", 1048570, 1048580), ("bytes=-5000", len(body) - 5000, len(body) - 1),
                                   ("bytes=2500000-", 2500000, len(body) - 1), ("bytes=0-0", 0, 0)]:
            status, headers, got = self.get("several", Range=asked)
            self.assertEqual((status, got), (206, body[first:last + 1]), asked)
            self.assertEqual(headers["content-range"], f"bytes {first}-{last}/{len(body)}")
        status, headers, got = self.get("several", Range="bytes=0-1,2000000-2000002")
        self.assertEqual(status, 206)
        self.assertIn("multipart/byteranges", headers["content-type"])
        self.assertIn(body[0:2], got)
        self.assertIn(body[2000000:2000003], got)
        status, headers, _ = self.get("several", Range="bytes=9000000-")
        self.assertEqual((status, headers["content-range"]), (416, f"bytes */{len(body)}"))
        etag = hashlib.md5(body).hexdigest()
        self.assertEqual(self.get("several", **{"If-None-Match": etag})[0], 304)
        self.assertEqual(self.get("several", **{"If-Match": "nope"})[0], 412)

        swift.post_object(self.url, self.token, "ec", "small", headers={"X-Object-Meta-Color": "blue"})
        self.assertEqual(swift.head_object(self.url, self.token, "ec", "small")["x-object-meta-color"], "blue")
        self.assertEqual(swift.get_object(self.url, self.token, "ec", "small")[1], bodies["small"])
        swift.delete_object(self.url, self.token, "ec", "several")
        self.assertEqual(self.get("several")[0], 404)

    def test_a_wrong_etag_stores_nothing(self) -> None:
        status, _, _ = self.cluster.http("PUT", "/v1/AUTH_test/ec/o", {"X-Auth-Token": self.token,
                                                                      "ETag": "0" * 32}, b"x" * 5000)
        self.assertEqual(status, 422)
        self.assertEqual(self.get("o")[0], 404)
        self.assertFalse(any(self.archives("o").values()))  # the archives were never committed
        swift.put_object(self.url, self.token, "ec", "o", b"first")
        status, _, _ = self.cluster.http("PUT", "/v1/AUTH_test/ec/o", {"X-Auth-Token": self.token,
                                                                      "If-None-Match": "*"}, b"second")
        self.assertEqual(status, 412)
        self.assertEqual(swift.get_object(self.url, self.token, "ec", "o")[1], b"first")

    def test_two_nodes_down_puts_and_gets_still_succeed(self) -> None:
        _, primaries, handoffs = self.placement("o")
        body = os.urandom(3 * SEGMENT + 123)
        for number in primaries[:2]:
            self.stop_node(number)
        self.assertEqual(swift.put_object(self.url, self.token, "ec", "o", body), hashlib.md5(body).hexdigest())
        self.assertEqual(swift.get_object(self.url, self.token, "ec", "o")[1], body)
        status, _, got = self.get("o", Range=f"bytes={SEGMENT - 10}-{2 * SEGMENT + 10}")
        self.assertEqual((status, got), (206, body[SEGMENT - 10:2 * SEGMENT + 11]))
        # The two archives of the stopped primaries went to the handoffs.
        archives = self.archives("o")
        self.assertEqual(len([n for n in handoffs if archives.get(n)]), 2)
        self.assertEqual(sum(len(files) for files in archives.values()), 6)

    def test_archives_of_two_versions_are_never_decoded_together(self) -> None:
        """A primary that missed the newest version still holds the old one: the newest is served."""
        _, primaries, _ = self.placement("o")
        old, new = os.urandom(SEGMENT + 1000), os.urandom(SEGMENT + 2000)
        swift.put_object(self.url, self.token, "ec", "o", old)
        self.stop_node(primaries[1])
        swift.put_object(self.url, self.token, "ec", "o", new)
        self.start_node(primaries[1])
        for _ in range(3):
            self.assertEqual(swift.get_object(self.url, self.token, "ec", "o")[1], new)
        status, _, got = self.get("o", Range=f"bytes={SEGMENT - 5}-{SEGMENT + 5}")
        self.assertEqual((status, got), (206, new[SEGMENT - 5:SEGMENT + 6]))

    def test_an_archive_that_breaks_off_mid_body_is_replaced(self) -> None:
        body = os.urandom(40 * SEGMENT + 11)
        swift.put_object(self.url, self.token, "ec", "o", body)
        _, primaries, _ = self.placement("o")
        conn = http.client.HTTPConnection("127.0.0.1", self.cluster.port, timeout=60)
        conn.request("GET", "/v1/AUTH_test/ec/o", headers={"X-Auth-Token": self.token})
        response = conn.getresponse()
        got = response.read(2 * SEGMENT)
        self.stop_node(primaries[0])  # the first archive the proxy reads from
        while piece := response.read(SEGMENT):
            got += piece
        conn.close()
        self.assertEqual((response.status, len(got)), (200, len(body)))
        self.assertTrue(got == body)

    def test_a_large_object_streams_in_bounded_memory(self) -> None:
        size = 192 * SEGMENT + 5
        pid = int((self.cluster.root / "run" / "proxy.pid").read_text())
        before = _peak_rss(pid)
        md5 = hashlib.md5()

        def body():
            block = os.urandom(SEGMENT)
            for number in range(size // SEGMENT):
                md5.update(block)
                yield block
            md5.update(b"tail!")
            yield b"tail!"

        conn = http.client.HTTPConnection("127.0.0.1", self.cluster.port, timeout=120)
        conn.request("PUT", "/v1/AUTH_test/ec/big", body=body(),
                     headers={"X-Auth-Token": self.token, "Transfer-Encoding": "chunked"}, encode_chunked=True)
        response = conn.getresponse()
        response.read()
        conn.close()
        self.assertEqual((response.status, response.getheader("etag")), (201, md5.hexdigest()))
        conn = http.client.HTTPConnection("127.0.0.1", self.cluster.port, timeout=120)
        conn.request("GET", "/v1/AUTH_test/ec/big", headers={"X-Auth-Token": self.token})
        response = conn.getresponse()
        got, received = hashlib.md5(), 0
        while piece := response.read(SEGMENT):
            got.update(piece)
            received += len(piece)
        conn.close()
        self.assertEqual((response.status, received, got.hexdigest()), (200, size, md5.hexdigest()))
        grown = _peak_rss(pid) - before
        self.assertLess(grown, 64 * SEGMENT, f"the proxy grew {grown // SEGMENT} MiB for a {size // SEGMENT} MiB object")


def _peak_rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.M).group(1)) * 1024
