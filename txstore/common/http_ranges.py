# -*- test-case-name: txstore.test.unit.test_http_ranges -*-
"""
HTTP byte ranges (RFC 9110 §14) as Swift serves them: pure functions, shared by the proxy and
the storage node.

A ``Range`` header that does not parse is ignored (the whole object, 200), as Swift does; one
that parses but whose ranges all fall outside the object is unsatisfiable (416). Overlapping
ranges are served as asked. More than `MAX_RANGES` ranges is treated as no Range at all, to
bound the work one request can ask for.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator

MAX_RANGES = 100

_SPEC = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")


class Unsatisfiable(Exception):
    """Every range falls outside the object: answer 416 with ``Content-Range: bytes */len``."""


def parse_range(header: str | None, length: int) -> list[tuple[int, int]] | None:
    """
    The ``(first, last)`` byte positions (inclusive) a Range header asks of an object of
    ``length`` bytes; None when there is no usable Range header (serve the whole object).
    Raises `Unsatisfiable` when it parses but nothing of it lies inside the object.
    """
    if not header:
        return None
    unit, _, specs = header.partition("=")
    if unit.strip().lower() != "bytes" or not specs.strip():
        return None
    parts = specs.split(",")
    if len(parts) > MAX_RANGES:
        return None
    parsed: list[tuple[int | None, int | None]] = []
    for part in parts:
        match = _SPEC.match(part)
        if not match or (not match[1] and not match[2]):
            return None
        first = int(match[1]) if match[1] else None
        last = int(match[2]) if match[2] else None
        if first is not None and last is not None and last < first:
            return None
        parsed.append((first, last))
    ranges = []
    for first, last in parsed:
        if first is None:  # suffix: the last N bytes
            assert last is not None
            if last == 0:
                continue
            ranges.append((max(0, length - last), length - 1))
        elif first < length:
            ranges.append((first, length - 1 if last is None else min(last, length - 1)))
    if not ranges:
        raise Unsatisfiable()
    return ranges


def content_range(first: int, last: int, length: int) -> str:
    return f"bytes {first}-{last}/{length}"


def new_boundary() -> str:
    return secrets.token_hex(16)


def multipart_parts(
    ranges: list[tuple[int, int]], length: int, content_type: str, boundary: str
) -> Iterator[tuple[bytes, int, int]]:
    """For each range: the part header to write before its bytes, and the range."""
    for index, (first, last) in enumerate(ranges):
        lead = b"" if index == 0 else b"\r\n"
        header = (
            f"--{boundary}\r\nContent-Type: {content_type}\r\n"
            f"Content-Range: {content_range(first, last, length)}\r\n\r\n"
        ).encode("utf-8")
        yield lead + header, first, last


def multipart_trailer(boundary: str) -> bytes:
    return f"\r\n--{boundary}--\r\n".encode("ascii")


def multipart_length(ranges: list[tuple[int, int]], length: int, content_type: str, boundary: str) -> int:
    """The exact body length of the multipart/byteranges answer (so it can have a Content-Length)."""
    total = len(multipart_trailer(boundary))
    for header, first, last in multipart_parts(ranges, length, content_type, boundary):
        total += len(header) + (last - first + 1)
    return total
