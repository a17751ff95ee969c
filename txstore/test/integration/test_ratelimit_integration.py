"""
ratelimit on a real all-in-one (``txstore-aio``) whose proxy is restarted with limits in its
``[filter:ratelimit]``: curl's container PUTs spaced by account_ratelimit (timed), 498 past
max_sleep_time_seconds with nothing created, object writes in a container past its size
limited, the blacklisted account refused with 497, /info listing the settings; the same limits
kept in memcached (started by the test on a free port) when ``memcache_servers`` names it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

from swiftclient import client as swift
from twisted.trial.unittest import SkipTest

from txstore.test.integration.test_proxy_integration import ClusterCase
from txstore.test.memcached_process import free_port

LIMITS = """account_ratelimit = 2
max_sleep_time_seconds = 2
container_ratelimit_3 = 2
account_blacklist = AUTH_test2
"""


class RateLimitTests(ClusterCase):
    def curl(self, method: str, path: str, token: str) -> tuple[int, bytes, float]:
        """(status, body, seconds taken) of one request by curl."""
        started = time.monotonic()
        verb = ["-I"] if method == "HEAD" else ["-X", method]  # -X HEAD would wait for a body
        done = subprocess.run(["curl", "-s", *verb, "-H", f"X-Auth-Token: {token}", "-H", "Content-Length: 0",
                               "-w", "\n%{http_code}", f"http://127.0.0.1:{self.cluster.port}{path}"],
                              capture_output=True, timeout=60)
        body, _, status = done.stdout.rpartition(b"\n")
        return int(status), body, time.monotonic() - started

    def burst(self, paths: list[str], token: str) -> list[tuple[int, bytes, float]]:
        """Container PUTs sent at once by parallel curls."""
        with ThreadPoolExecutor(len(paths)) as pool:
            return list(pool.map(lambda path: self.curl("PUT", path, token), paths))

    def check_limits(self) -> None:
        url, token = self.cluster.token()
        info = json.loads(subprocess.run(["curl", "-s", f"http://127.0.0.1:{self.cluster.port}/info"],
                                         capture_output=True, timeout=60).stdout)
        self.assertEqual(info["ratelimit"], {"account_ratelimit": 2.0, "max_sleep_time_seconds": 2.0,
                                             "container_ratelimits": [[3, 2.0]], "container_listing_ratelimits": []})
        time.sleep(1)
        # 2 container PUTs a second: of 8 sent at once, those due within 2 s wait their turn, the rest 498
        paths = [f"/v1/AUTH_test/c{n}" for n in range(8)]
        results = self.burst(paths, token)
        statuses = sorted(status for status, _, _ in results)
        created = [r for r in results if r[0] == 201]
        refused = [r for r in results if r[0] == 498]
        self.assertEqual(len(created) + len(refused), 8, statuses)
        # 4 when the 8 arrive within 0.5 s; a loaded machine spreads curl's starts, admitting more
        self.assertTrue(4 <= len(created) <= 7, statuses)
        self.assertEqual({body for _, body, _ in refused}, {b"Slow down"})
        self.assertGreater(max(taken for _, _, taken in created), 1.2)  # the last admitted waited ~1.5-2 s
        self.assertLess(max(taken for _, _, taken in refused), 1.0)  # refused at once
        time.sleep(2)
        for path, (status, _, _) in zip(paths, results):  # nothing made for a refused request
            self.assertEqual(self.curl("HEAD", path, token)[0], 204 if status == 201 else 404, path)
        # object writes in a container of 3+ objects (made before the restart): 2 a second
        started = time.monotonic()
        for n in range(5):
            self.assertEqual(self.curl("PUT", f"/v1/AUTH_test/full/n{n}", token)[0], 201)
        self.assertGreater(time.monotonic() - started, 1.4)  # 5 at 2/s: the last ~2 s after the first
        # the blacklisted account
        _, other = self.cluster.token("test2:tester2", "testing2")
        status, body, taken = self.curl("GET", "/v1/AUTH_test2", other)
        self.assertEqual((status, body), (497, b"Your account has been blacklisted"))
        self.assertGreater(taken, 0.9)
        # reads are not limited
        started = time.monotonic()
        for _ in range(10):
            self.assertEqual(self.curl("HEAD", "/v1/AUTH_test/full/o0", token)[0], 200)
        self.assertLess(time.monotonic() - started, 5)

    def prepare(self) -> None:
        url, token = self.cluster.token()
        swift.put_container(url, token, "full")
        for n in range(3):
            swift.put_object(url, token, "full", f"o{n}", contents=b"x")

    def test_limits_in_the_proxys_memory(self) -> None:
        self.prepare()
        self.restart_proxy("ratelimit", LIMITS)
        self.check_limits()

    def test_limits_in_memcached(self) -> None:
        binary = shutil.which("memcached")
        if binary is None:
            raise SkipTest("no memcached (apt-get install memcached)")
        port = free_port()
        as_root = ["-u", "root"] if os.geteuid() == 0 else []
        memcached = subprocess.Popen([binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "16", *as_root],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(memcached.wait, 10)
        self.addCleanup(memcached.terminate)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                self.assertLess(time.monotonic(), deadline, "memcached did not start")
                time.sleep(0.05)
        self.prepare()
        self.restart_proxy("ratelimit", LIMITS + f"memcache_servers = 127.0.0.1:{port}\n")
        self.check_limits()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"stats\r\n")
            answer = b""
            while not answer.endswith(b"END\r\n"):
                answer += conn.recv(65536)
        stats = dict(line.split()[1:3] for line in answer.decode().splitlines() if line.startswith("STAT "))
        self.assertGreater(int(stats["incr_hits"]) + int(stats["incr_misses"]), 10)  # the proxy counted there
        self.assertNotIn("counters unreachable", (self.cluster.root / "log" / "proxy.log").read_text())
