# -*- test-case-name: txstore.test.unit.test_replication_frames -*-
"""
Frames and records of the replication protocol, without any I/O.

A frame is ``type (1 byte) | length (4 bytes, big-endian) | payload``. `FrameDecoder` takes
bytes as they arrive, split anywhere, and returns whole records; `encode` turns a record into
bytes. Control records carry JSON objects whose keys are checked here, so the code above never
sees a malformed message: it gets a `ProtocolError` instead.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from enum import IntEnum
from typing import Any

from attrs import field, frozen

VERSION = 1
MAX_PAYLOAD = 2 * 1024 * 1024
SURVEY_LIMIT = 1024  # partitions one SURVEY frame may name
HEADER = struct.Struct(">BI")


class ProtocolError(Exception):
    """The peer sent something this protocol does not allow (answered with ERROR 400)."""


class FrameType(IntEnum):
    HELLO = 0x01
    READY = 0x02
    ERROR = 0x03
    END = 0x04
    GET_HASHES = 0x10
    HASHES = 0x11
    SURVEY = 0x12
    SURVEYED = 0x13
    SURVEY_END = 0x14
    OFFER = 0x20
    OFFER_END = 0x21
    WANT = 0x22
    WANT_END = 0x23
    PUT = 0x30
    DATA = 0x31
    PUT_END = 0x32
    POST = 0x33
    DELETE = 0x34
    UPDATES_END = 0x35
    DB_SYNC = 0x40
    DB_STATE = 0x41
    DB_ROWS = 0x42
    DB_FILE = 0x43
    DB_FILE_END = 0x44


#: The keys each control record must carry, and their JSON types.
_FIELDS: dict[FrameType, dict[str, tuple[type, ...]]] = {
    FrameType.HELLO: {"version": (int,), "kind": (str,), "device": (str,), "partition": (int,),
                      "policy": (int,)},
    FrameType.READY: {"version": (int,)},
    FrameType.ERROR: {"code": (int,), "reason": (str,)},
    FrameType.END: {},
    FrameType.GET_HASHES: {},
    FrameType.HASHES: {"hashes": (dict,)},
    FrameType.SURVEY: {"partitions": (list,)},
    FrameType.SURVEYED: {"digests": (dict,)},
    FrameType.SURVEY_END: {},
    FrameType.OFFER: {"objects": (list,)},
    FrameType.OFFER_END: {},
    FrameType.WANT: {"objects": (list,), "newer": (list,)},
    FrameType.WANT_END: {},
    FrameType.PUT: {"hash": (str,), "name": (str,), "timestamp": (str,), "metadata": (dict,),
                    "length": (int,)},
    FrameType.PUT_END: {"etag": (str,)},
    FrameType.POST: {"hash": (str,), "name": (str,), "timestamp": (str,), "metadata": (dict,)},
    FrameType.DELETE: {"hash": (str,), "name": (str,), "timestamp": (str,), "metadata": (dict,)},
    FrameType.UPDATES_END: {},
    FrameType.DB_SYNC: {"hash": (str,), "info": (dict,)},
    FrameType.DB_STATE: {"state": (str,)},
    FrameType.DB_ROWS: {"rows": (list,)},
    FrameType.DB_FILE: {"hash": (str,), "length": (int,)},
    FrameType.DB_FILE_END: {"md5": (str,)},
}


def _readonly(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return dict(value)


@frozen
class Record:
    """One frame's meaning: its type and either its JSON fields or (DATA) its bytes."""

    type: FrameType
    fields: Mapping[str, Any] = field(factory=dict, converter=_readonly)
    data: bytes = b""
    size: int = field(default=0, eq=False)  # payload bytes, as received (for flow control)

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)


def record(frame_type: FrameType, /, **fields: Any) -> Record:
    """A control record, checked as a received one would be."""
    checked = Record(frame_type, fields)
    _check_fields(checked)
    return checked


def data_record(data: bytes) -> Record:
    if not data or len(data) > MAX_PAYLOAD:
        raise ValueError(f"a DATA frame carries 1 to {MAX_PAYLOAD} bytes, not {len(data)}")
    return Record(FrameType.DATA, data=bytes(data))


def encode(item: Record) -> bytes:
    if item.type is FrameType.DATA:
        payload = item.data
    else:
        payload = json.dumps(item.fields, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"{item.type.name} payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return HEADER.pack(item.type, len(payload)) + payload


def _check_fields(item: Record) -> None:
    for key, types in _FIELDS[item.type].items():
        value = item.fields.get(key)
        if value is None or isinstance(value, bool) or not isinstance(value, types):
            raise ProtocolError(f"{item.type.name}: {key!r} missing or not a {types[0].__name__}")


def decode_payload(kind: int, payload: bytes) -> Record:
    """The record of one frame; ProtocolError when it is not one this version knows."""
    try:
        frame_type = FrameType(kind)
    except ValueError:
        raise ProtocolError(f"unknown frame type 0x{kind:02x}") from None
    if frame_type is FrameType.DATA:
        if not payload:
            raise ProtocolError("empty DATA frame")
        return Record(frame_type, data=payload, size=len(payload))
    try:
        fields = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError(f"{frame_type.name}: payload is not JSON") from None
    if not isinstance(fields, dict):
        raise ProtocolError(f"{frame_type.name}: payload is not a JSON object")
    item = Record(frame_type, fields, size=len(payload))
    _check_fields(item)
    return item


class FrameDecoder:
    """Bytes in (any split), records out. Keeps at most one partial frame buffered."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Record]:
        self._buffer += data
        records = []
        while len(self._buffer) >= HEADER.size:
            kind, length = HEADER.unpack_from(self._buffer)
            if length > MAX_PAYLOAD:
                raise ProtocolError(f"frame of {length} bytes exceeds the {MAX_PAYLOAD} byte limit")
            end = HEADER.size + length
            if len(self._buffer) < end:
                break
            payload = bytes(self._buffer[HEADER.size:end])
            del self._buffer[:end]
            records.append(decode_payload(kind, payload))
        return records

    @property
    def pending_bytes(self) -> int:
        return len(self._buffer)
