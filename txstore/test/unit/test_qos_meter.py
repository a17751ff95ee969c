"""
The node's bandwidth meter (`txstore.qos.meter`) on a `Clock`, over a scheduler whose counters
the test sets (and once over the real `IOScheduler` with a pool the test drives): averaged
bandwidths, the load figure and its capacity, the tenants' rates, the recon report's shape, the
header, and the sampling loop.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import treq
from attrs import define, field
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import HTTPConnectionPool

from txstore.common.hashing import PathHasher
from txstore.common.io import DeviceThreadPools
from txstore.common.policies import DEFAULT_POLICIES
from txstore.common.streaming import StreamingSite

from txstore.qos.classes import DEFAULT_CLASSES, IOSpec
from txstore.qos.meter import (
    CAPACITY_FLOOR, CAPACITY_HALF_LIFE, LOAD_HEADER, SLOW_DEADBAND, TIME_CONSTANT, BandwidthMeter,
)
from txstore.qos.scheduler import READ, DeviceCounters, IOScheduler
from txstore.storage.diskfile import DiskFileManager
from txstore.storage.context import StorageContext
from txstore.storage.object_server import ObjectServer
from txstore.node.recon import Recon
from txstore.node.server import NodeServer

MiB = 1024 * 1024
# The share of a new value an average takes in at a one-second sample.
STEP = 1 - math.exp(-1 / TIME_CONSTANT)


@define
class Figures:
    bytes: int = 0
    cap: float = 0.0
    waited: float = 0.0


@define(slots=False)
class FakeScheduler:
    devices: dict[str, DeviceCounters] = field(factory=dict)
    tenant_figures: dict[str, Figures] = field(factory=dict)

    def counters(self) -> dict[str, DeviceCounters]:
        return self.devices

    def tenants(self) -> dict[str, Figures]:
        return self.tenant_figures


class MeterTests(SynchronousTestCase):
    def near(self, value: float, expected: float, tolerance: float) -> None:
        self.assertLessEqual(abs(value - expected), tolerance, f"{value} is not {expected} within {tolerance}")

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.scheduler = FakeScheduler({"sda": DeviceCounters(), "sdb": DeviceCounters()})
        self.meter = BandwidthMeter(self.scheduler, self.clock, depth=4)
        self.meter.sample()

    def tick(self, seconds: float = 1.0) -> None:
        self.clock.advance(seconds)
        self.meter.sample()

    def device(self, name: str = "sda"):
        return self.meter.devices()[name]

    def test_bandwidth_is_an_average_of_the_totals_deltas(self) -> None:
        sda = self.scheduler.devices["sda"]
        sda.read_bytes += 10 * MiB
        sda.write_bytes += 2 * MiB
        self.tick()
        self.assertAlmostEqual(self.device().read_bps, 10 * MiB * STEP)
        self.assertAlmostEqual(self.device().write_bps, 2 * MiB * STEP)
        for _ in range(30):  # 10 MiB/s kept up: the average reaches it
            sda.read_bytes += 10 * MiB
            self.tick()
        self.near(self.device().read_bps, 10 * MiB, MiB / 1000)
        self.tick()  # nothing moved: it falls by the step
        self.near(self.device().read_bps, 10 * MiB * (1 - STEP), MiB / 1000)
        self.assertEqual(self.device("sdb").read_bps, 0.0)

    def test_rates_are_over_the_time_that_passed(self) -> None:
        self.scheduler.devices["sda"].read_bytes += 8 * MiB
        self.tick(4.0)  # a late sample: 2 MiB/s, weighted for 4 s
        self.assertAlmostEqual(self.device().read_bps, 2 * MiB * (1 - math.exp(-4 / TIME_CONSTANT)))
        self.clock.advance(0)
        self.meter.sample()  # no time passed: nothing changes (no division by zero)
        self.assertAlmostEqual(self.device().read_bps, 2 * MiB * (1 - math.exp(-4 / TIME_CONSTANT)))

    def test_a_device_first_seen_later_counts_its_first_bytes(self) -> None:
        self.scheduler.devices["sdc"] = DeviceCounters(read_bytes=4 * MiB)
        self.tick()
        self.assertAlmostEqual(self.device("sdc").read_bps, 4 * MiB * STEP)

    def test_idle_is_zero_and_a_full_pool_is_one(self) -> None:
        self.assertEqual(self.device().load, 0.0)
        self.scheduler.devices["sda"].running = 4
        for _ in range(20):
            self.tick()
        self.assertAlmostEqual(self.device().load, 1.0, places=3)
        self.assertEqual(self.meter.header("sda"), "1.00")

    def test_a_backlog_adds_one_per_depth_of_jobs_waiting(self) -> None:
        sda = self.scheduler.devices["sda"]
        sda.running, sda.queued = 4, 8
        for _ in range(20):
            self.tick()
        self.assertAlmostEqual(self.device().load, 3.0, places=3)
        self.assertEqual((self.device().queued, self.device().running), (8, 4))
        sda.running, sda.queued = 1, 0  # one job: a quarter busy, once the average has caught up
        self.tick()
        self.assertGreater(self.device().load, 1.0)  # averaged, not the instant's counts
        for _ in range(20):
            self.tick()
        self.assertAlmostEqual(self.device().load, 0.25, places=3)

    def test_bandwidth_against_the_highest_seen(self) -> None:
        """A device that once did 400 MiB/s and now does 200 with one job in the pool is half busy."""
        sda = self.scheduler.devices["sda"]
        for _ in range(30):
            sda.read_bytes += 400 * MiB
            self.tick()
        self.near(self.device().capacity, 400 * MiB, 2 * MiB)  # (the peak decays as the average rises)
        self.assertAlmostEqual(self.device().load, 1.0, places=3)
        sda.running = 1
        for _ in range(30):
            sda.read_bytes += 200 * MiB
            self.tick()
        self.near(self.device().load, 0.5, 0.02)
        self.assertLess(self.device().capacity, 400 * MiB)  # decaying...
        self.assertGreater(self.device().capacity, 380 * MiB)  # ... slowly (3.4 % in 30 s)

    def test_the_nodes_devices_share_the_capacity_learnt(self) -> None:
        """One stream on an idle device is not taken for saturation because it is all that device did."""
        sda, sdb = self.scheduler.devices["sda"], self.scheduler.devices["sdb"]
        for _ in range(30):
            sda.read_bytes += 800 * MiB
            sdb.read_bytes += 100 * MiB
            self.tick()
        self.near(self.device("sdb").capacity, 800 * MiB, 4 * MiB)
        self.near(self.device("sdb").load, 0.125, 0.001)
        self.near(self.device("sda").load, 1.0, 0.001)

    def test_capacity_halves_over_its_half_life_down_to_the_floor(self) -> None:
        sda = self.scheduler.devices["sda"]
        for _ in range(30):
            sda.read_bytes += 800 * MiB
            self.tick()
        peak = self.device().capacity
        self.tick(CAPACITY_HALF_LIFE)
        self.near(self.device().capacity, peak / 2, MiB / 100)
        self.tick(10 * CAPACITY_HALF_LIFE)
        self.assertEqual(self.device().capacity, CAPACITY_FLOOR)
        self.assertEqual(self.device("sdb").capacity, CAPACITY_FLOOR)

    def test_a_trickle_is_not_saturation(self) -> None:
        sda = self.scheduler.devices["sda"]
        for _ in range(30):
            sda.read_bytes += MiB
            self.tick()
        self.assertAlmostEqual(self.device().load, MiB / CAPACITY_FLOOR, places=3)

    def test_a_configured_capacity(self) -> None:
        meter = BandwidthMeter(self.scheduler, self.clock, depth=4, capacity=40 * MiB)
        meter.sample()
        for _ in range(30):
            self.scheduler.devices["sda"].read_bytes += 10 * MiB
            self.clock.advance(1)
            meter.sample()
        self.assertAlmostEqual(meter.load("sda"), 0.25, places=3)
        self.assertEqual(meter.devices()["sda"].capacity, 40 * MiB)

    def test_the_header_of_a_device_never_seen_is_idle(self) -> None:
        self.assertEqual((self.meter.header("sdz"), self.meter.load("sdz")), ("0.00", 0.0))
        self.assertEqual(self.meter.header("sda"), "0.00")

    def test_tenants_bytes_per_second_over_the_last_interval(self) -> None:
        tenants = self.scheduler.tenant_figures
        tenants["AUTH_a"] = Figures(bytes=3 * MiB)
        tenants["AUTH_b"] = Figures(bytes=MiB, cap=2 * MiB)
        self.tick(2.0)
        report = self.meter.report()["tenants"]
        self.assertEqual(report, {"AUTH_a": {"bps": 1.5 * MiB, "cap": 0.0, "throttled": False},
                                  "AUTH_b": {"bps": 0.5 * MiB, "cap": 2 * MiB, "throttled": False}})
        tenants["AUTH_b"] = Figures(bytes=3 * MiB, cap=2 * MiB, waited=0.25)
        self.tick()
        report = self.meter.report()["tenants"]
        # a not averaged: idle and uncapped, it is left out; b waited for its cap
        self.assertEqual(report, {"AUTH_b": {"bps": 2 * MiB, "cap": 2 * MiB, "throttled": True}})
        self.tick()
        self.assertEqual(self.meter.report()["tenants"], {"AUTH_b": {"bps": 0.0, "cap": 2 * MiB, "throttled": False}})
        del tenants["AUTH_b"]
        self.tick()
        self.assertEqual(self.meter.report()["tenants"], {})

    def test_the_report_shape(self) -> None:
        sda = self.scheduler.devices["sda"]
        sda.read_bytes, sda.queued, sda.running, sda.streams = MiB, 1, 2, 3
        self.tick()
        report = self.meter.report()
        self.assertEqual(set(report), {"interval", "devices", "tenants"})
        self.assertEqual(report["interval"], 1.0)
        self.assertEqual(set(report["devices"]), {"sda", "sdb"})
        figures = report["devices"]["sda"]
        self.assertEqual(set(figures), {"read_bps", "write_bps", "queued", "running", "streams", "slowness", "load"})
        self.assertEqual((figures["queued"], figures["running"], figures["streams"]), (1, 2, 3))
        self.assertIsInstance(figures["read_bps"], float)
        self.assertGreater(figures["load"], 0.0)


class LoopTests(SynchronousTestCase):
    def test_samples_every_interval_while_running(self) -> None:
        clock = Clock()
        scheduler = FakeScheduler({"sda": DeviceCounters()})
        meter = BandwidthMeter(scheduler, clock, depth=1)
        meter.startService()
        for _ in range(3):
            scheduler.devices["sda"].read_bytes += MiB
            clock.advance(1.0)
        self.assertGreater(meter.load("sda"), 0.0)
        self.assertAlmostEqual(meter.devices()["sda"].read_bps, MiB * (1 - (1 - STEP) ** 3))
        meter.stopService()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_a_failing_sample_does_not_stop_the_loop(self) -> None:
        clock = Clock()
        scheduler = FakeScheduler({"sda": DeviceCounters()})
        broken = [True]

        def counters():
            if broken[0]:
                raise RuntimeError("no counters")
            return scheduler.devices

        scheduler.counters = counters
        meter = BandwidthMeter(scheduler, clock, depth=1)
        meter.startService()
        clock.advance(1.0)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
        broken[0] = False
        scheduler.devices["sda"].running = 1
        clock.advance(1.0)
        self.assertGreater(meter.load("sda"), 0.0)
        meter.stopService()


class HeldPool:
    """A device pool whose calls wait until the test ends them."""

    def __init__(self) -> None:
        self.running: list[tuple[object, Deferred]] = []

    def run(self, key, function, *args):
        d = Deferred()
        self.running.append((function, d))
        return d

    def finish_one(self) -> None:
        function, d = self.running.pop(0)
        d.callback(function())


class RealSchedulerTests(SynchronousTestCase):
    def test_reads_through_the_scheduler_are_measured(self) -> None:
        clock = Clock()
        pool = HeldPool()
        scheduler = IOScheduler(pool, DEFAULT_CLASSES, clock, depth=2)
        meter = BandwidthMeter(scheduler, clock, depth=2)
        meter.sample()
        spec = IOSpec(DEFAULT_CLASSES.default_name, "AUTH_t")
        scheduler.stream("sda", spec)  # an object device: streams are opened on it
        for _ in range(5):
            scheduler.submit("sda", spec, READ, MiB, lambda: b"")
        clock.advance(1)
        meter.sample()
        self.assertEqual((meter.devices()["sda"].running, meter.devices()["sda"].queued), (2, 3))
        # first seen now, idle before: the averages move from nothing by one step
        self.assertAlmostEqual(meter.load("sda"), (2 / 2 + 3 / 2) * STEP)
        for _ in range(5):
            pool.finish_one()
        clock.advance(1)
        meter.sample()
        report = meter.report()
        self.assertAlmostEqual(report["devices"]["sda"]["read_bps"], 5 * MiB * STEP)
        self.assertEqual(report["tenants"]["AUTH_t"]["bps"], 5 * MiB)


class SlownessTests(SynchronousTestCase):
    """A disk kept busy by work the node does not see: its own jobs take long, and the figure shows it."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.pool = HeldPool()
        self.scheduler = IOScheduler(self.pool, DEFAULT_CLASSES, self.clock, depth=4)
        self.meter = BandwidthMeter(self.scheduler, self.clock, depth=4)
        self.meter.sample()
        self.spec = IOSpec(DEFAULT_CLASSES.default_name, "AUTH_t")
        for device in ("sda", "sdb"):
            self.scheduler.stream(device, self.spec)

    def serve(self, device: str, seconds_per_mib: float, jobs: int, beside: int = 1) -> None:
        """``jobs`` 1 MiB reads, ``beside`` at a time, each taking that long (the disk's pace)."""
        for _ in range(jobs // beside):
            for _ in range(beside):
                self.scheduler.submit(device, self.spec, READ, MiB, lambda: b"")
            self.clock.advance(seconds_per_mib * beside)  # sharing the disk: each takes beside times longer
            for _ in range(beside):
                self.pool.finish_one()

    def second(self) -> None:
        self.clock.advance(1)
        self.meter.sample()

    def test_a_disk_slowed_from_outside_reports_it_and_eases_back(self) -> None:
        for _ in range(3):
            self.serve("sda", 0.01, 20)  # 100 MiB/s, alone
            self.serve("sdb", 0.01, 20, beside=4)  # as fast, four jobs at a time: not slower
            self.second()
        self.assertLess(self.meter.devices()["sdb"].slowness, 1.1)
        quiet = self.meter.load("sda")
        for _ in range(5):
            self.serve("sda", 0.1, 5)  # the same disk, ten times slower for its jobs
            self.second()
        self.assertGreater(self.meter.devices()["sda"].slowness, 5)
        self.assertGreater(self.meter.load("sda") - quiet, 3.5)  # a busy device, though its jobs are few
        self.assertLess(self.meter.load("sdb"), 0.5)
        for _ in range(60):  # nothing read there since: its figure eases back, so it is tried again
            self.second()
        self.assertLess(self.meter.devices()["sda"].slowness, SLOW_DEADBAND)
        self.assertLess(self.meter.load("sda"), 0.5)


class NodeTests(TestCase):
    """An object server and recon with a meter, over HTTP: the load header and /recon/bandwidth."""

    timeout = 30

    def setUp(self) -> None:
        root = Path(self.mktemp()).absolute()
        (root / "d1").mkdir(parents=True)
        pools = DeviceThreadPools(reactor)
        self.addCleanup(pools.stop)
        self.clock = Clock()  # the meter's: sampled when the test says
        hasher = PathHasher(b"", b"suffix")
        context = StorageContext(
            devices=root, mount_check=False, hasher=hasher, policies=DEFAULT_POLICIES, runner=pools,
            client=None, reactor=reactor, diskfiles=DiskFileManager(root, False, hasher),
            scheduler=IOScheduler(pools, DEFAULT_CLASSES, reactor),
        )
        self.meter = BandwidthMeter(context.scheduler, self.clock, depth=4)
        self.meter.sample()
        server = NodeServer(objects=ObjectServer(context, meter=self.meter), recon=Recon(context, root, meter=self.meter))
        port = reactor.listenTCP(0, StreamingSite(server.resource()), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.pool = HTTPConnectionPool(reactor)
        self.addCleanup(self.pool.closeCachedConnections)
        self.base = f"http://127.0.0.1:{port.getHost().port}"

    async def call(self, method: str, path: str, headers: dict | None = None, data=None):
        response = await treq.request(method, self.base + path, headers=headers or {}, data=data, pool=self.pool)
        return response, await treq.content(response)

    async def test_gets_and_heads_tell_the_devices_load(self) -> None:
        response, _ = await self.call("GET", "/d1/3/a/c/o")
        self.assertEqual((response.code, response.headers.getRawHeaders(LOAD_HEADER)), (404, ["0.00"]))
        body = b"x" * (3 * MiB)
        response, _ = await self.call("PUT", "/d1/3/a/c/o", {"X-Timestamp": "1700000001.00000",
                                                              "Content-Type": "text/plain"}, body)
        self.assertEqual(response.code, 201)
        self.assertEqual(response.headers.getRawHeaders(LOAD_HEADER), None)  # writes: not asked for
        self.sample()
        for method in ("GET", "HEAD"):
            response, got = await self.call(method, "/d1/3/a/c/o")
            self.assertEqual(response.headers.getRawHeaders(LOAD_HEADER), [self.meter.header("d1")], method)
        self.assertEqual(got, b"")
        self.assertNotEqual(self.meter.header("d1"), "0.00")

    def sample(self) -> None:
        self.clock.advance(1)
        self.meter.sample()  # the PUT's 3 MiB written in the last second

    async def test_recon_bandwidth(self) -> None:
        body = b"y" * (2 * MiB)
        await self.call("PUT", "/d1/3/AUTH_t/c/o", {"X-Timestamp": "1700000001.00000", "Content-Type": "text/plain"},
                        body)
        _, got = await self.call("GET", "/d1/3/AUTH_t/c/o")
        self.assertEqual(got, body)
        self.clock.advance(1)
        self.meter.sample()
        response, raw = await self.call("GET", "/recon/bandwidth")
        self.assertEqual(response.code, 200)
        report = json.loads(raw)
        self.assertEqual(report["interval"], 1.0)
        d1 = report["devices"]["d1"]
        self.assertAlmostEqual(d1["read_bps"], 2 * MiB * STEP)
        self.assertAlmostEqual(d1["write_bps"], 2 * MiB * STEP)
        self.assertEqual((d1["queued"], d1["running"], d1["streams"]), (0, 0, 0))
        self.assertEqual(report["tenants"], {"AUTH_t": {"bps": 4.0 * MiB, "cap": 0.0, "throttled": False}})
