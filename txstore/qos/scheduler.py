# -*- test-case-name: txstore.test.test_qos_scheduler -*-
"""
Sharing each device's disk between tenants by IO class: weighted fair queueing of the chunk
reads and writes that object streams ask for, in front of the device's thread pool.

Every object body chunk (a 1 MiB read of a GET, a batch of a PUT's writes, its commit) is a job
of a *flow*, one per (IO class, tenant) on the device. At most ``depth`` jobs of a device are
in its pool at once; when one ends, the queued job with the lowest *start tag* goes next
(start-time fair queueing with depth, SFQ(D)): a job's start tag is the later of the device's
virtual time and its flow's previous finish tag, its finish tag the start plus its cost over
its class's weight. So a busy device gives flows service in proportion to their classes'
weights; a tenant that opens more streams gets no more (its streams are one flow); a flow
that was idle starts at the present, with no credit saved up; and when the device is not
busy every job goes at once (work-conserving: no bandwidth is held back).

A stream's own cap (its class's ``stream_rate`` or the request's ``X-Io-Rate``) is a token
bucket on the reactor's clock: a chunk over budget waits with ``callLater`` before it is
queued, never in a thread. Each job runs in a pool thread whose kernel IO priority is set to
its class's (`txstore.qos.ioprio`), which the kernel honours under the BFQ scheduler.

The scheduler counts what each device did (`DeviceCounters`) for the bandwidth a node reports.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from txstore.qos import ioprio
from txstore.qos.classes import BACKGROUND, IOClasses, IOSpec

# What a job costs besides its bytes: a disk operation's fixed price, so many small jobs of one
# flow do not pass as free.
OP_COST = 64 * 1024
# A capped stream may run ahead of its rate by this many seconds' worth of bytes.
BURST_SECONDS = 0.1
READ, WRITE = "read", "write"


@define
class DeviceCounters:
    """What one device did, for the load it reports: byte totals since start, and now."""

    read_bytes: int = 0
    write_bytes: int = 0
    queued: int = 0  # jobs waiting for the pool
    running: int = 0  # jobs in the pool
    streams: int = 0  # streams open on the device
    tenant_bytes: dict[str, int] = field(factory=dict)  # bytes moved per tenant since start


@define
class _Flow:
    weight: float
    finish: float = 0.0
    queued: int = 0


@define
class _Job:
    flow: _Flow
    key: tuple[str, str]
    cost: float
    kind: str
    nbytes: int
    tenant: str
    call: Callable[[], Any]
    deferred: Deferred


@define
class _Device:
    """One device's queue: SFQ(D) over its flows."""

    name: str
    depth: int
    counters: DeviceCounters = field(factory=DeviceCounters)
    vtime: float = 0.0
    flows: dict[tuple[str, str], _Flow] = field(factory=dict)
    heap: list = field(factory=list)


class IOScheduler:
    """
    The node's device schedulers. ``pools`` is the node's `IBlockingRunner` (a pool per
    device); ``depth`` jobs per device run at once (the pools' threads per device).
    """

    def __init__(self, pools, classes: IOClasses, clock, depth: int = 4) -> None:
        self._pools = pools
        self._classes = classes
        self._clock = clock  # IReactorTime
        self._depth = depth
        self._devices: dict[str, _Device] = {}
        self._order = itertools.count()
        self._levels = ioprio.levels({cls.name: cls.weight for cls in classes}, classes.default.weight)

    def stream(self, device: str, spec: IOSpec | None, tenant: str = "") -> Stream:
        """
        One object stream's disk work on ``device``: the spec's class and tenant, or (a request
        that carries none) the default class and ``tenant``.
        """
        if spec is None:
            spec = IOSpec(self._classes.default_name, tenant)
        return Stream(self, device, spec, self._classes.stream_cap(spec))

    def background(self, device: str) -> Stream:
        """The consistency daemons' disk work on ``device``."""
        return self.stream(device, IOSpec(BACKGROUND, "-"))

    def counters(self) -> dict[str, DeviceCounters]:
        return {name: device.counters for name, device in self._devices.items()}

    # --- the queue --------------------------------------------------------------------------

    def _device(self, name: str) -> _Device:
        device = self._devices.get(name)
        if device is None:
            device = self._devices[name] = _Device(name, self._depth)
        return device

    def submit(self, device_name: str, spec: IOSpec, kind: str, nbytes: int, function, *args) -> Deferred:
        """Queue ``function(*args)`` as a job of ``spec``'s flow on the device; fires with its result."""
        device = self._device(device_name)
        key = (spec.io_class, spec.tenant)
        flow = device.flows.get(key)
        if flow is None:
            flow = device.flows[key] = _Flow(self._classes.resolve(spec.io_class).weight)
        cost = float(nbytes + OP_COST)
        start = max(device.vtime, flow.finish)
        flow.finish = start + cost / flow.weight
        flow.queued += 1
        level = self._levels.get(spec.io_class)

        def call():
            ioprio.set_level(level)
            return function(*args)
        job = _Job(flow, key, cost, kind, nbytes, spec.tenant, call, Deferred())
        heapq.heappush(device.heap, (start, next(self._order), job))
        device.counters.queued += 1
        self._dispatch(device)
        return job.deferred

    def _dispatch(self, device: _Device) -> None:
        while device.counters.running < device.depth and device.heap:
            start, _, job = heapq.heappop(device.heap)
            device.vtime = start
            device.counters.queued -= 1
            device.counters.running += 1
            self._pools.run(device.name, job.call).addBoth(self._done, device, job)

    def _done(self, result, device: _Device, job: _Job):
        counters = device.counters
        counters.running -= 1
        if job.kind == READ:
            counters.read_bytes += job.nbytes
        else:
            counters.write_bytes += job.nbytes
        counters.tenant_bytes[job.tenant] = counters.tenant_bytes.get(job.tenant, 0) + job.nbytes
        flow = job.flow
        flow.queued -= 1
        if flow.queued == 0 and flow.finish <= device.vtime:
            # Idle and owed nothing: a new job would start at the virtual time anyway.
            device.flows.pop(job.key, None)
        self._dispatch(device)
        if isinstance(result, Failure):
            job.deferred.errback(result)
        else:
            job.deferred.callback(result)
        return None


class Stream:
    """One object stream's disk work on one device, through its device's queue, within its cap."""

    def __init__(self, scheduler: IOScheduler, device: str, spec: IOSpec, rate: int) -> None:
        self._scheduler = scheduler
        self.device = device
        self.spec = spec
        self.rate = rate  # bytes per second; 0: no cap
        self._tokens = rate * BURST_SECONDS
        self._last = scheduler._clock.seconds()
        self._open = False

    def __enter__(self) -> Stream:
        self._open = True
        self._scheduler._device(self.device).counters.streams += 1
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._open:
            self._open = False
            self._scheduler._device(self.device).counters.streams -= 1

    async def run(self, kind: str, nbytes: int, function, *args):
        """``function(*args)`` in the device's pool as a job of ``nbytes``, once the cap allows."""
        delay = self._take(nbytes)
        if delay > 0:
            await deferLater(self._scheduler._clock, delay)
        return await self._scheduler.submit(self.device, self.spec, kind, nbytes, function, *args)

    def _take(self, nbytes: int) -> float:
        """
        Spend ``nbytes`` of the bucket; the seconds to wait before they may move: until what
        earlier chunks overspent is paid back (a chunk larger than the burst still goes whole).
        """
        if not self.rate:
            return 0.0
        now = self._scheduler._clock.seconds()
        self._tokens = min(self.rate * BURST_SECONDS, self._tokens + (now - self._last) * self.rate)
        self._last = now
        owed = -self._tokens if self._tokens < 0 else 0.0
        self._tokens -= nbytes
        return owed / self.rate
