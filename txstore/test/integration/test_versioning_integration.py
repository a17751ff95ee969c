"""
Object versioning (versioned_writes) on a real all-in-one (``txstore-aio``), driven by the
``swift`` command-line client, python-swiftclient and plain HTTP: stack mode's archive and
restore, history mode's delete marker, the container's setting and its refusals.
"""

from __future__ import annotations

import json

from swiftclient import client as swift

from txstore.test.integration.test_proxy_integration import ClusterCase

MARKER = "application/x-deleted;swift_versions_deleted=1"


class VersioningTests(ClusterCase):
    def setUp(self) -> None:
        super().setUp()
        self.url, self.token = self.cluster.token()

    def names(self, container: str) -> list[dict]:
        return swift.get_container(self.url, self.token, container, full_listing=True)[1]

    def test_stack_mode_with_the_swift_cli(self) -> None:
        work, run = self.swift_in_workdir()
        self.assertEqual(run("post", "archive").returncode, 0)
        posted = run("post", "-H", "X-Versions-Location: archive", "docs")
        self.assertEqual(posted.returncode, 0, posted.stderr)
        self.assertEqual(swift.head_container(self.url, self.token, "docs").get("x-versions-location"), "archive")
        self.upload_with_cli(run, work, "docs", "notes.txt", b"first\n", b"second\n", b"third\n")
        # two earlier versions, named <3 hex digits of the name's length><name>/<timestamp>
        archived = [row["name"] for row in self.names("archive")]
        self.assertEqual(len(archived), 2)
        self.assertTrue(all(name.startswith("009notes.txt/") for name in archived), archived)
        self.assertEqual(swift.get_object(self.url, self.token, "archive", archived[0])[1], b"first\n")
        listed = run("list", "archive").stdout.split()
        self.assertEqual(listed, archived)
        # each DELETE puts the previous version back, until there is none
        for expected in (b"second\n", b"first\n"):
            deleted = run("delete", "docs", "notes.txt")
            self.assertEqual(deleted.returncode, 0, deleted.stderr)
            download = run("download", "docs", "notes.txt", "-o", "got")
            self.assertEqual(download.returncode, 0, download.stderr)
            self.assertEqual((work / "got").read_bytes(), expected)
        self.assertEqual(self.names("archive"), [])
        self.assertEqual(run("delete", "docs", "notes.txt").returncode, 0)
        self.assertNotEqual(run("stat", "docs", "notes.txt").returncode, 0)  # gone
        # removing the setting
        self.assertEqual(run("post", "-H", "X-Remove-Versions-Location: x", "docs").returncode, 0)
        self.assertNotIn("x-versions-location", swift.head_container(self.url, self.token, "docs"))

    def test_history_mode_leaves_a_delete_marker(self) -> None:
        swift.put_container(self.url, self.token, "history-archive")
        swift.put_container(self.url, self.token, "logs", headers={"X-History-Location": "history-archive"})
        headers = swift.head_container(self.url, self.token, "logs")
        self.assertEqual(headers.get("x-history-location"), "history-archive")
        self.assertNotIn("x-versions-location", headers)
        self.assertNotIn("x-container-sysmeta-versions-location", headers)  # the gatekeeper's
        swift.put_object(self.url, self.token, "logs", "day", contents=b"monday", content_type="text/one")
        swift.put_object(self.url, self.token, "logs", "day", contents=b"tuesday", content_type="text/two")
        swift.delete_object(self.url, self.token, "logs", "day")
        status, _, _ = self.cluster.http("GET", "/v1/AUTH_test/logs/day", {"X-Auth-Token": self.token})
        self.assertEqual(status, 404)
        rows = self.names("history-archive")
        self.assertEqual([row["content_type"] for row in rows], ["text/one", "text/two", MARKER])
        self.assertEqual([swift.get_object(self.url, self.token, "history-archive", row["name"])[1] for row in rows],
                         [b"monday", b"tuesday", b""])
        # a DELETE of what is gone answers 404, and still leaves a marker
        status, _, _ = self.cluster.http("DELETE", "/v1/AUTH_test/logs/day", {"X-Auth-Token": self.token})
        self.assertEqual(status, 404)
        self.assertEqual(len(self.names("history-archive")), 4)

    def test_refusals_and_info(self) -> None:
        auth = {"X-Auth-Token": self.token}
        status, _, body = self.cluster.http("PUT", "/v1/AUTH_test/both",
                                            {**auth, "X-Versions-Location": "a", "X-History-Location": "b"})
        self.assertEqual((status, body), (400, b"Only one of x-versions-location or x-history-location may be "
                                               b"specified"))
        status, _, body = self.cluster.http("PUT", "/v1/AUTH_test/slash", {**auth, "X-Versions-Location": "a/b"})
        self.assertEqual((status, body), (412, b"Container name cannot contain slashes"))
        # a user who may not write the versioned container versions nothing
        swift.put_container(self.url, self.token, "private-archive")
        swift.put_container(self.url, self.token, "shared", headers={"X-Versions-Location": "private-archive",
                                                                     "X-Container-Read": "test:tester3"})
        swift.put_object(self.url, self.token, "shared", "o", contents=b"kept")
        _, token3 = self.cluster.token("test:tester3", "testing3")
        for method in ("PUT", "DELETE"):
            status, _, _ = self.cluster.http(method, "/v1/AUTH_test/shared/o",
                                             {"X-Auth-Token": token3, "Content-Length": "0"})
            self.assertEqual(status, 403, method)
        self.assertEqual(self.names("private-archive"), [])
        self.assertEqual(swift.get_object(self.url, self.token, "shared", "o")[1], b"kept")
        # ...and one who may write it versions into an archive they cannot read
        swift.post_container(self.url, self.token, "shared", {"X-Container-Write": "test:tester3"})
        status, _, _ = self.cluster.http("PUT", "/v1/AUTH_test/shared/o",
                                         {"X-Auth-Token": token3, "Content-Length": "3"}, b"new")
        self.assertEqual(status, 201)
        archived = self.names("private-archive")
        self.assertEqual(len(archived), 1)
        status, _, _ = self.cluster.http("GET", f"/v1/AUTH_test/private-archive/{archived[0]['name']}",
                                         {"X-Auth-Token": token3})
        self.assertEqual(status, 403)
        status, _, body = self.cluster.http("GET", "/info")
        self.assertEqual(json.loads(body)["versioned_writes"],
                         {"allowed_flags": ["x-versions-location", "x-history-location"]})
