"""
IO classes on a real all-in-one (``txstore-aio``) whose proxy is restarted with two classes in
``txstore.conf`` (gold, weight 4; bronze, weight 1, the default), through the ``swift``
command-line client and curl: ``/info`` lists them; the account's own admin may not set the
account's class (403), the reseller admin may, and ``swift stat`` shows it; an object is
written and read back in a lower class; a class above the account's is 403 with nothing stored,
an unknown one 400.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from txstore.aio import launcher
from txstore.aio.layout import Layout, Topology
from txstore.test.integration.test_proxy_integration import ClusterCase

CLASSES = "\n[io-class:gold]\nweight = 4\n\n[io-class:bronze]\nweight = 1\ndefault = yes\n"
RESELLER = {"user": "admin:admin", "key": "admin"}


class IOClassTests(ClusterCase):
    def setUp(self) -> None:
        super().setUp()
        self.work = Path(self.mktemp())
        os.makedirs(self.work)

    def restart_proxy_with_classes(self) -> None:
        """Stop the proxy, add the classes to the cluster's txstore.conf, start it as txstore-aio does."""
        layout = Layout(self.cluster.root, Topology(nodes=0), self.cluster.port)  # nodes=0: the proxy alone
        pid = launcher.read_pid(layout.pid_file("proxy"))
        self.assertIsNotNone(pid)
        self.assertEqual(launcher.stop_pids({"proxy": pid}), [])
        with open(layout.etc / "txstore.conf", "a", encoding="utf-8") as conf:
            conf.write(CLASSES)
        proxy = launcher.Cluster(layout)
        self.addCleanup(proxy.stop)
        proxy.start()

    def swift(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return self.cluster.swift_cli(*args, cwd=str(self.work), **kwargs)

    def as_reseller(self, *args: str) -> subprocess.CompletedProcess:
        storage = f"http://127.0.0.1:{self.cluster.port}/v1/AUTH_test"
        return self.swift("--os-storage-url", storage, *args, **RESELLER)

    def curl(self, method: str, path: str, *headers: str, token: str | None = None,
             body: Path | None = None, out: Path | None = None) -> str:
        """The status code of a request with curl."""
        args = ["curl", "-s", "-o", str(out or "/dev/null"), "-w", "%{http_code}", "-X", method]
        for header in (*headers, f"X-Auth-Token: {token or self.token}"):
            args += ["-H", header]
        if body is not None:
            args += ["--data-binary", f"@{body}"]
        done = subprocess.run([*args, f"http://127.0.0.1:{self.cluster.port}{path}"], capture_output=True, timeout=60)
        return done.stdout.decode()

    def info(self) -> dict:
        status, _, body = self.cluster.http("GET", "/info")
        self.assertEqual(status, 200)
        return json.loads(body)["qos"]

    def stat_class(self) -> str | None:
        """The account's class as ``swift stat`` shows it (as test:tester), or None."""
        done = self.swift("stat")
        self.assertEqual(done.returncode, 0, done.stderr)
        lines = [line.split(":", 1)[1].strip() for line in done.stdout.splitlines()
                 if line.strip().lower().startswith("x-account-io-class:")]
        self.assertLessEqual(len(lines), 1, done.stdout)
        self.assertNotIn("sysmeta", done.stdout.lower())  # shown as X-Account-Io-Class only
        return lines[0] if lines else None

    def names(self) -> list[str]:
        done = self.swift("list", "c")
        self.assertEqual(done.returncode, 0, done.stderr)
        return done.stdout.split()

    def test_classes_as_users_meet_them(self) -> None:
        self.assertEqual(self.info()["default"], "standard")
        self.restart_proxy_with_classes()
        self.assertEqual(self.info(), {"default": "bronze", "classes": {
            "gold": {"weight": 4.0, "stream_rate": 0, "tenant_rate": 0},
            "bronze": {"weight": 1.0, "stream_rate": 0, "tenant_rate": 0},
            "background": {"weight": 1.0, "stream_rate": 0, "tenant_rate": 0}}})
        _, self.token = self.cluster.token()  # after the restart: tokens live in the proxy's memory
        _, self.reseller_token = self.cluster.token(RESELLER["user"], RESELLER["key"])

        # the account's own admin may not set its class
        denied = self.swift("post", "-H", "X-Account-Io-Class: gold")
        self.assertNotEqual(denied.returncode, 0)
        self.assertIn("403", denied.stderr)
        for header in ("X-Account-Io-Class: gold", "X-Remove-Account-Io-Class: x"):
            self.assertEqual(self.curl("POST", "/v1/AUTH_test", header), "403", header)
        # nor write the sysmeta itself (the gatekeeper drops it)
        self.assertEqual(self.curl("POST", "/v1/AUTH_test", "X-Account-Sysmeta-Io-Class: gold"), "204")
        self.assertIsNone(self.stat_class())

        # the reseller admin may; an unknown class changes nothing
        posted = self.as_reseller("post", "-H", "X-Account-Io-Class: gold")
        self.assertEqual(posted.returncode, 0, posted.stderr)
        self.assertEqual(self.stat_class(), "gold")
        self.assertEqual(self.curl("POST", "/v1/AUTH_test", "X-Account-Io-Class: platinum",
                                   token=self.reseller_token), "400")
        self.assertEqual(self.stat_class(), "gold")

        # an object in a lower class than the account's, written and read back
        data = os.urandom(300_000)
        (self.work / "blob").write_bytes(data)
        uploaded = self.swift("upload", "-H", "X-Io-Class: bronze", "c", "blob")
        self.assertEqual(uploaded.returncode, 0, uploaded.stderr)
        back = self.work / "back"
        self.assertEqual(self.curl("GET", "/v1/AUTH_test/c/blob", "X-Io-Class: bronze", out=back), "200")
        self.assertEqual(back.read_bytes(), data)
        downloaded = self.swift("download", "-H", "X-Io-Class: gold", "-o", "gold-copy", "c", "blob")
        self.assertEqual(downloaded.returncode, 0, downloaded.stderr)  # the account's own class
        self.assertEqual((self.work / "gold-copy").read_bytes(), data)
        self.assertEqual(self.curl("PUT", "/v1/AUTH_test/c/rated", "X-Io-Rate: 20MB", body=self.work / "blob"),
                         "201")
        # an object's own class: kept, shown, read back; a POST may not change it
        own = self.swift("upload", "-H", "X-Object-Io-Class: bronze", "--object-name", "rated", "c", "blob")
        self.assertEqual(own.returncode, 0, own.stderr)
        _, headers, _ = self.cluster.http("HEAD", "/v1/AUTH_test/c/rated", {"X-Auth-Token": self.token})
        self.assertEqual((headers.get("x-object-io-class"), headers.get("x-object-sysmeta-io-class")), ("bronze", None))
        self.assertEqual(self.curl("GET", "/v1/AUTH_test/c/rated", out=back), "200")
        self.assertEqual(back.read_bytes(), data)
        self.assertEqual(self.curl("POST", "/v1/AUTH_test/c/rated", "X-Object-Io-Class: gold"), "400")
        _, headers, _ = self.cluster.http("HEAD", "/v1/AUTH_test/c/rated", {"X-Auth-Token": self.token})
        self.assertEqual(headers.get("x-object-io-class"), "bronze")

        # a bronze account: gold is above it, and nothing is stored
        posted = self.as_reseller("post", "-H", "X-Account-Io-Class: bronze")
        self.assertEqual(posted.returncode, 0, posted.stderr)
        self.assertEqual(self.stat_class(), "bronze")
        refused = self.swift("upload", "-H", "X-Io-Class: gold", "--object-name", "golden", "c", "blob")
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn("403", refused.stderr)
        self.assertEqual(self.curl("PUT", "/v1/AUTH_test/c/golden", "X-Io-Class: gold", body=self.work / "blob"),
                         "403")
        self.assertEqual(self.curl("GET", "/v1/AUTH_test/c/blob", "X-Io-Class: gold"), "403")
        self.assertEqual(self.curl("PUT", "/v1/AUTH_test/c/odd", "X-Io-Class: platinum", body=self.work / "blob"),
                         "400")
        self.assertEqual(self.curl("PUT", "/v1/AUTH_test/c/odd", "X-Io-Rate: 0", body=self.work / "blob"), "400")
        self.assertEqual(self.curl("PUT", "/v1/AUTH_test/c/odd", "X-Object-Io-Class: gold", body=self.work / "blob"),
                         "403")
        self.assertEqual(self.names(), ["blob", "rated"])
        self.assertEqual(self.cluster.http("HEAD", "/v1/AUTH_test/c/golden", {"X-Auth-Token": self.token})[0], 404)
        self.assertEqual(self.curl("GET", "/v1/AUTH_test/c/blob", "X-Io-Class: bronze", out=back), "200")
        self.assertEqual(back.read_bytes(), data)

        # removed: the default (bronze), so gold is still above it
        self.assertEqual(self.curl("POST", "/v1/AUTH_test", "X-Remove-Account-Io-Class: x",
                                   token=self.reseller_token), "204")
        self.assertIsNone(self.stat_class())
        self.assertEqual(self.curl("GET", "/v1/AUTH_test/c/blob", "X-Io-Class: gold"), "403")
        self.assertEqual(self.curl("GET", "/v1/AUTH_test/c/blob"), "200")
