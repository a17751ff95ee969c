# -*- test-case-name: txstore.test.unit.test_dlo -*-
"""
dlo: dynamic large objects, as Swift's API has them.

A manifest is an object stored with ``X-Object-Manifest: <container>/<prefix>`` (the value
percent-encoded; the object's own body, normally empty, is never served). A GET or HEAD of it
answers the concatenation of the objects of ``<container>``, in the manifest's account, whose
names start with ``<prefix>``, in listing order, read as the requester: the container is listed
and each segment read with sub-requests that carry the client's identity and credentials.

Before answering, the listing is read page by page (container GETs with ``format=json``,
``prefix``, ``marker``) to sum the segments' sizes (the Content-Length) and take the large
object's ETag, the quoted md5 of the segments' ETags in order, as Swift answers; conditional
requests and a range are decided on those (a request for several ranges gets the whole object,
200, as from Swift's dlo). One page is held at a time: of each page the survey
keeps its marker, where it starts in the object and a digest of what it listed, and the body
lists the pages again as the read gets to them, each checked against its digest, so the bytes
sent are those of the listing the headers promised; a listing changed in between breaks the
read, as a changed segment does. The last page read is held, so a listing of one page (up to
the container listing limit, 10000 segments) is read once.

A listing of more than ``max_segments`` objects is answered without Content-Length or ETag
(the edge sends it chunked) and streams to its end; a ``Range`` is then ignored (the whole
object, 200), as Swift ignores one it cannot place.

The segments are read by `txstore.middleware.segments` as an SLO's are (the next one's GET out
while one streams), each with the size its listing gives and no ETag pinned: a segment that is
not that size breaks the read (the client's connection is aborted), and a first segment that
cannot be read is a 409 before any byte. They are read below this middleware, so a segment that
is itself a manifest is served as the plain object it is, as in Swift.

``?multipart-manifest=get`` reads the manifest object itself. A PUT or POST whose
``X-Object-Manifest`` is not ``container/prefix`` is refused (400); a POST that carries one
changes where the manifest points (the proxy application stores it).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from hashlib import md5, sha256
from typing import Any
from urllib.parse import quote, unquote_to_bytes

from attrs import define, field, frozen
from twisted.logger import Logger

from txstore.common import config as c
from txstore.common.conditionals import evaluate
from txstore.common.http_ranges import Unsatisfiable, content_range, parse_range
from txstore.common.timestamps import parse_http_date
from txstore.middleware.base import ApiMiddleware, Middleware, read_whole
from txstore.middleware.segments import Piece, SegmentError, SegmentRead, segmented_response
from txstore.proxy import subrequest
from txstore.proxy.messages import BytesSource, SwiftRequest, SwiftResponse

log = Logger()

SOURCE = "DLO"
MANIFEST = "X-Object-Manifest"
IGNORE_RANGE = "X-Backend-Ignore-Range-If-Metadata-Present"
BAD_MANIFEST = "X-Object-Manifest must be in the format container/prefix"
# The most bytes of JSON one listing entry may take (a name of up to 1024 bytes, escaped, and
# the other fields); a page's body is read whole up to this many bytes per entry asked for.
ENTRY_BYTES = 8192
# When the listing is too long to have an ETag, conditionals compare against this, which no
# tag a client sends can equal (tags are split on commas): only ``*`` matches.
NO_ETAG = ","

OPTIONS = (
    c.Option("max_segments", c.integer(1), 10000,
             doc="Segments listed to answer a large object's Content-Length and ETag; a longer listing "
                 "is streamed without them."),
)


def valid_manifest_header(value: str) -> bool:
    """Swift's check of a client's ``X-Object-Manifest`` (the raw, percent-encoded value)."""
    container, _, prefix = value.partition("/")
    return bool(container and prefix) and "?" not in value and "&" not in value and not prefix.startswith("/")


def manifest_target(value: str) -> tuple[str, str] | None:
    """(container, prefix), decoded, from a stored ``X-Object-Manifest``; None if it has no such form."""
    try:
        text = unquote_to_bytes(value.encode("latin-1")).decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return None
    container, slash, prefix = text.partition("/")
    if not container or not slash:
        return None
    return container, prefix


@frozen
class Entry:
    """One object of the listing: a segment."""

    name: str
    size: int
    etag: str


@frozen
class Page:
    """What the survey keeps of one listing page to find it again and know it unchanged."""

    marker: str  # the marker that lists it ("" for the first)
    offset: int  # where its first segment starts in the large object
    length: int  # the bytes of its segments
    digest: bytes  # of its entries (names, sizes, ETags)


@frozen
class Survey:
    """The whole listing, read once: its pages, and the large object's size and ETag."""

    pages: tuple[Page, ...]
    total: int
    etag: str


class ListingError(Exception):
    """The container could not be listed (its status), or its answer is not a listing."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def digest(entries: list[Entry]) -> bytes:
    hashed = sha256()
    for entry in entries:
        hashed.update(f"{entry.name}\0{entry.size}\0{entry.etag}\n".encode("utf-8", "surrogatepass"))
    return hashed.digest()


def parse_listing(raw: bytes) -> list[Entry]:
    """A container listing's JSON as entries; ValueError when it is not one."""
    listed = json.loads(raw)
    if not isinstance(listed, list):
        raise ValueError("not a list")
    entries = []
    for item in listed:
        if not isinstance(item, dict) or "name" not in item:
            continue  # a subdir (there are none without a delimiter)
        name, size, etag = item["name"], item.get("bytes"), item.get("hash", "")
        if not isinstance(name, str) or isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"bad entry {item!r}")
        entries.append(Entry(name, size, str(etag).strip('"')))
    return entries


@define(eq=False)
class Listing:
    """
    The segments' container, listed as the requester one page at a time; the last page read
    (that listed anything) is held, so that reading it again (a listing of one page, surveyed
    then streamed) costs nothing.
    """

    app: Any  # the proxy pipeline the listing requests go through
    request: SwiftRequest
    account: str
    container: str
    prefix: str
    page_size: int
    _held: tuple[str, list[Entry]] | None = field(default=None, init=False)

    def segment_path(self, name: str) -> str:
        return f"/v1/{self.account}/{self.container}/{name}"

    async def page(self, marker: str) -> list[Entry]:
        """The entries after ``marker``; `ListingError` when the container does not answer one."""
        held = self._held
        if held is not None and held[0] == marker:
            return held[1]
        query = f"format=json&prefix={quote(self.prefix, safe='')}&limit={self.page_size}"
        if marker:
            query += f"&marker={quote(marker, safe='')}"
        listed = subrequest.make(self.request, "GET", f"/v1/{self.account}/{self.container}",
                                 source=SOURCE, query=query)
        response = await self.app(listed)
        if response.status == 204:
            response.discard_body()
            entries: list[Entry] = []
        elif response.status // 100 != 2:
            response.discard_body()
            raise ListingError(response.status, f"listing the segments' container answered {response.status}")
        else:
            try:
                entries = parse_listing(await read_whole(response, self.page_size * ENTRY_BYTES))
            except (ValueError, OverflowError) as err:
                raise ListingError(502, f"the segments' container did not answer a listing: {err}") from None
        if entries:  # an empty page (after a full one) is not worth holding instead of that one
            self._held = (marker, entries)
        return entries

    async def survey(self, max_segments: int) -> Survey | None:
        """Every page in turn (one at a time); None when the listing has more than ``max_segments``."""
        pages: list[Page] = []
        etag = md5(usedforsecurity=False)
        total = count = 0
        marker = ""
        while True:
            entries = await self.page(marker)
            count += len(entries)
            if count > max_segments:
                return None
            length = sum(entry.size for entry in entries)
            pages.append(Page(marker, total, length, digest(entries)))
            for entry in entries:
                etag.update(entry.etag.encode("utf-8", "surrogatepass"))
            total += length
            if len(entries) < self.page_size:  # a short page is the last
                return Survey(tuple(pages), total, etag.hexdigest())
            marker = entries[-1].name

    async def checked_page(self, page: Page) -> list[Entry]:
        """A surveyed page listed again; `SegmentError` unless it lists what it did."""
        try:
            entries = await self.page(page.marker)
        except ListingError as err:
            raise SegmentError(err.reason) from None
        if digest(entries) != page.digest:
            raise SegmentError(f"the listing of /{self.account}/{self.container} changed while the object was read")
        return entries

    async def pieces(self, survey: Survey, first: int, last: int) -> AsyncIterator[Piece]:
        """Bytes ``first``..``last`` of the surveyed object, as segment reads."""
        for page in survey.pages:
            if page.offset + page.length <= first:
                continue
            if page.offset > last:
                return
            offset = page.offset
            for entry in await self.checked_page(page):
                start, offset = offset, offset + entry.size
                if offset <= first:
                    continue
                if start > last:
                    return
                yield SegmentRead(self.segment_path(entry.name), max(first, start) - start,
                                  min(last, offset - 1) - start, entry.size)

    async def everything(self) -> AsyncIterator[Piece]:
        """Every segment, listed as the read gets to it (a listing too long to survey)."""
        marker = ""
        while True:
            try:
                entries = await self.page(marker)
            except ListingError as err:
                raise SegmentError(err.reason) from None
            for entry in entries:
                if entry.size:
                    yield SegmentRead(self.segment_path(entry.name), 0, entry.size - 1, entry.size)
            if len(entries) < self.page_size:
                return
            marker = entries[-1].name


class DynamicLargeObjects(ApiMiddleware):
    depth = 3

    def __init__(self, app, max_segments: int, page_size: int) -> None:
        self.app = app
        self.max_segments = max_segments
        self.page_size = page_size

    async def handle(self, request: SwiftRequest, account: str, container: str, obj: str) -> SwiftResponse:
        method = request.method
        if method in ("PUT", "POST"):
            value = request.header(MANIFEST)
            if value is not None and not valid_manifest_header(value):
                request.discard_body()
                return SwiftResponse.text(400, BAD_MANIFEST)
        elif method in ("GET", "HEAD") and request.params.get("multipart-manifest") != "get":
            return await self._get(request, account)
        return await self.app(request)

    async def _get(self, request: SwiftRequest, account: str) -> SwiftResponse:
        # A manifest's own body is not served: the node need not apply the Range to it
        # (slo above may have asked the same for its manifests).
        ignore = request.header(IGNORE_RANGE)
        request.headers[IGNORE_RANGE] = f"{ignore}, {MANIFEST}" if ignore else MANIFEST
        response = await self.app(request)
        value = response.headers.get(MANIFEST)
        if value is None:
            return response
        target = manifest_target(value)
        if target is None:
            log.warn("{trans_id}: {path} has an unusable X-Object-Manifest {value!r}; served as it is",
                     trans_id=request.trans_id, path=request.path, value=value)
            return response
        # Whatever the node decided (a 304, 412 or 416 on the manifest itself) is decided
        # again below on the large object.
        response.discard_body()
        listing = Listing(self.app, request, account, *target, self.page_size)
        try:
            survey = await listing.survey(self.max_segments)
        except ListingError as err:
            log.info("{trans_id}: {path}: {reason}", trans_id=request.trans_id, path=request.path,
                     reason=err.reason)
            if request.method == "HEAD":
                return SwiftResponse.empty(err.status)
            return SwiftResponse.text(err.status, err.reason)
        headers = response.headers
        for name in ("Content-Length", "Content-Range", "ETag", "Accept-Ranges"):
            headers.pop(name)
        if survey is not None:
            headers["ETag"] = f'"{survey.etag}"'
            headers["Accept-Ranges"] = "bytes"  # else a Range is ignored
        modified = parse_http_date(headers.get("Last-Modified") or "")
        status = evaluate(
            request.method,
            etag=survey.etag if survey is not None else NO_ETAG,
            last_modified=int(modified) if modified is not None else None,
            if_match=request.header("If-Match"),
            if_none_match=request.header("If-None-Match"),
            if_modified_since=request.header("If-Modified-Since"),
            if_unmodified_since=request.header("If-Unmodified-Since"),
        )
        if status != 200:
            return SwiftResponse(status, headers, b"")
        if survey is None:  # too many segments to promise a length: the whole, streamed
            if request.method == "HEAD":
                return SwiftResponse(200, headers, BytesSource(b""))  # no Content-Length to claim
            return await segmented_response(self.app, request, SOURCE, 200, headers, listing.everything())
        total = survey.total
        wanted = request.header("Range")
        if wanted and "," in wanted.partition("=")[2]:
            wanted = None  # several ranges: Swift's dlo serves the whole object (200), as do we
        try:
            ranges = parse_range(wanted, total)
        except Unsatisfiable:
            return SwiftResponse.text(416, "Requested Range Not Satisfiable",
                                      {"Content-Range": f"bytes */{total}", "Accept-Ranges": "bytes"})
        if ranges is None:
            status = 200
            headers["Content-Length"] = str(total)
            pieces = listing.pieces(survey, 0, total - 1)
        else:
            status = 206
            first, last = ranges[0]
            headers["Content-Range"] = content_range(first, last, total)
            headers["Content-Length"] = str(last - first + 1)
            pieces = listing.pieces(survey, first, last)
        if request.method == "HEAD" or total == 0:
            await pieces.aclose()
            return SwiftResponse(status, headers, b"")
        return await segmented_response(self.app, request, SOURCE, status, headers, pieces)



def _build(app, settings: dict[str, Any], proxy) -> DynamicLargeObjects:
    proxy.info.register("dlo", max_segments=settings["max_segments"])
    return DynamicLargeObjects(app, settings["max_segments"], proxy.context.constraints.container_listing_limit)


middleware = Middleware("dlo", _build, options=OPTIONS)
