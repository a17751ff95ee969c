# -*- test-case-name: txstore.test.unit.test_node_load -*-
"""
The proxy's view of how busy each object node's device is, for ordering the replicas (or, for
EC, the fragment archives) a GET or HEAD reads.

Every object node's GET and HEAD answer carries its device's load figure
(``X-Backend-Device-Load``, `txstore.qos.meter`: 0 idle, 1 busy, above 1 a backlog, at most a
second old). The proxy keeps the last figure of each (ip, port, device) with the time it came,
so its view is as fresh as its own traffic, without polling.

How old figures count: a figure is taken whole for ``fresh`` seconds (the node's own sampling
interval), then halves every ``half_life`` seconds, and after ``forget`` seconds it is dropped:
the device is *unknown* again. An unknown device counts as idle (0): at start every replica is
read in ring order, as before; and a device that was avoided because it was busy (so no answer
refreshes its figure) decays back among the idle ones after a few half-lives and is read again,
which tells the proxy whether it still is busy: one request probes it now and then, instead of
the device being shunned on a figure nobody can renew.

The order (`order`): figures are compared in bands of ``band`` (a quarter of a device's
capacity by default), and within a band the ring order stands. So noise between two idle
devices does not reorder them (and, for EC, does not trade a data fragment for a parity one,
which costs a decode), and only a device that is clearly busier is read later. Error-limited
nodes are not this module's business: `_read_order` puts them after everything, loaded or not.

Cost: an answer's figure is one float parse and a dict store; an order is, per primary, a dict
lookup and a comparison (nothing at all while no figure is known).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

LOAD_HEADER = "x-backend-device-load"  # as `StreamedResponse.headers` has it (lower case)
FRESH = 1.0
HALF_LIFE = 2.0
FORGET = 30.0
BAND = 0.25


class NodeLoad:
    """The last load figure of each device, on ``clock`` (seconds)."""

    def __init__(self, clock: Callable[[], float], fresh: float = FRESH, half_life: float = HALF_LIFE,
                 forget: float = FORGET, band: float = BAND) -> None:
        self._clock = clock
        self._fresh = fresh
        self._half_life = half_life
        self._forget = forget
        self._band = band
        self._figures: dict[tuple[str, int, str], tuple[float, float]] = {}  # key: (load, when)

    def record(self, node: Any, value: str | None) -> None:
        """``node`` answered with ``value`` as its device's load (None or garbage: nothing learnt)."""
        if value is None:
            return
        try:
            load = float(value)
        except ValueError:
            return
        if not 0.0 <= load < float("inf"):  # NaN fails the comparison too
            return
        self._figures[(node.ip, node.port, node.device_name)] = (load, self._clock())

    def load(self, node: Any, now: float | None = None) -> float | None:
        """``node``'s device's load as it counts now, or None when unknown."""
        key = (node.ip, node.port, node.device_name)
        figure = self._figures.get(key)
        if figure is None:
            return None
        load, when = figure
        age = (self._clock() if now is None else now) - when
        if age <= self._fresh:
            return load
        if age > self._forget:
            del self._figures[key]
            return None
        return load * 0.5 ** ((age - self._fresh) / self._half_life)

    def order(self, nodes: Sequence[Any]) -> Sequence[Any]:
        """
        ``nodes`` by load band, the least loaded first, the ring order kept within a band; an
        unknown device counts as idle. The same sequence when nothing changes the order.
        """
        if not self._figures or not nodes:
            return nodes
        now = self._clock()
        bands = []
        for node in nodes:
            load = self.load(node, now)
            bands.append(0 if load is None else int(load / self._band))
        if min(bands) == max(bands):
            return nodes
        return [node for _band, _index, node in sorted(zip(bands, range(len(nodes)), nodes),
                                                        key=lambda entry: entry[:2])]

    def idlest(self, nodes: Sequence[Any]) -> Any | None:
        """The least loaded of ``nodes`` (unknown: idle; the first among equals), or None."""
        now = self._clock()
        return min(nodes, key=lambda node: self.load(node, now) or 0.0, default=None)

    def idler_than(self, node: Any, others: Sequence[Any], by: float) -> bool:
        """Whether one of ``others`` is less loaded than ``node`` by at least ``by`` (unknown: idle)."""
        now = self._clock()
        load = self.load(node, now)
        if load is None or not others:
            return False
        return min(self.load(other, now) or 0.0 for other in others) <= load - by

    def known(self) -> int:
        """How many devices' figures are held (for tests and the curious)."""
        return len(self._figures)
