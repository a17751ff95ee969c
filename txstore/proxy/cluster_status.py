# -*- test-case-name: txstore.test.integration.test_console -*-
"""
The cluster as the operators' console shows it: every node the rings name, asked for its
recon figures in parallel (each within a short timeout, so a stopped node shows as down in
seconds), the rings' shape, and the proxy's own requests minute by minute.

Gathered at most once per `CACHE_SECONDS` whatever the number of open consoles, so a console
left open costs the nodes a few small requests every few seconds.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.python.failure import Failure

from txstore.proxy.context import ProxyContext

# What each node is asked, under /recon/.
CHECKS = ("diskusage", "async", "quarantined", "daemons", "time", "version")
NODE_TIMEOUT = 2.0
CACHE_SECONDS = 2.0


class ClusterStatus:
    def __init__(self, context: ProxyContext) -> None:
        self._context = context
        self._clock = context.reactor.seconds
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._waiting: list[Deferred] = []  # callers of `current` while a gathering runs
        self._last_seen: dict[str, float] = {}

    async def current(self) -> dict[str, Any]:
        """The latest status (one gathering at a time; answers within CACHE_SECONDS reused)."""
        now = self._clock()
        if self._cached is not None and now - self._cached[0] < CACHE_SECONDS:
            return self._cached[1]
        waiting: Deferred = Deferred()
        self._waiting.append(waiting)
        if len(self._waiting) == 1:  # nobody is gathering: start
            Deferred.fromCoroutine(self._gather()).addBoth(self._gathered)
        return await waiting

    def _gathered(self, result) -> None:
        waiting, self._waiting = self._waiting, []
        if isinstance(result, dict):
            self._cached = (self._clock(), result)
        for waiter in waiting:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    async def _gather(self) -> dict[str, Any]:
        rings = self._context.rings
        nodes = sorted({(d.ip, d.port) for ring in rings.all() for d in ring.devices if d is not None})
        answers = await gatherResults([Deferred.fromCoroutine(self._node(ip, port)) for ip, port in nodes])
        now = self._clock()
        return {
            "time": now,
            "nodes": answers,
            "rings": [self._ring(name, ring) for name, ring in self._rings()],
            "requests": self._context.metrics.recent() if self._context.metrics is not None else [],
            "error_limited": self._context.errors.limited_count() if self._context.errors is not None else 0,
        }

    def _rings(self):
        rings = self._context.rings
        yield "account", rings.account
        yield "container", rings.container
        for index, ring in sorted(rings.objects.items()):
            policy = self._context.policies.by_index(index)
            yield f"object {policy.name if policy else index}", ring

    @staticmethod
    def _ring(name: str, ring) -> dict[str, Any]:
        devices = [d for d in ring.devices if d is not None]
        return {
            "name": name, "partitions": ring.partition_count, "replicas": ring.replica_count,
            "devices": len(devices), "zones": len({(d.region, d.zone) for d in devices}),
            "weight": sum(d.weight for d in devices),
        }

    async def _node(self, ip: str, port: int) -> dict[str, Any]:
        where = f"{ip}:{port}"
        answers = await gatherResults([Deferred.fromCoroutine(self._ask(ip, port, check)) for check in CHECKS])
        found = dict(zip(CHECKS, answers))
        up = all(value is not None for value in found.values())
        if up:
            self._last_seen[where] = self._clock()
        daemons = found["daemons"] or {}
        return {
            "node": where,
            "up": up,
            "last_seen": self._last_seen.get(where),
            "devices": found["diskusage"] or [],
            "async_pending": (found["async"] or {}).get("async_pending"),
            "quarantined": found["quarantined"] or {},
            "replication_age": _age(daemons.get("object-replicator"), self._clock()),
            "daemons": {name: _age(d, self._clock()) for name, d in sorted(daemons.items())},
            "clock_offset": (found["time"]["time"] - self._clock()) if found["time"] else None,
            "version": (found["version"] or {}).get("version"),
        }

    async def _ask(self, ip: str, port: int, check: str) -> Any:
        try:
            response = await self._context.client.request("GET", ip, port, f"/recon/{check}", timeout=NODE_TIMEOUT)
        except Exception:
            return None  # down, or too slow to count as up
        if response.status != 200:
            return None
        try:
            return json.loads(response.body)
        except ValueError:
            return None


def _age(daemon: dict[str, Any] | None, now: float) -> float | None:
    """Seconds since a daemon's last pass ended (None: no pass yet, or no such daemon)."""
    finished = ((daemon or {}).get("last_pass") or {}).get("finished_at")
    return now - finished if finished else None
