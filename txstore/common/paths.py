# -*- test-case-name: txstore.test.test_paths -*-
"""
Request paths, decoded and checked once, before anything touches a disk or a ring.

Twisted hands us the raw, still percent-encoded path. Object names keep every byte the client
sent (``a//b``, ``dir/``, an encoded ``%2F``), so paths are split only as far as their fixed
segments go: the object name is the rest, whatever slashes it holds. Invalid UTF-8 or a NUL
answers 412 and ``..``-style or empty fixed segments 400, as Swift does.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from attrs import frozen


class BadPath(ValueError):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def decode_path(raw: bytes) -> str:
    """Percent-decode and UTF-8-decode a raw path; BadPath(412) for invalid UTF-8 or NUL."""
    decoded = unquote_to_bytes(raw)
    try:
        text = decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise BadPath(412, "Invalid UTF8 or contains NULL") from None
    if "\x00" in text:
        raise BadPath(412, "Invalid UTF8 or contains NULL")
    return text


def split_path(path: str, minimum: int, maximum: int) -> list[str | None]:
    """
    ``/a/b/c/rest/of/it`` → ``["a", "b", "c", "rest/of/it"]`` with ``maximum=4``: the last
    segment keeps every slash. The first ``minimum`` segments must be non-empty; an empty
    optional segment is absent (None) when it is the last one (``/a/c/`` is a container),
    and BadPath(400) in the middle (``/a//o``).
    """
    if not path.startswith("/"):
        raise BadPath(400, "Invalid path")
    segments = path[1:].split("/", maximum - 1)
    if len(segments) < minimum or "" in segments[:minimum]:
        raise BadPath(400, "Invalid path")
    if len(segments) > minimum and segments[-1] == "":
        segments.pop()
    if "" in segments:
        raise BadPath(400, "Invalid path")
    return [*segments, *([None] * (maximum - len(segments)))]


@frozen
class BackendPath:
    """``/<device>/<partition>/<account>[/<container>[/<object>]]`` on a storage node."""

    device: str
    partition: int
    account: str
    container: str | None = None
    obj: str | None = None


def parse_backend_path(raw: bytes) -> BackendPath:
    device, partition, account, container, obj = split_path(decode_path(raw), 3, 5)
    assert device is not None and partition is not None and account is not None
    if device in (".", ".."):
        raise BadPath(400, "Invalid device")
    if not (partition.isascii() and partition.isdigit()) or len(partition) > 10:  # "²" is a digit to isdigit
        raise BadPath(400, "Invalid partition")
    return BackendPath(device, int(partition), account, container, obj)
