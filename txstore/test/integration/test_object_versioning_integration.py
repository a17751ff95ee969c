"""
object_versioning (``X-Versions-Enabled``) on a real all-in-one (``txstore-aio``), driven by
the ``swift`` command-line client and plain HTTP: versions written, listed, read by id, deleted
and restored; delete markers; suspension; the hidden ``\\x00versions\\x00<container>`` container
(reserved names end to end: refused to clients, absent from listings, counted in the bytes,
guarding the container's DELETE).
"""

from __future__ import annotations

import json
import time
from urllib.parse import quote

from swiftclient import client as swift

from txstore.test.integration.test_proxy_integration import ClusterCase

MARKER = "application/x-deleted;swift_versions_deleted=1"


class ObjectVersioningTests(ClusterCase):
    def setUp(self) -> None:
        super().setUp()
        self.url, self.token = self.cluster.token()
        self.auth = {"X-Auth-Token": self.token}

    def versions(self, container: str, **params: str) -> list[dict]:
        query = "&".join(["versions", *(f"{k}={quote(v)}" for k, v in params.items())])
        status, _, body = self.cluster.http("GET", f"/v1/AUTH_test/{container}?{query}", self.auth)
        self.assertEqual(status, 200, body)
        return json.loads(body)

    def test_versions_with_the_swift_cli(self) -> None:
        work, run = self.swift_in_workdir()
        posted = run("post", "-H", "X-Versions-Enabled: true", "docs")
        self.assertEqual(posted.returncode, 0, posted.stderr)
        self.assertEqual(swift.head_container(self.url, self.token, "docs").get("x-versions-enabled"), "True")
        self.upload_with_cli(run, work, "docs", "notes.txt", b"first\n", b"second\n", b"third\n")
        listed = run("list", "--versions", "docs")
        self.assertEqual(listed.returncode, 0, listed.stderr)
        rows = self.versions("docs")
        self.assertEqual([(r["name"], r["is_latest"], r["bytes"]) for r in rows],
                         [("notes.txt", True, 6), ("notes.txt", False, 7), ("notes.txt", False, 6)])
        # the CLI lists the same ids, and downloads any version by id
        for row in rows:
            self.assertIn(row["version_id"], listed.stdout)
        got = run("download", "docs", "notes.txt", "--version-id", rows[2]["version_id"], "-o", "old")
        self.assertEqual(got.returncode, 0, got.stderr)
        self.assertEqual((work / "old").read_bytes(), b"first\n")
        # the plain listing shows one object, the account listing no hidden container
        self.assertEqual(run("list", "docs").stdout.split(), ["notes.txt"])
        self.assertEqual(run("list").stdout.split(), ["docs"])
        # a delete leaves a marker; the versions stay
        self.assertEqual(run("delete", "docs", "notes.txt").returncode, 0)
        self.assertNotEqual(run("stat", "docs", "notes.txt").returncode, 0)
        rows = self.versions("docs")
        self.assertEqual([(r["content_type"], r["is_latest"]) for r in rows][0], (MARKER, True))
        self.assertEqual(len(rows), 4)

    def test_version_ids_markers_and_restores(self) -> None:
        auth = self.auth
        status, _, _ = self.cluster.http("PUT", "/v1/AUTH_test/c", {**auth, "X-Versions-Enabled": "true"})
        self.assertEqual(status, 201)
        ids = []
        for body in (b"one", b"two!"):
            status, headers, _ = self.cluster.http("PUT", "/v1/AUTH_test/c/o", {**auth, "Content-Type": "text/x"}, body)
            self.assertEqual(status, 201)
            ids.append(headers["x-object-version-id"])
        status, headers, body = self.cluster.http("GET", "/v1/AUTH_test/c/o", auth)
        self.assertEqual((status, body, headers["x-object-version-id"]), (200, b"two!", ids[1]))
        self.assertEqual(headers["content-location"], f"/v1/AUTH_test/c/o?version-id={ids[1]}")
        status, headers, body = self.cluster.http("GET", f"/v1/AUTH_test/c/o?version-id={ids[0]}", auth)
        self.assertEqual((status, body, headers["x-object-version-id"]), (200, b"one", ids[0]))
        # a reader allowed by the container's ACL reads the current version, not one by id
        swift.post_container(self.url, self.token, "c", {"X-Container-Read": "test:tester3"})
        _, token3 = self.cluster.token("test:tester3", "testing3")
        self.assertEqual(self.cluster.http("GET", "/v1/AUTH_test/c/o", {"X-Auth-Token": token3})[2], b"two!")
        self.assertEqual(self.cluster.http("GET", f"/v1/AUTH_test/c/o?version-id={ids[0]}",
                                           {"X-Auth-Token": token3})[0], 403)
        # delete: a marker, 404 after; the marker reads as 404 with its type
        status, headers, _ = self.cluster.http("DELETE", "/v1/AUTH_test/c/o", auth)
        self.assertEqual(status, 204)
        marker = headers["x-object-version-id"]
        self.assertEqual(self.cluster.http("GET", "/v1/AUTH_test/c/o", auth)[0], 404)
        status, headers, _ = self.cluster.http("HEAD", f"/v1/AUTH_test/c/o?version-id={marker}", auth)
        self.assertEqual((status, headers["content-type"]), (404, MARKER))
        # restore the first version as the current one
        status, headers, _ = self.cluster.http("PUT", f"/v1/AUTH_test/c/o?version-id={ids[0]}",
                                               {**auth, "Content-Length": "0"})
        self.assertEqual((status, headers["x-object-version-id"]), (201, ids[0]))
        self.assertEqual(self.cluster.http("GET", "/v1/AUTH_test/c/o", auth)[2], b"one")
        self.assertEqual(self.cluster.http("POST", f"/v1/AUTH_test/c/o?version-id={ids[0]}", auth)[0], 400)
        # suspended: writes are plain (version null), the versions stay
        swift.post_container(self.url, self.token, "c", {"X-Versions-Enabled": "false"})
        status, headers, _ = self.cluster.http("PUT", "/v1/AUTH_test/c/o", auth, b"plain")
        self.assertEqual((status, headers.get("x-object-version-id")), (201, None))
        rows = self.versions("c")
        self.assertEqual([r["version_id"] for r in rows], ["null", marker, ids[1], ids[0]])

    def test_the_hidden_container(self) -> None:
        auth = self.auth
        self.cluster.http("PUT", "/v1/AUTH_test/c", {**auth, "X-Versions-Enabled": "true"})
        self.cluster.http("PUT", "/v1/AUTH_test/c/o", auth, b"12345")
        self.cluster.http("PUT", "/v1/AUTH_test/c/o", auth, b"123")
        # clients cannot name it, with or without the backend header (the gatekeeper's)
        for headers in ({}, {"X-Backend-Allow-Reserved-Names": "true"}):
            status, _, body = self.cluster.http("GET", "/v1/AUTH_test/%00versions%00c", {**auth, **headers})
            self.assertEqual((status, body), (412, b"Invalid UTF8 or contains NULL"))
        # it is not listed, but its bytes are the container's and the account's (once the
        # container updater, every 5 s in the all-in-one, has reported both containers)
        head = swift.head_container(self.url, self.token, "c")
        self.assertEqual((head["x-container-object-count"], head["x-container-bytes-used"]), ("1", "8"))
        deadline = time.monotonic() + 30
        while swift.head_account(self.url, self.token).get("x-account-bytes-used") != "8":
            self.assertLess(time.monotonic(), deadline, "the account never counted the versions' bytes")
            time.sleep(0.5)
        status, _, body = self.cluster.http("GET", "/v1/AUTH_test?format=json", auth)
        self.assertEqual([(row["name"], row["bytes"]) for row in json.loads(body)], [("c", 8)])
        self.assertEqual(swift.head_account(self.url, self.token)["x-account-container-count"], "2")
        # the container cannot be deleted while versions remain, even suspended
        swift.post_container(self.url, self.token, "c", {"X-Versions-Enabled": "false"})
        self.cluster.http("DELETE", "/v1/AUTH_test/c/o", auth)
        self.assertEqual(self.cluster.http("DELETE", "/v1/AUTH_test/c", auth)[0], 409)
        for row in self.versions("c"):
            status, _, _ = self.cluster.http("DELETE", f"/v1/AUTH_test/c/o?version-id={row['version_id']}", auth)
            self.assertEqual(status, 204)
        self.assertEqual(self.cluster.http("DELETE", "/v1/AUTH_test/c", auth)[0], 204)
        status, _, body = self.cluster.http("GET", "/info")
        self.assertEqual(json.loads(body)["object_versioning"], {})
