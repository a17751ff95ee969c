# -*- test-case-name: txstore.test.unit.test_metrics -*-
"""
Prometheus metrics of one server process, served at ``/metrics`` in ``prometheus_client``'s text
format (rendered on the reactor: it is a walk over counters in memory, cheaper than the thread
hop of the library's own WSGI resource).

Every request a server answers is counted once, when its response has gone out (or its client
went away): by method, status class and, on a node, the server that answered (object, container,
account); on the proxy, ``swift.source`` tells clients' requests from the
sub-requests middlewares make (empty for a client's). A histogram of the whole request time
goes with each count, and the bytes sent and received. The process collector adds CPU time,
resident memory and open files. Collection is in memory only: a scrape never touches a disk.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, ProcessCollector, generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString
from twisted.web.resource import Resource

# The console's charts: requests per minute over the last hour, kept in memory.
HISTORY_MINUTES = 60
# Seconds: a cached HEAD (below a millisecond) to a large upload (minutes).
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0, 600.0)


def status_class(status: int | None) -> str:
    """``2xx``..``5xx``; ``none`` when no status was sent (the client left first)."""
    return "none" if not status else f"{status // 100}xx"


class ServerMetrics:
    """The request metrics of one process, in a registry of its own (tests make several)."""

    def __init__(self, labels: tuple[str, ...]) -> None:
        self.labels = ("method", "status", *labels)
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        # The request figures are plain numbers in memory, turned into metric families at the
        # scrape (`_RequestFigures`): prometheus_client's children take a lock and check their
        # type on every increment, and a request makes four or five of them.
        self._figures = _RequestFigures(self.labels)
        self.registry.register(self._figures)
        self._daemon: _DaemonMetrics | None = None  # made at a node's first daemon pass
        self._history: dict[int, tuple[int, float, int]] = {}  # minute -> requests, seconds, errors
        self.statsd: Any = None  # a txstore.common.statsd.StatsdClient, when configured
        self._backend: Counter | None = None  # made at a proxy's first backend failure

    def first_byte(self, method: str, status: int | None, seconds: float, **labels: str) -> None:
        """The time from a request's headers to its answer's head (what a client waits for)."""
        values = (method, status_class(status), *(labels.get(name, "") for name in self.labels[2:]))
        self._figures.first_byte(values, seconds)

    def backend_failure(self, node: str, kind: str) -> None:
        """A proxy's request to ``node`` (``ip:port/device``) failed: ``timeout``, ``error`` or ``status``."""
        if self._backend is None:
            self._backend = Counter("txstore_backend_failures", "Requests to nodes that failed, by node and kind.",
                                    ("node", "kind"), registry=self.registry)
        self._backend.labels(node, kind).inc()

    def watch_error_limiter(self, limiter: Any) -> None:
        """Report how many nodes ``limiter`` (an ErrorLimiter) skips right now, at each scrape."""
        self.registry.register(_LimitedNodes(limiter))

    def statsd_request(self, name: str, method: str, status: int | None, seconds: float,
                       ttfb: float | None = None, transferred: int = 0) -> None:
        """
        With a StatsD client (`statsd`), one request's Swift metrics under ``name`` (``proxy-server.object``,
        ``object-server``): ``<name>.<method>.<status>.timing`` (ms), ``.first-byte.timing``, ``.xfer``.
        """
        if self.statsd is None:
            return
        base = f"{name}.{method}.{status if status else 'none'}"
        self.statsd.timing(f"{base}.timing", seconds * 1000)
        if ttfb is not None:
            self.statsd.timing(f"{base}.first-byte.timing", ttfb * 1000)
        if transferred:
            self.statsd.update_stats(f"{base}.xfer", transferred)

    def watch(self, collector: Any) -> None:
        """Add a collector (an object with ``collect()`` yielding metric families) to the page."""
        self.registry.register(collector)

    def daemon_pass(self, daemon: str, figures: dict, duration: float, failed: bool) -> None:
        """A daemon's pass ended: its result, how long it took, and its whole-number figures."""
        if self._daemon is None:
            self._daemon = _DaemonMetrics(self.registry)
        self._daemon.passes.labels(daemon, "failed" if failed else "done").inc()
        self._daemon.duration.labels(daemon).set(duration)
        if not failed:
            self._daemon.last_success.labels(daemon).set_to_current_time()
            for name, value in figures.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._daemon.figures.labels(daemon, name).set(value)

    def recent(self, now: float | None = None) -> list[dict[str, float]]:
        """The last hour's requests minute by minute (the console's charts): oldest first."""
        now = time.time() if now is None else now
        minute = int(now // 60)
        return [{"minute": m * 60, "requests": self._history.get(m, (0, 0.0, 0))[0],
                 "seconds": self._history.get(m, (0, 0.0, 0))[1], "errors": self._history.get(m, (0, 0.0, 0))[2]}
                for m in range(minute - HISTORY_MINUTES + 1, minute + 1)]

    def _remember(self, seconds: float, status: int | None) -> None:
        minute = int(time.time() // 60)
        held = self._history.get(minute)
        if held is None:  # a new minute: the hour before it is all that is kept
            for old in [m for m in self._history if m <= minute - HISTORY_MINUTES]:
                del self._history[old]
            held = (0, 0.0, 0)
        count, total, errors = held
        self._history[minute] = (count + 1, total + seconds, errors + (status is None or status >= 500))

    def observe(self, method: str, status: int | None, seconds: float, sent: int, received: int, **labels: str) -> None:
        if not labels.get("source"):  # clients' requests only (sub-requests are part of them)
            self._remember(seconds, status)
        values = (method, status_class(status), *(labels.get(name, "") for name in self.labels[2:]))
        self._figures.request(values, seconds, sent, received)

    def resource(self) -> Resource:
        return _MetricsPage(self.registry)


class _Histogram:
    """One label set's histogram: observations per bucket (not cumulative), their count and sum."""

    __slots__ = ("buckets", "count", "sum")

    def __init__(self) -> None:
        self.buckets = [0] * (len(DURATION_BUCKETS) + 1)  # the last: above every bound
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.buckets[bisect_left(DURATION_BUCKETS, value)] += 1
        self.count += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, int]]:
        out, total = [], 0
        for bound, count in zip(DURATION_BUCKETS, self.buckets):
            total += count
            out.append((floatToGoString(bound), total))
        out.append(("+Inf", self.count))
        return out


class _RequestFigures:
    """
    A collector: requests, their durations and times to first byte, bytes sent and received,
    by label set, kept as plain numbers (the reactor is the only writer, so no lock) and made
    into metric families when scraped. A label set's byte counters appear once bytes moved.
    """

    def __init__(self, labels: tuple[str, ...]) -> None:
        self.labels = labels
        self._requests: dict[tuple[str, ...], list[Any]] = {}  # values -> [count, _Histogram, sent, received]
        self._ttfb: dict[tuple[str, ...], _Histogram] = {}

    def request(self, values: tuple[str, ...], seconds: float, sent: int, received: int) -> None:
        figures = self._requests.get(values)
        if figures is None:
            figures = self._requests[values] = [0, _Histogram(), 0, 0]
        figures[0] += 1
        figures[1].observe(seconds)
        figures[2] += sent
        figures[3] += received

    def first_byte(self, values: tuple[str, ...], seconds: float) -> None:
        histogram = self._ttfb.get(values)
        if histogram is None:
            histogram = self._ttfb[values] = _Histogram()
        histogram.observe(seconds)

    def collect(self):
        labels = list(self.labels)
        requests = CounterMetricFamily("txstore_requests", "Requests answered.", labels=labels)
        duration = HistogramMetricFamily(
            "txstore_request_duration_seconds", "From the request's headers to its response's end.", labels=labels)
        ttfb = HistogramMetricFamily(
            "txstore_request_ttfb_seconds", "From the request's headers to its response's head.", labels=labels)
        sent = CounterMetricFamily("txstore_response_bytes", "Body bytes sent.", labels=labels)
        received = CounterMetricFamily("txstore_request_bytes", "Body bytes received.", labels=labels)
        for values, (count, histogram, sent_bytes, received_bytes) in self._requests.items():
            requests.add_metric(values, count)
            duration.add_metric(values, histogram.cumulative(), histogram.sum)
            if sent_bytes:
                sent.add_metric(values, sent_bytes)
            if received_bytes:
                received.add_metric(values, received_bytes)
        for values, histogram in self._ttfb.items():
            ttfb.add_metric(values, histogram.cumulative(), histogram.sum)
        yield from (requests, duration, ttfb, sent, received)


class _MetricsPage(Resource):
    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self._registry = registry

    def render_GET(self, request) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode())
        return generate_latest(self._registry)


class _LimitedNodes:
    """A collector: the nodes an error limiter skips at the moment of the scrape."""

    def __init__(self, limiter: Any) -> None:
        self._limiter = limiter

    def collect(self):
        family = GaugeMetricFamily("txstore_error_limited_nodes", "Nodes skipped now after errors or a timeout.")
        family.add_metric([], self._limiter.limited_count())
        yield family


class DeviceGauges:
    """
    A node's per-device figures that cost disk reads (sizes, queued async pendings,
    quarantines): the node gathers them in a thread every so often (`update`), and a scrape
    serves the last ones from memory. The device thread pools' queues are read at the scrape.
    """

    def __init__(self, pools: Any = None) -> None:
        self._pools = pools  # a DeviceThreadPools (``load()``), or None
        self._devices: list[dict[str, Any]] = []

    def update(self, devices: list[dict[str, Any]]) -> None:
        """``[{"device", "mounted", "size", "avail", "used", "async_pending", "quarantined": {kind: n}}]``."""
        self._devices = devices

    def collect(self):
        mounted = GaugeMetricFamily("txstore_device_mounted", "1 if the device is mounted (else 507s).", labels=["device"])
        size = GaugeMetricFamily("txstore_device_size_bytes", "The device's filesystem size.", labels=["device"])
        avail = GaugeMetricFamily("txstore_device_available_bytes", "Space left for writes.", labels=["device"])
        used = GaugeMetricFamily("txstore_device_used_bytes", "Space in use.", labels=["device"])
        pending = GaugeMetricFamily("txstore_device_async_pendings", "Container updates waiting for the updater.",
                                    labels=["device"])
        quarantined = GaugeMetricFamily("txstore_device_quarantined", "Items quarantined, by kind.",
                                        labels=["device", "kind"])
        for device in self._devices:
            name = device["device"]
            mounted.add_metric([name], 1 if device.get("mounted") else 0)
            if device.get("mounted"):
                size.add_metric([name], device["size"])
                avail.add_metric([name], device["avail"])
                used.add_metric([name], device["used"])
                pending.add_metric([name], device.get("async_pending", 0))
                for kind, count in device.get("quarantined", {}).items():
                    quarantined.add_metric([name, kind], count)
        yield from (mounted, size, avail, used, pending, quarantined)
        if self._pools is not None:
            queued = GaugeMetricFamily("txstore_io_queued", "Disk calls waiting for a thread, by pool.", labels=["pool"])
            busy = GaugeMetricFamily("txstore_io_busy_threads", "Threads doing disk calls, by pool.", labels=["pool"])
            for pool, (waiting, working) in sorted(self._pools.load().items()):
                queued.add_metric([pool], waiting)
                busy.add_metric([pool], working)
            yield from (queued, busy)


class _DaemonMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.passes = Counter("txstore_daemon_passes", "Daemon passes ended, by result.", ("daemon", "result"),
                              registry=registry)
        self.duration = Gauge("txstore_daemon_pass_duration_seconds", "How long the last pass took.", ("daemon",),
                              registry=registry)
        self.last_success = Gauge("txstore_daemon_last_success_timestamp_seconds",
                                  "When the last pass that did not fail ended (Unix time).", ("daemon",),
                                  registry=registry)
        self.figures = Gauge("txstore_daemon_pass_figure", "The last successful pass's figures (items, failures...).",
                             ("daemon", "figure"), registry=registry)


def proxy_metrics() -> ServerMetrics:
    return ServerMetrics(("source",))


def node_metrics() -> ServerMetrics:
    return ServerMetrics(("server",))
