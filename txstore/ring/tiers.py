# -*- test-case-name: txstore.test.unit.test_builder -*-
"""
The failure-domain tree (region → zone → host → device) and how many replicas each part of
it should hold.

Every node of the tree gets a *share*: the number of replicas of an average partition it
should hold (the root holds all of them). Shares are computed top-down, each parent's share
split among its children in three steps:

1. ``weighted``: in proportion to weight, but never more than the child has devices (a
   device holds at most one replica of a partition), the surplus going to the others;
2. ``dispersed``: the most even spread the children's sizes allow. A water level ``L`` is
   the smallest whole number such that children holding at most ``L`` replicas (and at most
   their device count) can hold the parent's share; the weighted split is then redone
   under those caps;
3. ``overload``: children whose dispersed share exceeds their weighted share may take more
   than their weight asks, up to ``weighted × (1 + overload)``; the children giving up
   replicas for it give up in proportion to what dispersion would take from them.

With overload 0 weight wins; with a large overload the spread is as wide as the topology
allows. A node may hold at most ``ceil(share)`` replicas of any one partition: that cap is
what keeps replicas apart, and ``share × partition count`` is how many replicas the node
should hold in total.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Sequence

from attrs import define, field

from txstore.ring.device import Device, format_ip

#: Depths of the tree below the root.
REGION, ZONE, HOST, DEVICE = 1, 2, 3, 4
TIER_NAMES = {REGION: "region", ZONE: "zone", HOST: "host", DEVICE: "device"}

#: Shares closer than this to a whole number count as that number.
_EPSILON = 1e-9

Tier = tuple  # (), (region,), (region, zone), (region, zone, ip), (region, zone, ip, id)


def tier_of(device: Device, depth: int) -> Tier:
    return (device.region, device.zone, device.ip, device.id)[:depth]


def format_tier(tier: Tier) -> str:
    """A tier as shown to people: ``r1``, ``r1z2``, ``r1z2-10.0.0.1``, ``r1z2-10.0.0.1/d7``."""
    if not tier:
        return "cluster"
    text = f"r{tier[0]}"
    if len(tier) > 1:
        text += f"z{tier[1]}"
    if len(tier) > 2:
        text += f"-{format_ip(tier[2])}"
    if len(tier) > 3:
        text += f"/d{tier[3]}"
    return text


@define
class TierTree:
    """
    The tree of the devices that can take partitions (weight > 0), flattened into lists
    indexed by node number for speed: node 0 is the root; children are sorted by tier.
    """

    tiers: list[Tier] = field(factory=lambda: [()])
    depth: list[int] = field(factory=lambda: [0])
    children: list[list[int]] = field(factory=lambda: [[]])
    weight: list[float] = field(factory=lambda: [0.0])
    #: How many devices are under the node: the most replicas of a partition it can hold.
    capacity: list[int] = field(factory=lambda: [0])
    #: Device id of a device node, -1 for the others.
    node_dev: list[int] = field(factory=lambda: [-1])
    #: For each device id, the nodes from its region down to itself.
    dev_path: dict[int, tuple[int, ...]] = field(factory=dict)

    @classmethod
    def build(cls, devices: Iterable[Device]) -> TierTree:
        tree = cls()
        index: dict[Tier, int] = {(): 0}
        for dev in sorted(devices, key=lambda d: tier_of(d, DEVICE)):
            if dev.weight <= 0:
                continue
            path = []
            parent = 0
            for depth in range(1, DEVICE + 1):
                tier = tier_of(dev, depth)
                node = index.get(tier)
                if node is None:
                    node = index[tier] = len(tree.tiers)
                    tree.tiers.append(tier)
                    tree.depth.append(depth)
                    tree.children.append([])
                    tree.weight.append(0.0)
                    tree.capacity.append(0)
                    tree.node_dev.append(dev.id if depth == DEVICE else -1)
                    tree.children[parent].append(node)
                path.append(node)
                parent = node
            for node in (0, *path):
                tree.weight[node] += dev.weight
                tree.capacity[node] += 1
            tree.dev_path[dev.id] = tuple(path)
        return tree

    def __len__(self) -> int:
        return len(self.tiers)

    def host_rows(self, tables: Sequence[Sequence[int]]) -> list[array]:
        """
        The table rows with each device id replaced by its host's node (-1 for a device
        not in the tree, and for an unassigned -1), as compact arrays: C code can then
        count the host tuples of the partitions (``Counter(zip(*rows))``) quickly.
        """
        top = max([-1, *self.dev_path, *(max(row, default=-1) for row in tables)])
        hosts = [-1] * (top + 2)  # the last entry answers for -1
        for dev, path in self.dev_path.items():
            hosts[dev] = path[HOST - 1]
        typecode = "h" if len(self) < 0x7FFF else "i"
        # Through a list, one row at a time: an array filled from an iterator is 3x slower.
        return [array(typecode, list(map(hosts.__getitem__, row))) for row in tables]

    def top_down(self) -> list[int]:
        """Nodes, every parent before its children."""
        order = [0]
        for node in order:
            order.extend(self.children[node])
        return order

    def shares(self, replicas: float, overload: float) -> list[float]:
        """The share of every node (see the module docstring); ``overload`` may be ``inf``."""
        share = [0.0] * len(self)
        share[0] = float(min(replicas, self.capacity[0]))
        for node in self.top_down():
            kids = self.children[node]
            if not kids:
                continue
            weights = [self.weight[c] for c in kids]
            caps = [self.capacity[c] for c in kids]
            total = share[node]
            weighted = proportional_fill(total, weights, caps)
            level = water_level(total, caps)
            dispersed = proportional_fill(total, weights, [min(c, level) for c in caps])
            for child, value in zip(kids, apply_overload(weighted, dispersed, overload)):
                share[child] = value
        return share


def replica_cap(share: float) -> int:
    """The most replicas of one partition a node with this share may hold."""
    return max(0, math.ceil(share - _EPSILON))


def replica_floor(share: float) -> int:
    """The fewest replicas of one partition a node with this share should hold."""
    return max(0, math.floor(share + _EPSILON))


def proportional_fill(total: float, weights: Sequence[float], caps: Sequence[float]) -> list[float]:
    """
    Split ``total`` in proportion to ``weights``, no part above its cap; what a capped part
    cannot take goes to the others, still in proportion.
    """
    result = [0.0] * len(weights)
    free = [i for i, (w, c) in enumerate(zip(weights, caps)) if w > 0 and c > 0]
    remaining = float(total)
    while free and remaining > _EPSILON:
        weight_sum = sum(weights[i] for i in free)
        over = [i for i in free if remaining * weights[i] / weight_sum > caps[i] + _EPSILON]
        if not over:
            for i in free:
                result[i] = remaining * weights[i] / weight_sum
            return result
        for i in over:
            result[i] = float(caps[i])
            remaining -= caps[i]
        free = [i for i in free if i not in over]
    return result


def water_level(total: float, caps: Sequence[int]) -> int:
    """The smallest whole ``L`` such that children holding ``min(cap, L)`` can hold ``total``."""
    if total <= _EPSILON:
        return 0
    level = max(1, math.ceil(total / max(1, len(caps)) - _EPSILON))
    top = max(caps, default=0)
    while level < top and sum(min(c, level) for c in caps) < total - _EPSILON:
        level += 1
    return level


def apply_overload(
    weighted: Sequence[float], dispersed: Sequence[float], overload: float
) -> list[float]:
    """Move from ``weighted`` towards ``dispersed`` as far as ``overload`` allows."""
    if math.isinf(overload):
        return list(dispersed)
    result = list(weighted)
    extra = 0.0
    given = 0.0
    for i, (w, d) in enumerate(zip(weighted, dispersed)):
        if d > w:
            result[i] = min(d, w * (1 + overload))
            extra += result[i] - w
        elif d < w:
            given += w - d
    if given > 0:
        for i, (w, d) in enumerate(zip(weighted, dispersed)):
            if d < w:
                result[i] = w - extra * (w - d) / given
    return result
