# -*- test-case-name: txstore.test.unit.test_timestamps -*-
"""
Swift-style timestamps: the clock every write is ordered by.

A timestamp is a count of 10-microsecond ticks since the epoch, rendered ``1700000000.12345``
(16 characters, zero-padded, five decimals) as in ``X-Timestamp``. Two events that must be
ordered although they share a time (a POST made at the PUT's own time, a tombstone written for
an expiry) carry an *offset*: the internal form appends ``_`` and 16 hex digits, so
``1700000000.12345_0000000000000001`` sorts after ``1700000000.12345``. Ticks are integers, so
ordering, equality and hashing never suffer float rounding.
"""

from __future__ import annotations

import datetime
import math
import re
import time
from email.utils import formatdate, parsedate_to_datetime
from typing import Union

from attrs import field, frozen

TICKS_PER_SECOND = 100_000
_MAX_TICKS = 10**10 * TICKS_PER_SECOND  # timestamps render in 10 digits before the point
_MAX_OFFSET = 2**64 - 1
_FORM = re.compile(r"^(?P<secs>\d{1,10})(?:\.(?P<frac>\d{0,5}))?(?:_(?P<offset>[0-9a-fA-F]{1,16}))?$")


def _check_ticks(_inst: object, _attr: object, value: int) -> None:
    if not 0 <= value < _MAX_TICKS:
        raise ValueError(f"timestamp out of range: {value / TICKS_PER_SECOND!r}")


def _check_offset(_inst: object, _attr: object, value: int) -> None:
    if not 0 <= value <= _MAX_OFFSET:
        raise ValueError(f"timestamp offset out of range: {value!r}")


@frozen(order=True)
class Timestamp:
    """A point in time to 10 µs, plus an offset that orders events sharing that time."""

    ticks: int = field(validator=_check_ticks)
    offset: int = field(default=0, validator=_check_offset)

    @classmethod
    def now(cls, clock=time.time) -> Timestamp:
        return cls.from_seconds(clock())

    @classmethod
    def from_seconds(cls, seconds: float, offset: int = 0) -> Timestamp:
        return cls(round(seconds * TICKS_PER_SECOND), offset)

    @classmethod
    def parse(cls, value: TimestampLike) -> Timestamp:
        """
        Read a timestamp in any form a peer may send: normal, internal (with offset), a plain
        number or an existing Timestamp. Raises ValueError for anything else, so callers can
        answer 400 with the reason.
        """
        if isinstance(value, Timestamp):
            return value
        if isinstance(value, bool):
            raise ValueError(f"not a timestamp: {value!r}")
        if isinstance(value, (int, float)):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"not a timestamp: {value!r}")
            return cls.from_seconds(value)
        if isinstance(value, bytes):
            value = value.decode("ascii", "replace")
        match = _FORM.match(value.strip()) if isinstance(value, str) else None
        if match is None:
            raise ValueError(f"not a timestamp: {value!r}")
        frac = (match["frac"] or "").ljust(5, "0")
        ticks = int(match["secs"]) * TICKS_PER_SECOND + int(frac)
        offset = int(match["offset"], 16) if match["offset"] else 0
        return cls(ticks, offset)

    @property
    def seconds(self) -> float:
        return self.ticks / TICKS_PER_SECOND

    @property
    def normal(self) -> str:
        """The ``X-Timestamp`` form: ``0000000001.00000`` style, offset left out."""
        secs, frac = divmod(self.ticks, TICKS_PER_SECOND)
        return f"{secs:010d}.{frac:05d}"

    @property
    def internal(self) -> str:
        """The form used in file names and databases: normal, plus ``_<16 hex>`` if offset."""
        if self.offset:
            return f"{self.normal}_{self.offset:016x}"
        return self.normal

    def next_offset(self) -> Timestamp:
        """The same time, ordered just after this one."""
        return Timestamp(self.ticks, self.offset + 1)

    @property
    def last_modified(self) -> str:
        """
        The HTTP ``Last-Modified`` date. HTTP dates have whole seconds, so round *up*:
        ``If-Modified-Since: <Last-Modified>`` must then answer 304 for the same object.
        """
        return formatdate(self.ceil_seconds, usegmt=True)

    @property
    def ceil_seconds(self) -> int:
        return -(-self.ticks // TICKS_PER_SECOND)

    @property
    def isoformat(self) -> str:
        """The listing form, ``2023-11-14T22:13:20.123450`` (UTC, microseconds)."""
        secs, frac = divmod(self.ticks, TICKS_PER_SECOND)
        moment = datetime.datetime.fromtimestamp(secs, datetime.timezone.utc)
        return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{frac * 10:06d}"

    def __str__(self) -> str:
        return self.internal


TimestampLike = Union[Timestamp, str, bytes, int, float]


def parse_http_date(value: str) -> float | None:
    """Seconds since the epoch of an HTTP date, or None when it does not parse (RFC 9110)."""
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()
