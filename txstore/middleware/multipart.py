# -*- test-case-name: txstore.test.unit.test_formpost -*-
"""
A streaming ``multipart/form-data`` parser (RFC 7578 / RFC 2046), pure: bytes go in with
`MultipartParser.feed`, events come out of `MultipartParser.next_event`, no I/O and no reactor.

Why its own: a form's file field may be a gigabyte, so a part's data must leave the parser as it
arrives, and the parser must never hold more than what was fed last plus a boundary's length.
The caller feeds one chunk only when `next_event` answers `NEED_DATA`, so what the parser holds
is bounded by the largest chunk fed plus ``len(boundary) + 4`` (a delimiter that may straddle
two chunks), and by ``max_header_bytes`` while a part's headers arrive.

Events, in order: `PartStart` (the part's headers), `Data` (any number of non-empty pieces of
its body), `PartEnd`; after the last part `END`. Anything that is not a well-formed body raises
`MalformedMultipart` with a short reason for the client. The epilogue after the closing
delimiter is ignored, as is a preamble made of empty lines only (what Swift accepts).
"""

from __future__ import annotations

import re

from attrs import frozen


class MalformedMultipart(ValueError):
    """The body is not ``multipart/form-data`` with the boundary given; the text says why."""


@frozen
class PartStart:
    headers: dict[str, str]  # names in lower case; values decoded as UTF-8


@frozen
class Data:
    data: bytes


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA = _Marker("NEED_DATA")
PART_END = _Marker("PART_END")
END = _Marker("END")

_PREAMBLE, _AFTER_DELIMITER, _HEADERS, _BODY, _DONE = range(5)
# RFC 2046: 1 to 70 characters, of this set, not ending with a space.
_BOUNDARY = re.compile(rb"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")


def check_boundary(boundary: bytes) -> None:
    if not _BOUNDARY.fullmatch(boundary):
        raise MalformedMultipart("invalid boundary")


class MultipartParser:
    def __init__(self, boundary: bytes, max_header_bytes: int = 16384) -> None:
        check_boundary(boundary)
        self._dash_boundary = b"--" + boundary
        self._delimiter = b"\r\n--" + boundary
        self._max_header_bytes = max_header_bytes
        self._buffer = bytearray()
        self._eof = False
        self._state = _PREAMBLE

    @property
    def held(self) -> int:
        """Bytes held now (the tests check it stays bounded)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        if self._state != _DONE:
            self._buffer += data

    def feed_eof(self) -> None:
        self._eof = True

    def next_event(self):
        """The next event, or `NEED_DATA` when the bytes fed so far say no more."""
        buffer = self._buffer
        if self._state == _PREAMBLE:
            while buffer.startswith(b"\r\n"):
                del buffer[:2]
            need = len(self._dash_boundary)
            if len(buffer) < need:
                if self._eof or not (self._dash_boundary.startswith(buffer) or buffer == b"\r"):
                    raise MalformedMultipart("invalid starting boundary")
                return NEED_DATA
            if not buffer.startswith(self._dash_boundary):
                raise MalformedMultipart("invalid starting boundary")
            del buffer[:need]
            self._state = _AFTER_DELIMITER
        if self._state == _AFTER_DELIMITER:
            if buffer.startswith(b"--"):
                self._state = _DONE
                buffer.clear()
                return END
            at = 0
            while at < len(buffer) and buffer[at] in b" \t":  # transport padding
                at += 1
            if len(buffer) < at + 2:
                if self._eof:
                    raise MalformedMultipart("the body ends without its closing boundary")
                if at > 256:
                    raise MalformedMultipart("a boundary line is too long")
                return NEED_DATA
            if buffer[at:at + 2] != b"\r\n":
                raise MalformedMultipart("a boundary line has more after the boundary")
            del buffer[:at + 2]
            self._state = _HEADERS
        if self._state == _HEADERS:
            if buffer.startswith(b"\r\n"):
                end, block = 2, b""
            else:
                found = buffer.find(b"\r\n\r\n", 0, self._max_header_bytes + 4)
                if found < 0:
                    if len(buffer) >= self._max_header_bytes + 4:
                        raise MalformedMultipart("a part's headers are too long")
                    if self._eof:
                        raise MalformedMultipart("the body ends inside a part's headers")
                    return NEED_DATA
                end, block = found + 4, bytes(buffer[:found])
            del buffer[:end]
            self._state = _BODY
            return PartStart(parse_headers(block))
        if self._state == _BODY:
            delimiter = self._delimiter
            found = buffer.find(delimiter)
            if found == 0:
                del buffer[:len(delimiter)]
                self._state = _AFTER_DELIMITER
                return PART_END
            if found > 0:
                data = bytes(buffer[:found])
                del buffer[:found]
                return Data(data)
            # keep what could be the start of a delimiter cut by the end of this chunk
            keep = len(delimiter) - 1
            if len(buffer) > keep:
                data = bytes(buffer[:len(buffer) - keep])
                del buffer[:len(buffer) - keep]
                return Data(data)
            if self._eof:
                raise MalformedMultipart("the body ends inside a part")
            return NEED_DATA
        buffer.clear()
        return END


def parse_headers(block: bytes) -> dict[str, str]:
    """A part's header lines (no folding: RFC 7578 forbids it) by lower-case name."""
    headers: dict[str, str] = {}
    if not block:
        return headers
    for line in block.split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise MalformedMultipart("a part has a malformed header line")
        headers[name.decode("latin-1").lower()] = value.strip().decode("utf-8", "replace")
    return headers


def parse_parameters(value: str) -> tuple[str, dict[str, str]]:
    """
    ``form-data; name="f"; filename="a b.txt"`` as (``form-data``, parameters with lower-case
    names). Quoted values may hold ``;`` and backslash escapes; a token value ends at ``;``.
    """
    kind, _, rest = value.partition(";")
    params: dict[str, str] = {}
    at, size = 0, len(rest)
    while at < size:
        while at < size and rest[at] in " \t;":
            at += 1
        start = at
        while at < size and rest[at] not in "=;":
            at += 1
        name = rest[start:at].strip().lower()
        if at >= size or rest[at] == ";":
            if name:
                params.setdefault(name, "")
            continue
        at += 1  # the =
        while at < size and rest[at] in " \t":
            at += 1
        if at < size and rest[at] == '"':
            at += 1
            chars = []
            while at < size and rest[at] != '"':
                if rest[at] == "\\" and at + 1 < size:
                    at += 1
                chars.append(rest[at])
                at += 1
            at += 1  # the closing quote
            found = "".join(chars)
            while at < size and rest[at] != ";":
                at += 1
        else:
            start = at
            while at < size and rest[at] != ";":
                at += 1
            found = rest[start:at].strip()
        if name:
            params[name] = found
    return kind.strip().lower(), params
