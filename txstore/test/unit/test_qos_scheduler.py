"""
The node's device scheduler (`txstore.qos.scheduler`) over a pool whose calls the test ends one
by one, on a `Clock`: weighted shares on a busy device, one flow per tenant whatever its
streams, no credit saved while idle, no work held back while the device has room, stream caps
paced by the clock, the counters the node reports; and the kernel IO priority of a thread.
"""

from __future__ import annotations

import threading
from collections import Counter

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txstore.qos import ioprio
from txstore.qos.classes import IOClass, IOClasses, IOSpec
from txstore.qos.scheduler import (
    MIN_SHARE, OP_COST, READ, TENANT_IDLE, WRITE, BackgroundRunner, IOScheduler, StreamStopped, TenantFigures,
)

MiB = 1024 * 1024
CLASSES = IOClasses({
    "gold": IOClass("gold", 4.0), "bronze": IOClass("bronze", 1.0), "capped": IOClass("capped", 1.0, stream_rate=MiB),
    "background": IOClass("background", 0.5), "metered": IOClass("metered", 1.0, tenant_rate=2 * MiB),
}, "bronze")


class HeldPool:
    """A device pool whose calls wait until the test ends them (in the order they started)."""

    def __init__(self) -> None:
        self.running: list[tuple[str, object, Deferred]] = []

    def run(self, key, function, *args):
        d = Deferred()
        self.running.append((key, function, d))
        return d

    def finish_one(self) -> object:
        """End the oldest call: run it here, fire its Deferred with its result."""
        _key, function, d = self.running.pop(0)
        result = function()
        d.callback(result)
        return result


class SchedulerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.pool = HeldPool()
        self.scheduler = IOScheduler(self.pool, CLASSES, self.clock, depth=1)

    def queue(self, spec: IOSpec, count: int, label: str, nbytes: int = MiB) -> list[Deferred]:
        return [self.scheduler.submit("sda", spec, READ, nbytes, lambda: label) for _ in range(count)]

    def served(self, count: int) -> list[object]:
        return [self.pool.finish_one() for _ in range(count)]

    def test_a_busy_device_is_shared_by_weight(self) -> None:
        self.queue(IOSpec("gold", "AUTH_g"), 200, "gold")
        self.queue(IOSpec("bronze", "AUTH_b"), 200, "bronze")
        shares = Counter(self.served(100))
        self.assertEqual(shares, {"gold": 80, "bronze": 20})

    def test_a_tenant_is_one_flow_however_many_streams(self) -> None:
        many = [self.scheduler.stream("sda", IOSpec("bronze", "AUTH_many")) for _ in range(8)]
        one = self.scheduler.stream("sda", IOSpec("bronze", "AUTH_one"))
        for stream in many:
            for _ in range(20):
                Deferred.fromCoroutine(stream.run(READ, MiB, lambda: "many"))
        for _ in range(100):
            Deferred.fromCoroutine(one.run(READ, MiB, lambda: "one"))
        self.assertEqual(Counter(self.served(100)), {"many": 50, "one": 50})

    def test_an_idle_flow_saves_no_credit(self) -> None:
        self.queue(IOSpec("bronze", "AUTH_a"), 300, "a")
        self.served(100)  # a alone for a while
        self.queue(IOSpec("bronze", "AUTH_b"), 100, "b")
        # b gets its fair half from now on, not the 100 jobs it "missed"
        self.assertEqual(Counter(self.served(40)), {"a": 20, "b": 20})

    def test_a_device_with_room_holds_nothing_back(self) -> None:
        scheduler = IOScheduler(self.pool, CLASSES, self.clock, depth=4)
        scheduler.stream("sda", None)
        for label in ("gold", "bronze", "background"):
            scheduler.submit("sda", IOSpec(label, "t"), READ, MiB, lambda: None)
        self.assertEqual(len(self.pool.running), 3)
        self.assertEqual((scheduler.counters()["sda"].running, scheduler.counters()["sda"].queued), (3, 0))

    def test_results_and_failures_reach_the_caller_and_the_queue_moves_on(self) -> None:
        def broken():
            raise OSError("disk on fire")
        failing = self.scheduler.submit("sda", IOSpec("bronze", "t"), READ, 10, broken)
        after = self.scheduler.submit("sda", IOSpec("bronze", "t"), READ, 10, lambda: "next")
        _key, function, d = self.pool.running.pop(0)
        try:
            function()
        except OSError:
            from twisted.python.failure import Failure
            d.errback(Failure())
        self.failureResultOf(failing, OSError)
        self.assertEqual(self.pool.finish_one(), "next")
        self.assertEqual(self.successResultOf(after), "next")

    def test_counters(self) -> None:
        scheduler = IOScheduler(self.pool, CLASSES, self.clock, depth=1)
        with scheduler.stream("sda", IOSpec("gold", "AUTH_g")) as stream:
            Deferred.fromCoroutine(stream.run(READ, 1000, lambda: None))
            Deferred.fromCoroutine(stream.run(WRITE, 300, lambda: None))
            counters = scheduler.counters()["sda"]
            self.assertEqual((counters.streams, counters.running, counters.queued), (1, 1, 1))
            self.pool.finish_one()
            self.pool.finish_one()
        self.assertEqual((counters.read_bytes, counters.write_bytes, counters.streams), (1000, 300, 0))
        self.assertEqual(scheduler.tenants(), {"AUTH_g": TenantFigures(1300, 0.0, 0.0)})

    def test_the_daemons_runner_is_the_background_class_on_the_device(self) -> None:
        runner = BackgroundRunner(self.scheduler)
        self.queue(IOSpec("gold", "AUTH_g"), 200, "gold")
        done = [runner.run("sda", lambda x, y=0: ("daemon", x, y), 1, y=2) for _ in range(50)]
        served = self.served(100)
        # gold (4) at 1 MiB a job against background (0.5) at 256 KiB: (1 MiB + 64 KiB) / 4 against
        # (256 KiB + 64 KiB) / 0.5 of virtual time a job, so 70 % of the jobs are gold's
        self.assertEqual(Counter(label if isinstance(label, str) else "daemon" for label in served),
                         {"gold": 70, "daemon": 30})
        self.assertEqual(self.successResultOf(done[0]), ("daemon", 1, 2))
        counters = self.scheduler._devices["sda"].counters
        self.assertEqual(counters.read_bytes, 70 * MiB)  # the daemons' calls are not clients' bytes
        runner.run("auditor", lambda: None)
        self.assertEqual(self.scheduler.counters(), {})  # no object device: no stream was opened on either
        self.assertNotIn("-", self.scheduler.tenants())

    def test_an_objects_own_class_lowers_a_stream_never_raises_it(self) -> None:
        stream = self.scheduler.stream("sda", IOSpec("gold", "t"), object_class="bronze")
        self.assertEqual(stream.spec, IOSpec("bronze", "t"))
        for own in ("gold", "unknown", "", None):
            self.assertEqual(self.scheduler.stream("sda", IOSpec("bronze", "t"), object_class=own).spec,
                             IOSpec("bronze", "t"), own)
        self.assertEqual(self.scheduler.stream("sda", IOSpec("gold", "t"), object_class="capped").rate, MiB)
        # not out of a reader's caps: an object of a lighter class without them is read in the reader's
        self.assertEqual(self.scheduler.stream("sda", IOSpec("metered", "t"), object_class="background").spec,
                         IOSpec("metered", "t"))

    def test_a_request_without_a_spec_is_its_accounts_in_the_default_class(self) -> None:
        stream = self.scheduler.stream("sda", None, "AUTH_x")
        self.assertEqual((stream.spec, stream.rate), (IOSpec("bronze", "AUTH_x"), 0))


class StreamCapTests(SynchronousTestCase):
    def test_a_capped_stream_is_paced_by_the_clock(self) -> None:
        clock = Clock()
        pool = HeldPool()
        scheduler = IOScheduler(pool, CLASSES, clock, depth=4)
        stream = scheduler.stream("sda", IOSpec("capped", "t"))  # the class's 1 MiB/s
        self.assertEqual(stream.rate, MiB)
        started = []
        for _ in range(4):
            d = Deferred.fromCoroutine(stream.run(READ, MiB // 2, lambda: None))
            started.append(d)
        # the first half MiB goes at once (the bucket is full), each next one when the one before is paid for
        times = []
        for step in range(40):
            while pool.running:
                pool.finish_one()
                times.append(clock.seconds())
            clock.advance(0.1)
        self.assertEqual(len(times), 4)
        self.assertAlmostEqual(times[0], 0.0)
        for earlier, later in zip(times, times[1:]):
            self.assertLessEqual(abs(later - earlier - 0.5), 0.11)

    def test_the_tighter_of_the_class_and_the_request_cap(self) -> None:
        scheduler = IOScheduler(HeldPool(), CLASSES, Clock())
        self.assertEqual(scheduler.stream("sda", IOSpec("capped", "t", rate=MiB // 4)).rate, MiB // 4)
        self.assertEqual(scheduler.stream("sda", IOSpec("capped", "t", rate=10 * MiB)).rate, MiB)
        self.assertEqual(scheduler.stream("sda", IOSpec("gold", "t", rate=5 * MiB)).rate, 5 * MiB)
        self.assertEqual(scheduler.stream("sda", IOSpec("gold", "t")).rate, 0)


class TenantCapTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.pool = HeldPool()
        self.scheduler = IOScheduler(self.pool, CLASSES, self.clock, depth=8)

    def moved_in(self, seconds: float, tenant: str = "t", streams: int = 4) -> int:
        """Bytes the tenant's streams (on two devices) move in ``seconds``, each asking 256 KiB at a time."""
        moved = [0]
        runs = [self.scheduler.stream(("sda", "sdb")[n % 2], IOSpec("metered", tenant)) for n in range(streams)]

        async def keep_reading(stream):
            while self.clock.seconds() < end:
                await stream.run(READ, MiB // 4, lambda: None)
                moved[0] += MiB // 4
        end = self.clock.seconds() + seconds
        for stream in runs:
            Deferred.fromCoroutine(keep_reading(stream))
        while self.clock.seconds() < end:
            for _ in range(len(self.pool.running)):  # the disk: what is in the pool now, each tick
                self.pool.finish_one()
            self.clock.advance(0.01)
        while self.pool.running:
            self.pool.finish_one()
        return moved[0]

    def test_the_class_cap_holds_for_the_tenant_across_its_streams_and_devices(self) -> None:
        moved = self.moved_in(10)
        self.assertLessEqual(abs(moved / 10 - 2 * MiB), 0.05 * 2 * MiB)
        figures = self.scheduler.tenants()["t"]
        self.assertEqual((figures.bytes, figures.cap), (moved, 2 * MiB))
        self.assertGreater(figures.waited, 0)

    def test_a_share_from_the_controller_then_back_to_the_whole_cap(self) -> None:
        self.scheduler.set_shares({"t": MiB // 2}, ttl=10)
        moved = self.moved_in(8)
        self.assertLessEqual(abs(moved / 8 - MiB // 2), 0.05 * MiB)
        self.clock.advance(3)  # the shares are 11 s old: no controller heard from, the whole cap again
        moved = self.moved_in(8)
        self.assertLessEqual(abs(moved / 8 - 2 * MiB), 0.05 * 2 * MiB)

    def test_a_share_never_lifts_the_cap_and_other_tenants_are_apart(self) -> None:
        self.scheduler.set_shares({"t": 100 * MiB}, ttl=60)
        self.assertLessEqual(self.moved_in(5) / 5, 2.1 * MiB)
        self.assertLessEqual(self.moved_in(5, tenant="u") / 5, 2.1 * MiB)
        self.assertEqual(set(self.scheduler.tenants()), {"t", "u"})


class WaitTests(SynchronousTestCase):
    """A chunk waiting for a cap: asked again in steps, shortened by a raised share, ended by a stop."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.pool = HeldPool()
        self.scheduler = IOScheduler(self.pool, CLASSES, self.clock, depth=4)
        self.spec = IOSpec("metered", "t")  # 2 MiB/s for the tenant
        self.runs: list[Deferred] = []

    def started_after(self, stream, seconds: float) -> bool:
        """Whether a 1 MiB read of the stream reached the pool within ``seconds``."""
        self.pool.running.clear()
        d = Deferred.fromCoroutine(stream.run(READ, MiB, lambda: None))
        self.runs.append(d)
        for _ in range(int(seconds * 100)):
            if self.pool.running:
                break
            self.clock.advance(0.01)
        return bool(self.pool.running)

    def test_a_raised_share_shortens_a_wait_and_a_stop_ends_one(self) -> None:
        stream = self.scheduler.stream("sda", self.spec)
        self.scheduler.set_shares({"t": 64 * 1024}, ttl=60)  # a small share: 15 s a MiB
        self.assertTrue(self.started_after(stream, 0.1))
        self.pool.running.clear()
        waiting = Deferred.fromCoroutine(stream.run(READ, MiB, lambda: None))
        self.clock.advance(2.0)
        self.assertEqual(self.pool.running, [])  # 15 s to go at that share
        self.scheduler.set_shares({"t": 2 * MiB}, ttl=60)
        self.clock.advance(0.5)
        self.assertEqual(len(self.pool.running), 1)  # not the 15 s it was told first
        self.assertFalse(self.started_after(stream, 0.1))
        stream.stop()
        self.clock.advance(0.3)
        self.failureResultOf(self.runs[-1], StreamStopped)
        self.assertNoResult(waiting)  # (in the pool: the test's pool never ends it)

    def test_no_share_lifts_the_cap_or_drops_it_to_nothing(self) -> None:
        stream = self.scheduler.stream("sda", self.spec)
        for share, rate in ((0.0, 2 * MiB * MIN_SHARE), (1e-9, 2 * MiB * MIN_SHARE), (1e12, 2 * MiB)):
            self.scheduler.set_shares({"t": share}, ttl=60)
            Deferred.fromCoroutine(stream.run(READ, 1, lambda: None))
            self.assertEqual(self.scheduler._tenants["t"].rate, rate, share)

    def test_idle_devices_and_tenants_are_forgotten(self) -> None:
        for tenant in range(50):
            self.scheduler.submit("sda", IOSpec("bronze", f"t{tenant}"), READ, MiB, lambda: None)
        while self.pool.running:
            self.pool.finish_one()
        self.assertEqual(self.scheduler._devices["sda"].flows, {})
        self.assertEqual(len(self.scheduler.tenants()), 50)
        self.clock.advance(TENANT_IDLE + 1)
        self.assertEqual(self.scheduler.tenants(), {})


class IOPriorityTests(SynchronousTestCase):
    def test_levels_follow_weight_against_the_default(self) -> None:
        self.assertEqual(ioprio.levels({"gold": 4, "bronze": 1, "background": 0.5, "huge": 1000, "tiny": 0.001}, 1),
                         {"gold": 2, "bronze": 4, "background": 5, "huge": 0, "tiny": 7})

    def test_a_job_runs_at_its_class_level(self) -> None:
        if ioprio.current_level() is None:
            raise self.skipTest("no ioprio_get here")
        seen = {}

        def job(name):
            seen[name] = ioprio.current_level()

        class ThreadPool(HeldPool):
            def finish_one(self):
                _key, function, d = self.running.pop(0)
                worker = threading.Thread(target=lambda: d.callback(function()))
                worker.start()
                worker.join()

        pool = ThreadPool()
        scheduler = IOScheduler(pool, CLASSES, Clock(), depth=1)
        scheduler.submit("sda", IOSpec("gold", "t"), READ, 1, job, "gold")
        scheduler.submit("sda", IOSpec("background", "t"), READ, 1, job, "background")
        pool.finish_one()
        pool.finish_one()
        self.assertEqual(seen, {"gold": 2, "background": 5})

    def test_the_fixed_cost_of_an_operation(self) -> None:
        # many tiny jobs of one flow do not pass as free against another flow's large ones
        pool = HeldPool()
        scheduler = IOScheduler(pool, CLASSES, Clock(), depth=1)
        for _ in range(100):
            scheduler.submit("sda", IOSpec("bronze", "small"), READ, 0, lambda: "small")
        for _ in range(100):
            scheduler.submit("sda", IOSpec("bronze", "large"), READ, OP_COST, lambda: "large")
        shares = Counter(pool.finish_one() for _ in range(60))
        self.assertEqual(shares, {"small": 40, "large": 20})
