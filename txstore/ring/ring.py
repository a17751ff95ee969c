# -*- test-case-name: txstore.test.unit.test_ring -*-
"""
The runtime ring: which devices hold a name, and where to go when they are down.

A ``Ring`` is read-only and cheap: ``get_nodes`` hashes the name, takes the top
``part_power`` bits as the partition and reads one entry per replica row. Operators change
the ring by writing a new file (``txstore-ring ... rebalance``); every process holding a
``Ring`` notices within ``reload_interval`` seconds, because each access compares the file's
identity (mtime, size, inode) with the one it loaded, at most once per interval. A file that
fails to load keeps the old table in service (and is logged): a proxy should not stop
routing because an operator copied a truncated file.

Handoffs (``get_more_nodes``) are the weighted devices that are not primaries, nearest-to-
farthest reversed: first those in regions holding no primary, then zones holding none, then
hosts holding none, then the rest. Within each class the order comes from a hash of the
partition and device id, so the handoff load of a failed device spreads over many devices
instead of landing on its neighbour; within a class, devices in a region, zone or host not
yet used by an earlier handoff come first.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from attrs import define, field, frozen
from twisted.logger import Logger
from zope.interface import implementer

from txstore.common.hashing import PathHasher
from txstore.interfaces import IRing
from txstore.ring.device import Device
from txstore.ring.errors import RingError
from txstore.ring.ringfile import RingData

__all__ = ["Node", "Ring", "RingData", "RingError", "handoff_nodes", "primary_nodes"]


@frozen
class Node:
    """A device in the role it plays for one partition: a primary (``index``) or a handoff."""

    device: Device
    index: int | None = None
    handoff_index: int | None = None

    @property
    def id(self) -> int:
        return self.device.id

    @property
    def region(self) -> int:
        return self.device.region

    @property
    def zone(self) -> int:
        return self.device.zone

    @property
    def ip(self) -> str:
        return self.device.ip

    @property
    def port(self) -> int:
        return self.device.port

    @property
    def replication_ip(self) -> str:
        return self.device.replication_ip

    @property
    def replication_port(self) -> int:
        return self.device.replication_port

    @property
    def device_name(self) -> str:
        return self.device.device

    @property
    def is_handoff(self) -> bool:
        return self.handoff_index is not None


_MASK64 = (1 << 64) - 1


def handoff_rank(part: int, dev_id: int) -> int:
    """A well-mixed, stable 64-bit number per (partition, device): the handoff shuffle."""
    value = ((part << 32) ^ dev_id ^ 0x5BD1E995) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def _as_path(value: str | os.PathLike[str]) -> str:
    return os.fspath(value)


def _file_identity(stat: os.stat_result) -> tuple[int, int, int]:
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


@implementer(IRing)
@define
class Ring:
    """
    A ring file, loaded, answering placement questions, reloading itself when the file
    changes. ``clock`` (seconds, monotonic) is injected so tests can step time.
    """

    log = Logger()

    path: str = field(converter=_as_path)
    hasher: PathHasher
    reload_interval: float = field(default=15.0, kw_only=True)
    clock: Callable[[], float] = field(default=time.monotonic, kw_only=True)
    # Check the file on access (tools, tests). Servers turn this off and let a
    # `txstore.ring.reloader.RingReloader` check it in a thread instead of on the reactor.
    auto_reload: bool = field(default=True, kw_only=True)
    _data: RingData = field(init=False)
    _identity: tuple[int, int, int] = field(init=False)
    _next_check: float = field(init=False)
    _primary_nodes: list[list[Node | None]] = field(init=False)
    _handoff_candidates: list[Device] = field(init=False)

    def __attrs_post_init__(self) -> None:
        data, identity = self._read()
        self._install(data, identity)

    # -- loading ---------------------------------------------------------------------------

    def _read(self) -> tuple[RingData, tuple[int, int, int]]:
        what = f"ring file {self.path}"
        try:
            with open(self.path, "rb") as stream:
                identity = _file_identity(os.fstat(stream.fileno()))
                raw = stream.read()
        except OSError as error:
            raise RingError(f"cannot read {what}: {error.strerror or error}") from None
        return RingData.from_bytes(raw, what), identity

    def _install(self, data: RingData, identity: tuple[int, int, int]) -> None:
        self._data = data
        self._identity = identity
        self._next_check = self.clock() + self.reload_interval
        by_index: list[list[Node | None]] = []
        for index in range(data.replica_count):
            by_index.append([None if dev is None else Node(dev, index) for dev in data.devices])
        self._primary_nodes = by_index
        self._handoff_candidates = [
            dev for dev in data.devices if dev is not None and dev.weight > 0
        ]

    def _check_reload(self) -> None:
        if not self.auto_reload:
            return
        now = self.clock()
        if now < self._next_check:
            return
        self._next_check = now + self.reload_interval
        self.install(self.read_if_changed())

    def read_if_changed(self) -> tuple[RingData, tuple[int, int, int]] | None:
        """
        (blocking) The file's table if the file changed since the loaded one was read; None if
        it did not, or if it does not load (logged: the loaded table stays in service).
        """
        try:
            identity = _file_identity(os.stat(self.path))
        except OSError as error:
            self.log.warn("Cannot stat ring file {path}: {error}", path=self.path, error=error)
            return None
        if identity == self._identity:
            return None
        try:
            return self._read()
        except RingError as error:
            self.log.error(
                "Keeping the loaded ring: {path} does not load: {error}",
                path=self.path,
                error=str(error),
            )
            return None

    def install(self, loaded: tuple[RingData, tuple[int, int, int]] | None) -> None:
        """Serve the table `read_if_changed` returned (nothing if it returned None)."""
        if loaded is None or loaded[1] == self._identity:
            return
        self._install(*loaded)
        self.log.info("Reloaded ring {path}", path=self.path)

    def reload(self) -> None:
        """Load the file now, whatever the interval says (a ``RingError`` if it is broken)."""
        data, identity = self._read()
        self._install(data, identity)

    # -- the table -------------------------------------------------------------------------

    @property
    def data(self) -> RingData:
        self._check_reload()
        return self._data

    @property
    def part_power(self) -> int:
        self._check_reload()
        return self._data.part_power

    @property
    def partition_count(self) -> int:
        self._check_reload()
        return self._data.partition_count

    @property
    def replica_count(self) -> int:
        self._check_reload()
        return self._data.replica_count

    @property
    def devices(self) -> list[Device | None]:
        self._check_reload()
        return list(self._data.devices)

    def get_part(
        self,
        account: str | bytes,
        container: str | bytes | None = None,
        obj: str | bytes | None = None,
    ) -> int:
        self._check_reload()
        return self.hasher.partition(self._data.part_power, account, container, obj)

    def get_part_nodes(self, part: int) -> list[Node]:
        """The primaries of ``part``, in replica order."""
        self._check_reload()
        return self._part_nodes(part)

    def _part_nodes(self, part: int) -> list[Node]:
        data = self._data
        if not 0 <= part < data.partition_count:
            raise ValueError(f"partition {part} is outside 0..{data.partition_count - 1}")
        nodes = []
        for index, row in enumerate(data.replica2part2dev):
            node = self._primary_nodes[index][row[part]]
            assert node is not None  # RingData checks every id in the table exists
            nodes.append(node)
        return nodes

    def get_nodes(
        self,
        account: str | bytes,
        container: str | bytes | None = None,
        obj: str | bytes | None = None,
    ) -> tuple[int, list[Node]]:
        """The partition of a name and its primaries."""
        part = self.get_part(account, container, obj)
        return part, self._part_nodes(part)

    def get_more_nodes(self, part: int) -> Iterator[Node]:
        """
        The handoffs of ``part``, farthest from the primaries first (see the module
        docstring). Lazy: the work happens as the caller iterates.
        """
        self._check_reload()
        primaries = [node.device for node in self._part_nodes(part)]
        return _handoffs(part, primaries, self._handoff_candidates)

    def __repr__(self) -> str:
        data: Any = getattr(self, "_data", None)
        if data is None:
            return f"<Ring {self.path!r}>"
        return f"<Ring {self.path!r} part_power={data.part_power} replicas={data.replica_count}>"


def primary_nodes(data: RingData, part: int) -> list[Node]:
    """The primaries of ``part`` in ``data`` (what ``Ring.get_part_nodes`` answers)."""
    if not 0 <= part < data.partition_count:
        raise ValueError(f"partition {part} is outside 0..{data.partition_count - 1}")
    nodes = []
    for index, row in enumerate(data.replica2part2dev):
        dev = data.devices[row[part]]
        assert dev is not None
        nodes.append(Node(dev, index))
    return nodes


def handoff_nodes(data: RingData, part: int) -> Iterator[Node]:
    """The handoffs of ``part`` in ``data`` (what ``Ring.get_more_nodes`` answers)."""
    primaries = [node.device for node in primary_nodes(data, part)]
    candidates = [dev for dev in data.devices if dev is not None and dev.weight > 0]
    return _handoffs(part, primaries, candidates)


def _handoffs(part: int, primaries: list[Device], candidates: list[Device]) -> Iterator[Node]:
    taken = {dev.id for dev in primaries}
    regions = {dev.region for dev in primaries}
    zones = {(dev.region, dev.zone) for dev in primaries}
    hosts = {(dev.region, dev.zone, dev.ip) for dev in primaries}
    classes: list[list[Device]] = [[], [], [], []]
    for dev in candidates:
        if dev.id in taken:
            continue
        if dev.region not in regions:
            classes[0].append(dev)
        elif (dev.region, dev.zone) not in zones:
            classes[1].append(dev)
        elif (dev.region, dev.zone, dev.ip) not in hosts:
            classes[2].append(dev)
        else:
            classes[3].append(dev)
    # From here on the sets also grow with each handoff chosen, so that inside a class
    # successive handoffs land in different regions, zones and hosts where they can.
    count = 0
    for members in classes:
        members.sort(key=lambda dev: handoff_rank(part, dev.id))
        remaining = members
        tests: list[Callable[[Device], bool]] = [
            lambda dev: dev.region not in regions,
            lambda dev: (dev.region, dev.zone) not in zones,
            lambda dev: (dev.region, dev.zone, dev.ip) not in hosts,
            lambda dev: True,
        ]
        for test in tests:
            later = []
            for dev in remaining:
                if not test(dev):
                    later.append(dev)
                    continue
                regions.add(dev.region)
                zones.add((dev.region, dev.zone))
                hosts.add((dev.region, dev.zone, dev.ip))
                yield Node(dev, None, count)
                count += 1
            remaining = later
            if not remaining:
                break
