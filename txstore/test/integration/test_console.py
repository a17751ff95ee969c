"""Tests for the operators' console: the status it gathers, who may see it, and the page in a browser."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from txstore.common.backend_client import BackendError, BackendResponse
from txstore.common.metrics import proxy_metrics
from txstore.common.policies import DEFAULT_POLICIES
from txstore.middleware.console import Console
from txstore.proxy.cluster_status import ClusterStatus
from txstore.proxy.messages import SwiftRequest, SwiftResponse
from txstore.ring.device import Device
from txstore.test.support import BROWSER, NO_BROWSER
from txstore.test.integration.test_proxy_integration import ClusterCase


class FakeRing:
    def __init__(self, *ports: int) -> None:
        self.devices = [Device(id=i, region=1, zone=i + 1, ip="127.0.0.1", port=port, device=f"d{i}", weight=100.0)
                        for i, port in enumerate(ports)]
        self.partition_count, self.replica_count = 64, 2


class FakeRings:
    def __init__(self, ring: FakeRing) -> None:
        self.account = self.container = ring
        self.objects = {0: ring}

    def all(self):
        return [self.account, self.container, *self.objects.values()]


class ReconClient:
    """Answers recon like a node on port 6210; the node on 6220 is down."""

    def __init__(self) -> None:
        self.asked: list[tuple[int, str]] = []

    def request(self, method, host, port, path, headers=None, body=None, timeout=None, query=""):
        self.asked.append((port, path))
        if port == 6220:
            return fail(BackendError("connection refused"))
        answers = {
            "/recon/diskusage": [{"device": "d0", "mounted": True, "size": 100, "avail": 40, "used": 60}],
            "/recon/async": {"async_pending": 3},
            "/recon/quarantined": {"objects": 1, "containers": 0, "accounts": 0},
            "/recon/daemons": {"object-replicator": {"passes": 2, "last_pass": {"finished_at": 990.0}}},
            "/recon/time": {"time": 1000.5},
            "/recon/version": {"version": "0.1.0"},
        }
        return succeed(BackendResponse(200, {}, json.dumps(answers[path]).encode()))


def run(case: SynchronousTestCase, coroutine):
    return case.successResultOf(Deferred.fromCoroutine(coroutine))


class ClusterStatusTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000.0)
        self.client = ReconClient()
        metrics = proxy_metrics()
        metrics.observe("GET", 200, 0.5, 10, 0)
        metrics.observe("GET", 200, 0.2, 10, 0, source="SLO")  # a sub-request: part of its client's
        context = SimpleNamespace(rings=FakeRings(FakeRing(6210, 6220)), client=self.client, policies=DEFAULT_POLICIES,
                                  metrics=metrics, errors=None, reactor=self.clock)
        self.status = ClusterStatus(context)

    def test_each_node_up_or_down_with_its_figures(self) -> None:
        status = run(self, self.status.current())
        up, down = status["nodes"]
        self.assertEqual((up["node"], up["up"], down["node"], down["up"]), ("127.0.0.1:6210", True, "127.0.0.1:6220", False))
        self.assertEqual((up["async_pending"], up["quarantined"]["objects"], up["replication_age"]), (3, 1, 10.0))
        self.assertEqual((up["clock_offset"], up["version"], up["last_seen"]), (0.5, "0.1.0", 1000.0))
        self.assertEqual((down["last_seen"], down["devices"]), (None, []))
        self.assertEqual([r["name"] for r in status["rings"]], ["account", "container", "object Policy-0"])
        self.assertEqual(sum(m["requests"] for m in status["requests"]), 1)  # clients' requests only
        self.assertEqual(len(status["requests"]), 60)

    def test_gathered_at_most_every_two_seconds(self) -> None:
        run(self, self.status.current())
        asked = len(self.client.asked)
        run(self, self.status.current())
        self.assertEqual(len(self.client.asked), asked)
        self.clock.advance(2.0)
        run(self, self.status.current())
        self.assertEqual(len(self.client.asked), 2 * asked)


class ConsoleTests(SynchronousTestCase):
    def setUp(self) -> None:
        status = SimpleNamespace(current=lambda: _ready({"nodes": []}))
        self.console = Console(lambda request: succeed(SwiftResponse.text(200, "below")), status)

    def call(self, path: str, identity=None, method: str = "GET") -> SwiftResponse:
        request = SwiftRequest(method, path)
        request.identity = identity
        return self.successResultOf(Deferred.fromCoroutine(_awaited(self.console(request))))

    def test_the_page_for_anyone_the_status_for_reseller_admins(self) -> None:
        page = self.call("/console")
        self.assertEqual((page.status, page.headers["Content-Type"]), (200, "text/html; charset=utf-8"))
        self.assertIn(b"/console/status", page.body)
        self.assertEqual(self.call("/console/status").status, 401)
        self.assertEqual(self.call("/console/status", SimpleNamespace(is_reseller_admin=False)).status, 403)
        allowed = self.call("/console/status", SimpleNamespace(is_reseller_admin=True))
        self.assertEqual((allowed.status, json.loads(allowed.body)), (200, {"nodes": []}))
        self.assertEqual(self.call("/console", method="POST").status, 405)
        self.assertEqual(self.call("/v1/AUTH_a").body, b"below")
        self.assertEqual(self.call("/consoles").body, b"below")


async def _ready(value):
    return value


async def _awaited(result):
    return await result


class ConsoleInABrowserTests(ClusterCase):
    def dump(self, url: str) -> tuple[str, str]:
        shown = subprocess.run([BROWSER, "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
                                "--virtual-time-budget=8000", "--dump-dom", url], capture_output=True, timeout=120)
        return shown.stdout.decode(), shown.stderr.decode(errors="replace")

    def test_the_page_shows_the_nodes_and_one_stopped(self) -> None:
        if BROWSER is None:
            raise SkipTest(NO_BROWSER)
        _, token = self.cluster.token("admin:admin", "admin")
        url = f"http://127.0.0.1:{self.cluster.port}/console#token={token}"
        dom, log = self.dump(url)
        self.assertIn('data-down="0"', dom)
        self.assertEqual(dom.count('class="up">up<'), 4, dom[-3000:])
        self.assertNotIn("Uncaught", log)
        artifact = Path(self.mktemp() + "-console.png").absolute()
        subprocess.run([BROWSER, "--no-sandbox", "--disable-gpu", "--virtual-time-budget=8000",
                        "--window-size=1280,900", f"--screenshot={artifact}", url], capture_output=True, timeout=120)
        self.assertGreater(artifact.stat().st_size, 10_000)  # kept: the test's artifact

        pid = int((self.cluster.root / "run" / "node2.pid").read_text())
        os.kill(pid, signal.SIGSTOP)  # hung, not gone: only a timeout tells
        self.addCleanup(os.kill, pid, signal.SIGCONT)
        stopped = time.monotonic()
        time.sleep(2.1)  # the proxy's cached status ages out
        dom, log = self.dump(url)
        self.assertLess(time.monotonic() - stopped, 30)
        self.assertIn('data-down="1"', dom)
        self.assertIn('class="down">down<', dom)
        self.assertNotIn("Uncaught", log)
        os.kill(pid, signal.SIGCONT)
