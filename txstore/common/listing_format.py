# -*- test-case-name: txstore.test.unit.test_listing,txstore.test.unit.test_middleware -*-
"""
The formats of account and container listings: which one a client asked for, and the bytes of
each. Pure functions, no I/O.

Two callers: the storage nodes render their own listings in any format for direct backend
clients and daemons (``txstore.storage.listing``), and the proxy's ``listing_formats``
middleware asks the nodes for JSON and renders the format its client asked for from the JSON
entries. Entries are the JSON-shaped dicts, whoever produced them.

Format errors carry the status the caller answers with, as Swift's:

- 400: a ``format`` parameter that is not valid UTF-8 (or holds NUL); a malformed ``Accept``.
- 406: an ``Accept`` header that allows none of text/plain, application/json, application/xml,
  text/xml.

An unknown ``format=`` value is *not* an error: Swift answers it in plain text, and so do we.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Union

from xml.etree.ElementTree import Element, SubElement, tostring

from attrs import frozen

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


QueryArgs = Mapping[Union[str, bytes], Sequence[Union[str, bytes]]]


def query_value(args: QueryArgs, name: str, allow_nul: bool = False) -> str | None:
    """
    The last value given for ``name`` (as WebOb does), decoded; 400 if not UTF-8 or if it
    holds NUL (unless ``allow_nul``: a marker or prefix, or a middleware's listing of
    reserved names). ``args`` as Twisted's ``request.args`` has them (bytes keys and values),
    or str.
    """
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
    if "\x00" in text and not allow_nul:
        raise ListingError(400, f'"{name}" parameter must not contain NUL')
    return text


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
    return negotiate_format(query_value(args, "format"), accept)


# -- output --------------------------------------------------------------------------------

def _plain(entries: Iterable[Mapping[str, Any]]) -> bytes:
    return "".join(
        f"{entry['subdir'] if 'subdir' in entry else entry['name']}\n" for entry in entries
    ).encode("utf-8")


def _xml(root: str, element: str, fields: Sequence[str], name: str, entries: Iterable[Mapping[str, Any]],
         optional: Sequence[str] = ()) -> bytes:
    """
    The listing as ElementTree writes it (escaped by it; an empty listing an empty element, not
    ``<account />``), after Swift's XML declaration. ElementTree escapes tab, newline and carriage
    return in attributes, but leaves a carriage return in text as it is, which a parser reads as a
    newline: so the one raw ``\\r`` a document can hold, in a name, is written ``&#13;``.
    A control character is written as it is, as Swift writes it.
    """
    document = Element(root, name=str(name))
    for entry in entries:
        if "subdir" in entry:
            sub = str(entry["subdir"])
            SubElement(SubElement(document, "subdir", name=sub), "name").text = sub
        else:
            item = SubElement(document, element)
            for key in fields:
                SubElement(item, key).text = str(entry[key])
            for key in optional:
                if key in entry:
                    SubElement(item, key).text = str(entry[key])
    text = tostring(document, encoding="unicode", short_empty_elements=False)
    if "\r" in text:
        text = text.replace("\r", "&#13;")
    return (_XML_DECLARATION + text).encode("utf-8")


def render_container_listing(fmt: ListingFormat, container: str, entries: Sequence[Mapping[str, Any]]) -> bytes:
    """
    The body of a container GET. An empty plain listing is empty: the server answers 204 then,
    as Swift does (json says ``[]`` and xml an empty element, with 200). An entry without a
    field the format needs raises KeyError.
    """
    if fmt.name == "json":
        return json.dumps(list(entries)).encode("ascii")
    if fmt.name == "xml":
        fields = ("name", "hash", "bytes", "content_type", "last_modified")
        return _xml("container", "object", fields, container, entries)
    return _plain(entries)


def render_account_listing(fmt: ListingFormat, account: str, entries: Sequence[Mapping[str, Any]]) -> bytes:
    """
    The body of an account GET (same rules as ``render_container_listing``); XML has a
    ``storage_policy`` element where the entry has one, as Swift's.
    """
    if fmt.name == "json":
        return json.dumps(list(entries)).encode("ascii")
    if fmt.name == "xml":
        fields = ("name", "count", "bytes", "last_modified")
        return _xml("account", "container", fields, account, entries, optional=("storage_policy",))
    return _plain(entries)
