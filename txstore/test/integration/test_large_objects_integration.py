"""
Large objects as users meet them: the ``swift`` command-line client's segmented uploads (static
manifests by default, dynamic with ``--use-dlo``) against an all-in-one whose largest object is
2 MiB, so a 5 MB file can only be stored in segments.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from txstore.test.integration.test_proxy_integration import Cluster, ClusterCase

LIMIT = 2 * 1024 * 1024


class SegmentedUploadTests(ClusterCase):
    def setUp(self) -> None:
        self.cluster = Cluster(Path(self.mktemp()).absolute() / "aio", "--max-file-size", str(LIMIT))
        self.addCleanup(self.cluster.stop)
        self.cluster.start()
        self.work = Path(self.mktemp())
        self.work.mkdir()
        self.data = os.urandom(5_000_000)
        (self.work / "big.bin").write_bytes(self.data)

    def run_cli(self, *args: str):
        return self.cluster.swift_cli(*args, cwd=str(self.work))

    def round_trip(self, *upload_options: str) -> None:
        too_big = self.run_cli("upload", "C", "big.bin")
        self.assertNotEqual(too_big.returncode, 0)
        self.assertIn("413", too_big.stderr)
        upload = self.run_cli("upload", "--segment-size", "1048576", *upload_options, "C", "big.bin")
        self.assertEqual(upload.returncode, 0, upload.stderr)
        download = self.run_cli("download", "C", "big.bin", "-o", "copy.bin")
        self.assertEqual(download.returncode, 0, download.stderr)
        self.assertEqual(hashlib.md5((self.work / "copy.bin").read_bytes()).hexdigest(),
                         hashlib.md5(self.data).hexdigest())
        url, token = self.cluster.token()
        status, headers, body = self.cluster.http("GET", "/v1/AUTH_test/C/big.bin",
                                                  {"X-Auth-Token": token, "Range": "bytes=1048000-2097999"})
        self.assertEqual((status, headers["content-length"]), (206, "1050000"))
        self.assertEqual(body, self.data[1048000:2098000])  # across the first segment boundary
        self.assertEqual(self.run_cli("list", "C_segments").stdout.count("\n"), 5)
        delete = self.run_cli("delete", "C", "big.bin")
        self.assertEqual(delete.returncode, 0, delete.stderr)
        self.assertEqual(self.run_cli("list", "C_segments").stdout, "")  # the segments went too
        self.assertEqual(self.run_cli("list", "C").stdout, "")

    def test_static_large_object_round_trip(self) -> None:
        self.round_trip()

    def test_dynamic_large_object_round_trip(self) -> None:
        self.round_trip("--use-dlo")

    def test_static_manifest_details(self) -> None:
        self.assertEqual(self.run_cli("upload", "--segment-size", "1048576", "C", "big.bin").returncode, 0)
        url, token = self.cluster.token()
        status, headers, _ = self.cluster.http("HEAD", "/v1/AUTH_test/C/big.bin", {"X-Auth-Token": token})
        self.assertEqual((status, headers["content-length"], headers["x-static-large-object"]),
                         (200, "5000000", "True"))
        etag = headers["etag"]
        status, _, body = self.cluster.http("GET", "/v1/AUTH_test/C?format=json", {"X-Auth-Token": token})
        [entry] = json.loads(body)
        self.assertEqual(entry["bytes"], 5_000_000)  # the large object's size, not the manifest's
        self.assertEqual(entry["slo_etag"], etag)  # quoted in both, as Swift has them
        status, _, _ = self.cluster.http("GET", "/v1/AUTH_test/C/big.bin",
                                         {"X-Auth-Token": token, "If-None-Match": etag})
        self.assertEqual(status, 304)
        # ?part-number=: one segment of the whole, as S3's part reads take it (5 parts of 1 MiB, then the rest)
        status, headers, body = self.cluster.http("GET", "/v1/AUTH_test/C/big.bin?part-number=2",
                                                  {"X-Auth-Token": token})
        self.assertEqual((status, headers["content-range"], headers["x-parts-count"], headers["etag"]),
                         (206, "bytes 1048576-2097151/5000000", "5", etag))
        self.assertEqual(body, self.data[1048576:2097152])
        self.assertEqual(self.cluster.http("HEAD", "/v1/AUTH_test/C/big.bin?part-number=6",
                                           {"X-Auth-Token": token})[0], 416)
        # a client cannot forge a manifest
        status, _, body = self.cluster.http("PUT", "/v1/AUTH_test/C/forged", {
            "X-Auth-Token": token, "X-Static-Large-Object": "True", "Content-Length": "2"}, b"[]")
        self.assertEqual(status, 400, body)
