# -*- test-case-name: txstore.test.test_listing -*-
"""
Container and account listings at the HTTP edge: query parameters, format negotiation, output.

Pure functions, no I/O: the container and account servers use them on their own listings, and
the proxy can use them to re-render a backend's JSON listing in the format its client asked for
(entries are the JSON-shaped dicts, whoever produced them).

Errors follow Swift, and carry the status the caller answers with:

- 400: a parameter that is not valid UTF-8 (or holds NUL); ``limit`` that is not a number
  (Swift ignores a non-numeric limit; we say what is wrong instead); a malformed ``Accept``.
- 412: ``limit`` above 10000 ("Maximum limit is 10000"); a ``delimiter`` longer than one
  character or above U+00FE ("Bad delimiter").
- 406: an ``Accept`` header that allows none of text/plain, application/json, application/xml,
  text/xml.

An unknown ``format=`` value is *not* an error: Swift answers it in plain text, and so do we.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Union

from attrs import frozen

from txstore.common.timestamps import Timestamp
from txstore.storage.db.account import ContainerRecord
from txstore.storage.db.broker import LISTING_LIMIT, Subdir
from txstore.storage.db.container import ObjectRecord

_DIGITS = re.compile(r"[0-9]+")
_TRUE = frozenset({"true", "1", "yes", "on", "t", "y"})
_XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'


class ListingError(Exception):
    """A listing request the server must refuse, with the status and a reason for the body."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.status} {self.reason}"


@frozen
class ListingFormat:
    """An output format and the media type it is sent as."""

    name: str  # "plain", "json" or "xml"
    media_type: str

    @property
    def content_type(self) -> str:
        """The ``Content-Type`` header value."""
        return f"{self.media_type}; charset=utf-8"


PLAIN = ListingFormat("plain", "text/plain")
JSON = ListingFormat("json", "application/json")
XML = ListingFormat("xml", "application/xml")
TEXT_XML = ListingFormat("xml", "text/xml")
_OFFERS = (PLAIN, JSON, XML, TEXT_XML)  # in order of preference when the client ties
_BY_FORMAT_PARAM = {"plain": PLAIN, "json": JSON, "xml": XML}


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

    def as_kwargs(self) -> dict[str, Any]:
        return {
            "limit": self.limit,
            "marker": self.marker,
            "end_marker": self.end_marker,
            "prefix": self.prefix,
            "delimiter": self.delimiter,
            "reverse": self.reverse,
            "path": self.path,
        }


QueryArgs = Mapping[Union[str, bytes], Sequence[Union[str, bytes]]]


def _last_value(args: QueryArgs, name: str) -> str | None:
    """The last value given for ``name`` (as WebOb does), decoded; 400 if not UTF-8."""
    values = args.get(name)
    if values is None:
        values = args.get(name.encode("ascii"))  # type: ignore[call-overload]
    if not values:
        return None
    value = values[-1]
    try:
        text = value.decode("utf-8") if isinstance(value, bytes) else value
        text.encode("utf-8")  # a str with lone surrogates did not come from UTF-8
    except UnicodeError:
        raise ListingError(400, f'"{name}" parameter not valid UTF-8') from None
    if "\x00" in text:
        raise ListingError(400, f'"{name}" parameter must not contain NUL')
    return text


def parse_listing_params(args: QueryArgs, *, max_limit: int = LISTING_LIMIT) -> ListingParams:
    """
    Check the listing parameters of a query (Twisted's ``request.args`` works as it is: bytes
    keys and values; str works too). Raises ListingError with 400 or 412 (see the module
    docstring). ``path`` is passed through; account servers may ignore it, as Swift does.
    """
    limit = max_limit
    given = _last_value(args, "limit")
    if given:
        if not _DIGITS.fullmatch(given):
            raise ListingError(400, "limit must be a non-negative integer")
        limit = int(given)
        if limit > max_limit:
            raise ListingError(412, f"Maximum limit is {max_limit}")
    delimiter = _last_value(args, "delimiter") or ""
    if delimiter and (len(delimiter) > 1 or ord(delimiter) > 254):
        raise ListingError(412, "Bad delimiter")
    reverse = (_last_value(args, "reverse") or "").strip().lower() in _TRUE
    return ListingParams(
        limit=limit,
        marker=_last_value(args, "marker") or "",
        end_marker=_last_value(args, "end_marker") or "",
        prefix=_last_value(args, "prefix") or "",
        delimiter=delimiter,
        path=_last_value(args, "path"),
        reverse=reverse,
    )


def _parse_accept(header: str) -> list[tuple[str, str, float]]:
    """``(type, subtype, q)`` for each media range; 400 for one we cannot read."""
    ranges = []
    for item in header.split(","):
        item = item.strip()
        if not item:
            continue
        media, *params = (part.strip() for part in item.split(";"))
        kind, slash, subtype = media.lower().partition("/")
        if not slash or not kind or not subtype or (kind == "*" and subtype != "*"):
            raise ListingError(400, "Invalid Accept header")
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    raise ListingError(400, "Invalid Accept header") from None
                if not 0.0 <= quality <= 1.0:
                    raise ListingError(400, "Invalid Accept header")
        ranges.append((kind, subtype, quality))
    return ranges


def negotiate_format(format_param: str | bytes | None, accept: str | bytes | None) -> ListingFormat:
    """
    The output format: ``format=`` (json, xml, plain; anything else means plain) wins over the
    ``Accept`` header; neither means plain. Within ``Accept`` the highest q wins, then the most
    specific range, then our order (plain, json, application/xml, text/xml). 406 when nothing
    we offer is acceptable.
    """
    if isinstance(format_param, bytes):
        format_param = format_param.decode("utf-8", "replace")
    if format_param:
        return _BY_FORMAT_PARAM.get(format_param.strip().lower(), PLAIN)
    if isinstance(accept, bytes):
        accept = accept.decode("latin-1")
    if accept is None or not accept.strip():
        return PLAIN
    ranges = _parse_accept(accept)
    best: tuple[float, int] = (0.0, -1)
    chosen: ListingFormat | None = None
    for offer in _OFFERS:
        kind, subtype = offer.media_type.split("/")
        # The most specific range that matches decides this offer's quality.
        match: tuple[int, float] | None = None
        for r_kind, r_subtype, quality in ranges:
            if r_kind == "*":
                specificity = 0
            elif r_kind == kind and r_subtype == "*":
                specificity = 1
            elif r_kind == kind and r_subtype == subtype:
                specificity = 2
            else:
                continue
            if match is None or (specificity, quality) > match:
                match = (specificity, quality)
        if match is None or match[1] <= 0.0:
            continue
        rank = (match[1], match[0])
        if rank > best:
            best, chosen = rank, offer
    if chosen is None:
        raise ListingError(406, "Not Acceptable: the listing is available as text/plain, "
                                "application/json, application/xml or text/xml")
    return chosen


def listing_format(args: QueryArgs, accept: str | bytes | None) -> ListingFormat:
    """``negotiate_format`` with the ``format`` parameter taken from the query."""
    return negotiate_format(_last_value(args, "format"), accept)


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


def container_entries(items: Iterable[ContainerRecord | Subdir]) -> list[dict[str, Any]]:
    """An account listing as JSON-shaped entries; ``last_modified`` is the container's PUT."""
    entries: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, Subdir):
            entries.append({"subdir": item.name})
        else:
            entries.append(
                {
                    "name": item.name,
                    "count": item.object_count,
                    "bytes": item.bytes_used,
                    "last_modified": _listing_time(item.put_timestamp),
                }
            )
    return entries


# -- output --------------------------------------------------------------------------------

_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
# In attributes parsers turn tab, newline and carriage return into spaces unless escaped.
_ATTR_ESCAPES = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\t": "&#9;", "\n": "&#10;", "\r": "&#13;"}
)


def xml_text(value: object) -> str:
    """Character data for an XML element (``\\r`` escaped so that it survives parsing)."""
    return str(value).translate(_TEXT_ESCAPES)


def xml_attribute(value: object) -> str:
    """A double-quoted XML attribute value, whitespace escaped so that it survives parsing."""
    return '"' + str(value).translate(_ATTR_ESCAPES) + '"'


def _plain(entries: Iterable[Mapping[str, Any]]) -> bytes:
    return "".join(
        f"{entry['subdir'] if 'subdir' in entry else entry['name']}\n" for entry in entries
    ).encode("utf-8")


def _xml(root: str, element: str, fields: Sequence[str], name: str, entries: Iterable[Mapping[str, Any]]) -> bytes:
    parts = [_XML_DECLARATION, f"<{root} name={xml_attribute(name)}>"]
    for entry in entries:
        if "subdir" in entry:
            sub = entry["subdir"]
            parts.append(f"<subdir name={xml_attribute(sub)}><name>{xml_text(sub)}</name></subdir>")
        else:
            parts.append(f"<{element}>")
            parts.extend(f"<{key}>{xml_text(entry[key])}</{key}>" for key in fields)
            parts.append(f"</{element}>")
    parts.append(f"</{root}>")
    return "".join(parts).encode("utf-8")


def render_container_listing(fmt: ListingFormat, container: str, entries: Sequence[Mapping[str, Any]]) -> bytes:
    """
    The body of a container GET. An empty plain listing is empty: the server answers 204 then,
    as Swift does (json says ``[]`` and xml an empty element, with 200).
    """
    if fmt.name == "json":
        return json.dumps(list(entries)).encode("ascii")
    if fmt.name == "xml":
        fields = ("name", "hash", "bytes", "content_type", "last_modified")
        return _xml("container", "object", fields, container, entries)
    return _plain(entries)


def render_account_listing(fmt: ListingFormat, account: str, entries: Sequence[Mapping[str, Any]]) -> bytes:
    """The body of an account GET (same rules as ``render_container_listing``)."""
    if fmt.name == "json":
        return json.dumps(list(entries)).encode("ascii")
    if fmt.name == "xml":
        return _xml("account", "container", ("name", "count", "bytes", "last_modified"), account, entries)
    return _plain(entries)
