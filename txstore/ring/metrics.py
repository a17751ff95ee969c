# -*- test-case-name: txstore.test.unit.test_builder -*-
"""
How good a partition table is: balance (weight) and dispersion (failure domains).

*Balance* is, over the devices, the largest ``|parts - wanted| / wanted`` in percent, where
``wanted`` is the device's weight share of all replicas. It ignores failure domains on
purpose: it says how far the builder had to depart from the weights, whether to keep
replicas apart (overload) or because the topology cannot honour them.

*Dispersion* is the percentage of partitions some tier of which (region, zone or host)
holds more replicas than the widest spread the topology allows would put there. 0 means
every partition is as spread out as it can be.

Both are computed from counts that C code does (``Counter`` over rows and over the tuples
of hosts a partition's replicas are on), so they stay quick on large rings.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

from attrs import frozen

from txstore.ring.device import Device
from txstore.ring.tiers import DEVICE, TierTree, format_tier, replica_cap

#: Shown as the balance of a device of weight 0 that still holds partitions (as swift does).
DRAINING_BALANCE = 999.99


def device_part_counts(tables: Iterable[Sequence[int]]) -> Counter[int]:
    counts: Counter[int] = Counter()
    for row in tables:
        counts.update(row)
    return counts


def device_balances(
    devices: Iterable[Device | None], counts: Counter[int], part_count: int, replicas: int
) -> dict[int, float]:
    """Each device's signed balance in percent (positive: more parts than its weight asks)."""
    live = [dev for dev in devices if dev is not None]
    total_weight = sum(dev.weight for dev in live)
    result: dict[int, float] = {}
    for dev in live:
        held = counts.get(dev.id, 0)
        if dev.weight <= 0 or total_weight <= 0:
            result[dev.id] = DRAINING_BALANCE if held else 0.0
            continue
        wanted = part_count * replicas * dev.weight / total_weight
        result[dev.id] = 100.0 * (held - wanted) / wanted
    return result


def overall_balance(balances: dict[int, float]) -> float:
    return max((abs(value) for value in balances.values()), default=0.0)


@frozen
class TierDispersion:
    """How the partitions spread over one tier node."""

    tier: tuple
    #: The most replicas of one partition this tier holds when spread as widely as possible.
    max_replicas: int
    #: ``histogram[n]``: partitions with ``n`` replicas here (n = 0 .. replica count).
    histogram: tuple[int, ...]

    @property
    def name(self) -> str:
        return format_tier(self.tier)

    @property
    def parts_over(self) -> int:
        return sum(self.histogram[self.max_replicas + 1 :])


@frozen
class DispersionReport:
    #: Percentage of partitions with some tier holding more replicas than ``max_replicas``.
    dispersion: float
    parts_over: int
    #: Per tier node, parents before children, keyed by ``format_tier`` names.
    tiers: dict[str, TierDispersion]


def dispersion_report(
    devices: Iterable[Device | None],
    tables: Sequence[Sequence[int]],
    replicas: int,
    *,
    with_tiers: bool = True,
) -> DispersionReport:
    tree = TierTree.build(dev for dev in devices if dev is not None)
    part_count = len(tables[0]) if tables else 0
    if part_count == 0 or tree.capacity[0] == 0:
        return DispersionReport(0.0, 0, {})
    shares = tree.shares(min(replicas, tree.capacity[0]), math.inf)
    caps = [replica_cap(share) for share in shares]
    parents = [0] * len(tree)
    for node, kids in enumerate(tree.children):
        for child in kids:
            parents[child] = node
    histograms = [[0] * (replicas + 1) for _ in range(len(tree))]
    parts_over = 0
    for combo, freq in Counter(zip(*tree.host_rows(tables))).items():
        counts: dict[int, int] = {}
        for host in combo:
            node = host
            while node > 0:
                counts[node] = counts.get(node, 0) + 1
                node = parents[node]
        if any(n > caps[node] for node, n in counts.items()):
            parts_over += freq
        if with_tiers:
            for node, n in counts.items():
                histograms[node][n] += freq
    tiers: dict[str, TierDispersion] = {}
    if with_tiers:
        held = device_part_counts(tables)
        for node in tree.top_down()[1:]:
            histogram = histograms[node]
            if tree.depth[node] == DEVICE:
                histogram[1] = held.get(tree.node_dev[node], 0)
            histogram[0] = part_count - sum(histogram[1:])
            tier = tree.tiers[node]
            tiers[format_tier(tier)] = TierDispersion(tier, caps[node], tuple(histogram))
    return DispersionReport(100.0 * parts_over / part_count, parts_over, tiers)
