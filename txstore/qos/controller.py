# -*- test-case-name: txstore.test.unit.test_qos_controller -*-
"""
Tenants' cluster-wide caps: every second, split each capped tenant's ``tenant_rate`` between
the object nodes by what each moves for it, and tell every node its shares.

A tenant's bytes pass through whichever nodes hold its objects, so a cap that must hold for
the cluster cannot be one fixed per-node rate: the nodes enforce a share each (a token bucket,
`txstore.qos.scheduler`), and this loop, which runs in the proxies, moves the shares to where
the tenant's demand is. Each round it reads every object node's ``/recon/bandwidth`` (what
each tenant moved there in the last second, its cap, and whether it waited for its share) and
gives each capped tenant:

- on the nodes where it moved bytes, ``(1 - RESERVE)`` of the cap (all of it when it is active
  everywhere), max-min fair (`split`): a node where the tenant did not wait for its share is
  given what it moved and a quarter more, the nodes where it waited share the rest equally;
- on each other node, an equal part of ``RESERVE`` of the cap, so a node that starts serving
  the tenant is held to a small share until the next round finds it, rather than to the whole
  cap.

Shares are sent with a time to live of a few rounds (``PUT /qos/shares`` on each node); a node
no controller reaches falls back to the tenant's whole cap (the cap still holds per node). A
round's answers come within ``timeout``; a node that does not answer is skipped that round,
and gets the reserve share. Several proxies each run this loop over the same figures, so their
shares agree to within a round's drift; one may turn it off (``[filter:qos]
controller_interval = 0``). Convergence: a node where the demand grows waits for its share, so
the next round gives it an equal part of what the others do not use; a node whose demand falls
leaves its share unused, and the next round hands that on: a few rounds either way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable

from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger

RESERVE = 0.1
HEADROOM = 1.25
TTL_ROUNDS = 5
SHARES_PATH = "/qos/shares"

log = Logger()


def split(cap: float, figures: dict[tuple[str, int], dict], nodes: Iterable[tuple[str, int]]) -> dict:
    """
    One tenant's shares per node: ``figures`` are the tenant's ``{"bps", "throttled"}`` on the
    nodes that reported it; ``nodes`` every node to give a share.

    Max-min fair between the active nodes: a node that did not wait for its share wants what it
    moved and ``HEADROOM`` more; one that waited wants more than it was given, as much as it can
    get; the cap (less the reserve for the idle nodes) is filled up to an equal level, each node
    taking no more than it wants; what is left over is spread evenly, as room to grow.
    """
    nodes = list(nodes)
    if not nodes:
        return {}
    wants = {node: (math.inf if f["throttled"] else f["bps"] * HEADROOM)
             for node, f in figures.items() if f["bps"] > 0 or f["throttled"]}
    idle = [node for node in nodes if node not in wants]
    if not wants:
        return {node: cap / len(nodes) for node in nodes}
    left = cap * (1.0 - RESERVE) if idle else cap
    shares: dict[tuple[str, int], float] = {}
    waiting = sorted(wants, key=lambda node: wants[node])
    while waiting:
        level = left / len(waiting)
        if wants[waiting[0]] > level:
            for node in waiting:
                shares[node] = level
            left = 0.0
            break
        node = waiting.pop(0)
        shares[node] = wants[node]
        left -= wants[node]
    if left > 0:
        for node in shares:
            shares[node] += left / len(shares)
    for node in idle:
        shares[node] = cap * RESERVE / len(idle)
    return shares


class TenantShareController:
    """The loop: ``nodes()`` gives the object nodes' ``(ip, port)``; ``client`` the backend client."""

    def __init__(self, client, nodes, interval: float = 1.0, timeout: float = 0.5) -> None:
        self._client = client
        self._nodes = nodes
        self.interval = interval
        self._timeout = min(timeout, interval)
        self.last_shares: dict[tuple[str, int], dict[str, float]] = {}

    def service(self, clock) -> TimerService:
        service = TimerService(self.interval, self.round)
        service.clock = clock
        return service

    def round(self) -> Deferred:
        return Deferred.fromCoroutine(self._guarded_round())

    async def _guarded_round(self) -> None:
        # A failed round is logged and the next one runs: TimerService stops for good on a failure.
        try:
            await self._round()
        except Exception:
            log.failure("a tenant-cap controller round failed")

    async def _round(self) -> None:
        nodes = sorted(set(self._nodes()))
        reports = await gatherResults([Deferred.fromCoroutine(self._report(node)) for node in nodes])
        caps: dict[str, float] = {}
        figures: dict[str, dict[tuple[str, int], dict]] = {}
        for node, report in zip(nodes, reports):
            for tenant, (cap, bps, throttled) in (report or {}).items():
                caps[tenant] = max(caps.get(tenant, 0.0), cap)
                figures.setdefault(tenant, {})[node] = {"bps": bps, "throttled": throttled}
        per_node: dict[tuple[str, int], dict[str, float]] = {node: {} for node in nodes}
        for tenant, cap in caps.items():
            for node, share in split(cap, figures[tenant], nodes).items():
                per_node[node][tenant] = share
        self.last_shares = per_node
        await gatherResults([Deferred.fromCoroutine(self._send(node, shares)) for node, shares in per_node.items()
                             if shares])

    async def _report(self, node: tuple[str, int]) -> dict[str, tuple[float, float, bool]] | None:
        """A node's capped tenants as ``{tenant: (cap, bytes/s, waited)}``; None when it gave no usable answer."""
        try:
            response = await self._client.request("GET", node[0], node[1], "/recon/bandwidth", timeout=self._timeout)
            if response.status != 200:
                return None
            tenants = json.loads(response.body)["tenants"]
            found = {}
            for tenant, f in tenants.items():
                cap, bps = float(f.get("cap") or 0), float(f.get("bps") or 0)
                if math.isfinite(cap) and math.isfinite(bps) and cap > 0 and bps >= 0:
                    found[str(tenant)] = (cap, bps, f.get("throttled") is True)
            return found
        except Exception as err:  # a node that does not answer, or not in shape, is left out of this round
            log.debug("no bandwidth report from {node}: {err}", node=node, err=err)
            return None

    async def _send(self, node: tuple[str, int], shares: dict[str, float]) -> None:
        body = json.dumps({"ttl": self.interval * TTL_ROUNDS, "shares": shares}).encode()
        try:
            await self._client.request("PUT", node[0], node[1], SHARES_PATH, {"Content-Type": "application/json"},
                                       body, timeout=self._timeout)
        except Exception as err:
            log.debug("shares not sent to {node}: {err}", node=node, err=err)


def object_nodes(rings) -> list[tuple[str, int]]:
    """Every object node the rings list (``(ip, port)``)."""
    found = set()
    for ring in rings.objects.values():
        for device in ring.devices:
            if device is not None:
                found.add((device.ip, device.port))
    return sorted(found)
