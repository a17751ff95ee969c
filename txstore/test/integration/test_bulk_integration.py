"""
bulk on a real all-in-one (``txstore-aio``): archives uploaded by curl (tar.gz into the account,
tar into a container's prefix, XML results, a broken archive and an unknown format), a slow
upload with ``heartbeat=on``, a 64 MiB member that leaves the proxy's peak memory where it was;
``swift delete`` of a container of 60 objects going through ``?bulk-delete`` (counted in the
proxy's access log); bulk deletes by curl; the query strings never becoming plain writes or
deletes (the account is still there); and small limits set in the proxy's ``[filter:bulk]``:
each refusal's result, and what is stored after it.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import time
from pathlib import Path

from swiftclient import client as swift

from txstore.test.integration.test_proxy_integration import ClusterCase

LIMITS = """max_deletes_per_request = 3
max_failed_deletes = 2
max_containers_per_extraction = 2
max_failed_extractions = 2
"""
LONG = "n" * 1100  # an object name the proxy refuses (400: longer than 1024 bytes)


def archive(files: dict[str, bytes], compression: str = "") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=f"w:{compression}") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


class BulkTests(ClusterCase):
    def setUp(self) -> None:
        super().setUp()
        self.url, self.token = self.cluster.token()
        self.work = Path(self.mktemp()).absolute()
        os.makedirs(self.work)

    def curl(self, method: str, path: str, body: bytes | None = None, *args: str,
             token: bool = True) -> tuple[int, bytes]:
        """(status, body) of a request by curl, the body sent from a file."""
        command = ["curl", "-s", "-o", str(self.work / "out"), "-w", "%{http_code}", "-X", method, *args]
        if token:
            command += ["-H", f"X-Auth-Token: {self.token}"]
        if body is not None:
            (self.work / "in").write_bytes(body)
            command += ["--data-binary", f"@{self.work / 'in'}"]
        done = subprocess.run([*command, f"http://127.0.0.1:{self.cluster.port}{path}"], capture_output=True,
                              timeout=120)
        return int(done.stdout), (self.work / "out").read_bytes()

    def names(self, container: str) -> list[str]:
        return [o["name"] for o in swift.get_container(self.url, self.token, container)[1]]

    def result(self, method: str, path: str, body: bytes) -> dict:
        """The JSON result of a bulk request by curl (always a 200)."""
        status, answer = self.curl(method, path, body, "-H", "Accept: application/json")
        self.assertEqual(status, 200, answer)
        return json.loads(answer)

    def log_lines(self) -> list[str]:
        return (self.cluster.root / "log" / "proxy.log").read_text().splitlines()

    def test_extract_archive(self) -> None:
        files = {"photos/a.jpg": b"a" * 10, "photos/sub/b.png": b"b" * 20000, "docs/c.txt": b"c", "loose": b"x"}
        status, body = self.curl("PUT", "/v1/AUTH_test?extract-archive=tar.gz", archive(files, "gz"),
                                 "-H", "Accept: application/json")
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body), {"Response Status": "201 Created", "Response Body": "",
                                            "Number Files Created": 3, "Errors": []})
        self.assertEqual(self.names("photos"), ["a.jpg", "sub/b.png"])
        self.assertEqual(swift.get_object(self.url, self.token, "photos", "sub/b.png")[1], b"b" * 20000)
        self.assertEqual(self.names("docs"), ["c.txt"])
        # into a container's prefix, the result in XML
        status, body = self.curl("PUT", "/v1/AUTH_test/docs/in/?extract-archive=tar", archive({"x": b"1", "y/z": b"2"}),
                                 "-H", "Accept: text/xml")
        self.assertEqual(status, 200)
        self.assertIn(b"<number_files_created>2</number_files_created>", body)
        self.assertEqual(self.names("docs"), ["c.txt", "in/x", "in/y/z"])
        # refusals: nothing stored
        status, body = self.curl("PUT", "/v1/AUTH_test?extract-archive=tar.bz2", b"not bzip2" * 100,
                                 "-H", "Accept: application/json")
        result = json.loads(body)
        self.assertEqual((status, result["Response Status"]), (200, "400 Bad Request"))
        self.assertTrue(result["Response Body"].startswith("Invalid Tar File"))
        self.assertEqual(self.curl("PUT", "/v1/AUTH_test?extract-archive=zip", b"x"),
                         (400, b"Unsupported archive format"))
        status, body = self.curl("PUT", "/v1/AUTH_test?extract-archive=tar", archive({"new/o": b"1"}), token=False)
        self.assertEqual(status, 200)
        self.assertIn(b"Response Status: 401 Unauthorized", body)
        self.assertEqual(sorted(c["name"] for c in swift.get_account(self.url, self.token)[1]), ["docs", "photos"])

    def test_a_slow_upload_with_heartbeats_and_a_large_member(self) -> None:
        files = {"slow/big": os.urandom(1 << 20), "slow/small": b"s"}
        status, body = self.curl("PUT", "/v1/AUTH_test?extract-archive=tar&heartbeat=on", archive(files),
                                 "--limit-rate", "300k", "-H", "Accept: application/json")
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["Number Files Created"], 2)
        self.assertEqual(swift.get_object(self.url, self.token, "slow", "big")[1], files["slow/big"])
        # 64 MiB in one member: the proxy's peak memory grows by far less
        pid = int((self.cluster.root / "run" / "proxy.pid").read_text())
        peak = lambda: int([line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines()  # noqa
                            if line.startswith("VmHWM")][0]) * 1024
        before = peak()
        with tarfile.open(self.work / "big.tar", "w") as tar:
            data = os.urandom(1 << 20) * 64
            info = tarfile.TarInfo("large/member")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        del data
        done = subprocess.run(["curl", "-s", "-X", "PUT", "-H", f"X-Auth-Token: {self.token}", "-H",
                               "Accept: application/json", "-T", str(self.work / "big.tar"),
                               f"http://127.0.0.1:{self.cluster.port}/v1/AUTH_test?extract-archive=tar"],
                              capture_output=True, timeout=120)
        self.assertEqual(json.loads(done.stdout)["Number Files Created"], 1)
        self.assertEqual(int(swift.head_object(self.url, self.token, "large", "member")["content-length"]), 64 << 20)
        self.assertLess(peak() - before, 24 << 20)

    def test_swift_delete_uses_bulk_delete(self) -> None:
        for number in range(60):
            (self.work / f"f{number}").write_bytes(b"%d" % number)
        uploaded = self.cluster.swift_cli("upload", "many", *(f"f{n}" for n in range(60)), cwd=str(self.work))
        self.assertEqual(uploaded.returncode, 0, uploaded.stderr)
        self.assertEqual(len(self.names("many")), 60)
        before = len(self.log_lines())
        deleted = self.cluster.swift_cli("delete", "many")
        self.assertEqual(deleted.returncode, 0, deleted.stderr)
        deadline = time.monotonic() + 10  # access lines reach the file within half a second
        while True:
            lines = self.log_lines()[before:]
            if sum(line.endswith(" BD") for line in lines) >= 60 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        bulk_posts = [line for line in lines if " POST /v1/AUTH_test?bulk-delete 200 " in line]
        sub_deletes = [line for line in lines if " DELETE /v1/AUTH_test/many/f" in line and line.endswith(" BD")]
        client_deletes = [line for line in lines if " DELETE /v1/AUTH_test/many/f" in line and not line.endswith(" BD")]
        self.assertGreater(len(bulk_posts), 0)
        self.assertEqual((len(sub_deletes), len(client_deletes)), (60, 0))
        self.assertNotIn("many", [c["name"] for c in swift.get_account(self.url, self.token)[1]])

    def test_bulk_delete_and_no_plain_destruction(self) -> None:
        swift.put_container(self.url, self.token, "c")
        for name in ("a", "b c", "\u00e9"):
            swift.put_object(self.url, self.token, "c", name, contents=b"x")
        status, body = self.curl("DELETE", "/v1/AUTH_test?bulk-delete", b"/c/a\nc/b%20c\n/c/%C3%A9\n/c/gone\n")
        self.assertEqual(status, 200)
        self.assertEqual(body.decode().splitlines(), ["Number Deleted: 3", "Number Not Found: 1", "Response Body: ",
                                                      "Response Status: 200 OK", "Errors:"])
        self.assertEqual(self.names("c"), [])
        # without a token: 401 inside, nothing deleted
        swift.put_object(self.url, self.token, "c", "kept", contents=b"x")
        status, body = self.curl("POST", "/v1/AUTH_test?bulk-delete", b"/c/kept\n", "-H", "Accept: application/json",
                                 token=False)
        self.assertEqual(json.loads(body)["Response Status"], "401 Unauthorized")
        # the query strings never turn into plain deletes or writes
        self.assertEqual(self.curl("DELETE", "/v1/AUTH_test?bulk-delete", b"")[0], 200)
        self.assertEqual(self.curl("DELETE", "/v1/AUTH_test/c/kept?extract-archive=tar")[0], 405)
        self.assertEqual(self.curl("DELETE", "/v1/AUTH_test/c?extract-archive=tar")[0], 405)
        self.assertEqual(self.curl("PUT", "/v1/AUTH_test/c/new?bulk-delete", b"x")[0], 405)
        _, reseller = self.cluster.token("admin:admin", "admin")
        self.token = reseller
        self.assertEqual(self.curl("DELETE", "/v1/AUTH_test?bulk-delete", b"")[0], 200)
        self.assertEqual(self.names("c"), ["kept"])
        self.assertEqual(swift.head_account(self.url, self.token)["x-account-container-count"], "1")

    def test_the_configured_limits(self) -> None:
        self.restart_proxy("bulk", LIMITS)
        self.url, self.token = self.cluster.token()
        info = json.loads(self.curl("GET", "/info", token=False)[1])
        self.assertEqual((info["bulk_delete"], info["bulk_upload"]),
                         ({"max_deletes_per_request": 3, "max_failed_deletes": 2},
                          {"max_containers_per_extraction": 2, "max_failed_extractions": 2}))
        swift.put_container(self.url, self.token, "keep")
        swift.put_container(self.url, self.token, "empty")
        for name in "abcd":
            swift.put_object(self.url, self.token, "keep", name, contents=name.encode())

        # more names than max_deletes_per_request: 413, read before any delete
        result = self.result("POST", "/v1/AUTH_test?bulk-delete", b"/keep/a\n/keep/b\n/keep/c\n/keep/d\n")
        self.assertEqual(result, {"Response Status": "413 Request Entity Too Large",
                                  "Response Body": "Maximum Bulk Deletes: 3 per request",
                                  "Number Deleted": 0, "Number Not Found": 0, "Errors": []})
        self.assertEqual(self.names("keep"), ["a", "b", "c", "d"])
        result = self.result("DELETE", "/v1/AUTH_test?bulk-delete", b"/keep/a\n/keep/b\n/keep/gone\n")
        self.assertEqual((result["Response Status"], result["Number Deleted"], result["Number Not Found"]),
                         ("200 OK", 2, 1))
        self.assertEqual(self.names("keep"), ["c", "d"])

        # max_failed_deletes: the objects' two failures stop it before the containers' round
        result = self.result("POST", "/v1/AUTH_test?bulk-delete", f"empty\n/keep/{LONG}1\n/keep/{LONG}2\n".encode())
        self.assertEqual((result["Response Status"], result["Response Body"], result["Number Deleted"]),
                         ("400 Bad Request", "Max delete failures exceeded", 0))
        self.assertEqual(sorted(result["Errors"]), [[f"/keep/{LONG}1", "400 Bad Request"],
                                                    [f"/keep/{LONG}2", "400 Bad Request"]])
        self.assertEqual(swift.head_container(self.url, self.token, "empty")["x-container-object-count"], "0")

        # max_containers_per_extraction counts the containers an extraction creates, not those it finds
        files = {"keep/e": b"e", "empty/f": b"f", "new1/g": b"g", "new2/h": b"h"}
        result = self.result("PUT", "/v1/AUTH_test?extract-archive=tar", archive(files))
        self.assertEqual((result["Response Status"], result["Number Files Created"]), ("201 Created", 4))
        # a third to create: refused before it is made; the files before it stay (the archive streams)
        files = {"x/1": b"1", "y/2": b"2", "z/3": b"3", "x/4": b"4"}
        result = self.result("PUT", "/v1/AUTH_test?extract-archive=tar.gz", archive(files, "gz"))
        self.assertEqual(result, {"Response Status": "400 Bad Request",
                                  "Response Body": "More than 2 containers to create from tar.",
                                  "Number Files Created": 2, "Errors": []})
        self.assertEqual([c["name"] for c in swift.get_account(self.url, self.token)[1]],
                         ["empty", "keep", "new1", "new2", "x", "y"])
        self.assertEqual((self.names("x"), self.names("y")), (["1"], ["2"]))

        # max_failed_extractions: stopped at the second failed file, the rest of the archive unread
        files = {"keep/before": b"1", f"keep/{LONG}1": b"2", f"keep/{LONG}2": b"3", "keep/after": b"4"}
        result = self.result("PUT", "/v1/AUTH_test?extract-archive=tar", archive(files))
        self.assertEqual(result, {"Response Status": "400 Bad Request", "Response Body": "",
                                  "Number Files Created": 1,
                                  "Errors": [[f"keep/{LONG}1", "400 Bad Request"], [f"keep/{LONG}2", "400 Bad Request"]]})
        self.assertEqual(self.names("keep"), ["before", "c", "d", "e"])

        # swift delete reads max_deletes_per_request from /info: at most 3 names a request, all served
        for number in range(24):
            (self.work / f"f{number}").write_bytes(b"%d" % number)
        before = len(self.log_lines())
        uploaded = self.cluster.swift_cli("upload", "many", *(f"f{n}" for n in range(24)), cwd=str(self.work))
        self.assertEqual(uploaded.returncode, 0, uploaded.stderr)
        deleted = self.cluster.swift_cli("delete", "many")
        self.assertEqual(deleted.returncode, 0, deleted.stderr)
        self.assertNotIn("many", [c["name"] for c in swift.get_account(self.url, self.token)[1]])
        deadline = time.monotonic() + 10  # access lines reach the file within half a second
        while True:
            lines = self.log_lines()[before:]
            sub_deletes = [line for line in lines if " DELETE /v1/AUTH_test/many/f" in line and line.endswith(" BD")]
            if len(sub_deletes) >= 24 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        posts = [line for line in lines if " POST /v1/AUTH_test?bulk-delete " in line]
        self.assertEqual(len(sub_deletes), 24)
        self.assertGreaterEqual(len(posts), 8)  # 24 names, 3 a request at most
        self.assertTrue(all(" POST /v1/AUTH_test?bulk-delete 200 " in line for line in posts), posts)
