"""
Hostile and random requests against a real all-in-one: every one gets a clear 4xx (or, for
the harmless ones, a normal answer), never a 5xx or a hung connection, and nothing stored
changes.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
from pathlib import Path

from swiftclient import client as swift
from twisted.trial.unittest import SynchronousTestCase

from txstore.test.integration.test_proxy_integration import Cluster, ClusterCase


def raw_request(port: int, data: bytes, timeout: float = 20.0) -> int | None:
    """Send bytes as they are; the status of the answer, or None if the connection just closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while b"\r\n" not in received:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    if not received.startswith(b"HTTP/1.1 "):
        return None
    return int(received[9:12])


class HostileRequestTests(ClusterCase):
    def setUp(self) -> None:
        super().setUp()
        self.url, self.token = self.cluster.token()
        swift.put_container(self.url, self.token, "keep")
        swift.put_object(self.url, self.token, "keep", "o", contents=b"precious", headers={"X-Object-Meta-A": "1"})

    def stored(self) -> tuple:
        _, containers = swift.get_account(self.url, self.token)
        _, objects = swift.get_container(self.url, self.token, "keep")
        headers, body = swift.get_object(self.url, self.token, "keep", "o")
        return (
            [c["name"] for c in containers],
            [(o["name"], o["hash"], o["bytes"]) for o in objects],
            body,
            headers.get("x-object-meta-a"),
        )

    def request(self, method: str, path: str, headers: list[tuple[str, str]] = (), body: bytes = b"",
                auth: bool = True) -> int | None:
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
        if auth:
            lines.append(f"X-Auth-Token: {self.token}")
        lines += [f"{k}: {v}" for k, v in headers]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")
        return raw_request(self.cluster.port, head + body)

    def test_hostile_requests_get_a_4xx_and_change_nothing(self) -> None:
        before = self.stored()
        o = "/v1/AUTH_test/keep/o"
        cases = [
            ("PUT", o, [("Content-Length", "abc")], b"", 400),
            ("PUT", o, [("Content-Length", "-1")], b"", 400),
            ("PUT", o, [("Content-Length", "5"), ("Content-Length", "6")], b"hello", 400),
            ("PUT", o, [("Content-Length", str(6 * 1024**3))], b"", 413),
            ("PUT", o, [], b"", 411),
            ("PUT", o, [("Content-Length", "1"), ("X-Delete-At", "soon")], b"x", 400),
            ("PUT", o, [("Content-Length", "1"), ("X-Delete-At", "100")], b"x", 400),
            ("PUT", o, [("Content-Length", "1"), ("X-Delete-After", "-5")], b"x", 400),
            ("PUT", o, [("Content-Length", "1"), ("X-Object-Meta-" + "n" * 129, "v")], b"x", 400),
            ("PUT", o, [("Content-Length", "1")] + [(f"X-Object-Meta-{i}", "v") for i in range(91)], b"x", 400),
            ("PUT", o, [("Content-Length", "1"), ("ETag", "nothex")], b"x", 422),
            ("PUT", o, [("Content-Length", "1"), ("If-None-Match", "*")], b"x", 412),
            ("POST", o, [("X-Object-Meta-Big", "v" * 300)], b"", 400),
            ("POST", "/v1/AUTH_test/keep", [("X-Container-Read", ".r:")], b"", 400),
            ("POST", "/v1/AUTH_test/keep", [("X-Container-Meta-" + "k" * 200, "v")], b"", 400),
            ("GET", o, [("Range", "bytes=9999-")], b"", 416),
            ("GET", "/v1/AUTH_test/keep/%FF", [], b"", 412),
            ("GET", "/v1/AUTH_test/keep/a%00b", [], b"", 412),
            ("PUT", "/v1/AUTH_test/keep/" + "n" * 1025, [("Content-Length", "1")], b"x", 400),
            ("PUT", "/v1/AUTH_test/" + "c" * 257, [], b"", 400),
            ("GET", "/v1/AUTH_test/keep?limit=10001", [], b"", 412),
            ("GET", "/v1/AUTH_test/keep?limit=abc", [], b"", 400),
            ("COPY", o, [], b"", 412),
            ("COPY", o, [("Destination", "nowhere")], b"", 412),
            ("PUT", "/v1/AUTH_test/keep/x", [("X-Copy-From", "bad")], b"", 412),
            ("DELETE", "/v1/AUTH_test/keep", [], b"", 409),
            ("GET", o, [("X-Auth-Token", "AUTH_tkforged")], b"", 401),
            ("PATCH", o, [], b"", 405),
            ("GET", "/v1/", [], b"", 412),  # Swift's "Bad URL"
            ("GET", "/v1//c/o", [], b"", 404),
            ("GET", "/v2/AUTH_test", [], b"", 400),
            ("PUT", o, [("Content-Length", "3"), ("X-Object-Meta-Ok", "x" * 8000)], b"abc", 400),
        ]
        for method, path, headers, body, expected in cases:
            status = self.request(method, path, headers, body)
            self.assertEqual(status, expected, (method, path, headers[:3]))
        # Malformed at the HTTP level: Twisted answers 400 and closes.
        for data in [
            b"GARBAGE\r\n\r\n",
            b"GET /v1/AUTH_test HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(600)) + b"\r\n",
            b"GET /v1/AUTH_test HTTP/1.1\r\nX-Long: " + b"a" * 20000 + b"\r\n\r\n",
            b"PUT /v1/AUTH_test/keep/o HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n",
        ]:
            status = raw_request(self.cluster.port, data)
            self.assertTrue(status is None or 400 <= status < 500, (data[:60], status))
        self.assertEqual(self.stored(), before)

    def test_random_requests_never_5xx(self) -> None:
        before = self.stored()
        rng = random.Random(20261121)
        methods = ["GET", "HEAD", "PUT", "POST", "DELETE", "COPY", "OPTIONS", "PATCH"]
        pieces = ["v1", "AUTH_test", "keep", "o", "..", ".", "", "%00", "%FF", "%2F", "a" * 300, "\u00e9", "?", "#",
                  "auth", "info", "healthcheck", "*", "%", "%zz"]
        header_names = ["Range", "If-Match", "If-None-Match", "X-Delete-At", "Content-Length", "ETag",
                        "Destination", "X-Copy-From", "X-Container-Read", "X-Object-Meta-X", "X-Newest",
                        "Content-Type", "Transfer-Encoding", "Expect", "X-Auth-Token"]
        values = ["", "*", "bytes=0-", "bytes=-1", "bytes=a-b", "-1", "99999999999999999999", "\u00e9", "x" * 300,
                  "/keep/o", "keep/o", ".r:*", "chunked", "100-continue", "garbage"]
        for _ in range(150):
            path = "/" + "/".join(rng.choice(pieces) for _ in range(rng.randint(0, 5)))
            headers = [(rng.choice(header_names), rng.choice(values)) for _ in range(rng.randint(0, 4))]
            method = rng.choice(methods)
            # without a valid token nothing can be stored, whatever the request says
            status = self.request(method, path, headers, b"", auth=False)
            self.assertTrue(status is None or status < 500, (method, path, headers, status))
        self.assertEqual(self.stored(), before)

    def test_a_transfer_coding_we_do_not_implement_is_501_through_curl(self) -> None:
        """
        Swift's testBadHeaders: curl sends ``Transfer-Encoding: gzip,chunked`` (its body
        chunked) and gets 501 Not Implemented with the reason, as from Swift; nothing is stored.
        """
        before = self.stored()
        done = subprocess.run(
            ["curl", "-s", "-D", "-", "-X", "PUT", "-H", f"X-Auth-Token: {self.token}",
             "-H", "Transfer-Encoding: gzip,chunked", "--data-binary", "abc",
             f"http://127.0.0.1:{self.cluster.port}/v1/AUTH_test/keep/o"],
            capture_output=True, timeout=60,
        )
        self.assertTrue(done.stdout.startswith(b"HTTP/1.1 501 Not Implemented\r\n"), done.stdout[:200])
        self.assertIn(b"Unsupported Transfer-Coding", done.stdout)
        self.assertEqual(self.stored(), before)


class DeclaredSizeTests(SynchronousTestCase):
    def test_a_declared_size_past_the_free_space_waits_for_its_body(self) -> None:
        """
        Swift's testFileSizeLimit, on an all-in-one whose largest object is more than its disk
        holds: a PUT declaring up to that size gets no answer before its body (the nodes do not
        reserve it, as Swift's all-in-one does not; reserved, it was a 503 at once), and one
        past it a 413.
        """
        root = Path(self.mktemp()).absolute()
        root.mkdir(parents=True)
        limit = shutil.disk_usage(root).free + 2**30
        cluster = Cluster(root / "aio", "--max-file-size", str(limit))
        self.addCleanup(cluster.stop)
        cluster.start()
        url, token = cluster.token()
        swift.put_container(url, token, "c")

        def head(size: int) -> bytes:
            return (f"PUT /v1/AUTH_test/c/o{size} HTTP/1.1\r\nHost: h\r\nX-Auth-Token: {token}\r\n"
                    f"Content-Length: {size}\r\nContent-Type: application/octet-stream\r\n\r\n").encode()

        for size in (limit - 1, limit):
            with socket.create_connection(("127.0.0.1", cluster.port), timeout=3) as sock:
                sock.sendall(head(size))
                with self.assertRaises(socket.timeout, msg=size):
                    answer = sock.recv(1024)
                    self.fail(f"answered before the body: {answer[:80]!r}")
        for size in (limit + 1, limit + 100):
            self.assertEqual(raw_request(cluster.port, head(size)), 413)
        self.assertEqual(swift.get_container(url, token, "c")[1], [])
