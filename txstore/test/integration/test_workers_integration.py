"""
Proxy workers on a live all-in-one (issue 23): a worker killed is replaced by its supervisor,
and clients see nothing of it.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from swiftclient import client as swift
from twisted.trial.unittest import SynchronousTestCase

from txstore.test.integration.test_proxy_integration import Cluster


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (the supervisor's workers)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return sorted(found)


class KilledWorkerTests(SynchronousTestCase):
    def test_a_killed_worker_is_replaced_and_requests_keep_succeeding(self) -> None:
        cluster = Cluster(Path(self.mktemp()).absolute() / "aio", "--workers", "2")
        self.addCleanup(cluster.stop)
        cluster.start()
        url, token = cluster.token()  # signed: good on either worker
        body = os.urandom(10_000)
        swift.put_container(url, token, "w")
        swift.put_object(url, token, "w", "o", body)
        path = "/" + url.split("/", 3)[3] + "/w/o"
        supervisor = int((cluster.root / "run" / "proxy.pid").read_text())
        first = children(supervisor)
        self.assertEqual(len(first), 2, first)

        failed: list[str] = []

        def serve(count: int) -> None:
            """``count`` GETs, each on a new connection (so each may reach either worker)."""
            for _ in range(count):
                try:
                    status, _, got = cluster.http("GET", path, {"X-Auth-Token": token})
                except OSError as err:
                    failed.append(repr(err))
                    continue
                if (status, got) != (200, body):
                    failed.append(f"status {status}, {len(got)} bytes")

        def replaced(gone: int) -> list[int]:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                now = children(supervisor)
                if len(now) == 2 and gone not in now:
                    return now
                serve(5)  # requests go on meanwhile
            self.fail(f"worker {gone} was not replaced: {children(supervisor)}")

        serve(30)
        os.kill(first[0], signal.SIGKILL)
        after_first = replaced(first[0])
        serve(30)
        # The other original worker too: only the replacement is left of the two first ones,
        # so what follows is served by a worker the supervisor started.
        os.kill(first[1], signal.SIGKILL)
        after_second = replaced(first[1])
        serve(30)
        self.assertEqual(failed, [])
        self.assertFalse(set(first) & set(after_second))
        self.assertIn([p for p in after_first if p != first[1]][0], after_second)
