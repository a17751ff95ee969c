"""
Container and account quotas on a real all-in-one (``txstore-aio``), through the ``swift``
command-line client and curl: a container's byte and count quotas stop uploads and copies with
413 (nothing stored), a bad quota is 400 and leaves the stored one as it was; account quotas
are set by the reseller admin only (the account's own admin gets 403), shown in ``swift stat``,
stop uploads, and a bad or per-policy one is refused with nothing changed.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from swiftclient import client as swift

from txstore.test.integration.test_proxy_integration import ClusterCase


class QuotaTests(ClusterCase):
    def setUp(self) -> None:
        super().setUp()
        self.url, self.token = self.cluster.token()
        self.work = Path(self.mktemp())
        os.makedirs(self.work)

    def file(self, name: str, size: int) -> str:
        (self.work / name).write_bytes(b"x" * size)
        return name

    def swift(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return self.cluster.swift_cli(*args, cwd=str(self.work), **kwargs)

    def curl(self, method: str, path: str, *headers: str, token: str | None = None) -> str:
        """The status code of a request with curl."""
        args = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", method]
        for header in (*headers, f"X-Auth-Token: {token or self.token}"):
            args += ["-H", header]
        done = subprocess.run([*args, f"http://127.0.0.1:{self.cluster.port}{path}"], capture_output=True,
                              timeout=60)
        return done.stdout.decode()

    def names(self, container: str) -> list[str]:
        return [o["name"] for o in swift.get_container(self.url, self.token, container)[1]]

    def test_container_quotas(self) -> None:
        self.assertEqual(self.swift("post", "c").returncode, 0)
        self.assertEqual(self.swift("post", "-m", "quota-bytes:10", "c").returncode, 0)
        refused = self.swift("upload", "c", self.file("eleven", 11))
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn("413", refused.stderr)
        self.assertEqual(self.swift("upload", "c", self.file("ten", 10)).returncode, 0)
        self.assertEqual(self.names("c"), ["ten"])
        # a copy into the container is an upload too
        swift.put_container(self.url, self.token, "src")
        swift.put_object(self.url, self.token, "src", "one", contents=b"1")
        copied = self.swift("copy", "--destination", "/c/one", "src", "one")
        self.assertNotEqual(copied.returncode, 0)
        self.assertEqual(self.curl("PUT", "/v1/AUTH_test/c/one", "X-Copy-From: src/one", "Content-Length: 0"), "413")
        self.assertEqual(self.names("c"), ["ten"])
        # bad values: 400, and the stored quota is as it was
        for bad in ("ten", "-1", "1e3"):
            self.assertEqual(self.curl("POST", "/v1/AUTH_test/c", f"X-Container-Meta-Quota-Bytes: {bad}"), "400")
            self.assertEqual(self.curl("PUT", "/v1/AUTH_test/c", f"X-Container-Meta-Quota-Count: {bad}"), "400")
        headers = swift.head_container(self.url, self.token, "c")
        self.assertEqual(headers["x-container-meta-quota-bytes"], "10")
        self.assertNotIn("x-container-meta-quota-count", headers)
        # a count quota, then none
        self.assertEqual(self.swift("post", "-m", "quota-bytes:", "-m", "quota-count:1", "c").returncode, 0)
        self.assertNotEqual(self.swift("upload", "c", self.file("second", 1)).returncode, 0)
        self.assertEqual(self.swift("post", "-m", "quota-count:", "c").returncode, 0)
        self.assertEqual(self.swift("upload", "c", "second").returncode, 0)
        self.assertEqual(self.names("c"), ["second", "ten"])

    def test_account_quotas(self) -> None:
        admin_url = f"http://127.0.0.1:{self.cluster.port}/v1/AUTH_test"
        as_reseller = ("--os-storage-url", admin_url)
        reseller = {"user": "admin:admin", "key": "admin"}
        swift.put_container(self.url, self.token, "c")
        # the account's own admin may not set or remove a quota
        for header in ("X-Account-Meta-Quota-Bytes: 0", "X-Account-Quota-Bytes: 0", "X-Account-Quota-Count: 0",
                       "X-Remove-Account-Quota-Bytes: t"):
            self.assertEqual(self.curl("POST", "/v1/AUTH_test", header), "403", header)
        denied = self.swift("post", "-m", "quota-bytes:0")
        self.assertNotEqual(denied.returncode, 0)
        # the reseller admin may
        posted = self.swift(*as_reseller, "post", "-H", "X-Account-Quota-Count: 1", **reseller)
        self.assertEqual(posted.returncode, 0, posted.stderr)
        self.assertIn("Quota-Count: 1", self.swift("stat").stdout)
        self.assertEqual(self.swift("upload", "c", self.file("first", 3)).returncode, 0)
        self.assertNotEqual(self.swift("upload", "c", self.file("second", 3)).returncode, 0)
        self.assertEqual(self.names("c"), ["first"])
        # the reseller's own uploads are not limited
        uploaded = self.swift(*as_reseller, "upload", "c", "second", **reseller)
        self.assertEqual(uploaded.returncode, 0, uploaded.stderr)
        # bad values and per-policy quotas: refused, nothing changes
        _, reseller_token = self.cluster.token("admin:admin", "admin")
        for header, status in (("X-Account-Quota-Count: many", "400"), ("X-Account-Meta-Quota-Bytes: -1", "400"),
                               ("X-Account-Quota-Bytes-Policy-gold: 5", "501")):
            self.assertEqual(self.curl("POST", "/v1/AUTH_test", header, token=reseller_token), status, header)
        headers = swift.head_account(self.url, self.token)
        self.assertEqual(headers["x-account-quota-count"], "1")
        self.assertNotIn("x-account-meta-quota-bytes", headers)
        # the older header, then removal
        self.assertEqual(self.curl("POST", "/v1/AUTH_test", "X-Remove-Account-Quota-Count: t",
                                   "X-Account-Meta-Quota-Bytes: 0", token=reseller_token), "204")
        self.assertNotEqual(self.swift("upload", "c", self.file("third", 1)).returncode, 0)
        # (curl sends an empty header written with ";")
        self.assertEqual(self.curl("POST", "/v1/AUTH_test", "X-Account-Meta-Quota-Bytes;", token=reseller_token),
                         "204")
        self.assertEqual(self.swift("upload", "c", "third").returncode, 0)
        self.assertEqual(self.names("c"), ["first", "second", "third"])
