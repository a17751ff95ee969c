# -*- test-case-name: txstore.test.unit.test_builder -*-
"""
The ring builder: the operator's record of the devices and the partition table, from which
ring files are made.

A builder keeps what a ring file does not: when each partition last moved (so that
``min_part_hours`` can keep one replica of a partition in flight at a time), devices removed
but not yet rebalanced away, the overload factor. It is saved in the same envelope as ring
files (``txstore.ring.ringfile``) with its own magic, and written atomically.

Removing a device takes it out of ``devs`` at once, but its id is not reused, and a ring made
before the next rebalance still lists it (with weight 0) because the table still points at
it. The rebalance moves its replicas whatever ``min_part_hours`` says and forgets it.

The placement itself is in ``txstore.ring.placement``; ``docs/rings.rst`` explains it.
"""

from __future__ import annotations

import io
import math
import os
import random
import time
from array import array
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

from attrs import define, evolve, field, frozen

from txstore.ring.device import Device
from txstore.ring.errors import RingBuilderError, RingError
from txstore.ring.metrics import (
    DispersionReport,
    device_balances,
    device_part_counts,
    dispersion_report,
    overall_balance,
)
from txstore.ring.placement import UNASSIGNED, Placer
from txstore.ring.ringfile import (
    BUILDER_MAGIC,
    EnvelopeReader,
    RingData,
    devices_from_json,
    devices_to_json,
    open_file,
    write_atomically,
    write_envelope,
)

#: Version 2 keeps the table rows as signed 16-bit ids when every device id fits (32-bit
#: otherwise, ``row_bytes`` says which); version 1, always 32-bit, is still read.
BUILDER_FORMAT_VERSION = 2
READABLE_BUILDER_VERSIONS = (1, 2)
#: Table rows hold device ids, -1 where unassigned: 2 bytes an entry while ids fit.
_ROW_TYPECODES = {2: "h", 4: "i"}
MIN_PART_POWER = 1
MAX_PART_POWER = 24


def _check_part_power(instance: object, attribute: Any, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"part_power must be an integer, not {value!r}")
    if not MIN_PART_POWER <= value <= MAX_PART_POWER:
        raise ValueError(
            f"part_power must be between {MIN_PART_POWER} and {MAX_PART_POWER}, not {value}"
        )


def _check_replicas(instance: object, attribute: Any, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"replicas must be a whole number, not {value!r}")
    if value < 1:
        raise ValueError(f"replicas must be at least 1, not {value}")


def _check_min_part_hours(instance: object, attribute: Any, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"min_part_hours must be a whole number, not {value!r}")
    if value < 0:
        raise ValueError(f"min_part_hours must be at least 0, not {value}")


def _check_overload(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError(f"overload must be a number, not {value!r}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"overload must be a number, not {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"overload must be a finite number >= 0, not {value!r}")
    return number


@frozen
class RebalanceResult:
    """What a rebalance did."""

    #: Partitions at least one replica of which moved (first placements do not count).
    parts_moved: int
    #: Replicas that moved from one device to another.
    replicas_moved: int
    #: Replicas placed where there was none (a new builder's first rebalance).
    replicas_placed: int
    #: ``balance()`` afterwards, in percent.
    balance: float
    #: Percentage of partitions not spread as widely as the topology allows.
    dispersion: float
    #: The seed used: pass it again to get the same tables from the same builder.
    seed: int
    #: Balance passes that moved something.
    passes: int
    #: Seconds the rebalance took.
    elapsed: float


@define
class RingBuilder:
    """Devices, a partition table, and the rules for changing it. Not thread-safe."""

    part_power: int = field(validator=_check_part_power)
    replicas: int = field(validator=_check_replicas)
    min_part_hours: int = field(validator=_check_min_part_hours)
    overload: float = field(default=0.0, converter=_check_overload, kw_only=True)
    _devs: list[Device | None] = field(init=False, factory=list)
    _removed: dict[int, Device] = field(init=False, factory=dict)
    _tables: list[array] | None = field(init=False, default=None)
    _moved_at: array = field(init=False)
    #: Bumped by every change: tells two saves of one builder apart.
    version: int = field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        self._moved_at = array("d", [-math.inf]) * self.partition_count

    # -- parameters ------------------------------------------------------------------------

    @property
    def partition_count(self) -> int:
        return 1 << self.part_power

    @property
    def devs(self) -> list[Device | None]:
        """Devices indexed by id; ``None`` where an id is unused or removed."""
        return list(self._devs)

    @property
    def has_table(self) -> bool:
        """Whether the builder has been rebalanced at least once."""
        return self._tables is not None

    def _row_typecode(self) -> str:
        """The narrowest array type the table rows fit in, given the device ids in use."""
        top = max([len(self._devs) - 1, *self._removed], default=0)
        return "h" if top < 0x7FFF else "i"

    @property
    def pending_removals(self) -> list[Device]:
        """Removed devices whose partitions the next rebalance will move."""
        return [self._removed[dev_id] for dev_id in sorted(self._removed)]

    def set_overload(self, overload: float) -> None:
        """How much more than its weight asks a tier may take, for dispersion (0.1 = 10%)."""
        self.overload = _check_overload(overload)
        self.version += 1

    def set_min_part_hours(self, hours: int) -> None:
        _check_min_part_hours(self, None, hours)
        self.min_part_hours = hours
        self.version += 1

    def pretend_min_part_hours_passed(self) -> None:
        """Forget when partitions moved, so the next rebalance may move any of them."""
        self._moved_at = array("d", [-math.inf]) * self.partition_count
        self.version += 1

    # -- devices ---------------------------------------------------------------------------

    def get_dev(self, dev_id: int) -> Device:
        """The device with this id (``ValueError`` if there is none)."""
        if isinstance(dev_id, int) and 0 <= dev_id < len(self._devs):
            dev = self._devs[dev_id]
            if dev is not None:
                return dev
        raise ValueError(f"no device with id {dev_id!r}")

    def _free_id(self) -> int:
        for dev_id, dev in enumerate(self._devs):
            if dev is None and dev_id not in self._removed:
                return dev_id
        return len(self._devs)

    def add_dev(self, dev: Device | Mapping[str, Any] | None = None, /, **fields: Any) -> int:
        """
        Add a device given as a ``Device``, a mapping of its fields, or keyword fields (which
        override the others); the next free id is used unless one is given. Returns the id.
        """
        values: dict[str, Any] = {}
        if isinstance(dev, Device):
            values.update(dev.to_dict())
        elif dev is not None:
            values.update(dev)
        values.update(fields)
        if values.get("id") is None:
            values["id"] = self._free_id()
        device = Device.from_dict(values)
        if device.id < len(self._devs) and self._devs[device.id] is not None:
            raise ValueError(f"device id {device.id} is already in use")
        if device.id in self._removed:
            raise ValueError(f"device id {device.id} is being removed; rebalance first")
        for other in [*self._devs, *self._removed.values()]:
            if other is not None and (other.ip, other.port, other.device) == (
                device.ip,
                device.port,
                device.device,
            ):
                state = " (being removed)" if other.id in self._removed else ""
                raise ValueError(
                    f"device {device.describe()} duplicates device {other.id}{state}: "
                    "same ip, port and device name"
                )
        while len(self._devs) <= device.id:
            self._devs.append(None)
        self._devs[device.id] = device
        self.version += 1
        return device.id

    def remove_dev(self, dev_id: int) -> Device:
        """Take a device out; the next rebalance moves its partitions. Returns it."""
        dev = self.get_dev(dev_id)
        self._devs[dev_id] = None
        if self._tables is not None:
            self._removed[dev_id] = dev
        while self._devs and self._devs[-1] is None and len(self._devs) - 1 not in self._removed:
            self._devs.pop()
        self.version += 1
        return dev

    def set_dev_weight(self, dev_id: int, weight: float) -> Device:
        dev = evolve(self.get_dev(dev_id), weight=weight)
        self._devs[dev_id] = dev
        self.version += 1
        return dev

    def search_devs(self, search: Any) -> list[Device]:
        """The devices a ``DeviceSearch`` (or anything with ``matches``) selects."""
        return [dev for dev in self._devs if dev is not None and search.matches(dev)]

    # -- rebalancing -----------------------------------------------------------------------

    def rebalance(
        self, seed: int | None = None, now: float | None = None, progress: Callable[[str], None] | None = None
    ) -> RebalanceResult:
        """
        Move replicas so devices hold parts in proportion to their weight, spread over
        failure domains, moving as little as possible (see ``txstore.ring.placement``).
        Deterministic for a given builder, ``seed`` and ``now``.
        """
        started = time.perf_counter()
        if seed is None:
            seed = random.SystemRandom().randrange(2**32)
        if now is None:
            now = time.time()
        initial = self._tables is None
        typecode = self._row_typecode()
        # The placer works on copies (a memory copy when the type is the same), so a failed
        # rebalance leaves the builder as it was.
        if initial:
            tables = [array(typecode, [UNASSIGNED]) * self.partition_count for _ in range(self.replicas)]
        else:
            assert self._tables is not None
            tables = [array(typecode, row) for row in self._tables]
        placer = Placer(
            part_power=self.part_power,
            replicas=self.replicas,
            devices=[dev for dev in self._devs if dev is not None],
            overload=self.overload,
            min_part_hours=self.min_part_hours,
            now=float(now),
            rng=random.Random(seed),
            tables=tables,
            moved_at=self._moved_at,
            initial=initial,
            **({"progress": progress} if progress is not None else {}),
        )
        outcome = placer.run()
        self._tables = list(outcome.tables)
        for part in outcome.moved_parts:
            self._moved_at[part] = now
        self._removed.clear()
        while self._devs and self._devs[-1] is None:
            self._devs.pop()
        self.version += 1
        report = self.dispersion_report(with_tiers=False)
        return RebalanceResult(
            parts_moved=outcome.parts_moved,
            replicas_moved=outcome.replicas_moved,
            replicas_placed=outcome.replicas_placed,
            balance=self.balance(),
            dispersion=report.dispersion,
            seed=seed,
            passes=outcome.passes,
            elapsed=time.perf_counter() - started,
        )

    # -- measures --------------------------------------------------------------------------

    def part_counts(self) -> dict[int, int]:
        """Replicas held per device id (devices holding none are left out)."""
        if self._tables is None:
            return {}
        return dict(device_part_counts(self._tables))

    def device_balances(self) -> dict[int, float]:
        """Each device's signed balance in percent (see ``txstore.ring.metrics``)."""
        counts = device_part_counts(self._tables or [])
        return device_balances(self._devs, counts, self.partition_count, self.replicas)

    def balance(self) -> float:
        """The largest ``|parts - wanted| / wanted`` over the devices, in percent."""
        if self._tables is None:
            return 0.0
        return overall_balance(self.device_balances())

    def dispersion_report(self, *, with_tiers: bool = True) -> DispersionReport:
        """Per tier, how many partitions have how many replicas there."""
        if self._tables is None:
            return DispersionReport(0.0, 0, {})
        return dispersion_report(self._devs, self._tables, self.replicas, with_tiers=with_tiers)

    def moved_at(self, part: int) -> float:
        """When a replica of ``part`` last moved (seconds since the epoch; -inf: never)."""
        return self._moved_at[part]

    def min_part_seconds_left(self, now: float | None = None) -> float:
        """Seconds until every partition may move again (0 when all may)."""
        if now is None:
            now = time.time()
        latest = max(self._moved_at, default=-math.inf)
        return max(0.0, latest + self.min_part_hours * 3600.0 - now)

    # -- rings and files -------------------------------------------------------------------

    def get_ring(self) -> RingData:
        """The ring file contents for the current table."""
        if self._tables is None:
            raise RingBuilderError("the builder has no partition table yet: rebalance first")
        devices: list[Device | None] = list(self._devs)
        for dev_id, dev in self._removed.items():
            while len(devices) <= dev_id:
                devices.append(None)
            devices[dev_id] = evolve(dev, weight=0.0)
        max_id = max((dev.id for dev in devices if dev is not None), default=0)
        typecode = "H" if max_id < 0xFFFF else "I"
        rows = []
        for row in self._tables:
            if row.itemsize == array(typecode).itemsize:
                # The same bits read unsigned: a copy of the memory, not an int per entry.
                # (An unassigned -1 would read as an unknown id, which RingData refuses.)
                rows.append(array(typecode, row.tobytes()))
            else:
                rows.append(array(typecode, row))
        return RingData(devices, rows, 32 - self.part_power)

    def get_table(self) -> list[list[int]]:
        """A copy of the replica → partition → device id table (-1: unassigned)."""
        return [row.tolist() for row in self._tables] if self._tables is not None else []

    def write_to(self, stream: BinaryIO) -> None:
        """Write the builder file to a binary stream."""
        document = {
            "kind": "txstore-builder",
            "part_power": self.part_power,
            "replicas": self.replicas,
            "min_part_hours": self.min_part_hours,
            "overload": self.overload,
            "version": self.version,
            "devices": devices_to_json(self._devs),
            "removed": devices_to_json(self.pending_removals),
            "has_table": self._tables is not None,
        }
        blobs: list[array] = [self._moved_at]
        if self._tables is not None:
            document["row_bytes"] = self._tables[0].itemsize  # the rows share one type
            blobs.extend(self._tables)
        write_envelope(stream, BUILDER_MAGIC, BUILDER_FORMAT_VERSION, document, blobs)

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        self.write_to(buffer)
        return buffer.getvalue()

    @classmethod
    def read_from(cls, stream: BinaryIO, what: str = "builder file") -> RingBuilder:
        """A builder file (this version or an older one) read from a binary stream."""
        reader = EnvelopeReader(stream, BUILDER_MAGIC, READABLE_BUILDER_VERSIONS, what)
        document = reader.document
        try:
            builder = cls(
                document["part_power"],
                document["replicas"],
                document["min_part_hours"],
                overload=document["overload"],
            )
            version = int(document["version"])
            has_table = bool(document["has_table"])
        except KeyError as error:
            raise RingError(f"{what} lacks {error.args[0]!r}") from None
        except (TypeError, ValueError) as error:
            raise RingError(f"{what} has invalid parameters: {error}") from None
        # Version 1 stored every row as signed 32-bit integers.
        row_bytes = document.get("row_bytes") if reader.version >= 2 and has_table else 4
        typecode = _ROW_TYPECODES.get(row_bytes) if type(row_bytes) is int else None
        if typecode is None:
            raise RingError(f"{what} has an unsupported table row width {row_bytes!r}")
        builder._devs = devices_from_json(document.get("devices"), what)
        removed = document.get("removed", [])
        if not isinstance(removed, list) or any(not isinstance(item, dict) for item in removed):
            raise RingError(f"{what} has an invalid list of removed devices")
        for item in removed:
            try:
                dev = Device.from_dict(item)
            except (TypeError, ValueError) as error:
                raise RingError(f"{what} has an invalid removed device: {error}") from None
            builder._removed[dev.id] = dev
        expected = 1 + (builder.replicas if has_table else 0)
        if reader.blobs_left != expected:
            raise RingError(f"{what} has {reader.blobs_left} arrays, expected {expected}")
        count = builder.partition_count
        moved_at = reader.read_array("d")
        if len(moved_at) != count:
            raise RingError(f"{what} has {len(moved_at)} move times for {count} partitions")
        builder._moved_at = moved_at
        if has_table:
            known = {dev.id for dev in builder._devs if dev is not None} | set(builder._removed)
            known.add(UNASSIGNED)
            rows = []
            for _ in range(builder.replicas):
                row = reader.read_array(typecode)
                if len(row) != count:
                    raise RingError(f"{what} has a table row of {len(row)} for {count} partitions")
                if not known.issuperset(row):
                    raise RingError(f"{what} has a table naming unknown devices")
                if row.typecode != builder._row_typecode():  # a version 1 file's 32-bit rows
                    row = array(builder._row_typecode(), row)
                rows.append(row)
            builder._tables = rows
        reader.finish()
        builder.version = version
        return builder

    @classmethod
    def from_bytes(cls, data: bytes, what: str = "builder file") -> RingBuilder:
        return cls.read_from(io.BytesIO(data), what)

    def save(self, path: str | os.PathLike[str]) -> None:
        write_atomically(path, self.write_to)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RingBuilder:
        what = f"builder file {os.fspath(path)}"
        with open_file(path, what) as stream:
            return cls.read_from(stream, what)
