"""
Temporary URLs on a real all-in-one (``txstore-aio``): URLs made by the ``swift tempurl``
command of python-swiftclient (each digest, prefix-based, ISO 8601, IP range), fetched with
curl and urllib without a token; account and container keys, their scope over a large
object's segments, a new key taking effect at once, and the container keys hidden from a
user who may only read.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request

from swiftclient import client as swift

from txstore.test.integration.test_proxy_integration import ClusterCase

INVALID = b"401 Unauthorized: Temp URL invalid\n"


class TempURLTests(ClusterCase):
    def setUp(self) -> None:
        super().setUp()
        self.url, self.token = self.cluster.token()
        swift.put_container(self.url, self.token, "c")
        swift.put_object(self.url, self.token, "c", "report.txt", contents=b"the report\n",
                         headers={"X-Object-Meta-Private": "p", "X-Object-Meta-Public-Tag": "t"})

    def tempurl(self, method: str, seconds: str, path: str, key: str, *options: str) -> str:
        made = self.cluster.swift_cli("tempurl", *options, method, seconds,
                                      f"http://127.0.0.1:{self.cluster.port}{path}", key)
        self.assertEqual(made.returncode, 0, made.stderr)
        return made.stdout.strip()

    def fetch(self, url: str, method: str = "GET", data: bytes | None = None) -> tuple[int, dict, bytes]:
        request = urllib.request.Request(url, data=data, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        except urllib.error.HTTPError as err:
            return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()

    def curl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["curl", "-s", "-S", *args], capture_output=True, timeout=60)

    def test_account_key_urls_from_the_swift_cli(self) -> None:
        posted = self.cluster.swift_cli("post", "-m", "Temp-URL-Key:account-secret")
        self.assertEqual(posted.returncode, 0, posted.stderr)
        info = json.loads(self.fetch(f"http://127.0.0.1:{self.cluster.port}/info")[2])
        self.assertEqual(info["tempurl"]["allowed_digests"], ["sha1", "sha256", "sha512"])
        self.assertEqual(info["tempurl"]["methods"], ["GET", "HEAD", "PUT", "POST", "DELETE"])
        path = "/v1/AUTH_test/c/report.txt"
        for digest in ("sha1", "sha256", "sha512"):
            url = self.tempurl("GET", "3600", path, "account-secret", "--digest", digest)
            status, headers, body = self.fetch(url)
            self.assertEqual((status, body), (200, b"the report\n"), digest)
            self.assertEqual(headers["content-disposition"], "attachment; filename=\"report.txt\"; "
                                                             "filename*=UTF-8''report.txt")
            self.assertIn("expires", headers)
            self.assertNotIn("x-object-meta-private", headers)
            self.assertEqual(headers["x-object-meta-public-tag"], "t")
        url = self.tempurl("GET", "3600", path, "account-secret")
        # curl: inline, a filename; the signature covers no other method or object
        shown = self.curl("-D", "-", "-o", "/dev/null", url + "&inline&filename=Mine.txt").stdout.decode()
        self.assertIn("Content-Disposition: inline; filename=\"Mine.txt\"; filename*=UTF-8''Mine.txt", shown)
        self.assertEqual(self.fetch(url, "DELETE")[:3:2], (401, INVALID))
        self.assertEqual(self.fetch(url.replace("report.txt", "other"))[:3:2], (401, INVALID))
        self.assertEqual(self.fetch(url.replace("temp_url_expires=", "temp_url_expires=1"))[0], 401)
        self.assertEqual(self.fetch(url, "HEAD")[0], 200)  # HEAD by a GET signature
        # ISO 8601, an expired one, a prefix, an IP range
        self.assertEqual(self.fetch(self.tempurl("GET", "3600", path, "account-secret", "--iso8601"))[0], 200)
        past = str(int(time.time()) - 10)
        self.assertEqual(self.fetch(self.tempurl("GET", past, path, "account-secret", "--absolute"))[:3:2],
                         (401, INVALID))
        swift.put_object(self.url, self.token, "c", "docs/a", contents=b"A")
        prefixed = self.tempurl("GET", "3600", "/v1/AUTH_test/c/docs/", "account-secret", "--prefix-based")
        self.assertEqual(self.fetch(prefixed.replace("/c/docs/?", "/c/docs/a?"))[2], b"A")
        self.assertEqual(self.fetch(prefixed.replace("/c/docs/?", "/c/report.txt?"))[0], 401)
        ranged = self.tempurl("GET", "3600", path, "account-secret", "--ip-range", "127.0.0.0/8")
        self.assertEqual(self.fetch(ranged)[0], 200)
        elsewhere = self.tempurl("GET", "3600", path, "account-secret", "--ip-range", "10.0.0.0/8")
        self.assertEqual(self.fetch(elsewhere)[0], 401)
        # a PUT URL: upload with curl, then HEAD it with the same URL; no manifest through it
        put = self.tempurl("PUT", "3600", "/v1/AUTH_test/c/upload.bin", "account-secret")
        uploaded = self.curl("-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", "--data-binary", "uploaded bytes",
                             put)
        self.assertEqual(uploaded.stdout, b"201", uploaded.stderr)
        self.assertEqual(swift.get_object(self.url, self.token, "c", "upload.bin")[1], b"uploaded bytes")
        self.assertEqual(self.fetch(put, "HEAD")[0], 200)
        self.assertEqual(self.fetch(put, "PUT", b"again")[0], 201)
        request = urllib.request.Request(put, data=b"", method="PUT", headers={"X-Object-Manifest": "c/docs"})
        with self.assertRaises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        self.assertEqual(refused.exception.code, 400)
        # a new key: the old URLs stop at once (the proxy's cached account info is forgotten)
        self.assertEqual(self.cluster.swift_cli("post", "-m", "Temp-URL-Key:rotated").returncode, 0)
        self.assertEqual(self.fetch(url)[0], 401)
        self.assertEqual(self.fetch(self.tempurl("GET", "3600", path, "rotated"))[0], 200)

    def test_container_keys_and_their_scope(self) -> None:
        swift.post_container(self.url, self.token, "c", {"X-Container-Meta-Temp-URL-Key": "c-secret",
                                                         "X-Container-Read": "test:tester3"})
        swift.put_container(self.url, self.token, "segments")
        swift.put_object(self.url, self.token, "segments", "part1", contents=b"one ")
        swift.put_object(self.url, self.token, "segments", "part2", contents=b"two")
        swift.put_object(self.url, self.token, "c", "part1", contents=b"ONE ")
        swift.put_object(self.url, self.token, "c", "part2", contents=b"TWO")
        swift.put_object(self.url, self.token, "c", "outside", contents=b"",
                         headers={"X-Object-Manifest": "segments/part"})
        swift.put_object(self.url, self.token, "c", "inside", contents=b"", headers={"X-Object-Manifest": "c/part"})
        slo = json.dumps([{"path": "/c/part1"}, {"path": "/c/part2"}])
        swift.put_object(self.url, self.token, "c", "static", contents=slo,
                         query_string="multipart-manifest=put")
        url = self.tempurl("GET", "3600", "/v1/AUTH_test/c/report.txt", "c-secret")
        self.assertEqual(self.fetch(url)[2], b"the report\n")
        self.assertEqual(self.fetch(self.tempurl("GET", "3600", "/v1/AUTH_test/c/inside", "c-secret"))[2],
                         b"ONE TWO")
        self.assertEqual(self.fetch(self.tempurl("GET", "3600", "/v1/AUTH_test/c/static", "c-secret"))[2],
                         b"ONE TWO")
        # segments in another container are outside a container key's reach
        outside = self.tempurl("GET", "3600", "/v1/AUTH_test/c/outside", "c-secret")
        self.assertEqual(self.fetch(outside)[0], 401)
        self.assertEqual(self.fetch(outside, "HEAD")[0], 401)
        self.assertEqual(self.fetch(self.tempurl("GET", "3600", "/v1/AUTH_test/segments/part1", "c-secret"))[0],
                         401)
        # the owner sees the key; a user the container lets read does not
        self.assertEqual(swift.head_container(self.url, self.token, "c")["x-container-meta-temp-url-key"], "c-secret")
        url3, token3 = self.cluster.token("test:tester3", "testing3")
        headers = swift.head_container(url3, token3, "c")
        self.assertNotIn("x-container-meta-temp-url-key", headers)
