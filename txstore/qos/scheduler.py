# -*- test-case-name: txstore.test.unit.test_qos_scheduler -*-
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
queued, never in a thread. A tenant's cluster-wide cap (its class's ``tenant_rate``) is a bucket
per tenant for all of the node's devices, at this node's share of the cap as the proxies'
controller last set it (`set_shares`; `txstore.qos.controller`), or the whole cap while no
fresh share is known. Each job runs in a pool thread whose kernel IO priority is set to
its class's (`txstore.qos.ioprio`), which the kernel honours under the BFQ scheduler.

The scheduler counts what each device did (`DeviceCounters`) for the bandwidth a node reports.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from functools import partial
from typing import Any

from attrs import define, evolve, field
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from zope.interface import implementer

from txstore.interfaces import IBlockingRunner
from txstore.qos import ioprio
from txstore.qos.classes import BACKGROUND, IOClasses, IOSpec

# What a job costs besides its bytes: a disk operation's fixed price, so many small jobs of one
# flow do not pass as free.
OP_COST = 64 * 1024
# A capped stream may run ahead of its rate by this many seconds' worth of bytes.
BURST_SECONDS = 0.1
# A chunk waiting for its cap asks again this often (a share may have been raised meanwhile).
WAIT_STEP = 0.25
# A node's share of a tenant's cap is at least this part of the cap, whatever it is sent.
MIN_SHARE = 0.01
# A tenant that moved nothing on a node for this long is forgotten there.
TENANT_IDLE = 300.0
READ, WRITE, OTHER = "read", "write", "other"
# Jobs of at least this many bytes are timed for the device's service rate (smaller ones are
# mostly their fixed cost).
TIMED_BYTES = 256 * 1024
# What one call of the consistency daemons costs in the queue: their calls (a listing, a hash of
# a suffix, a chunk read to send) move unknown amounts, so each is priced as a middling read.
BACKGROUND_CALL_COST = 256 * 1024


@define
class DeviceCounters:
    """What one device did, for the load it reports: byte totals since start, and now."""

    read_bytes: int = 0
    write_bytes: int = 0
    queued: int = 0  # jobs waiting for the pool
    running: int = 0  # jobs in the pool
    streams: int = 0  # streams open on the device
    # How long body jobs took, for how slow the disk is now whoever else uses it: each job's
    # seconds over the jobs running beside it on average (itself included), summed, and the
    # bytes of those jobs (the meter divides the two: seconds per byte, as if alone).
    alone_seconds: float = 0.0
    timed_bytes: int = 0


class TokenBucket:
    """
    ``rate`` bytes per second (0: no cap), on a clock. A mover asks `owed` (seconds until what
    earlier movers overspent is paid back) and, at 0, `spend`s its bytes: a chunk larger than the
    burst still goes whole, so the average holds and no chunk is split. ``waited``: seconds of
    waits asked for (for the controller: whether the tenant wanted more than its share here).
    """

    def __init__(self, clock, rate: float) -> None:
        self._clock = clock
        self.rate = rate
        self._tokens = rate * BURST_SECONDS
        self._last = clock.seconds()
        self.waited = 0.0

    def _refill(self) -> None:
        now = self._clock.seconds()
        self._tokens = min(self.rate * BURST_SECONDS, self._tokens + (now - self._last) * self.rate)
        self._last = now

    def owed(self) -> float:
        if self.rate <= 0:
            return 0.0
        self._refill()
        return -self._tokens / self.rate if self._tokens < 0 else 0.0

    def spend(self, nbytes: int) -> None:
        if self.rate > 0:
            self._refill()
            self._tokens -= nbytes

    def set_rate(self, rate: float) -> None:
        """A new rate from now on (what is owed is owed at the new rate)."""
        if self.rate > 0:
            self._refill()
        self.rate = rate
        self._tokens = min(self._tokens, rate * BURST_SECONDS)


class StreamStopped(Exception):
    """The stream was stopped (its client went away) while a chunk waited for its cap."""


@define
class TenantFigures:
    """One tenant on this node: bytes moved since start, its cluster-wide cap, and seconds spent waiting for its share."""

    bytes: int
    cap: float
    waited: float


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
    started: float = 0.0
    running_at_start: float = 0.0  # the device's running-jobs integral when it started


@define
class _Device:
    """One device's queue: SFQ(D) over its flows."""

    name: str
    depth: int
    counters: DeviceCounters = field(factory=DeviceCounters)
    # An object device (a stream was opened on it), not one of the daemons' other pool keys
    # ("auditor", "ec", ...), which are queued alike but are no disk to report.
    stored_objects: bool = False
    vtime: float = 0.0
    flows: dict[tuple[str, str], _Flow] = field(factory=dict)
    heap: list = field(factory=list)
    # jobs running, integrated over time (job-seconds), up to ``integrated_to``
    running_integral: float = 0.0
    integrated_to: float = 0.0

    def integrate(self, now: float) -> float:
        """The running-jobs integral brought up to ``now`` (call before ``running`` changes)."""
        self.running_integral += self.counters.running * (now - self.integrated_to)
        self.integrated_to = now
        return self.running_integral


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
        self._tenants: dict[str, TokenBucket] = {}  # capped tenants' buckets, one for all devices
        self._caps: dict[str, float] = {}  # capped tenants' cluster-wide caps, as their requests' classes say
        self._tenant_bytes: dict[str, int] = {}
        self._tenant_seen: dict[str, float] = {}  # when each tenant last moved bytes here
        self._shares: dict[str, float] = {}  # this node's share of a tenant's cluster-wide cap
        self._shares_until = 0.0

    def stream(self, device: str, spec: IOSpec | None, tenant: str = "", object_class: str | None = None) -> Stream:
        """
        One object stream's disk work on ``device``: the spec's class and tenant, or (a request
        that carries none) the default class and ``tenant``; in ``object_class`` instead (the
        object's own, `txstore.middleware.qos`) when that one is known and lower.
        """
        if spec is None:
            spec = IOSpec(self._classes.default_name, tenant)
        own = self._classes.get(object_class) if object_class else None
        if own is not None and own.name != spec.io_class and self._classes.within(own, self._classes.resolve(spec.io_class)):
            spec = evolve(spec, io_class=own.name)
        self._device(device).stored_objects = True
        return Stream(self, device, spec, self._classes.stream_cap(spec))

    def counters(self) -> dict[str, DeviceCounters]:
        """The object devices' counters (those a stream was opened on)."""
        return {name: device.counters for name, device in self._devices.items() if device.stored_objects}

    # --- tenants' cluster-wide caps -----------------------------------------------------------

    def set_shares(self, shares: dict[str, float], ttl: float) -> None:
        """
        This node's shares of capped tenants' cluster-wide caps (bytes/s), as the controller
        last worked them out, good for ``ttl`` seconds: a node that stops hearing from every
        controller falls back to each tenant's whole cap, never to no cap at all.
        """
        self._shares = dict(shares)
        self._shares_until = self._clock.seconds() + ttl
        for tenant, bucket in self._tenants.items():
            if tenant in self._shares:
                cap = self._caps.get(tenant, bucket.rate)
                bucket.set_rate(max(min(cap, self._shares[tenant]), cap * MIN_SHARE))

    def tenants(self) -> dict[str, TenantFigures]:
        """
        What each tenant moved on this node (for the controller), with its cap and its waits;
        a tenant idle for ``TENANT_IDLE`` seconds is forgotten (a node may serve millions).
        """
        now = self._clock.seconds()
        for tenant in [t for t, seen in self._tenant_seen.items() if now - seen > TENANT_IDLE]:
            for table in (self._tenant_seen, self._tenant_bytes, self._tenants, self._caps):
                table.pop(tenant, None)
        return {
            tenant: TenantFigures(moved, self._caps.get(tenant, 0.0),
                                  self._tenants[tenant].waited if tenant in self._tenants else 0.0)
            for tenant, moved in self._tenant_bytes.items()
        }

    def _tenant_bucket(self, spec: IOSpec) -> TokenBucket | None:
        """The tenant's bucket at its rate on this node now (its share, else its class's cap); None: no cap."""
        cap = self._classes.resolve(spec.io_class).tenant_rate
        if not cap:
            return None
        self._caps[spec.tenant] = cap
        share = self._shares.get(spec.tenant) if self._clock.seconds() < self._shares_until else None
        rate = max(min(cap, share), cap * MIN_SHARE) if share is not None else cap
        bucket = self._tenants.get(spec.tenant)
        if bucket is None:
            bucket = self._tenants[spec.tenant] = TokenBucket(self._clock, rate)
        elif bucket.rate != rate:
            bucket.set_rate(rate)
        return bucket

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
            try:
                return function(*args)
            finally:
                ioprio.set_level(ioprio.DEFAULT_LEVEL)  # the thread's other calls are no class's
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
            now = self._clock.seconds()
            device.integrate(now)
            device.counters.running += 1
            job.started, job.running_at_start = now, device.running_integral
            self._pools.run(device.name, job.call).addBoth(self._done, device, job)

    def _done(self, result, device: _Device, job: _Job):
        counters = device.counters
        now = self._clock.seconds()
        beside = device.integrate(now) - job.running_at_start  # job-seconds run beside it, its own included
        counters.running -= 1
        if job.kind == READ:
            counters.read_bytes += job.nbytes
        elif job.kind == WRITE:
            counters.write_bytes += job.nbytes
        took = now - job.started
        if job.kind != OTHER and job.nbytes >= TIMED_BYTES and took > 0 and not isinstance(result, Failure):
            counters.alone_seconds += took * took / beside  # its time over the average jobs beside it
            counters.timed_bytes += job.nbytes
        if job.kind != OTHER:
            self._tenant_bytes[job.tenant] = self._tenant_bytes.get(job.tenant, 0) + job.nbytes
            self._tenant_seen[job.tenant] = now
        flow = job.flow
        flow.queued -= 1
        # The caller first: a stream that asks for its next chunk at once (a GET reads one ahead)
        # has it queued before the free slot is given, so a busy flow keeps its place.
        if isinstance(result, Failure):
            job.deferred.errback(result)
        else:
            job.deferred.callback(result)
        if flow.queued == 0 and flow.finish <= device.vtime:
            # Idle and owed nothing: a new job would start at the virtual time anyway.
            device.flows.pop(job.key, None)
        self._dispatch(device)
        if not counters.running and not device.heap and device.flows:
            # The device went idle: every flow starts afresh at the latest finish tag (the
            # last jobs' flows would otherwise be kept, one per tenant that ever came).
            device.vtime = max(device.vtime, max(f.finish for f in device.flows.values()))
            device.flows.clear()
        return None


class Stream:
    """One object stream's disk work on one device, through its device's queue, within its cap."""

    def __init__(self, scheduler: IOScheduler, device: str, spec: IOSpec, rate: int) -> None:
        self._scheduler = scheduler
        self.device = device
        self.spec = spec
        self.rate = rate  # bytes per second; 0: no cap
        self._bucket = TokenBucket(scheduler._clock, rate)
        self._open = False
        self._stopped = False

    def __enter__(self) -> Stream:
        self._open = True
        self._scheduler._device(self.device).counters.streams += 1
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._open:
            self._open = False
            self._scheduler._device(self.device).counters.streams -= 1

    def stop(self) -> None:
        """The client went away: a chunk waiting for its cap does not wait on (`StreamStopped`)."""
        self._stopped = True

    async def run(self, kind: str, nbytes: int, function, *args):
        """
        ``function(*args)`` in the device's pool as a job of ``nbytes``, once the caps allow: the
        wait is taken in steps of at most ``WAIT_STEP`` and the buckets asked again, so a share
        raised meanwhile shortens it and a stopped stream ends it.
        """
        clock = self._scheduler._clock
        while True:
            if self._stopped:
                raise StreamStopped(f"{self.spec.tenant}'s stream on {self.device} was stopped")
            tenant = self._scheduler._tenant_bucket(self.spec)
            delay = max(self._bucket.owed(), tenant.owed() if tenant is not None else 0.0)
            if delay <= 0:
                break
            if tenant is not None:
                tenant.waited += min(delay, WAIT_STEP)
            await deferLater(clock, min(delay, WAIT_STEP))
        self._bucket.spend(nbytes)
        if tenant is not None:
            tenant.spend(nbytes)
        return await self._scheduler.submit(self.device, self.spec, kind, nbytes, function, *args)



@implementer(IBlockingRunner)
class BackgroundRunner:
    """
    The consistency daemons' `IBlockingRunner`: each call is a job of the ``background`` class
    on its device's queue (priced `BACKGROUND_CALL_COST`, not counted as a client's bytes), so
    replication, the auditor, the reconstructor and the rest share a busy disk with clients by
    the background class's weight, and run at its kernel IO priority.
    """

    def __init__(self, scheduler: IOScheduler) -> None:
        self._scheduler = scheduler
        self._spec = IOSpec(BACKGROUND, "-")

    def run(self, key: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred:
        call = partial(function, *args, **kwargs) if kwargs else function
        return self._scheduler.submit(key, self._spec, OTHER, BACKGROUND_CALL_COST, call, *(() if kwargs else args))
