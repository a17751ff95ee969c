"""
Erasure-coded objects as users meet them: an all-in-one of eight nodes whose ``ec`` policy is
4+2 (so two handoffs exist), driven by python-swiftclient and plain HTTP; what the nodes hold
is read from their devices.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import json
import os
import re
import signal
import subprocess
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from swiftclient import client as swift
from twisted.trial.unittest import SynchronousTestCase

from txstore.storage import objmeta, partitions
from txstore.test.support import console_script
from txstore.test.integration.test_proxy_integration import Cluster

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
        if not self.cluster.stop_node(number, signal.SIGKILL, timeout=30):
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

    def test_a_body_of_known_length_is_made_durable_on_its_connections(self) -> None:
        """
        Known length: the durable mark rides on each archive PUT's connection (no POST to any
        node); chunked: the footer as trailers and a durable POST per node. Both durable.
        """
        def posts() -> int:
            time.sleep(1)  # access lines reach the log within half a second
            return sum(line.count(" POST /d") for path in (self.cluster.root / "log").glob("node*.log")
                       for line in path.read_text().splitlines())

        before = posts()
        body = os.urandom(3 * SEGMENT // 2)
        swift.put_object(self.url, self.token, "ec", "known", body)
        self.assertEqual(posts(), before)
        conn = http.client.HTTPConnection("127.0.0.1", self.cluster.port, timeout=60)
        conn.request("PUT", "/v1/AUTH_test/ec/chunked", body=iter([body[:1000], body[1000:]]),
                     headers={"X-Auth-Token": self.token, "Transfer-Encoding": "chunked"}, encode_chunked=True)
        response = conn.getresponse()
        response.read()
        conn.close()
        self.assertEqual(response.status, 201)
        self.assertEqual(posts(), before + 6)
        for name in ("known", "chunked"):
            self.assertEqual(swift.get_object(self.url, self.token, "ec", name)[1], body, name)
            archives = self.archives(name)
            self.assertEqual(len(archives), 6, name)
            self.assertTrue(all(len(files) == 1 and files[0].endswith("#d.data") for files in archives.values()), archives)

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

    def test_archives_of_another_codec_are_refused_not_decoded(self) -> None:
        """Another backend decodes fragments into wrong bytes without an error: a 503 says why."""
        body = os.urandom(SEGMENT + 100)
        swift.put_object(self.url, self.token, "ec", "o", body)
        digest = self.object_hash("o")
        paths = list((self.cluster.root / "srv").glob(f"node*/d*/objects-2/*/*/{digest}/*.data"))
        self.assertEqual(len(paths), 6)  # 4+2 on eight nodes
        scheme = read_archive(paths[0])[1]["X-Object-Sysmeta-Ec-Scheme"]
        for path in paths:  # as if the policy's ec_type had been changed since
            archive, metadata = read_archive(path)
            other = {**metadata, "X-Object-Sysmeta-Ec-Scheme": "another_backend 4+2"}
            path.write_bytes(archive + objmeta.encode_footer(other))
        status, _, got = self.get("o")
        self.assertEqual(status, 503)
        self.assertIn(b"'another_backend 4+2'", got)
        self.assertIn(repr(scheme).encode(), got)

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


class ReconstructorDrills(ECCase):
    """
    The reconstructor's drills on real processes (each node runs it every 10 s): what it rebuilds
    or moves is read back from the devices and compared byte for byte with what was there.
    """

    def archive_paths(self, name: str) -> dict[int, list[Path]]:
        """The archive files of object ``ec/<name>`` on every node, by node number."""
        wanted = self.object_hash(name)
        found: dict[int, list[Path]] = {}
        for path in sorted((self.cluster.root / "srv").glob(f"node*/d*/objects-2/*/*/{wanted}/*.data")):
            found.setdefault(int(re.match(r"node(\d+)", path.parts[-7]).group(1)), []).append(path)
        return found

    def archive_on(self, node: int, name: str, file_name: str, body: bytes, watched: list[int]) -> tuple[bool, str]:
        """Whether ``node`` holds ``file_name`` with ``body``; else what it holds, and the passes of ``watched``."""
        seen = []
        for path in self.archive_paths(name).get(node, []):
            try:
                held, _ = read_archive(path)
            except FileNotFoundError:
                continue  # moved meanwhile
            if path.name == file_name and held == body:
                return True, ""
            seen.append(f"{path.name} ({len(held)} bytes, md5 {hashlib.md5(held).hexdigest()})")
        passes = "; ".join(f"node {n}: {self.recon(n)}" for n in watched)
        return False, (f"node {node} holds {seen or 'nothing'}, not {file_name} ({len(body)} bytes,"
                       f" md5 {hashlib.md5(body).hexdigest()}); last reconstructor passes: {passes}")

    def recon(self, number: int) -> str:
        """Node ``number``'s last reconstructor pass, for failure messages."""
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.cluster.port + 10 * number, timeout=5)
            conn.request("GET", "/recon/object-reconstructor")
            return conn.getresponse().read().decode()
        except OSError as error:
            return f"(recon: {error})"

    def wait_for(self, what: str, found, timeout: float = 60.0) -> None:
        """Poll ``found()`` (→ (done, what was found)) until done; fail with what was found last."""
        deadline = time.monotonic() + timeout
        while True:
            done, seen = found()
            if done:
                return
            if time.monotonic() > deadline:
                self.fail(f"{what}: not within {timeout:.0f}s; {seen}")
            time.sleep(0.3)

    def recon_pass(self, number: int) -> dict:
        """Node ``number``'s last reconstructor pass as recon reports it ({} before the first)."""
        try:
            return json.loads(self.recon(number)).get("last_pass", {})
        except ValueError:
            return {}

    def started_after(self, number: int, moment: float) -> bool:
        """Whether node ``number``'s last reconstructor pass started after ``moment`` (a time.time())."""
        last = self.recon_pass(number)
        return "finished_at" in last and last["finished_at"] - last.get("duration", 0) > moment

    def assert_decoded_with(self, name: str, body: bytes, down: list[int]) -> None:
        """With the primaries ``down`` stopped, the four archives left are what a GET decodes."""
        for number in down:
            self.stop_node(number)
        got = swift.get_object(self.url, self.token, "ec", name)[1]
        self.assertTrue(got == body, f"{len(got)} bytes, md5 {hashlib.md5(got).hexdigest()}, not the PUT's")

    def stored_archive(self, index: int):
        """PUT ``o`` (two segments and a short third) and read archive ``index`` off its primary:
        the body, the object's hash, its primaries, that node, the archive's path, body and metadata."""
        body = os.urandom(2 * SEGMENT + SEGMENT // 2 + 7)
        swift.put_object(self.url, self.token, "ec", "o", body)
        digest, primaries, _ = self.placement("o")
        node = primaries[index]
        [path] = self.archive_paths("o")[node]
        original, metadata = read_archive(path)
        return body, digest, primaries, node, path, original, metadata

    def test_a_deleted_archive_is_rebuilt_with_the_same_bytes(self) -> None:
        """A lost archive comes back as it was: every segment rebuilt, the short last one too."""
        body, _, primaries, node, path, original, metadata = self.stored_archive(2)
        partition = path.parents[2]
        # Once the node has hashed the partition, a file removed behind its back is found by the
        # daily full re-hash (txstore.storage.partitions); removing hashes.json with the file
        # (under the partition's lock, as get_hashes holds it) makes the next re-hash that one.
        self.wait_for(f"node {node} hashing partition {partition.name}",
                      lambda: (path.parent.parent.name in read_hashes(partition), read_hashes(partition)))
        with partition_locked(partition):
            path.unlink()
            (partition / partitions.HASHES_FILE).unlink()
        self.wait_for(f"archive 2 rebuilt on node {node}",
                      lambda: self.archive_on(node, "o", path.name, original, primaries[1:4]))
        self.assertEqual(read_archive(path)[1], metadata)
        self.assertEqual(sorted(self.archive_paths("o")), sorted(primaries))  # and nowhere else
        self.assert_decoded_with("o", body, primaries[:2])

    def test_a_bit_flipped_archive_is_quarantined_then_rebuilt(self) -> None:
        """Bit rot is the auditor's to find; the reconstructor then restores the original bytes."""
        body, digest, primaries, node, path, original, _ = self.stored_archive(3)
        self.stop_node(node)
        offset = len(original) // 2  # in the second segment's fragment
        with open(path, "r+b") as file:
            file.seek(offset)
            file.write(bytes([original[offset] ^ 0x10]))
        flipped, _ = read_archive(path)  # the footer still checks out: only the archive's checksum tells
        self.assertEqual(sum(a != b for a, b in zip(flipped, original)), 1)
        # The aio's auditor passes every 60 s: the node comes back (by hand, as an operator
        # would) with its conf saying every second.
        conf = self.cluster.root / "etc" / f"node{node}.conf"
        text = conf.read_text()
        self.assertIn("[object-auditor]\ninterval = 60\n", text)
        conf.write_text(text.replace("[object-auditor]\ninterval = 60\n", "[object-auditor]\ninterval = 1\n"))
        self.start_node(node)
        quarantined = self.cluster.root / "srv" / f"node{node}" / f"d{node}" / "quarantined" / "objects" / digest
        self.wait_for(f"node {node}'s auditor quarantining {digest}",
                      lambda: (quarantined.is_dir(), f"{sorted(p.name for p in quarantined.parent.glob('*'))}"
                                                     f" in {quarantined.parent}"))
        self.assertEqual(read_archive(quarantined / path.name)[0], flipped)
        self.wait_for(f"archive 3 rebuilt on node {node}",
                      lambda: self.archive_on(node, "o", path.name, original, primaries[2:5]))
        self.assert_decoded_with("o", body, primaries[:2])

    def test_a_primary_down_during_a_write_catches_up_and_the_handoff_lets_go(self) -> None:
        """
        The archive a PUT could not give its primary waits on a handoff (kept while the primary
        is down); once the primary is back it holds that archive (reverted from the handoff, or
        rebuilt by its neighbours: the same bytes) and the handoff no longer does.
        """
        _, primaries, handoffs = self.placement("o")
        node = primaries[3]
        self.stop_node(node)
        body = os.urandom(2 * SEGMENT + SEGMENT // 2 + 7)
        swift.put_object(self.url, self.token, "ec", "o", body)
        written = time.time()  # a pass that began during the PUT may have listed no archive yet
        held = {n: [p.name for p in paths] for n, paths in self.archive_paths("o").items()}
        holders = [n for n in handoffs if any(re.match(r"^\d+\.\d+#3#d\.data$", f) for f in held.get(n, []))]
        self.assertEqual(len(holders), 1, f"archive 3 on handoffs {holders} of {handoffs}: {held}")
        [handoff] = holders
        self.assertNotIn(node, held)
        [path] = self.archive_paths("o")[handoff]
        archive, metadata = read_archive(path)
        self.assertEqual((metadata["X-Object-Sysmeta-Ec-Frag-Index"], metadata["ETag"]),
                         ("3", f"crc32:{zlib.crc32(archive):08x}"))
        # A whole pass of the handoff while the primary is down: it fails to send, and keeps it.
        self.wait_for(f"a reconstructor pass of handoff node {handoff} started after the PUT",
                      lambda: (self.started_after(handoff, written), self.recon_pass(handoff)))
        self.assertEqual(self.archive_paths("o").get(handoff), [path])
        self.assertGreater(self.recon_pass(handoff).get("failures", 0), 0)

        self.start_node(node)

        def home() -> tuple[bool, str]:
            on_primary, seen = self.archive_on(node, "o", path.name, archive, [handoff, *primaries[2:5]])
            left = [p.name for p in self.archive_paths("o").get(handoff, [])]
            return on_primary and not left, f"{seen or f'node {node} holds it'}; handoff node {handoff} holds {left}"

        self.wait_for(f"archive 3 on node {node} and gone from handoff node {handoff}", home)
        self.assertEqual(sorted(self.archive_paths("o")), sorted(primaries))
        self.assert_decoded_with("o", body, primaries[:2])


def read_archive(path: Path) -> tuple[bytes, dict[str, str]]:
    """An archive file's body and metadata, split where its footer (`objmeta`) says."""
    with open(path, "rb") as file:
        footer = objmeta.read_footer(file.fileno())
        return file.read(footer.body_length), footer.metadata


def read_hashes(partition: Path) -> dict:
    """A partition's cached suffix hashes ({} when there are none)."""
    try:
        return json.loads((partition / partitions.HASHES_FILE).read_text()).get("hashes", {})
    except (FileNotFoundError, ValueError):
        return {}


@contextmanager
def partition_locked(partition: Path) -> Iterator[None]:
    """Hold a partition's lock, as `partitions.get_hashes` does while it reads and writes hashes."""
    fd = os.open(partition / partitions.LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
