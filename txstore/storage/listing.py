# -*- test-case-name: txstore.test.unit.test_listing -*-
"""
Container and account listings on the storage nodes: query parameters and JSON-shaped entries.

Pure functions, no I/O. The container and account servers check a listing request's
parameters here and turn broker rows into entries; the formats (negotiation, plain, JSON and
XML bodies) are `txstore.common.listing_format`, shared with the proxy's ``listing_formats``
middleware. A node renders every format itself, for direct backend clients and daemons; the
proxy asks it for JSON.

Parameter errors follow Swift, and carry the status the caller answers with (`ListingError`):

- 400: a parameter that is not valid UTF-8; NUL in ``delimiter`` or ``path`` (in ``marker``,
  ``end_marker`` and ``prefix`` it is allowed, as Swift allows it: ``marker=name%00`` is how a
  client lists from ``name`` inclusive, and reserved names stay hidden whatever the bounds);
  ``limit`` that is not a whole number (Swift ignores a non-numeric limit; we say what is
  wrong instead). A whole number may be written with a zero fraction (``5000.0``), as
  Swift's functional tests send it.
- 412: ``limit`` above 10000 ("Maximum limit is 10000").

A delimiter may be any string, in account and container listings alike, as in Swift.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from attrs import frozen

from txstore.common.listing_format import ListingError, QueryArgs, query_value
from txstore.common.timestamps import Timestamp
from txstore.storage.db.account import ContainerRecord
from txstore.storage.db.broker import LISTING_LIMIT, Subdir
from txstore.storage.db.container import ObjectRecord

_WHOLE_NUMBER = re.compile(r"([0-9]+)(?:\.0*)?")
_TRUE = frozenset({"true", "1", "yes", "on", "t", "y"})


@frozen
class ListingParams:
    """A checked listing request: what the brokers' ``list`` takes."""

    limit: int = LISTING_LIMIT
    marker: str = ""
    end_marker: str = ""
    prefix: str = ""
    delimiter: str = ""
    path: str | None = None
    reverse: bool = False
    allow_reserved: bool = False  # list reserved names too (X-Backend-Allow-Reserved-Names)

    def as_kwargs(self) -> dict[str, Any]:
        return {
            "allow_reserved": self.allow_reserved,
            "limit": self.limit,
            "marker": self.marker,
            "end_marker": self.end_marker,
            "prefix": self.prefix,
            "delimiter": self.delimiter,
            "reverse": self.reverse,
            "path": self.path,
        }


def parse_listing_params(args: QueryArgs, *, max_limit: int = LISTING_LIMIT,
                         allow_reserved: bool = False) -> ListingParams:
    """
    Check the listing parameters of a query (Twisted's ``request.args`` works as it is: bytes
    keys and values; str works too). Raises ListingError with 400 or 412 (see the module
    docstring). ``path`` is passed through; account servers may ignore it, as Swift does.
    With ``allow_reserved`` the listing shows reserved names.
    """
    limit = max_limit
    given = query_value(args, "limit")
    if given:
        whole = _WHOLE_NUMBER.fullmatch(given)
        if whole is None:
            raise ListingError(400, "limit must be a non-negative integer")
        limit = int(whole.group(1))
        if limit > max_limit:
            raise ListingError(412, f"Maximum limit is {max_limit}")
    delimiter = query_value(args, "delimiter", allow_reserved) or ""
    reverse = (query_value(args, "reverse") or "").strip().lower() in _TRUE
    return ListingParams(
        limit=limit,
        marker=query_value(args, "marker", allow_nul=True) or "",
        end_marker=query_value(args, "end_marker", allow_nul=True) or "",
        prefix=query_value(args, "prefix", allow_nul=True) or "",
        delimiter=delimiter,
        path=query_value(args, "path"),
        reverse=reverse,
        allow_reserved=allow_reserved,
    )


# -- entries -------------------------------------------------------------------------------


def _listing_time(internal: str) -> str:
    """``Timestamp.isoformat`` without building a Timestamp: this runs once per listed row."""
    if len(internal) >= 16 and internal[10] == "." and internal[:10].isdigit():
        t = time.gmtime(int(internal[:10]))
        return "%04d-%02d-%02dT%02d:%02d:%02d.%s0" % (t[0], t[1], t[2], t[3], t[4], t[5], internal[11:16])
    return Timestamp.parse(internal).isoformat


def object_entries(items: Iterable[ObjectRecord | Subdir]) -> list[dict[str, Any]]:
    """A container listing as JSON-shaped entries (what ``format=json`` returns)."""
    entries: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, Subdir):
            entries.append({"subdir": item.name})
        else:
            entries.append(
                {
                    "name": item.name,
                    "hash": item.etag,
                    "bytes": item.size,
                    "content_type": item.content_type,
                    "last_modified": _listing_time(item.created_at),
                }
            )
    return entries


def container_entries(
    items: Iterable[ContainerRecord | Subdir], policy_name: Callable[[int], str | None] = lambda index: None
) -> list[dict[str, Any]]:
    """
    An account listing as JSON-shaped entries; ``last_modified`` is the container's PUT, and
    ``storage_policy`` its policy's name, as Swift lists them (left out, as Swift leaves it,
    when ``policy_name`` does not know the index: clients must cope with its absence).
    """
    entries: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, Subdir):
            entries.append({"subdir": item.name})
        else:
            entry = {
                "name": item.name,
                "count": item.object_count,
                "bytes": item.bytes_used,
                "last_modified": _listing_time(item.put_timestamp),
            }
            name = policy_name(item.storage_policy_index)
            if name is not None:
                entry["storage_policy"] = name
            entries.append(entry)
    return entries
