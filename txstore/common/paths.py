# -*- test-case-name: txstore.test.unit.test_paths -*-
"""
Request paths, decoded and checked once, before anything touches a disk or a ring.

Twisted hands us the raw, still percent-encoded path. Object names keep every byte the client
sent (``a//b``, ``dir/``, an encoded ``%2F``), so paths are split only as far as their fixed
segments go: the object name is the rest, whatever slashes it holds. Invalid UTF-8 or a NUL
answers 412 and ``..``-style or empty fixed segments 400, as Swift does.

Reserved names. As in Swift, a name holding NUL (``\\x00``) is txstore's own: a middleware's
hidden containers and objects (object versioning's ``\\x00versions\\x00<container>``) are named
with `reserved_name` so that no client can name them. A client's path with a NUL is refused
(412); a request that carries ``X-Backend-Allow-Reserved-Names: true`` (which the gatekeeper
takes out of every client request, so only a middleware below it can have set it) may name
them, through the proxy and on the storage nodes, and its listings show them; every other
listing hides names that begin with NUL.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from attrs import frozen


RESERVED = "\x00"
ALLOW_RESERVED = "X-Backend-Allow-Reserved-Names"


class BadPath(ValueError):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def decode_path(raw: bytes, allow_reserved: bool = False) -> str:
    """
    Percent-decode and UTF-8-decode a raw path; BadPath(412) for invalid UTF-8, or for a NUL
    unless ``allow_reserved`` (a middleware's request for a reserved name).
    """
    decoded = unquote_to_bytes(raw)
    try:
        text = decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise BadPath(412, "Invalid UTF8 or contains NULL") from None
    if not allow_reserved and RESERVED in text:
        raise BadPath(412, "Invalid UTF8 or contains NULL")
    return text


def reserved_name(*parts: str) -> str:
    """A name no client can give: ``\\x00`` before each part (``\\x00versions\\x00c``)."""
    if not parts:
        raise ValueError("a reserved name needs at least one part")
    if any(RESERVED in part for part in parts):
        raise ValueError("a reserved name's parts cannot hold NUL")
    return RESERVED + RESERVED.join(parts)


def split_reserved_name(name: str) -> list[str]:
    """The parts of a `reserved_name`; ValueError for a name that is not one."""
    if not name.startswith(RESERVED):
        raise ValueError(f"not a reserved name: {name!r}")
    return name[1:].split(RESERVED)


def is_reserved(name: str) -> bool:
    return name.startswith(RESERVED)


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


def split_api_path(path: str) -> tuple[str, str, str | None, str | None]:
    """
    A client's decoded path as the proxy application takes it: ``(version, account,
    container, obj)``, container and object None when absent (a trailing ``/`` adds nothing).
    Swift's proxy answers for the others, and so do we, since clients tell them apart:

    - 404 when a segment before the last is empty (``/v1//c/o``, ``/v1/a//o``, ``/``): no
      such resource;
    - 412 "Bad URL" when there is no account (``/v1``, ``/v1/``, ``/info asdf``);
    - 400 "Invalid path" for an API version other than ``v1``.
    """
    if not path.startswith("/"):
        raise BadPath(404, "Not Found")
    segments = path[1:].split("/", 3)
    if "" in segments[:-1] or segments[0] == "":
        raise BadPath(404, "Not Found")
    version, account, container, obj = [*segments, *([None] * (4 - len(segments)))]
    if not account:
        raise BadPath(412, "Bad URL")
    if version != "v1":
        raise BadPath(400, "Invalid path")
    return version, account, container or None, obj or None


@frozen
class BackendPath:
    """``/<device>/<partition>/<account>[/<container>[/<object>]]`` on a storage node."""

    device: str
    partition: int
    account: str
    container: str | None = None
    obj: str | None = None


def parse_backend_path(raw: bytes, allow_reserved: bool = False) -> BackendPath:
    """A node's request path; its names may be reserved ones only with ``allow_reserved``."""
    device, partition, account, container, obj = split_path(decode_path(raw, allow_reserved), 3, 5)
    assert device is not None and partition is not None and account is not None
    if device in (".", "..") or RESERVED in device:
        raise BadPath(400, "Invalid device")
    if not (partition.isascii() and partition.isdigit()) or len(partition) > 10:  # "²" is a digit to isdigit
        raise BadPath(400, "Invalid partition")
    return BackendPath(device, int(partition), account, container, obj)
