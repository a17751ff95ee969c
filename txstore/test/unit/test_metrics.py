"""Tests for txstore.common.metrics and the /metrics routes of the proxy and node edges."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import generate_latest
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase, TestCase

from txstore.common.backend_client import BackendError, BackendTimeout
from txstore.common.metrics import DeviceGauges, node_metrics, proxy_metrics, status_class
from txstore.proxy.controllers.base import node_failed
from txstore.proxy.error_limiter import ErrorLimiter
from txstore.proxy.edge import ProxyEdge
from txstore.proxy.messages import SwiftRequest, SwiftResponse
from txstore.ring.device import Device
from txstore.ring.ring import Node
from txstore.node.server import NodeServer


def samples(metrics) -> dict[str, float]:
    found = {}
    for line in generate_latest(metrics.registry).decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


class ServerMetricsTests(SynchronousTestCase):
    def test_observe_counts_times_and_bytes(self) -> None:
        metrics = proxy_metrics()
        metrics.observe("GET", 200, 0.003, 1000, 0)
        metrics.observe("GET", 206, 0.2, 10, 0, source="SLO")
        metrics.observe("PUT", None, 1.5, 0, 700)
        found = samples(metrics)
        self.assertEqual(found['txstore_requests_total{method="GET",source="",status="2xx"}'], 1)
        self.assertEqual(found['txstore_requests_total{method="GET",source="SLO",status="2xx"}'], 1)
        self.assertEqual(found['txstore_response_bytes_total{method="GET",source="",status="2xx"}'], 1000)
        self.assertEqual(found['txstore_request_bytes_total{method="PUT",source="",status="none"}'], 700)
        self.assertEqual(found['txstore_request_duration_seconds_bucket{le="0.005",method="GET",source="",status="2xx"}'], 1)
        self.assertEqual(found['txstore_request_duration_seconds_bucket{le="2.5",method="PUT",source="",status="none"}'], 1)
        self.assertIn("process_cpu_seconds_total", found)

    def test_histograms_as_prometheus_reads_them(self) -> None:
        metrics = proxy_metrics()
        for seconds in (0.001, 0.003, 1000.0):  # on a bound (le is inclusive), between two, above all
            metrics.observe("HEAD", 200, seconds, 0, 0)
        metrics.first_byte("HEAD", 200, 0.02)
        found = samples(metrics)
        head = 'method="HEAD",source="",status="2xx"'
        self.assertEqual(
            [found[f'txstore_request_duration_seconds_bucket{{le="{le}",{head}}}'] for le in ("0.001", "0.0025", "0.005", "600.0", "+Inf")],
            [1, 1, 2, 2, 3],
        )
        self.assertEqual(found[f"txstore_request_duration_seconds_count{{{head}}}"], 3)
        self.assertAlmostEqual(found[f"txstore_request_duration_seconds_sum{{{head}}}"], 1000.004)
        self.assertEqual(found[f'txstore_request_ttfb_seconds_bucket{{le="0.01",{head}}}'], 0)
        self.assertEqual(found[f'txstore_request_ttfb_seconds_bucket{{le="0.025",{head}}}'], 1)
        self.assertEqual(found[f"txstore_request_ttfb_seconds_count{{{head}}}"], 1)
        # No byte counters for a label set that moved no bytes: no series of zeros.
        self.assertNotIn(f"txstore_response_bytes_total{{{head}}}", found)

    def test_status_class(self) -> None:
        self.assertEqual([status_class(s) for s in (None, 0, 100, 201, 304, 404, 503)],
                         ["none", "none", "1xx", "2xx", "3xx", "4xx", "5xx"])


class RouteTests(SynchronousTestCase):
    def test_the_proxy_serves_metrics_before_its_pipeline(self) -> None:
        seen = []

        async def pipeline(request):
            seen.append(request.path)
            return SwiftResponse.text(401, "Unauthorized")

        metrics = proxy_metrics()
        metrics.observe("HEAD", 204, 0.001, 0, 0)
        client = StubTreq(ProxyEdge(pipeline, metrics).resource())
        response = self.successResultOf(client.get("http://proxy/metrics"))
        self.assertEqual(response.code, 200)
        self.assertIn(b'txstore_requests_total{method="HEAD",source="",status="2xx"} 1.0',
                      self.successResultOf(response.content()))
        self.assertEqual(seen, [])  # no token asked: the pipeline never saw it
        response = self.successResultOf(client.get("http://proxy/v1/AUTH_x"))
        self.assertEqual(response.code, 401)
        self.assertEqual(len(seen), 1)
        without = StubTreq(ProxyEdge(pipeline).resource())  # no metrics: /metrics is a path like any
        self.assertEqual(self.successResultOf(without.get("http://proxy/metrics")).code, 401)

    def test_a_node_counts_what_it_answers_by_server(self) -> None:
        metrics = node_metrics()
        client = StubTreq(NodeServer(metrics=metrics).resource())
        self.assertEqual(self.successResultOf(client.get("http://node/healthcheck")).code, 200)
        self.assertEqual(self.successResultOf(client.put("http://node/d1/3/a/c/o", b"abc")).code, 404)  # no servers
        found = samples(metrics)
        self.assertEqual(found['txstore_requests_total{method="GET",server="other",status="2xx"}'], 1)
        self.assertEqual(found['txstore_requests_total{method="PUT",server="object",status="4xx"}'], 1)
        response = self.successResultOf(client.get("http://node/metrics"))
        self.assertIn(b"txstore_request_duration_seconds_bucket", self.successResultOf(response.content()))
        self.assertNotIn('txstore_requests_total{method="GET",server="other",status="2xx"} 2.0',
                         generate_latest(metrics.registry).decode())  # scrapes are not counted


class BackendMetricsTests(SynchronousTestCase):
    def test_node_failures_by_kind_and_the_limited_nodes_now(self) -> None:
        clock = Clock()
        limiter = ErrorLimiter(clock.seconds, limit=10, interval=60)
        metrics = proxy_metrics()
        metrics.watch_error_limiter(limiter)
        context = SimpleNamespace(errors=limiter, metrics=metrics)
        node = Node(Device(id=1, region=1, zone=1, ip="10.0.0.1", port=6210, device="d1", weight=1.0))
        node_failed(context, node, BackendTimeout("no answer"))
        node_failed(context, node, BackendError("refused"))
        node_failed(context, node)  # a 5xx or 507
        found = samples(metrics)
        for kind in ("timeout", "error", "status"):
            self.assertEqual(found[f'txstore_backend_failures_total{{kind="{kind}",node="10.0.0.1:6210/d1"}}'], 1)
        self.assertEqual(found["txstore_error_limited_nodes"], 1)  # the timeout limited it at once
        clock.advance(60)
        self.assertEqual(samples(metrics)["txstore_error_limited_nodes"], 0)


class DeviceGaugesTests(SynchronousTestCase):
    def test_the_last_figures_and_the_pools_at_each_scrape(self) -> None:
        class Pools:
            def load(self):
                return {"d1": (3, 4), "recon": (0, 1)}

        metrics = node_metrics()
        gauges = DeviceGauges(Pools())
        metrics.watch(gauges)
        gauges.update([
            {"device": "d1", "mounted": True, "size": 1000, "avail": 600, "used": 400, "async_pending": 2,
             "quarantined": {"objects": 1, "containers": 0}},
            {"device": "d2", "mounted": False},
        ])
        found = samples(metrics)
        self.assertEqual(found['txstore_device_mounted{device="d2"}'], 0)
        self.assertEqual(found['txstore_device_available_bytes{device="d1"}'], 600)
        self.assertEqual(found['txstore_device_async_pendings{device="d1"}'], 2)
        self.assertEqual(found['txstore_device_quarantined{device="d1",kind="objects"}'], 1)
        self.assertNotIn('txstore_device_size_bytes{device="d2"}', found)
        self.assertEqual(found['txstore_io_queued{pool="d1"}'], 3)
        self.assertEqual(found['txstore_io_busy_threads{pool="d1"}'], 4)


class StatsdTests(TestCase):
    """Swift's StatsD names, over real UDP on 127.0.0.1."""

    async def test_a_requests_metrics_reach_a_statsd_server(self) -> None:
        from twisted.internet import reactor
        from twisted.internet.protocol import DatagramProtocol

        from txstore.common.statsd import StatsdClient

        got: list[bytes] = []
        arrived = Deferred()

        class Receiver(DatagramProtocol):
            def datagramReceived(self, data, address):
                got.append(data)
                if len(got) == 3 and not arrived.called:
                    arrived.callback(None)

        port = reactor.listenUDP(0, Receiver(), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = StatsdClient(reactor, "127.0.0.1", port.getHost().port, prefix="tx")
        self.addCleanup(client.close)
        metrics = proxy_metrics()
        metrics.statsd = client
        metrics.statsd_request("proxy-server.object", "GET", 200, 0.25, ttfb=0.01, transferred=1234)
        arrived.addTimeout(10, reactor)
        await arrived
        self.assertEqual(sorted(got), [b"tx.proxy-server.object.GET.200.first-byte.timing:10.000|ms",
                                       b"tx.proxy-server.object.GET.200.timing:250.000|ms",
                                       b"tx.proxy-server.object.GET.200.xfer:1234|c"])

    def test_sampling_and_the_request_type(self) -> None:
        from txstore.common.statsd import StatsdClient

        class UDPOnly:
            def listenUDP(self, port, protocol, interface):
                return SimpleNamespace(stopListening=lambda: None)

        from txstore.middleware.proxy_logging import _kind

        sent = []
        client = StatsdClient(UDPOnly(), "127.0.0.1", 8125, sample_rate=0.5, rng=iter([0.7, 0.2]).__next__)
        client._protocol.transport = SimpleNamespace(write=lambda data, address: sent.append(data))
        client.increment("a")
        client.increment("b")
        self.assertEqual(sent, [b"b:1|c|@0.5"])  # the first was not drawn
        kinds = [_kind(SwiftRequest("GET", p)) for p in
                 ("/v1/AUTH_a", "/v1/AUTH_a/", "/v1/AUTH_a/c", "/v1/AUTH_a/c/", "/v1/AUTH_a/c/o/x", "/auth/v1.0", "/")]
        self.assertEqual(kinds, ["account", "account", "container", "container", "object", "auth", "root"])
