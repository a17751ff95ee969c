# -*- test-case-name: txstore.test.unit.test_qos_meter -*-
"""
What each device of an object node is doing, sampled from its IO scheduler once a second: for
``/recon/bandwidth`` and for the load figure the node attaches to its GET and HEAD answers
(``X-Backend-Device-Load``), from which proxies order the replicas they read.

Every ``interval`` the meter reads the scheduler's counters (`IOScheduler.counters`, byte totals
and the jobs queued and running now) and keeps, per device, exponentially weighted averages
with a time constant of ``TIME_CONSTANT`` seconds: read and write bandwidth (bytes/s, from the
totals' deltas over the time that really passed), jobs queued and jobs running; and the streams
open at the sample. Per tenant it keeps the bytes/s of the last interval, the tenant's cap on
this node and whether the tenant waited for its cap during the interval.

The load figure
---------------

``load = max(bandwidth / capacity, running / depth) + queued / depth + slow``

with the averaged figures, ``depth`` the jobs a device runs at once (its pool's threads) and
``capacity`` a device's bandwidth when it is flat out: configured, else the highest averaged
bandwidth any device of this node has shown, decaying by half every ``CAPACITY_HALF_LIFE``
seconds (a best is remembered for minutes; a slower disk, or one that got slower, is learnt
again), and never under ``CAPACITY_FLOOR``. The node's devices share it, as they are alike in
any sane deployment: a device learning its capacity only from itself counts its own single
stream as saturation, and then a device serving one client's stream looks as loaded as one
serving a background reader's four (seen on an all-in-one, where that sent reads to the busy
node). The floor is high, a disk's sequential bandwidth, so that a device that has never been
pushed is not taken as full by the little it has done.

Why this shape: what a reader wants to know is the bandwidth a new stream would get there.
The first term is how busy the device is, 0 (idle) to 1 (saturated), measured two ways because
each misses a case: bandwidth against capacity sees a few streams that keep the disk at its
best, the pool's occupancy sees a disk that is slow for its bytes (seeks, small reads, a dying
disk) and whose bandwidth therefore looks low. The second term is the backlog: each whole
``depth`` of jobs waiting is one more round of the pool ahead of a new job. So 0 is idle, 1 is
busy with nothing waiting, and above 1 a new stream shares the device with a queue, its
expected share falling as the figure grows. Open streams are reported but not counted: a
stream paused by a slow client costs the disk nothing, and a stream that reads has its next
chunk queued or running (one chunk is read ahead), so active streams are in the job counts.

``slow`` is how much slower the device serves its own jobs now than the node's disks at their
best, past a dead band: ``min(SLOW_CAP, max(0, slowness - SLOW_DEADBAND))``, where slowness is
seconds per byte of its body jobs *as if each ran alone* (a job's time over the jobs running
beside it on average) against the lowest the node has seen lately. Work that is not the node's
(another process on the disk, a RAID rebuild, a dying disk) leaves the first two terms low, as
the node's own jobs are few, but makes each of them slow; without this term such a device
looks idle and is read first. Without news (no body jobs there), the slowness eases back to
1 with a half-life of ``SLOW_HALF_LIFE``, so the device is read again and measured.

Sampling is on the reactor's clock (a `Clock` in tests) and costs a pass over the devices and
the tenants a second; an answer pays a dictionary lookup for its header, formatted at the
sample.
"""

from __future__ import annotations

import math
from typing import Any

from attrs import define
from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

SAMPLE_INTERVAL = 1.0
# The averages' time constant: a change shows half within ~1.4 s, almost whole within 6 s.
TIME_CONSTANT = 2.0
# A device's capacity is at least this (bytes/s), whatever little the node's devices have done.
CAPACITY_FLOOR = 200 * 1024 * 1024
CAPACITY_HALF_LIFE = 600.0
LOAD_HEADER = "X-Backend-Device-Load"
# What a device the scheduler has not seen yet (no stream ever) reports: idle.
IDLE = "0.00"
# How slow a disk is now, against the best the node's disks have done (`_slowness`): needs this
# many timed bytes in a sample to count as news; without news the figure eases back to the
# best with this half-life, so a device once slow is read again and measured.
TIMED_ENOUGH = 1024 * 1024
SLOW_HALF_LIFE = 10.0
# Slowness under this is noise (reads and writes, big and small jobs, differ that much); the
# load figure takes what is above it, up to SLOW_CAP.
SLOW_DEADBAND = 1.5
SLOW_CAP = 8.0


@define
class DeviceLoad:
    """One device's figures at the last sample (bandwidths, load: averaged; the rest as counted)."""

    read_bps: float = 0.0
    write_bps: float = 0.0
    queued: int = 0
    running: int = 0
    streams: int = 0
    load: float = 0.0
    capacity: float = 0.0
    # the averaged job counts, and the byte totals of the last sample
    avg_queued: float = 0.0
    avg_running: float = 0.0
    read_total: int = 0
    write_total: int = 0
    # seconds per byte of its body jobs as if each ran alone (averaged), and the totals of the
    # last sample; the slowness is that over the node's best
    spb: float = 0.0
    slowness: float = 1.0
    alone_total: float = 0.0
    timed_total: int = 0


@define
class TenantRate:
    """One tenant at the last sample: bytes/s over the last interval, its cap here, whether it waited."""

    bps: float = 0.0
    cap: float = 0.0
    throttled: bool = False
    total: int = 0
    waited: float = 0.0


class BandwidthMeter(Service):
    """
    Samples ``scheduler`` (an `IOScheduler`) every ``interval`` seconds on ``clock`` (an
    IReactorTime) while running. ``depth``: jobs a device runs at once. ``capacity``: every
    device's bandwidth flat out, bytes/s (0: learnt, see the module's docstring).
    """

    log = Logger()

    def __init__(self, scheduler: Any, clock: Any, depth: int, interval: float = SAMPLE_INTERVAL,
                 capacity: float = 0.0, floor: float = CAPACITY_FLOOR) -> None:
        self._scheduler = scheduler
        self._clock = clock
        self._depth = max(1, depth)
        self.interval = interval
        self._capacity = capacity
        self._floor = floor
        self._devices: dict[str, DeviceLoad] = {}
        self._tenants: dict[str, TenantRate] = {}
        self._headers: dict[str, str] = {}  # the load figure per device, as the header carries it
        self._last: float | None = None  # when the last sample was taken
        self._peak = 0.0  # the highest bandwidth a device of this node has shown lately
        self._best_spb = 0.0  # the fewest seconds per byte a device of this node has taken lately
        self._loop: LoopingCall | None = None

    # --- the service --------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self.sample)
        self._loop.clock = self._clock
        self._loop.start(self.interval, now=True)

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    # --- what it tells --------------------------------------------------------------------------

    def header(self, device: str) -> str:
        """The device's load figure as ``X-Backend-Device-Load`` carries it."""
        return self._headers.get(device, IDLE)

    def load(self, device: str) -> float:
        figures = self._devices.get(device)
        return figures.load if figures is not None else 0.0

    def devices(self) -> dict[str, DeviceLoad]:
        return dict(self._devices)

    def report(self) -> dict[str, Any]:
        """``/recon/bandwidth``: the devices' figures and the tenants active, capped or throttled."""
        return {
            "interval": self.interval,
            "devices": {
                name: {"read_bps": d.read_bps, "write_bps": d.write_bps, "queued": d.queued,
                       "running": d.running, "streams": d.streams, "slowness": d.slowness, "load": d.load}
                for name, d in self._devices.items()
            },
            "tenants": {
                name: {"bps": t.bps, "cap": t.cap, "throttled": t.throttled}
                for name, t in self._tenants.items() if t.bps > 0 or t.cap > 0 or t.throttled
            },
        }

    # --- sampling -----------------------------------------------------------------------------

    def sample(self) -> None:
        """One sample of the scheduler's counters (the first only sets where the totals start)."""
        try:
            self._sample()
        except Exception:
            # A figure lost is better than a loop stopped for good.
            self.log.failure("sampling the devices' bandwidth")

    def _sample(self) -> None:
        now = self._clock.seconds()
        elapsed = None if self._last is None else now - self._last
        if elapsed is not None and elapsed <= 0:
            return
        self._last = now
        weight = 1.0 - math.exp(-elapsed / TIME_CONSTANT) if elapsed is not None else 1.0
        keep = 0.5 ** (elapsed / CAPACITY_HALF_LIFE) if elapsed is not None else 1.0
        counters = self._scheduler.counters()
        self._peak *= keep
        self._best_spb = self._best_spb / keep if self._best_spb else 0.0
        for name, now_counted in counters.items():
            device = self._devices.get(name)
            if device is None:
                device = self._devices[name] = DeviceLoad()
            if elapsed is not None:
                # (a device first seen now started from nothing since the last sample)
                read = max(0, now_counted.read_bytes - device.read_total) / elapsed
                written = max(0, now_counted.write_bytes - device.write_total) / elapsed
                device.read_bps += weight * (read - device.read_bps)
                device.write_bps += weight * (written - device.write_bps)
            device.read_total = now_counted.read_bytes
            device.write_total = now_counted.write_bytes
            device.queued, device.running = now_counted.queued, now_counted.running
            device.streams = now_counted.streams
            device.avg_queued += weight * (now_counted.queued - device.avg_queued)
            device.avg_running += weight * (now_counted.running - device.avg_running)
            self._peak = max(self._peak, device.read_bps + device.write_bps)
            self._service(device, now_counted, elapsed, weight)
        capacity = self._capacity if self._capacity > 0 else max(self._floor, self._peak)
        for name, device in self._devices.items():
            device.capacity = capacity
            busy = max((device.read_bps + device.write_bps) / capacity, device.avg_running / self._depth)
            device.slowness = device.spb / self._best_spb if device.spb and self._best_spb else 1.0
            slow = min(SLOW_CAP, max(0.0, device.slowness - SLOW_DEADBAND))
            device.load = busy + device.avg_queued / self._depth + slow
            self._headers[name] = f"{device.load:.2f}"
        self._sample_tenants(elapsed)

    def _service(self, device: DeviceLoad, counted: Any, elapsed: float | None, weight: float) -> None:
        """
        How slow the device serves its jobs now: seconds per byte as if each job ran alone
        (its time over the jobs beside it). A disk that other work outside txstore keeps busy
        (another process, a rebuild, a dying disk) shows here and nowhere else: its own jobs
        are few, but each takes long. Against the best the node's disks have done lately (which
        eases up by half every CAPACITY_HALF_LIFE), it is the slowness the load figure takes in.
        """
        timed = counted.timed_bytes - device.timed_total
        alone = counted.alone_seconds - device.alone_total
        device.timed_total, device.alone_total = counted.timed_bytes, counted.alone_seconds
        if elapsed is None:
            return
        if timed >= TIMED_ENOUGH:
            spb = alone / timed
            device.spb = spb if not device.spb else device.spb + weight * (spb - device.spb)
            self._best_spb = min(self._best_spb, device.spb) if self._best_spb else device.spb
        elif device.spb and self._best_spb:
            ease = 0.5 ** (elapsed / SLOW_HALF_LIFE)
            device.spb = self._best_spb + (device.spb - self._best_spb) * ease

    def _sample_tenants(self, elapsed: float | None) -> None:
        figures = self._scheduler.tenants()
        for name, now in figures.items():
            tenant = self._tenants.get(name)
            if tenant is None:
                # A tenant first seen has moved its bytes since the last sample (none before it).
                tenant = self._tenants[name] = TenantRate()
            if elapsed is not None:
                tenant.bps = max(0, now.bytes - tenant.total) / elapsed
                tenant.throttled = now.waited > tenant.waited
            tenant.total, tenant.waited, tenant.cap = now.bytes, now.waited, float(now.cap)
        for name in [name for name in self._tenants if name not in figures]:
            del self._tenants[name]
