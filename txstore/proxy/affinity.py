# -*- test-case-name: txstore.test.unit.test_affinity -*-
"""
Read and write affinity, as Swift's proxy configures them, so that a proxy in one region of a
two-region cluster reads and writes near itself and lets replication carry the data across.

- ``sorting_method = affinity`` with ``read_affinity = r1z1=100, r1=200``: the nodes a read
  tries are ordered by the priority of the first selector (by priority) that matches them,
  lower first; nodes no selector matches come last. The order is stable: among equals the
  ring order stands (Swift shuffles equals; every object's replicas come in their own ring
  order, which spreads reads over them as well). Swift orders only the primaries; the handoffs
  a read may try (as many as there are primaries) are ordered here too, so that a read after a
  write-affinity PUT finds the local handoffs before the remote ones.
- ``write_affinity = r1, r2z1`` with ``write_affinity_node_count = 2 * replicas``: an object
  PUT tries first the first *node count* local nodes among the primaries then the handoffs,
  then every other node in ring order (`SlotNodes`). With three replicas and one local primary,
  the object lands on the local primary and two local handoffs; the object replicator (the
  reconstructor for EC) later moves the handoffs' copies to their remote primaries.
- ``write_affinity_handoff_delete_count`` (``auto``: replicas less the local primaries): a
  DELETE goes to every primary and that many local handoffs, where a recent PUT may still sit.

Parsing is strict (`parse_read_affinity` and the others raise `BadValue`), so a malformed
option stops the proxy at start with one line naming it.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import chain, islice
from pathlib import Path

from attrs import field, frozen

from txstore.common.config import BadValue
from txstore.ring.ring import Node

SORTING_METHODS = ("load", "ring", "affinity")
UNMATCHED = 2**32  # the priority of a node no read_affinity selector matches: after all of them
_READ = re.compile(r"r(\d+)(?:z(\d+))?=(\d+)")
_PLACE = re.compile(r"r(\d+)(?:z(\d+))?")
_PER_REPLICA = re.compile(r"(\d+)\s*\*\s*replicas")


@frozen
class Selector:
    """``r<N>`` (a region) or ``r<N>z<M>`` (a zone of a region)."""

    region: int
    zone: int | None = None

    def matches(self, node: Node) -> bool:
        return node.region == self.region and (self.zone is None or node.zone == self.zone)

    def __str__(self) -> str:
        return f"r{self.region}" if self.zone is None else f"r{self.region}z{self.zone}"


def _pieces(raw: str) -> list[str]:
    return [piece.strip() for piece in raw.split(",")] if raw.strip() else []


def _selector(match: re.Match) -> Selector:
    return Selector(int(match.group(1)), int(match.group(2)) if match.group(2) is not None else None)


@frozen
class ReadAffinity:
    """``read_affinity``: selectors with their priorities, the lowest priority first."""

    rules: tuple[tuple[Selector, int], ...] = ()

    def priority(self, node: Node) -> int:
        for selector, priority in self.rules:
            if selector.matches(node):
                return priority
        return UNMATCHED

    def order(self, nodes: Iterable[Node]) -> list[Node]:
        """``nodes`` by priority, the given order kept among equals."""
        return sorted(nodes, key=self.priority)


def parse_read_affinity(raw: str, _base: Path | None = None) -> ReadAffinity:
    rules: dict[Selector, int] = {}
    for piece in _pieces(raw):
        match = _READ.fullmatch(piece)
        if match is None:
            raise BadValue(f"{piece!r} is not r<region>=<priority> or r<region>z<zone>=<priority>"
                           " (e.g. r1z1=100, r1=200)")
        selector = _selector(match)
        if selector in rules:
            raise BadValue(f"{selector} is given twice")
        rules[selector] = int(match.group(3))
    return ReadAffinity(tuple(sorted(rules.items(), key=lambda rule: rule[1])))


def parse_places(raw: str, _base: Path | None = None) -> tuple[Selector, ...]:
    """``write_affinity``: the regions and zones that count as local (none: the option unset)."""
    places: list[Selector] = []
    for piece in _pieces(raw):
        match = _PLACE.fullmatch(piece)
        if match is None:
            raise BadValue(f"{piece!r} is not r<region> or r<region>z<zone> (e.g. r1, r2z1)")
        selector = _selector(match)
        if selector in places:
            raise BadValue(f"{selector} is given twice")
        places.append(selector)
    return tuple(places)


@frozen
class NodeCount:
    """``write_affinity_node_count``: a number of nodes, or ``<N> * replicas``."""

    number: int
    per_replica: bool = False

    def of(self, replicas: int) -> int:
        return self.number * replicas if self.per_replica else self.number


def parse_node_count(raw: str, _base: Path | None = None) -> NodeCount:
    text = raw.strip()
    match = _PER_REPLICA.fullmatch(text)
    if match is not None:
        number, per_replica = int(match.group(1)), True
    elif text.isdigit():
        number, per_replica = int(text), False
    else:
        raise BadValue(f"{raw!r} is neither a number of nodes nor '<N> * replicas' (e.g. 2 * replicas)")
    if number < 1:
        raise BadValue("must be at least 1 (or 1 * replicas)")
    return NodeCount(number, per_replica)


def parse_delete_count(raw: str, _base: Path | None = None) -> int | None:
    """``write_affinity_handoff_delete_count``: ``auto`` (None) or a number of local handoffs."""
    text = raw.strip()
    if text == "auto":
        return None
    if not text.isdigit():
        raise BadValue(f"{raw!r} is neither auto nor a number of handoffs")
    return int(text)


def parse_sorting_method(raw: str, _base: Path | None = None) -> str:
    if raw == "timing":
        raise BadValue("timing (Swift's sort by response time) is not built here: load orders by the"
                       " devices' own load figures; or ring, or affinity")
    if raw == "shuffle":
        raise BadValue("shuffle is not built here: ring reads each object's replicas in its ring order,"
                       " which spreads reads over the replicas as much; or load, or affinity")
    if raw not in SORTING_METHODS:
        raise BadValue(f"{raw!r} is not one of {', '.join(SORTING_METHODS)}")
    return raw


@frozen
class WriteAffinity:
    """``write_affinity`` and the two counts that go with it."""

    local: tuple[Selector, ...]
    node_count: NodeCount = NodeCount(2, True)
    handoff_delete_count: int | None = None  # None: auto

    def is_local(self, node: Node) -> bool:
        return any(selector.matches(node) for selector in self.local)

    def preferred(self, primaries: Sequence[Node], handoffs: Iterable[Node]) -> list[Node]:
        """The first ``node_count`` local nodes among the primaries, then the handoffs."""
        local = (node for node in chain(primaries, handoffs) if self.is_local(node))
        return list(islice(local, self.node_count.of(len(primaries))))

    def delete_handoffs(self, primaries: Sequence[Node], handoffs: Iterable[Node]) -> list[Node]:
        """The local handoffs a DELETE goes to besides the primaries."""
        count = self.handoff_delete_count
        if count is None:
            count = len(primaries) - sum(1 for node in primaries if self.is_local(node))
        return list(islice((node for node in handoffs if self.is_local(node)), count))


@frozen
class Placement:
    """How one policy's (or the accounts' and containers') reads and writes choose nodes."""

    sorting_method: str = "load"
    read: ReadAffinity | None = None
    write: WriteAffinity | None = None


@frozen
class AffinityConfig:
    """The proxy's `Placement`, and the per-policy ones (``[proxy:policy:<index>]``)."""

    default: Placement = Placement()
    policies: Mapping[int, Placement] = field(factory=dict)

    def for_policy(self, index: int | None) -> Placement:
        return self.default if index is None else self.policies.get(index, self.default)

    def uses(self, sorting_method: str) -> bool:
        return any(p.sorting_method == sorting_method for p in (self.default, *self.policies.values()))


class SlotNodes:
    """
    The nodes a PUT's slots (one per primary) start on, and those a slot falls back to when
    its node fails, shared by all slots and handed out once each.

    Without write affinity: the primaries, then the handoffs in ring order. With it, as Swift:
    the `WriteAffinity.preferred` nodes first, then every other primary and handoff in ring
    order; the slots start on the first ones. ``per_index`` (erasure coding: slot *i* carries
    fragment *i*): slot *i* starts on primary *i* when it is preferred, else on the next
    preferred (local) handoff; it falls back to the preferred handoffs left, then its own
    primary, then the other handoffs, never to another slot's primary.
    """

    def __init__(self, primaries: Sequence[Node], more: Callable[[], Iterator[Node]],
                 write: WriteAffinity | None = None, per_index: bool = False) -> None:
        self._per_index = per_index
        self._used: set[int] = set()
        self._held: dict[int, Node] = {}  # per_index: primaries passed over, kept for their own slot
        if write is None:
            self.starts = list(primaries)
            self._rest: Iterator[Node] = more()
        else:
            preferred = write.preferred(primaries, more())
            ids = {node.id for node in preferred}
            rest = (node for node in chain(primaries, more()) if node.id not in ids)
            if per_index:
                spare = deque(node for node in preferred if node.is_handoff)
                self.starts = [node if node.id in ids else (spare.popleft() if spare else node) for node in primaries]
                self._rest = chain(spare, rest)
            else:
                ordered = chain(preferred, rest)
                self.starts = list(islice(ordered, len(primaries)))
                self._rest = ordered
        self._used.update(node.id for node in self.starts)

    def next(self, index: int) -> Node | None:
        """The next node for slot ``index`` whose node failed, or None when none is left."""
        if self._per_index and index in self._held:
            node = self._held.pop(index)
            self._used.add(node.id)
            return node
        for node in self._rest:
            if node.id in self._used:
                continue
            if self._per_index and node.index is not None and node.index != index:
                self._held[node.index] = node
                continue
            self._used.add(node.id)
            return node
        return None
