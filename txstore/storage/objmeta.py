# -*- test-case-name: txstore.test.unit.test_objmeta -*-
"""
Object metadata, stored as a footer at the end of each object file.

Why not xattrs: ext4 gives a file about 4 KiB of xattr space in all, and the Swift API allows
4 KiB of user metadata *plus* system metadata, so xattrs would refuse or lose what the API
accepts. A footer has no size limit of its own, lives and dies with the file's own bytes, and is
made durable by the same single fsync that makes the body durable.

Layout of every object file (``.data``, ``.meta``, ``.ts``)::

    body (Content-Length bytes; empty for .meta and .ts)
    JSON metadata (UTF-8, ASCII only: every non-ASCII character \\u-escaped)
    trailer, 32 bytes, big-endian:
        8  magic  b"TXSMETA\\0"
        2  version (1)
        2  reserved (0)
        4  JSON length in bytes
        16 md5 digest of the JSON bytes

A reader reads the last bytes of the file (one pread covers trailer and JSON in the usual case),
checks magic, version, length and digest, and only then parses the JSON. The body length is the
file size minus the footer, and must equal ``Content-Length``: a reader never reads into the
footer. Anything that does not check out raises `FooterError` (the disk file layer turns it into
``DiskFileCorrupt`` so the auditor can quarantine). JSON, never pickle: a damaged or hostile
file must not be able to run code.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Mapping

from attrs import frozen

MAGIC = b"TXSMETA\x00"
VERSION = 1
TRAILER = struct.Struct(">8sHHI16s")
TRAILER_SIZE = TRAILER.size
MAX_JSON_SIZE = 1 << 20
_TAIL_READ = 8192

# Keys that belong to the bytes of a .data file: a .meta (POST) never replaces them. A static
# large object's manifest stays one whatever a POST says (as in Swift).
_DATA_BOUND = frozenset({"name", "content-length", "etag", "x-body-checksum", "x-static-large-object"})
_DATA_BOUND_PREFIXES = ("x-object-sysmeta-",)


class FooterError(ValueError):
    """The footer of an object file is missing, damaged or not ours."""


@frozen
class Footer:
    """What a file's footer says: its metadata, and where the body ends."""

    metadata: dict[str, str]
    body_length: int
    footer_length: int


def check_metadata(metadata: Mapping[str, str]) -> None:
    """Refuse anything but str keys and str values: what we store must read back identical."""
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"metadata keys and values must be str, not {key!r}: {value!r}")
        if not key:
            raise ValueError("metadata keys must not be empty")


def encode_footer(metadata: Mapping[str, str]) -> bytes:
    """The JSON and trailer to append after the body (or alone, for .meta and .ts)."""
    check_metadata(metadata)
    blob = json.dumps(dict(metadata), ensure_ascii=True, sort_keys=True, separators=(",", ":"))
    raw = blob.encode("ascii")
    if len(raw) > MAX_JSON_SIZE:
        raise ValueError(f"metadata too large to store: {len(raw)} bytes of JSON")
    digest = hashlib.md5(raw, usedforsecurity=False).digest()
    return raw + TRAILER.pack(MAGIC, VERSION, 0, len(raw), digest)


def parse_trailer(trailer: bytes) -> tuple[int, bytes]:
    """``(json_length, md5 digest)`` from the last `TRAILER_SIZE` bytes of a file."""
    if len(trailer) != TRAILER_SIZE:
        raise FooterError("file too short for a metadata trailer")
    magic, version, _reserved, length, digest = TRAILER.unpack(trailer)
    if magic != MAGIC:
        raise FooterError("no metadata trailer (bad magic)")
    if version != VERSION:
        raise FooterError(f"unsupported metadata footer version {version}")
    if length > MAX_JSON_SIZE:
        raise FooterError(f"metadata length {length} is out of range")
    return length, digest


def decode_json(raw: bytes, digest: bytes) -> dict[str, str]:
    """Check the digest, then parse: a damaged JSON never reaches the parser."""
    if hashlib.md5(raw, usedforsecurity=False).digest() != digest:
        raise FooterError("metadata checksum mismatch")
    try:
        metadata = json.loads(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as error:
        raise FooterError(f"metadata is not JSON: {error}") from None
    if not isinstance(metadata, dict):
        raise FooterError("metadata is not a JSON object")
    try:
        check_metadata(metadata)
    except (TypeError, ValueError) as error:
        raise FooterError(str(error)) from None
    return metadata


def read_footer(fd: int, size: int | None = None) -> Footer:
    """Read the footer of the open file ``fd`` (of ``size`` bytes, fstat'ed when not given)."""
    if size is None:
        size = os.fstat(fd).st_size
    if size < TRAILER_SIZE:
        raise FooterError("file too short for a metadata trailer")
    tail_size = min(size, _TAIL_READ)
    tail = _pread_exactly(fd, tail_size, size - tail_size)
    length, digest = parse_trailer(tail[-TRAILER_SIZE:])
    footer_length = length + TRAILER_SIZE
    if footer_length > size:
        raise FooterError(f"metadata length {length} exceeds the file")
    if footer_length <= tail_size:
        raw = tail[tail_size - footer_length : tail_size - TRAILER_SIZE]
    else:
        raw = _pread_exactly(fd, length, size - footer_length)
    return Footer(decode_json(raw, digest), size - footer_length, footer_length)


def _pread_exactly(fd: int, length: int, offset: int) -> bytes:
    chunks = []
    while length > 0:
        chunk = os.pread(fd, length, offset)
        if not chunk:
            raise FooterError("file ended while reading its metadata")
        chunks.append(chunk)
        length -= len(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def is_data_bound(key: str) -> bool:
    """Whether ``key`` describes the body (kept from the .data whatever a .meta says)."""
    lower = key.lower()
    return lower in _DATA_BOUND or lower.startswith(_DATA_BOUND_PREFIXES)


def merge_metadata(data: Mapping[str, str], meta: Mapping[str, str]) -> dict[str, str]:
    """
    The metadata of a .data as changed by a newer .meta (a POST).

    A POST replaces all the mutable metadata (user metadata, X-Delete-At, X-Timestamp, …), so
    the data file's mutable keys are dropped, not merged; what describes the bytes (`name`,
    ``Content-Length``, ``ETag``, ``X-Static-Large-Object``, ``X-Object-Sysmeta-*``) always comes
    from the .data.
    ``Content-Type`` is replaced only when the POST carried one.
    """
    meta_has_type = any(k.lower() == "content-type" for k in meta)
    merged = {
        k: v
        for k, v in data.items()
        if is_data_bound(k) or (k.lower() == "content-type" and not meta_has_type)
    }
    merged.update((k, v) for k, v in meta.items() if not is_data_bound(k))
    return merged
