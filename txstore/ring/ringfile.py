# -*- test-case-name: txstore.test.unit.test_ring -*-
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

Both directions stream: arrays are compressed from their own memory a chunk at a time
(``write_envelope``) and read back a chunk at a time into the arrays that keep them
(``EnvelopeReader``), so neither the file nor its decompressed bytes are ever held whole,
nor copied (a part power 18 builder decompresses to 5 MB). Files are written at zlib level
1 (``GZIP_LEVEL``); any gzip level reads the same.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import struct
import sys
import zlib
from array import array
from collections.abc import Callable, Iterable, Sequence
from typing import Any, BinaryIO

from attrs import field, frozen

from txstore.ring.device import Device
from txstore.ring.errors import RingError

RING_MAGIC = b"\x89TXRING\n"
BUILDER_MAGIC = b"\x89TXBLDR\n"
RING_FORMAT_VERSION = 1

_HEADER = struct.Struct("<8sHI")
#: The largest partition table a ring file may describe (part power 32 would not fit memory).
MAX_RING_PART_POWER = 30


#: The zlib level files are written at. A part power 18 table of 2-byte ids compresses in
#: 21 ms at level 1 against 169 ms at 6 (the ``gzip`` default) for a file 5% larger, and
#: decompresses as fast: the time went to the compressor, not to the disk.
GZIP_LEVEL = 1
#: Files are compressed and decompressed this many bytes at a time, never whole.
_CHUNK = 1 << 18

def open_file(path: str | os.PathLike[str], what: str) -> BinaryIO:
    """``path`` opened for reading; RingError naming ``what`` when it cannot be."""
    try:
        return open(path, "rb")
    except OSError as error:
        raise RingError(f"cannot read {what}: {error.strerror or error}") from None


def write_atomically(
    path: str | os.PathLike[str], data: bytes | Callable[[BinaryIO], None], mode: int = 0o644
) -> None:
    """
    Replace ``path`` with ``data`` (bytes, or a function writing into the open file) so that
    readers see the old or the new file, never a mix. The file gets ``mode``: rings and
    builders are readable by the service users that run the servers (0644, as Swift's are).
    """
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    handle, temp_path = _create_temporary(directory, os.path.basename(target))
    try:
        os.fchmod(handle, mode)
        with os.fdopen(handle, "wb") as stream:
            if callable(data):
                data(stream)
            else:
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


def _create_temporary(directory: str, base: str) -> tuple[int, str]:
    """
    A new file ``.<base>.<random>.tmp`` in ``directory``, created exclusively: its descriptor
    and path. (``tempfile.mkstemp`` does the same, but importing ``tempfile`` costs a
    command-line tool a megabyte of memory for the compression modules it brings along.)
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        temp_path = os.path.join(directory, f".{base}.{os.urandom(6).hex()}.tmp")
        try:
            return os.open(temp_path, flags, 0o600), temp_path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name for {base} in {directory}")


def _le_view(blob: bytes | bytearray | array) -> memoryview:
    """A blob's bytes as they go into a file: an array's own memory on a little-endian machine."""
    if isinstance(blob, array) and blob.itemsize > 1 and sys.byteorder != "little":
        blob = array_to_le_bytes(blob)
    return memoryview(blob).cast("B")


def write_envelope(
    stream: BinaryIO,
    magic: bytes,
    version: int,
    document: dict[str, Any],
    blobs: Sequence[bytes | bytearray | array],
    level: int = GZIP_LEVEL,
) -> None:
    """
    Write the gzipped envelope to ``stream`` a chunk at a time: arrays are compressed from
    their own memory, never copied whole. The gzip header has no timestamp (zlib writes
    none), so the same content always gives the same bytes.
    """
    views = [_le_view(blob) for blob in blobs]
    doc = dict(document)
    doc["blobs"] = [view.nbytes for view in views]
    encoded = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")
    packer = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # 16+: a gzip member
    for piece in (memoryview(_HEADER.pack(magic, version, len(encoded))), memoryview(encoded), *views):
        for start in range(0, len(piece), _CHUNK):
            stream.write(packer.compress(piece[start : start + _CHUNK]))
    stream.write(packer.flush())


def pack_file(
    magic: bytes, version: int, document: dict[str, Any], blobs: Sequence[bytes | bytearray | array]
) -> bytes:
    """The envelope as bytes (``write_envelope`` into memory)."""
    buffer = io.BytesIO()
    write_envelope(buffer, magic, version, document, blobs)
    return buffer.getvalue()


class EnvelopeReader:
    """
    An envelope read from a binary stream a chunk at a time: the header and document at
    once, then each blob, in order, straight into the array that keeps it. Neither the file
    nor its decompressed bytes are ever held whole. Anything unexpected is a ``RingError``
    saying what ``what`` (e.g. "ring file x.ring.gz") is wrong with.
    """

    def __init__(self, stream: BinaryIO, magic: bytes, versions: Iterable[int], what: str) -> None:
        self.what = what
        self._gzip = gzip.GzipFile(fileobj=stream, mode="rb")
        head = self._read(_HEADER.size)
        if len(head) < _HEADER.size:
            raise RingError(f"{what} is too short to be a txstore file")
        found_magic, version, doc_size = _HEADER.unpack(head)
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
        #: The format version of the file.
        self.version: int = version
        # A chunk at a time: a corrupt size must not have a buffer of gigabytes made for it.
        pieces = []
        while doc_size > 0:
            piece = self._read(min(doc_size, _CHUNK))
            if not piece:
                break
            pieces.append(piece)
            doc_size -= len(piece)
        text = b"".join(pieces)
        try:
            document = json.loads(text.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as error:
            raise RingError(f"{what} has a corrupt document ({error})") from None
        sizes = document.get("blobs") if isinstance(document, dict) else None
        if not isinstance(sizes, list):
            raise RingError(f"{what} has a corrupt document (no blob sizes)")
        if any(type(size) is not int or size < 0 for size in sizes):
            raise RingError(f"{what} has a corrupt document (bad blob sizes)")
        #: The JSON document; ``document["blobs"]`` lists the byte size of each blob.
        self.document: dict[str, Any] = document
        self._left = list(sizes)

    @property
    def blobs_left(self) -> int:
        return len(self._left)

    def _read(self, size: int) -> bytes:
        try:
            return self._gzip.read(size)
        except (gzip.BadGzipFile, EOFError, zlib.error) as error:
            raise RingError(f"{self.what} is not a gzip file or is truncated ({error})") from None
        except OSError as error:
            raise RingError(f"cannot read {self.what}: {error.strerror or error}") from None

    def read_array(self, typecode: str) -> array:
        """The next blob as an array of ``typecode`` (stored little-endian)."""
        if not self._left:
            raise RingError(f"{self.what} has fewer arrays than expected")
        size = self._left.pop(0)
        values = array(typecode)
        if size % values.itemsize:
            raise RingError(
                f"{self.what} has an array of {size} bytes, not whole {typecode!r} items"
            )
        while size:
            wanted = min(size, _CHUNK)
            chunk = self._read(wanted)
            if len(chunk) < wanted:
                raise RingError(f"{self.what} is truncated")
            values.frombytes(chunk)
            size -= wanted
        if values.itemsize > 1 and sys.byteorder != "little":
            values.byteswap()
        return values

    def finish(self) -> None:
        """Check that every blob was read and that nothing follows them."""
        if self._left:
            raise RingError(f"{self.what} has {len(self._left)} arrays more than expected")
        trailing = 0
        while True:
            chunk = self._read(_CHUNK)
            if not chunk:
                break
            trailing += len(chunk)
        if trailing:
            raise RingError(f"{self.what} has {trailing} unexpected trailing bytes")


def array_to_le_bytes(values: array) -> bytes:
    """The raw little-endian bytes of an array, whatever this machine's byte order."""
    if sys.byteorder == "little":
        return values.tobytes()
    swapped = array(values.typecode, values)
    swapped.byteswap()
    return swapped.tobytes()


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

    def write_to(self, stream: BinaryIO) -> None:
        """Write the ring file to a binary stream."""
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
        write_envelope(stream, RING_MAGIC, RING_FORMAT_VERSION, document, rows)

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        self.write_to(buffer)
        return buffer.getvalue()

    @classmethod
    def read_from(cls, stream: BinaryIO, what: str = "ring file") -> RingData:
        """A ring file read from a binary stream, a chunk at a time."""
        reader = EnvelopeReader(stream, RING_MAGIC, [RING_FORMAT_VERSION], what)
        document = reader.document
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
        if reader.blobs_left != replica_count:
            raise RingError(f"{what} has {reader.blobs_left} tables for {replica_count} replicas")
        devices = devices_from_json(document.get("devices"), what)
        rows = [reader.read_array(typecode) for _ in range(replica_count)]
        reader.finish()
        try:
            return cls(devices, rows, part_shift)
        except RingError as error:
            raise RingError(f"{what}: {error}") from None

    @classmethod
    def from_bytes(cls, data: bytes, what: str = "ring file") -> RingData:
        return cls.read_from(io.BytesIO(data), what)

    def save(self, path: str | os.PathLike[str]) -> None:
        write_atomically(path, self.write_to)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RingData:
        what = f"ring file {os.fspath(path)}"
        with open_file(path, what) as stream:
            return cls.read_from(stream, what)
