"""
Several proxies of one cluster (issue 23): ``txstore-aio --proxies 2`` (two proxies sharing the
memcached it starts; skipped without Debian's memcached) and two proxies with signed tokens
(the all-in-one's fallback without memcached), driven by python-swiftclient and curl: a token
from proxy A works on proxy B, a container created and its ACL changed through A is seen
through B within seconds, and memcached killed (SIGKILL) mid-run leaves a stream of PUTs and
GETs through both proxies succeeding; once memcached is back, the proxies share again.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from swiftclient import client as swift
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from txstore.aio import launcher
from txstore.aio.layout import Topology, prepare
from txstore.test.memcached_process import MemcachedProcess, memcached_binary
from txstore.test.support import free_port_block
from txstore.test.integration.test_proxy_integration import Cluster


def curl_status(url: str, *headers: str, head: bool = False) -> int:
    args = [item for header in headers for item in ("-H", header)] + (["-I"] if head else [])
    done = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", *args, url],
                          capture_output=True, text=True, timeout=60)
    return int(done.stdout)


class SharingChecks:
    """What two proxies of one cluster must agree on; a subclass starts them on ``a`` and ``b``."""

    a: int
    b: int

    def auth(self, port: int) -> tuple[str, str]:
        return swift.get_auth(f"http://127.0.0.1:{port}/auth/v1.0", "test:tester", "testing")

    def url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}/v1/AUTH_test"

    def check_token_from_a_works_on_b(self) -> str:
        _, token = self.auth(self.a)
        headers = swift.head_account(self.url(self.b), token)
        self.assertIn("x-account-container-count", headers)
        self.assertEqual(curl_status(self.url(self.b), f"X-Auth-Token: {token}", head=True), 204)
        self.assertEqual(curl_status(self.url(self.b), "X-Auth-Token: AUTH_tk" + "0" * 32, head=True), 401)
        return token

    def check_container_and_acl_seen_through_b(self, token: str, container: str) -> float:
        """Create through A, read through B; open it to everyone through A: seconds until B lets anyone read."""
        swift.put_container(self.url(self.a), token, container)
        swift.put_object(self.url(self.a), token, container, "o", b"shared bytes")
        self.assertEqual(swift.get_object(self.url(self.b), token, container, "o")[1], b"shared bytes")
        anonymous = f"{self.url(self.b)}/{container}/o"
        self.assertEqual(curl_status(anonymous), 401)  # B has the container's info now: no read ACL
        swift.post_container(self.url(self.a), token, container, {"X-Container-Read": ".r:*"})
        changed = time.monotonic()
        while curl_status(anonymous) != 200:
            self.assertLess(time.monotonic() - changed, 15, "B never saw the ACL set through A")
            time.sleep(0.1)
        return time.monotonic() - changed


class MemcachedProxiesTests(SharingChecks, SynchronousTestCase):
    def setUp(self) -> None:
        if memcached_binary() is None:
            raise SkipTest("no memcached (apt-get install memcached)")
        self.cluster = Cluster(Path(self.mktemp()).absolute() / "aio", "--proxies", "2", nodes=3)
        self.addCleanup(self.cluster.stop)
        self.cluster.start()
        self.a, self.b = self.cluster.port, self.cluster.port + 1
        pid = int((self.cluster.root / "run" / "memcached.pid").read_text())
        conf = (self.cluster.root / "etc" / "proxy2.conf").read_text()
        port = int(conf.split("memcache_servers = 127.0.0.1:")[1].split()[0])
        self.memcached = MemcachedProcess(memcached_binary(), port)  # the aio's; restarted by hand below
        self.memcached_pid = pid

    def test_tokens_and_info_shared_and_memcached_killed_mid_run(self) -> None:
        token = self.check_token_from_a_works_on_b()
        self.assertEqual(self.auth(self.b)[1], token)  # a login through B hands back the one out
        seen_after = self.check_container_and_acl_seen_through_b(token, "shared")
        self.assertLess(seen_after, 2.5)  # local_ttl (1 s) and the requests' own time

        # memcached dies: a stream of writes and reads through both proxies goes on
        self.assertEqual(swift.head_account(self.url(self.b), token)["x-account-container-count"], "1")
        subprocess.run(["kill", "-KILL", str(self.memcached_pid)], check=True)
        self.addCleanup(self.memcached.stop)
        started = time.monotonic()
        failed = []
        for n in range(25):
            for port in (self.a, self.b):
                body = f"object {n} through {port}".encode()
                try:
                    swift.put_object(self.url(port), token, "shared", f"during/{n}/{port}", body)
                    got = swift.get_object(self.url(port), token, "shared", f"during/{n}/{port}")[1]
                    if got != body:
                        failed.append((n, port, "wrong bytes"))
                except swift.ClientException as err:
                    failed.append((n, port, err.http_status))
        elapsed = time.monotonic() - started
        self.assertEqual(failed, [])
        self.assertLess(elapsed, 60)

        # memcached back (empty, as after any restart: tokens must be got again): sharing again
        self.memcached.start()
        time.sleep(5.5)  # error_suppression_interval in the aio's proxy.conf
        _, fresh = self.auth(self.a)
        self.assertNotEqual(fresh, token)  # the old one died with memcached's contents
        deadline = time.monotonic() + 15
        while curl_status(self.url(self.b), f"X-Auth-Token: {fresh}", head=True) != 204:
            self.assertLess(time.monotonic(), deadline, "B does not know A's token after memcached came back")
            time.sleep(0.5)
        self.check_container_and_acl_seen_through_b(fresh, "after")


class SignedProxiesTests(SharingChecks, SynchronousTestCase):
    """Two proxies without memcached (txstore-aio's fallback): tokens signed, info per proxy."""

    def setUp(self) -> None:
        base = free_port_block(5, step=10)
        layout = prepare(Path(self.mktemp()).absolute() / "aio", Topology(nodes=3, replicas=3, part_power=6,
                                                                           base_port=base), base, proxies=2)
        cluster = launcher.Cluster(layout)
        self.addCleanup(cluster.stop)
        cluster.start()
        self.a, self.b = base, base + 1

    def test_tokens_signed_and_info_seen_within_the_info_ttl(self) -> None:
        token = self.check_token_from_a_works_on_b()
        self.assertTrue(token.startswith("AUTH_tk") and "." in token)  # a signed one
        seen_after = self.check_container_and_acl_seen_through_b(token, "signed")
        self.assertLess(seen_after, 12)  # each proxy's own cache: info_ttl (10 s) at most
