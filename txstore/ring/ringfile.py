# -*- test-case-name: txstore.test.test_ring -*-
"""
The on-disk form of rings and builders, and ``RingData``: the table a ``Ring`` serves.

Both kinds of file share one envelope, gzip-compressed::

    magic          8 bytes   b"\\x89TXRING\\n" (ring) or b"\\x89TXBLDR\\n" (builder)
    version        uint16    little-endian; a reader refuses versions it does not know
    document size  uint32    little-endian
    document       JSON      UTF-8: parameters and devices; "blobs" lists the sizes that follow
    blobs          raw       little-endian arrays, one after the other

A JSON document keeps the file readable by other tools and lets later versions add keys; the
partition tables stay binary because a part power 18 ring has 786,432 entries. The leading
0x89 byte (as in PNG) makes a file mangled by a text-mode transfer fail the magic check.

Files are written to a temporary name in the same directory, fsynced, renamed over the old
one, and the directory fsynced: a reader (every proxy and storage server watches the ring
file) sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import sys
import tempfile
import zlib
from array import array
from collections.abc import Iterable, Sequence
from typing import Any

from attrs import field, frozen

from txstore.ring.device import Device
from txstore.ring.errors import RingError

RING_MAGIC = b"\x89TXRING\n"
BUILDER_MAGIC = b"\x89TXBLDR\n"
RING_FORMAT_VERSION = 1

_HEADER = struct.Struct("<8sHI")
#: The largest partition table a ring file may describe (part power 32 would not fit memory).
MAX_RING_PART_POWER = 30


def read_whole(path: str | os.PathLike[str], what: str) -> bytes:
    """The bytes of a ring or builder file; RingError naming ``what`` when it cannot be read."""
    try:
        with open(path, "rb") as stream:
            return stream.read()
    except OSError as error:
        raise RingError(f"cannot read {what}: {error.strerror or error}") from None


def write_atomically(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
    """
    Replace ``path`` with ``data`` so that readers see the old or the new file, never a mix.
    The file gets ``mode``: rings and builders are readable by the service users that run the
    servers (0644, as Swift's are), where mkstemp alone would leave them 0600.
    """
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    handle, temp_path = tempfile.mkstemp(
        prefix="." + os.path.basename(target) + ".", suffix=".tmp", dir=directory
    )
    try:
        os.fchmod(handle, mode)
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_path, target)
    except BaseException:
        try:
            os.unlink(temp_path)
        except FileNotFoundError:
            pass
        raise
    try:
        directory_fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms cannot open a directory; the rename is done anyway
        return
    try:
        os.fsync(directory_fd)
    except OSError:
        pass
    finally:
        os.close(directory_fd)


def pack_file(
    magic: bytes, version: int, document: dict[str, Any], blobs: Sequence[bytes]
) -> bytes:
    """The gzipped envelope; ``mtime=0`` so the same content always gives the same bytes."""
    doc = dict(document)
    doc["blobs"] = [len(blob) for blob in blobs]
    encoded = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")
    raw = b"".join([_HEADER.pack(magic, version, len(encoded)), encoded, *blobs])
    return gzip.compress(raw, compresslevel=6, mtime=0)


def unpack_file(
    data: bytes, magic: bytes, versions: Iterable[int], what: str
) -> tuple[int, dict[str, Any], list[bytes]]:
    """
    ``(version, document, blobs)`` of an envelope; anything unexpected is a ``RingError``
    saying what ``what`` (e.g. "ring file x.ring.gz") is wrong with.
    """
    try:
        raw = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:
        raise RingError(f"{what} is not a gzip file or is truncated ({error})") from None
    if len(raw) < _HEADER.size:
        raise RingError(f"{what} is too short to be a txstore file")
    found_magic, version, doc_size = _HEADER.unpack_from(raw)
    if found_magic != magic:
        kinds = {RING_MAGIC: "a ring file", BUILDER_MAGIC: "a builder file"}
        actual = kinds.get(found_magic, "not a txstore file")
        raise RingError(f"{what} is {actual}, expected {kinds.get(magic, 'another kind')}")
    known = sorted(versions)
    if version not in known:
        raise RingError(
            f"{what} has format version {version}; this txstore reads version(s) "
            f"{', '.join(map(str, known))}"
        )
    start = _HEADER.size
    try:
        document = json.loads(raw[start : start + doc_size].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise RingError(f"{what} has a corrupt document ({error})") from None
    if not isinstance(document, dict) or not isinstance(document.get("blobs"), list):
        raise RingError(f"{what} has a corrupt document (no blob sizes)")
    offset = start + doc_size
    blobs = []
    for size in document["blobs"]:
        if not isinstance(size, int) or size < 0 or offset + size > len(raw):
            raise RingError(f"{what} is truncated")
        blobs.append(raw[offset : offset + size])
        offset += size
    if offset != len(raw):
        raise RingError(f"{what} has {len(raw) - offset} unexpected trailing bytes")
    return version, document, blobs


def array_to_le_bytes(values: array) -> bytes:
    """The raw little-endian bytes of an array, whatever this machine's byte order."""
    if sys.byteorder == "little":
        return values.tobytes()
    swapped = array(values.typecode, values)
    swapped.byteswap()
    return swapped.tobytes()


def array_from_le_bytes(typecode: str, data: bytes) -> array:
    values = array(typecode)
    if len(data) % values.itemsize:
        raise RingError(f"an array of {len(data)} bytes does not hold whole {typecode!r} items")
    values.frombytes(data)
    if sys.byteorder != "little":
        values.byteswap()
    return values


def devices_to_json(devices: Sequence[Device | None]) -> list[dict[str, Any] | None]:
    return [None if dev is None else dev.to_dict() for dev in devices]


def devices_from_json(items: object, what: str) -> list[Device | None]:
    if not isinstance(items, list):
        raise RingError(f"{what} has no device list")
    devices: list[Device | None] = []
    for index, item in enumerate(items):
        if item is None:
            devices.append(None)
            continue
        try:
            if not isinstance(item, dict):
                raise ValueError("not an object")
            dev = Device.from_dict(item)
        except (TypeError, ValueError) as error:
            raise RingError(f"{what} has an invalid device at index {index}: {error}") from None
        if dev.id != index:
            raise RingError(f"{what} lists device {dev.id} at index {index}")
        devices.append(dev)
    return devices


def _dev_id_typecode(max_id: int) -> str:
    return "H" if max_id < 0xFFFF else "I"


def _to_rows(rows: Iterable[Iterable[int]]) -> tuple[array, ...]:
    result = []
    for row in rows:
        if isinstance(row, array) and row.typecode in ("H", "I"):
            result.append(row)
            continue
        values = list(row)
        result.append(array(_dev_id_typecode(max(values, default=0)), values))
    return tuple(result)


def _to_devices(devices: Iterable[Device | None]) -> tuple[Device | None, ...]:
    return tuple(devices)


def _check_ring(instance: RingData, attribute: Any, value: int) -> None:
    part_power = 32 - instance.part_shift
    if not 0 <= part_power <= MAX_RING_PART_POWER:
        raise RingError(f"part_shift {instance.part_shift} gives an unsupported part power")
    rows = instance.replica2part2dev
    if not rows:
        raise RingError("a ring needs at least one replica row")
    count = 1 << part_power
    for index, row in enumerate(rows):
        if len(row) != count:
            raise RingError(f"replica row {index} has {len(row)} entries, expected {count}")
    known = {dev.id for dev in instance.devices if dev is not None}
    used: set[int] = set()
    for row in rows:
        used.update(row)
    dangling = used - known
    if dangling:
        raise RingError(f"the table names unknown device id(s) {sorted(dangling)[:5]}")


@frozen
class RingData:
    """
    What a ring file holds: the devices (indexed by id, ``None`` for ids no longer used),
    one row per replica mapping partition → device id, and the shift that turns the top 32
    bits of a path hash into a partition (``part_shift = 32 - part_power``).
    """

    devices: tuple[Device | None, ...] = field(converter=_to_devices)
    replica2part2dev: tuple[array, ...] = field(converter=_to_rows)
    part_shift: int = field(validator=_check_ring)

    @property
    def part_power(self) -> int:
        return 32 - self.part_shift

    @property
    def partition_count(self) -> int:
        return 1 << self.part_power

    @property
    def replica_count(self) -> int:
        return len(self.replica2part2dev)

    def to_bytes(self) -> bytes:
        devices = list(self.devices)
        while devices and devices[-1] is None:
            devices.pop()
        max_id = max((dev.id for dev in devices if dev is not None), default=0)
        typecode = _dev_id_typecode(max_id)
        rows = [
            row if row.typecode == typecode else array(typecode, row)
            for row in self.replica2part2dev
        ]
        document = {
            "kind": "txstore-ring",
            "part_power": self.part_power,
            "part_shift": self.part_shift,
            "replica_count": self.replica_count,
            "dev_id_bytes": array(typecode).itemsize,
            "devices": devices_to_json(devices),
        }
        return pack_file(
            RING_MAGIC, RING_FORMAT_VERSION, document, [array_to_le_bytes(row) for row in rows]
        )

    @classmethod
    def from_bytes(cls, data: bytes, what: str = "ring file") -> RingData:
        _, document, blobs = unpack_file(data, RING_MAGIC, [RING_FORMAT_VERSION], what)
        try:
            part_shift = document["part_shift"]
            replica_count = document["replica_count"]
            width = document["dev_id_bytes"]
        except KeyError as error:
            raise RingError(f"{what} lacks {error.args[0]!r}") from None
        typecode = {2: "H", 4: "I"}.get(width)
        if typecode is None or array(typecode).itemsize != width:
            raise RingError(f"{what} has an unsupported device id width {width!r}")
        if not isinstance(part_shift, int) or not isinstance(replica_count, int):
            raise RingError(f"{what} has a non-integer part_shift or replica_count")
        if len(blobs) != replica_count:
            raise RingError(f"{what} has {len(blobs)} tables for {replica_count} replicas")
        devices = devices_from_json(document.get("devices"), what)
        rows = [array_from_le_bytes(typecode, blob) for blob in blobs]
        try:
            return cls(devices, rows, part_shift)
        except RingError as error:
            raise RingError(f"{what}: {error}") from None

    def save(self, path: str | os.PathLike[str]) -> None:
        write_atomically(path, self.to_bytes())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RingData:
        what = f"ring file {os.fspath(path)}"
        return cls.from_bytes(read_whole(path, what), what)
