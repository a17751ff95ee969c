"""
The proxy as users meet it: a real all-in-one (``txstore-aio``) on 127.0.0.1, driven by the
``swift`` command-line client, python-swiftclient and plain HTTP.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote
from xml.etree import ElementTree

from swiftclient import client as swift
from twisted.trial.unittest import SynchronousTestCase

from txstore.aio.launcher import healthy, twistd_command
from txstore.test.support import console_script, free_port_block


class Cluster:
    """An all-in-one started in the background for a test class, and stopped after it."""

    def __init__(self, root: Path, *extra: str, nodes: int = 4) -> None:
        self.root = root
        base = free_port_block(nodes + 2, step=10)
        self.port = base
        self.args = ["--root", str(root), "--proxy-port", str(base), "--base-port", str(base), "--part-power", "6",
                     "--nodes", str(nodes), *extra]

    def start(self) -> None:
        result = subprocess.run([console_script("txstore-aio"), *self.args, "--background"],
                                capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(result.stderr)

    def stop(self) -> None:
        subprocess.run([console_script("txstore-aio"), "--stop", "--root", str(self.root)],
                       capture_output=True, timeout=120)

    def pid(self, name: str) -> int:
        """The pid of the all-in-one's process ``name`` (``proxy``, ``node<N>``)."""
        return int((self.root / "run" / f"{name}.pid").read_text())

    def stop_node(self, number: int, sig: int = signal.SIGTERM, timeout: float = 10.0) -> bool:
        """Send node ``number`` ``sig``, and wait until it is gone: whether it went within ``timeout`` s."""
        pid = self.pid(f"node{number}")
        os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.05)
        return False

    def start_node(self, case: SynchronousTestCase, number: int) -> subprocess.Popen:
        """
        Start node ``number`` again by hand, as an operator would (after a test stopped it); its
        output in ``log/node<N>-restarted.log``; stopped at ``case``'s cleanup.
        """
        pid_file = self.root / "run" / f"node{number}.pid"
        pid_file.unlink(missing_ok=True)
        log = open(self.root / "log" / f"node{number}-restarted.log", "ab")
        case.addCleanup(log.close)
        process = subprocess.Popen(
            [console_script("twistd"), "--nodaemon", f"--pidfile={pid_file}", "objectnode",
             "--config", str(self.root / "etc" / f"node{number}.conf")],
            stdout=log, stderr=subprocess.STDOUT,
        )
        case.addCleanup(lambda: (process.poll() is None and process.terminate(), process.wait()))
        deadline = time.monotonic() + 30
        port = self.port + 10 * number
        while time.monotonic() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/healthcheck")
                if conn.getresponse().status == 200:
                    return process
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"node{number} did not come back")

    @property
    def auth_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/auth/v1.0"

    def swift_cli(self, *args: str, user: str = "test:tester", key: str = "testing", cwd: str | None = None):
        return subprocess.run(
            [console_script("swift"), "-A", self.auth_url, "-U", user, "-K", key, *args],
            capture_output=True, text=True, timeout=120, cwd=cwd,
        )

    def http(self, method: str, path: str, headers: dict | None = None, body: bytes | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def token(self, user: str = "test:tester", key: str = "testing") -> tuple[str, str]:
        url, token = swift.get_auth(self.auth_url, user, key)
        return url, token


class ClusterCase(SynchronousTestCase):
    """Each test gets a fresh all-in-one (trial has no per-class fixtures); ~2 s to start."""

    cluster: Cluster

    def setUp(self) -> None:
        self.cluster = Cluster(Path(self.mktemp()).absolute() / "aio")
        self.addCleanup(self.cluster.stop)
        self.cluster.start()

    def swift_in_workdir(self) -> tuple[Path, Callable[..., subprocess.CompletedProcess]]:
        """A fresh directory, and the ``swift`` command-line client run in it (as test:tester)."""
        work = Path(self.mktemp())
        work.mkdir(parents=True)
        return work, lambda *args: self.cluster.swift_cli(*args, cwd=str(work))

    def upload_with_cli(self, run: Callable[..., subprocess.CompletedProcess], work: Path, container: str,
                        name: str, *contents: bytes) -> None:
        """Upload ``name`` with the ``swift`` client ``run`` in ``work``, once for each of ``contents``."""
        for text in contents:
            (work / name).write_bytes(text)
            upload = run("upload", container, name)
            self.assertEqual(upload.returncode, 0, upload.stderr)

    def restart_proxy(self, filter_name: str, extra: str) -> None:
        """
        Stop the all-in-one's proxy, add the ``extra`` settings to its ``[filter:<filter_name>]``,
        start it again (pid file and log where txstore-aio keeps them, so ``--stop`` stops it).
        """
        self.restart_proxy_after(f"[filter:{filter_name}]\nuse = egg:txstore#{filter_name}\n", extra)

    def restart_proxy_after(self, section: str, extra: str) -> None:
        """`restart_proxy` with ``extra`` put after the lines ``section`` of proxy.conf."""
        root = self.cluster.root
        pid = self.cluster.pid("proxy")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.05)
        conf = root / "etc" / "proxy.conf"
        text = conf.read_text()
        self.assertIn(section, text)
        conf.write_text(text.replace(section, section + extra))
        with open(root / "log" / "proxy.stderr", "ab") as stderr:
            subprocess.Popen([*twistd_command(), "--nodaemon", f"--pidfile={root / 'run' / 'proxy.pid'}",
                              f"--logfile={root / 'log' / 'proxy.log'}", "proxy", f"--config={conf}"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
        deadline = time.monotonic() + 30
        while not healthy(self.cluster.port):
            self.assertLess(time.monotonic(), deadline, "the proxy did not come back")
            time.sleep(0.1)


class SwiftCLISessionTests(ClusterCase):
    def test_the_whole_session(self) -> None:
        work, run = self.swift_in_workdir()
        (work / "FILE").write_bytes(b"the contents\n" * 1000)

        stat = run("stat")
        self.assertEqual(stat.returncode, 0, stat.stderr)
        self.assertIn("Account: AUTH_test", stat.stdout)
        self.assertEqual(run("list").returncode, 0)
        upload = run("upload", "C", "FILE")
        self.assertEqual((upload.returncode, upload.stdout.strip()), (0, "FILE"), upload.stderr)
        self.assertIn("Objects: 1", run("stat", "C").stdout)
        object_stat = run("stat", "C", "FILE").stdout
        expected_etag = hashlib.md5(b"the contents\n" * 1000).hexdigest()
        self.assertIn(f"ETag: {expected_etag}", object_stat)
        self.assertIn("Content Length: 13000", object_stat)
        self.assertEqual(run("list", "C").stdout.strip(), "FILE")
        self.assertEqual(run("list").stdout.strip(), "C")
        download = run("download", "C", "FILE", "-o", "copy")
        self.assertEqual(download.returncode, 0, download.stderr)
        self.assertEqual((work / "copy").read_bytes(), b"the contents\n" * 1000)

        self.assertEqual(run("post", "-r", ".r:*", "C").returncode, 0)
        status, _, body = self.cluster.http("GET", "/v1/AUTH_test/C/FILE")
        self.assertEqual((status, body), (200, b"the contents\n" * 1000))
        self.assertEqual(run("post", "-r", "", "C").returncode, 0)
        status, _, _ = self.cluster.http("GET", "/v1/AUTH_test/C/FILE")
        self.assertIn(status, (401, 403))

        self.assertEqual(run("delete", "C", "FILE").returncode, 0)
        self.assertEqual(run("delete", "C").returncode, 0)
        self.assertEqual(run("list").stdout.strip(), "")


class LoggedInCase(ClusterCase):
    """A fresh all-in-one and test:tester's storage URL and token."""

    def setUp(self) -> None:
        super().setUp()
        self.url, self.token = self.cluster.token()
        self.path = "/v1/AUTH_test"

    def auth(self, **extra: str) -> dict:
        return {"X-Auth-Token": self.token, **extra}


class APITests(LoggedInCase):

    def test_odd_names_round_trip(self) -> None:
        swift.put_container(self.url, self.token, "odd")
        names = ["a//b", "dir/", "x%2Fy", "\u00e9t\u00e9 \U0001f600", "n" * 1024, "<&>\"'"]
        for name in names:
            swift.put_object(self.url, self.token, "odd", name, contents=name.encode())
        for name in names:
            _, body = swift.get_object(self.url, self.token, "odd", name)
            self.assertEqual(body, name.encode())
        _, listing = swift.get_container(self.url, self.token, "odd")
        self.assertEqual([o["name"] for o in listing], sorted(names, key=lambda n: n.encode()))
        _, listing = swift.get_container(self.url, self.token, "odd", prefix="a", delimiter="/")
        self.assertEqual(listing, [{"subdir": "a/"}])
        self.assertRaises(swift.ClientException, swift.put_object, self.url, self.token, "odd", "n" * 1025, b"x")

    def test_ranges_conditions_and_checks(self) -> None:
        swift.put_container(self.url, self.token, "r")
        data = bytes(range(256)) * 100
        etag = swift.put_object(self.url, self.token, "r", "o", contents=data)
        self.assertEqual(etag, hashlib.md5(data).hexdigest())
        status, headers, body = self.cluster.http("GET", f"{self.path}/r/o", self.auth(Range="bytes=10-19"))
        self.assertEqual((status, body, headers["content-range"]), (206, data[10:20], "bytes 10-19/25600"))
        status, headers, body = self.cluster.http("GET", f"{self.path}/r/o", self.auth(**{"If-None-Match": etag}))
        self.assertEqual(status, 304)
        status, _, _ = self.cluster.http("PUT", f"{self.path}/r/o", self.auth(**{"If-None-Match": "*"}), b"new")
        self.assertEqual(status, 412)
        status, _, _ = self.cluster.http("PUT", f"{self.path}/r/o2", self.auth(ETag="0" * 32), b"data")
        self.assertEqual(status, 422)
        status, _, _ = self.cluster.http("GET", f"{self.path}/r/o2", self.auth())
        self.assertEqual(status, 404)
        status, _, body = self.cluster.http(
            "PUT", f"{self.path}/r/o3", self.auth(**{"X-Object-Meta-Big": "v" * 257}), b"data"
        )
        self.assertEqual(status, 400)
        self.assertIn(b"Metadata value longer than 256", body)
        status, _, _ = self.cluster.http("GET", f"{self.path}/r/%FF", self.auth())
        self.assertEqual(status, 412)

    def test_copy(self) -> None:
        swift.put_container(self.url, self.token, "src")
        swift.put_container(self.url, self.token, "dst")
        data = os.urandom(2 * 1024 * 1024 + 3)
        swift.put_object(self.url, self.token, "src", "o", contents=data, content_type="x/orig",
                         headers={"X-Object-Meta-Color": "blue"})
        # COPY with Destination, keeping metadata and adding some
        status, headers, _ = self.cluster.http(
            "COPY", f"{self.path}/src/o", self.auth(Destination="/dst/copy%201", **{"X-Object-Meta-Size": "L"})
        )
        self.assertEqual(status, 201)
        self.assertEqual(headers["x-copied-from"], "src/o")
        got_headers, body = swift.get_object(self.url, self.token, "dst", "copy 1")
        self.assertEqual(body, data)
        self.assertEqual((got_headers["x-object-meta-color"], got_headers["x-object-meta-size"]), ("blue", "L"))
        self.assertEqual(got_headers["content-type"], "x/orig")
        # PUT with X-Copy-From and fresh metadata
        status, _, _ = self.cluster.http(
            "PUT", f"{self.path}/dst/copy2",
            self.auth(**{"X-Copy-From": "src/o", "X-Fresh-Metadata": "true", "Content-Length": "0"}), b"",
        )
        self.assertEqual(status, 201)
        got_headers, body = swift.get_object(self.url, self.token, "dst", "copy2")
        self.assertEqual(body, data)
        self.assertNotIn("x-object-meta-color", got_headers)
        # a small object (answered whole by the source's GET) copies too
        swift.put_object(self.url, self.token, "src", "small", contents=b"tiny body")
        status, _, _ = self.cluster.http("COPY", f"{self.path}/src/small", self.auth(Destination="/dst/small"))
        self.assertEqual(status, 201)
        self.assertEqual(swift.get_object(self.url, self.token, "dst", "small")[1], b"tiny body")
        # the swift CLI's copy
        result = self.cluster.swift_cli("copy", "src", "o", "-d", "/dst/copy3")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(swift.get_object(self.url, self.token, "dst", "copy3")[1], data)
        for bad in ("nocontainer", "/c/"):
            status, _, _ = self.cluster.http("COPY", f"{self.path}/src/o", self.auth(Destination=bad))
            self.assertEqual(status, 412, bad)
        status, _, _ = self.cluster.http("COPY", f"{self.path}/src/missing", self.auth(Destination="/dst/x"))
        self.assertEqual(status, 404)
        # a user who may write the destination but not read the source gets 403
        _, plain_user = self.cluster.token("test:tester3", "testing3")
        swift.post_container(self.url, self.token, "dst", {"X-Container-Write": "test:tester3"})
        status, _, _ = self.cluster.http(
            "PUT", f"{self.path}/dst/stolen",
            {"X-Auth-Token": plain_user, "X-Copy-From": "src/o", "Content-Length": "0"}, b"",
        )
        self.assertEqual(status, 403)

    def test_more_object_and_container_semantics(self) -> None:
        swift.put_container(self.url, self.token, "m", headers={"X-Container-Meta-Owner": "ops"})
        headers = swift.head_container(self.url, self.token, "m")
        self.assertEqual(headers["x-container-meta-owner"], "ops")
        swift.post_container(self.url, self.token, "m", {"X-Remove-Container-Meta-Owner": "x"})
        self.assertNotIn("x-container-meta-owner", swift.head_container(self.url, self.token, "m"))
        # chunked upload (a generator has no length)
        pieces = [os.urandom(100_000) for _ in range(7)]
        etag = swift.put_object(self.url, self.token, "m", "chunked", contents=iter(pieces))
        self.assertEqual(etag, hashlib.md5(b"".join(pieces)).hexdigest())
        self.assertEqual(swift.get_object(self.url, self.token, "m", "chunked")[1], b"".join(pieces))
        # several ranges at once
        status, headers, body = self.cluster.http("GET", f"{self.path}/m/chunked", self.auth(Range="bytes=0-1,5-6"))
        self.assertEqual(status, 206)
        self.assertTrue(headers["content-type"].startswith("multipart/byteranges"))
        self.assertIn(b"Content-Range: bytes 5-6/700000\r\n\r\n" + b"".join(pieces)[5:7], body)
        # a container with objects cannot be deleted
        status, _, _ = self.cluster.http("DELETE", f"{self.path}/m", self.auth())
        self.assertEqual(status, 409)
        # a reseller admin copies across accounts
        _, reseller = self.cluster.token("admin:admin", "admin")
        url2, token2 = self.cluster.token("test2:tester2", "testing2")
        swift.put_container(url2, token2, "inbox")
        status, _, _ = self.cluster.http(
            "COPY", f"{self.path}/m/chunked",
            {"X-Auth-Token": reseller, "Destination": "/inbox/got", "Destination-Account": "AUTH_test2"},
        )
        self.assertEqual(status, 201)
        self.assertEqual(swift.get_object(url2, token2, "inbox", "got")[1], b"".join(pieces))
        status, _, _ = self.cluster.http(
            "PUT", "/v1/AUTH_test2/inbox/got2",
            {"X-Auth-Token": reseller, "X-Copy-From": "/m/chunked", "X-Copy-From-Account": "AUTH_test",
             "Content-Length": "0"}, b"",
        )
        self.assertEqual(status, 201)
        # but an account's admin cannot copy out of another account
        status, _, _ = self.cluster.http(
            "PUT", f"{self.path}/m/stolen",
            self.auth(**{"X-Copy-From": "/inbox/got", "X-Copy-From-Account": "AUTH_test2", "Content-Length": "0"}), b"",
        )
        self.assertEqual(status, 403)

    def test_a_container_in_the_second_policy(self) -> None:
        swift.put_container(self.url, self.token, "two", headers={"X-Storage-Policy": "silver"})
        self.assertEqual(swift.head_container(self.url, self.token, "two")["x-storage-policy"], "silver")
        swift.put_object(self.url, self.token, "two", "o", b"two replicas")
        self.assertEqual(swift.get_object(self.url, self.token, "two", "o")[1], b"two replicas")
        self.assertEqual([o["name"] for o in swift.get_container(self.url, self.token, "two")[1]], ["o"])
        # the object's files are on the two nodes policy 1's ring names, in its own directory
        found = {path.relative_to(self.cluster.root).parts[1]
                 for path in self.cluster.root.glob("srv/node*/d*/objects-1/**/*.data")}
        self.assertEqual(len(found), 2)
        status, _, _ = self.cluster.http("PUT", f"{self.path}/three", self.auth(**{"X-Storage-Policy": "bronze"}))
        self.assertEqual(status, 400)

    def test_account_stats_follow_uploads(self) -> None:
        """The container updater (every 5 s in the all-in-one) brings the account's counts up."""
        swift.put_container(self.url, self.token, "counted")
        for i in range(5):
            swift.put_object(self.url, self.token, "counted", f"o{i}", contents=b"x" * 100)
        deadline = time.monotonic() + 30
        while True:
            headers = swift.head_account(self.url, self.token)
            if headers.get("x-account-object-count") == "5" or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        self.assertEqual((headers["x-account-object-count"], headers["x-account-bytes-used"]), ("5", "500"))
        _, containers = swift.get_account(self.url, self.token)
        self.assertEqual([(c["name"], c["count"], c["bytes"]) for c in containers], [("counted", 5, 500)])

    def test_listings_in_each_format(self) -> None:
        # before anything is written the account is autocreated: an empty listing in any format
        status, headers, body = self.cluster.http("GET", self.path, self.auth())
        self.assertEqual((status, headers["content-type"], body), (204, "text/plain; charset=utf-8", b""))
        status, headers, body = self.cluster.http("GET", self.path + "?format=xml", self.auth())
        self.assertEqual((status, body), (200, b'<?xml version="1.0" encoding="UTF-8"?>\n<account name="AUTH_test"></account>'))
        swift.put_container(self.url, self.token, "fmt")
        swift.put_object(self.url, self.token, "fmt", "a<&>", contents=b"x")
        swift.put_object(self.url, self.token, "fmt", "d/o", contents=b"y")
        container = f"{self.path}/fmt"
        status, headers, body = self.cluster.http("GET", container, self.auth())
        self.assertEqual((status, headers["content-type"], body), (200, "text/plain; charset=utf-8", b"a<&>\nd/o\n"))
        status, headers, body = self.cluster.http("GET", container + "?delimiter=/", self.auth(Accept="text/xml"))
        self.assertEqual((status, headers["content-type"], headers["vary"]), (200, "text/xml; charset=utf-8", "Accept"))
        self.assertIn(b"<name>a&lt;&amp;&gt;</name>", body)
        self.assertTrue(body.endswith(b'<subdir name="d/"><name>d/</name></subdir></container>'))
        status, headers, body = self.cluster.http("GET", container + "?format=json&prefix=d", self.auth())
        self.assertEqual([entry["name"] for entry in json.loads(body)], ["d/o"])
        status, headers, body = self.cluster.http("GET", container, self.auth(Accept="image/png"))
        self.assertEqual(status, 406)
        status, headers, _ = self.cluster.http("HEAD", container, self.auth(Accept="application/xml"))
        self.assertEqual((status, headers["content-type"]), (204, "application/xml; charset=utf-8"))
        status, headers, body = self.cluster.http("GET", self.path + "?format=plain", self.auth())
        self.assertEqual((status, body), (200, b"fmt\n"))

    def test_reseller_admin_manages_accounts(self) -> None:
        _, reseller = self.cluster.token("admin:admin", "admin")
        status, _, _ = self.cluster.http("PUT", "/v1/AUTH_newco", {"X-Auth-Token": reseller,
                                                                   "X-Account-Meta-Plan": "gold"})
        self.assertIn(status, (201, 202))
        status, headers, _ = self.cluster.http("HEAD", "/v1/AUTH_newco", {"X-Auth-Token": reseller})
        self.assertEqual((status, headers.get("x-account-meta-plan")), (204, "gold"))
        # an account's own admin may not create or delete accounts
        status, _, _ = self.cluster.http("PUT", "/v1/AUTH_test", self.auth())
        self.assertEqual(status, 403)
        status, _, _ = self.cluster.http("DELETE", "/v1/AUTH_newco", {"X-Auth-Token": reseller})
        self.assertEqual(status, 204)

    def test_expiry_and_content_type(self) -> None:
        swift.put_container(self.url, self.token, "exp")
        status, _, _ = self.cluster.http("PUT", f"{self.path}/exp/page.html",
                                         self.auth(**{"X-Delete-After": "5", "Content-Length": "2"}), b"hi")
        self.assertEqual(status, 201)
        headers_expiring, _ = swift.get_object(self.url, self.token, "exp", "page.html")
        self.assertEqual(headers_expiring["content-type"], "text/html")
        self.assertIn("x-delete-at", headers_expiring)
        # The headers an object keeps besides its metadata, X-Robots-Tag among them (as Swift).
        kept = {"Content-Disposition": "inline", "Content-Language": "fr", "Cache-Control": "no-cache",
                "X-Robots-Tag": "noindex, nofollow"}
        swift.put_object(self.url, self.token, "exp", "kept", b"x", headers=kept)
        headers = swift.head_object(self.url, self.token, "exp", "kept")
        self.assertEqual({name: headers.get(name.lower()) for name in kept}, kept)
        # Wait for the expiry the object reports, not a fixed time: a loaded machine is slow.
        time.sleep(max(0.0, int(headers_expiring["x-delete-at"]) - time.time()) + 1.1)
        status, _, _ = self.cluster.http("GET", f"{self.path}/exp/page.html", self.auth())
        self.assertEqual(status, 404)
        status, headers, _ = self.cluster.http("HEAD", f"{self.path}/exp/page.html", self.auth(**{"X-Newest": "true"}))
        self.assertEqual(status, 404)

    def test_every_response_has_a_trans_id(self) -> None:
        for method, path, headers in [
            ("GET", "/healthcheck", {}),
            ("GET", "/info", {}),
            ("GET", self.path, {"X-Auth-Token": "AUTH_tkbogus"}),
            ("GET", self.path, self.auth()),
            ("GET", "/v1/AUTH_test/nope/obj", self.auth()),
            ("GET", "/auth/v1.0", {"X-Auth-User": "test:tester", "X-Auth-Key": "wrong"}),
        ]:
            status, response_headers, body = self.cluster.http(method, path, headers)
            self.assertRegex(response_headers["x-trans-id"], r"^tx[0-9a-f]{21}-[0-9a-f]{10}$")
            self.assertEqual(response_headers["x-openstack-request-id"], response_headers["x-trans-id"])
            self.assertNotIn(b"<html><head><title>", body)  # never Twisted's error page
        status, _, body = self.cluster.http("GET", "/info")
        self.assertEqual(json.loads(body)["swift"]["max_file_size"], 5 * 1024**3 + 2)
        # the id reaches the nodes: their access lines for the work of one request carry it
        swift.put_container(self.url, self.token, "traced")
        status, headers, _ = self.cluster.http("PUT", f"{self.path}/traced/o", self.auth(), b"data")
        self.assertEqual(status, 201)
        trans_id = headers["x-trans-id"]
        logs = self.cluster.root / "log"
        # Access lines reach the files within half a second (txstore.common.log_observer).
        deadline = time.monotonic() + 10
        while True:
            proxy_lines = [l for l in (logs / "proxy.log").read_text().splitlines() if trans_id in l]
            node_lines = [l for n in range(1, 5) for l in (logs / f"node{n}.log").read_text().splitlines()
                          if trans_id in l]
            # three object PUTs, and the container row updates they caused
            puts = [l for l in node_lines if " PUT /" in l and "/traced/o " in l]
            if len(puts) >= 6 and proxy_lines or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual(len(proxy_lines), 1)
        self.assertEqual(len(puts), 6)

    def test_auth_rules(self) -> None:
        status, _, _ = self.cluster.http("GET", self.path)
        self.assertEqual(status, 401)
        status, _, _ = self.cluster.http("GET", self.path, {"X-Auth-Token": "AUTH_tkbogus"})
        self.assertEqual(status, 401)
        _, other = self.cluster.token("test2:tester2", "testing2")
        status, _, _ = self.cluster.http("GET", self.path, {"X-Auth-Token": other})
        self.assertEqual(status, 403)
        _, plain_user = self.cluster.token("test:tester3", "testing3")
        swift.put_container(self.url, self.token, "acl")
        swift.put_object(self.url, self.token, "acl", "o", contents=b"secret")
        status, _, _ = self.cluster.http("GET", f"{self.path}/acl/o", {"X-Auth-Token": plain_user})
        self.assertEqual(status, 403)
        swift.post_container(self.url, self.token, "acl", {"X-Container-Read": "test:tester3"})
        time.sleep(0.01)
        status, _, body = self.cluster.http("GET", f"{self.path}/acl/o", {"X-Auth-Token": plain_user})
        self.assertEqual((status, body), (200, b"secret"))
        status, _, _ = self.cluster.http("POST", f"{self.path}/acl", self.auth(**{"X-Container-Read": ".bogus"}))
        self.assertEqual(status, 400)

    def test_account_acls(self) -> None:
        url2, owner = self.cluster.token("test2:tester2", "testing2")
        _, reader = self.cluster.token("test:tester3", "testing3")
        swift.put_container(url2, owner, "shared")
        swift.put_object(url2, owner, "shared", "o", b"for readers")
        as_reader = {"X-Auth-Token": reader}
        self.assertEqual(self.cluster.http("GET", "/v1/AUTH_test2/shared/o", as_reader)[0], 403)
        # the owner grants read-only with the swift CLI; only owners see the ACL
        posted = self.cluster.swift_cli("post", "-H", 'X-Account-Access-Control: {"read-only": ["test:tester3"]}',
                                        user="test2:tester2", key="testing2")
        self.assertEqual(posted.returncode, 0, posted.stderr)
        self.assertEqual(swift.head_account(url2, owner)["x-account-access-control"], '{"read-only":["test:tester3"]}')
        status, headers, body = self.cluster.http("GET", "/v1/AUTH_test2?format=json", as_reader)
        self.assertEqual((status, [c["name"] for c in json.loads(body)]), (200, ["shared"]))
        self.assertNotIn("x-account-access-control", headers)
        self.assertEqual(self.cluster.http("GET", "/v1/AUTH_test2/shared/o", as_reader)[2], b"for readers")
        self.assertEqual(self.cluster.http("PUT", "/v1/AUTH_test2/shared/new", as_reader, b"x")[0], 403)
        # read-write: objects and containers, not the account's metadata
        swift.post_account(url2, owner, {"X-Account-Access-Control": '{"read-write": ["test:tester3"]}'})
        self.assertEqual(self.cluster.http("PUT", "/v1/AUTH_test2/shared/new", as_reader, b"x")[0], 201)
        self.assertEqual(self.cluster.http("PUT", "/v1/AUTH_test2/made-by-reader", as_reader)[0], 201)
        self.assertEqual(self.cluster.http("POST", "/v1/AUTH_test2", {**as_reader, "X-Account-Meta-A": "1"})[0], 403)
        # a bad ACL is refused with the reason; an empty one removes it
        status, _, body = self.cluster.http("POST", "/v1/AUTH_test2", {"X-Auth-Token": owner,
                                                                       "X-Account-Access-Control": '{"owner": []}'})
        self.assertEqual((status, body), (400, b'Key "owner" not recognized'))
        swift.post_account(url2, owner, {"X-Account-Access-Control": "{}"})
        self.assertNotIn("x-account-access-control", swift.head_account(url2, owner))
        self.assertEqual(self.cluster.http("GET", "/v1/AUTH_test2/shared/o", as_reader)[0], 403)
        self.assertTrue(json.loads(self.cluster.http("GET", "/info", {})[2])["tempauth"]["account_acls"])


class SwiftSuiteRulesTests(LoggedInCase):
    """Rules Swift's own functional suite checks (issue 20), each through a real client."""

    def test_account_listing_as_swift_lists_it(self) -> None:
        swift.put_container(self.url, self.token, "b1")
        swift.put_container(self.url, self.token, "b2", headers={"X-Storage-Policy": "silver"})
        swift.put_container(self.url, self.token, "t-&x")
        _, containers = swift.get_account(self.url, self.token)
        self.assertEqual([(c["name"], c["storage_policy"]) for c in containers],
                         [("b1", "gold"), ("b2", "silver"), ("t-&x", "gold")])
        status, _, body = self.cluster.http("GET", self.path + "?format=xml", self.auth())
        root = ElementTree.fromstring(body)
        self.assertEqual([c.findtext("storage_policy") for c in root], ["gold", "silver", "gold"])
        # multi-character delimiters, NUL in a marker for an inclusive bound, a limit of 2.0
        _, containers = swift.get_account(self.url, self.token, delimiter="-&")
        self.assertEqual([c.get("name", c.get("subdir")) for c in containers], ["b1", "b2", "t-&"])
        _, containers = swift.get_account(self.url, self.token, marker="b1\x00")
        self.assertEqual([c["name"] for c in containers], ["b2", "t-&x"])
        status, _, body = self.cluster.http("GET", self.path + "?limit=2.0", self.auth())
        self.assertEqual((status, body), (200, b"b1\nb2\n"))
        status, _, body = self.cluster.http("GET", self.path + "?limit=2.5", self.auth())
        self.assertEqual((status, body.strip()), (400, b"limit must be a non-negative integer"))  # the node's


    def test_bad_paths_and_the_401_challenge(self) -> None:
        for method, path, status, body in [
            ("GET", "/v1//testc/testo", 404, None), ("GET", "/v1/testa//testo", 404, None),
            ("GET", "/v1///testo", 404, None), ("PUT", "/v1", 412, b"Bad URL"), ("GET", "/v1/", 412, b"Bad URL"),
            ("GET", "/info%20asdf", 412, b"Bad URL"), ("GET", "/v2/AUTH_test", 400, None),
            ("PUT", "/v1/AUTH_test/%FF", 412, b"Invalid UTF8 or contains NULL"),
        ]:
            got, headers, got_body = self.cluster.http(method, path, self.auth())
            self.assertEqual(got, status, path)
            self.assertIn("x-trans-id", headers)
            if body is not None:
                self.assertEqual(got_body, body, path)
        hax = 'AUTH_haxx"\nContent-Length: 13\n\n<b>Hello World'
        status, headers, body = self.cluster.http("GET", "/v1/" + quote(hax))
        self.assertEqual((status, headers["www-authenticate"]), (401, f'Swift realm="{quote(hax)}"'))
        self.assertNotIn(b"<b>", body)
        status, headers, _ = self.cluster.http("GET", self.path, {"X-Auth-Token": "AUTH_tkforged"})
        self.assertEqual((status, headers["www-authenticate"]), (401, 'Swift realm="AUTH_test"'))


    def test_container_post_is_its_last_modification(self) -> None:
        swift.put_container(self.url, self.token, "lm")
        first = swift.head_container(self.url, self.token, "lm")["last-modified"]
        time.sleep(1.1)  # Last-Modified counts seconds
        swift.post_container(self.url, self.token, "lm", {"X-Container-Meta-Japan": "mitaka"})
        second = swift.head_container(self.url, self.token, "lm")["last-modified"]
        self.assertNotEqual(first, second)
        time.sleep(1.1)
        swift.put_object(self.url, self.token, "lm", "o", b"aaaaa")
        self.assertEqual(swift.head_container(self.url, self.token, "lm")["last-modified"], second)


    def test_object_and_container_rules(self) -> None:
        swift.put_container(self.url, self.token, "c")
        data = bytes(range(256)) * 4
        swift.put_object(self.url, self.token, "c", "src", data)
        # a ranged copy stores that part
        status, _, _ = self.cluster.http("COPY", f"{self.path}/c/src",
                                         self.auth(Destination="/c/part", Range="bytes=100-200"))
        self.assertEqual(status, 201)
        headers, body = swift.get_object(self.url, self.token, "c", "part")
        self.assertEqual((body, headers["etag"]), (data[100:201], hashlib.md5(data[100:201]).hexdigest()))
        # X-Delete-At: far future is "never" (stored as 9999999999); X-If-Delete-At is checked
        status, _, _ = self.cluster.http("PUT", f"{self.path}/c/far", self.auth(**{"X-Delete-At": "1" * 100}), b"x")
        self.assertEqual(status, 201)
        self.assertEqual(swift.head_object(self.url, self.token, "c", "far")["x-delete-at"], "9999999999")
        status, _, body = self.cluster.http("DELETE", f"{self.path}/c/far", self.auth(**{"X-If-Delete-At": "bad"}))
        self.assertEqual((status, body), (400, b"Bad X-If-Delete-At header value"))
        status, _, _ = self.cluster.http("DELETE", f"{self.path}/c/far", self.auth(**{"X-If-Delete-At": "9999999998"}))
        self.assertEqual(status, 412)
        status, headers, _ = self.cluster.http("DELETE", f"{self.path}/c/far",
                                               self.auth(**{"X-If-Delete-At": "9999999999"}))
        self.assertEqual((status, headers["content-type"]), (204, "text/html; charset=UTF-8"))
        # Swift's words and label for a long container name
        status, headers, body = self.cluster.http("PUT", f"{self.path}/{'X' * 2048}", self.auth())
        self.assertEqual((status, headers["content-type"], body),
                         (400, "text/html; charset=UTF-8", b"Container name length of 2048 longer than 256"))
        # a re-PUT without X-Storage-Policy leaves a container in its policy
        swift.put_container(self.url, self.token, "two", headers={"X-Storage-Policy": "silver"})
        status, _, _ = self.cluster.http("PUT", f"{self.path}/two", self.auth())
        self.assertEqual(status, 202)
        self.assertEqual(swift.head_container(self.url, self.token, "two")["x-storage-policy"], "silver")
        # keep-alive is said back
        status, headers, _ = self.cluster.http("GET", f"{self.path}/c/src", self.auth(Connection="keep-alive"))
        self.assertEqual((status, headers["connection"]), (200, "keep-alive"))

    def test_owner_headers_are_the_owners(self) -> None:
        _, other = self.cluster.token("test:tester3", "testing3")
        swift.put_container(self.url, self.token, "c", headers={"X-Container-Read": "jdoe",
                                                                 "X-Container-Sync-Key": "secret"})
        swift.post_account(self.url, self.token, {"X-Account-Access-Control": '{"read-write": ["test:tester3"]}'})
        status, headers, _ = self.cluster.http("HEAD", f"{self.path}/c", {"X-Auth-Token": other})
        self.assertEqual(status, 204)
        self.assertNotIn("x-container-sync-key", headers)
        self.assertNotIn("x-container-read", headers)
        status, _, _ = self.cluster.http("POST", f"{self.path}/c", {
            "X-Auth-Token": other, "X-Container-Read": "frank", "X-Container-Sync-Key": "mine",
            "X-Container-Meta-Test": "v"})
        self.assertEqual(status, 204)
        headers = swift.head_container(self.url, self.token, "c")
        self.assertEqual([headers.get(n) for n in ("x-container-read", "x-container-sync-key", "x-container-meta-test")],
                         ["jdoe", "secret", "v"])


    def test_metadata_limits_hold_for_the_stored_total(self) -> None:
        """Issue 20: POSTs that each pass the limits cannot pile up more (90 items, 4096 bytes)."""
        swift.put_container(self.url, self.token, "meta")
        refused = []
        for target in ("container", "account"):
            for i in range(12):
                headers = {f"X-{target.title()}-Meta-P{i}-{j}": "v" for j in range(30)}
                try:
                    if target == "container":
                        swift.post_container(self.url, self.token, "meta", headers)
                    else:
                        swift.post_account(self.url, self.token, headers)
                except swift.ClientException as err:
                    refused.append((target, i, err.http_status))
            stored = (swift.head_container(self.url, self.token, "meta") if target == "container"
                      else swift.head_account(self.url, self.token))
            self.assertEqual(len([n for n in stored if n.startswith(f"x-{target}-meta-")]), 90, target)
        self.assertEqual(refused, [(t, i, 400) for t in ("container", "account") for i in range(3, 12)])


    def test_a_non_ascii_content_type_reaches_the_listing(self) -> None:
        """Issue 20: the object was stored but never listed (the container update failed)."""
        swift.put_container(self.url, self.token, "types")
        for name, content_type in (("e", "text/\u00e9"), ("euro", "text/\u00e9\u20ac")):
            status, _, _ = self.cluster.http("PUT", f"{self.path}/types/{name}",
                                             self.auth(**{"Content-Type": content_type.encode().decode("latin-1")}), b"x")
            self.assertEqual(status, 201)
        _, listing = swift.get_container(self.url, self.token, "types")
        self.assertEqual([(o["name"], o["content_type"]) for o in listing],
                         [("e", "text/\u00e9"), ("euro", "text/\u00e9\u20ac")])
        logs = "".join(p.read_text() for p in (self.cluster.root / "log").glob("node*.log"))
        self.assertNotIn("UnicodeEncodeError", logs)


    def test_metadata_that_is_not_utf8(self) -> None:
        """
        Issue 20, as Swift: an object's metadata is any bytes (an object POST stored a value cut
        mid-character, then every HEAD of that replica was a 500); a container's or account's
        must be UTF-8 (400).
        """
        swift.put_container(self.url, self.token, "m")
        swift.put_object(self.url, self.token, "m", "o", b"x")
        cut = b"ok\xc3".decode("latin-1")  # UTF-8 cut mid-character, as a 256-byte limit cuts it
        for method, path, name in (("POST", "m", "X-Container-Meta-A"), ("POST", "", "X-Account-Meta-A")):
            status, _, body = self.cluster.http(method, f"{self.path}/{path}".rstrip("/"), self.auth(**{name: cut}), b"")
            self.assertEqual((status, body), (400, b"Metadata must be valid UTF-8"), (method, path))
        for method, path in (("POST", "m/o"), ("PUT", "m/p")):
            status, _, _ = self.cluster.http(method, f"{self.path}/{path}", self.auth(**{"X-Object-Meta-A": cut}), b"")
            self.assertIn(status, (201, 202), path)
            status, headers, _ = self.cluster.http("HEAD", f"{self.path}/{path}", self.auth())
            self.assertEqual((status, headers["x-object-meta-a"]), (200, cut), path)
        # a raw 0xFF content type was stored, then never listed nor read (every node a 500)
        status, _, body = self.cluster.http("PUT", f"{self.path}/m/ff", self.auth(**{"Content-Type": "text/\xff"}), b"x")
        self.assertEqual((status, body), (400, b"Invalid Content-Type"))
        logs = "".join(p.read_text() for p in (self.cluster.root / "log").glob("*.log"))
        self.assertNotIn("Traceback", logs)


class MetricsTests(ClusterCase):
    def test_proxy_and_nodes_serve_prometheus_metrics(self) -> None:
        """Every process answers /metrics without a token; a PUT is counted once per process that served it."""
        url, token = self.cluster.token()
        swift.put_container(url, token, "m")
        swift.put_object(url, token, "m", "o", b"x" * 5000)

        def scrape(port: int) -> dict[str, float]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                conn.request("GET", "/metrics")
                response = conn.getresponse()
                self.assertEqual(response.status, 200)
                text = response.read().decode()
            finally:
                conn.close()
            self.assertIn("process_resident_memory_bytes", text)
            samples = {}
            for line in text.splitlines():
                if line and not line.startswith("#"):
                    name, _, value = line.rpartition(" ")
                    samples[name] = float(value)
            return samples

        proxy = scrape(self.cluster.port)
        self.assertEqual(proxy['txstore_requests_total{method="PUT",source="",status="2xx"}'], 2.0)
        self.assertEqual(proxy['txstore_request_bytes_total{method="PUT",source="",status="2xx"}'], 5000.0)
        self.assertGreaterEqual(proxy['txstore_request_duration_seconds_count{method="PUT",source="",status="2xx"}'], 2)
        self.assertGreaterEqual(proxy['txstore_request_ttfb_seconds_count{method="PUT",source="",status="2xx"}'], 2)
        object_puts = 0.0
        for node in range(1, 5):
            samples = scrape(self.cluster.port + 10 * node)
            object_puts += samples.get('txstore_requests_total{method="PUT",server="object",status="2xx"}', 0.0)
        self.assertEqual(object_puts, 3.0)  # one per replica
        node = scrape(self.cluster.port + 10)  # per device (gathered at the node's start), and the pools
        self.assertEqual(node['txstore_device_mounted{device="d1"}'], 1.0)
        self.assertGreater(node['txstore_device_size_bytes{device="d1"}'], 0)
        self.assertEqual(node['txstore_device_async_pendings{device="d1"}'], 0.0)
        self.assertEqual(node['txstore_device_quarantined{device="d1",kind="objects"}'], 0.0)
        self.assertIn('txstore_io_queued{pool="d1"}', node)
        self.assertEqual(scrape(self.cluster.port)['txstore_requests_total{method="PUT",source="",status="2xx"}'], 2.0)


class OneNodeDownTests(ClusterCase):
    def test_writes_and_reads_with_a_node_stopped(self) -> None:
        self.cluster.stop_node(2)
        url, token = self.cluster.token()
        swift.put_container(url, token, "down")
        payload = os.urandom(3 * 1024 * 1024)
        for i in range(10):
            swift.put_object(url, token, "down", f"o{i}", contents=payload)
        for i in range(10):
            _, body = swift.get_object(url, token, "down", f"o{i}")
            self.assertEqual(body, payload)
        _, listing = swift.get_container(url, token, "down")
        self.assertEqual(len(listing), 10)
        swift.delete_object(url, token, "down", "o0")
        self.assertRaises(swift.ClientException, swift.get_object, url, token, "down", "o0")


class CatchUpTests(ClusterCase):
    def test_container_replica_catches_up_after_downtime(self) -> None:
        """Rows a stopped container server missed arrive through async pendings and the updater."""
        from txstore.common.cluster import load_cluster_config
        from txstore.ring.ringset import RingSet

        url, token = self.cluster.token()
        swift.put_container(url, token, "catchup")
        etc = self.cluster.root / "etc"
        cluster = load_cluster_config(etc / "txstore.conf")
        ring = RingSet.load(etc, cluster.hasher, cluster.policies).container
        part, nodes = ring.get_nodes("AUTH_test", "catchup")
        down = nodes[0]
        number = (down.port - self.cluster.port) // 10
        self.cluster.stop_node(number)
        for i in range(20):
            swift.put_object(url, token, "catchup", f"o{i:02d}", contents=b"x")
        pendings = lambda: list(self.cluster.root.glob("srv/node*/d*/async_pending*/*/*"))  # noqa: E731
        self.assertTrue(pendings(), "updates for the stopped container server were saved")

        self.cluster.start_node(self, number)
        listing: list = []
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            try:
                status, _, body = self._node_listing(down, part)
            except OSError:
                status, body = 0, b""
            listing = json.loads(body) if status == 200 else []
            if len(listing) == 20 and not pendings():
                break
            time.sleep(0.5)
        self.assertEqual([o["name"] for o in listing], [f"o{i:02d}" for i in range(20)])
        self.assertEqual(pendings(), [])

    def _node_listing(self, node, part):
        conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
        try:
            conn.request("GET", f"/{node.device_name}/{part}/AUTH_test/catchup?format=json")
            response = conn.getresponse()
            return response.status, {}, response.read()
        finally:
            conn.close()


class BrokenReadTests(ClusterCase):
    """A node that dies while its object is being downloaded."""

    def setUp(self) -> None:
        super().setUp()
        self.url, self.token = self.cluster.token()
        swift.put_container(self.url, self.token, "big")
        self.data = os.urandom(48 * 1024 * 1024)
        swift.put_object(self.url, self.token, "big", "o", contents=self.data)
        from txstore.common.cluster import load_cluster_config
        from txstore.ring.ringset import RingSet

        etc = self.cluster.root / "etc"
        cluster = load_cluster_config(etc / "txstore.conf")
        ring = RingSet.load(etc, cluster.hasher, cluster.policies).object_ring(0)
        _, nodes = ring.get_nodes("AUTH_test", "big", "o")
        self.node_names = [f"node{(n.port - self.cluster.port) // 10}" for n in nodes]  # node N: base + 10N

    def kill(self, name: str) -> None:
        os.kill(self.cluster.pid(name), signal.SIGKILL)

    def start_download(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.cluster.port, timeout=60)
        conn.request("GET", "/v1/AUTH_test/big/o", headers={"X-Auth-Token": self.token})
        response = conn.getresponse()
        self.assertEqual(response.status, 200)
        self.assertEqual(int(response.getheader("Content-Length")), len(self.data))
        first = response.read(1024 * 1024)
        return conn, response, first

    def test_resumes_from_another_replica(self) -> None:
        conn, response, first = self.start_download()
        self.kill(self.node_names[0])  # the first primary is the one serving
        rest = response.read()
        conn.close()
        self.assertEqual(first + rest, self.data)

    def test_aborts_when_no_replica_can_resume(self) -> None:
        conn, response, first = self.start_download()
        for name in self.node_names:
            self.kill(name)
        with self.assertRaises((http.client.IncompleteRead, ConnectionResetError)):
            response.read()
        conn.close()
