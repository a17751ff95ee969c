# -*- test-case-name: txstore.test.integration.test_ec_proxy -*-
"""
An erasure-coded object's GET and HEAD.

HEAD: the first node that answers, its headers translated: the object's length and ETag are
in its EC sysmeta (a node's own ``Content-Length`` and ``ETag`` are its archive's).

GET: the proxy asks ``k`` nodes for their archive (more when some fail or disagree) and keeps
``k`` archives of *one* durable timestamp, the newest that has ``k``; archives of different
timestamps are never decoded together. Their bodies are read a fragment at a time, with the
nodes' backpressure, and each segment is decoded in the EC pool while the one before it goes
to the client: the proxy holds about two segments per request whatever the object's size. A
range is served by fetching only the segments that hold it (a ranged request to each of the
``k`` nodes; ``txstore.ec.layout``).
When one archive breaks off mid-way, the rest is read from another set of ``k`` (another node
for the failed one, from the segment where it stopped); when none is left the response is
aborted, so a client never takes a short or wrong body for a whole one.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice

from attrs import define, field
from twisted.internet.defer import CancelledError, Deferred, gatherResults, succeed
from twisted.logger import Logger
from zope.interface import implementer

from txstore.common.backend_client import StreamedResponse
from txstore.common.http_ranges import (
    Unsatisfiable, content_range, multipart_length, multipart_parts, multipart_trailer, new_boundary, parse_range,
)
from txstore.common.timestamps import Timestamp
from txstore.common.web import ResponseAborted
from txstore.ec.codec import ECCodec
from txstore.ec.layout import ArchiveLayout
from txstore.interfaces import IByteSource
from txstore.proxy.context import ProxyContext
from txstore.proxy.controllers.api import APIError, APIRequest
from txstore.proxy.controllers.base import ContainerInfo, node_failed, node_ok
from txstore.ec.headers import (
    BACKEND_FRAG_INDEX, EC_CONTENT_LENGTH, EC_ETAG, EC_SCHEME, EC_SEGMENT_SIZE, FRAG_INDEX,
)
from txstore.proxy.controllers.obj_get import (
    NOT_FOUND_PAGE, READ_HEADERS, WHOLE_BELOW, ObjectBody, _read_order, ask, drain,
)
from txstore.proxy.messages import HeaderMap, SwiftResponse
from txstore.qos.headers import backend_headers as io_headers
from txstore.ring.ring import Node

log = Logger()

_HIDDEN = {"connection", "keep-alive", "transfer-encoding", "date", "server", "content-length", "etag",
           "content-range", "accept-ranges"}
_EC_SYSMETA = "x-object-sysmeta-ec-"
ETAG_IS_AT = "X-Backend-Etag-Is-At"
IGNORE_RANGE = "x-backend-ignore-range-if-metadata-present"


@define
class Archive:
    """One node's answer with an archive of the object: which index, of which durable version."""

    node: Node
    response: StreamedResponse
    index: int
    timestamp: str

    @classmethod
    def of(cls, node: Node, response: StreamedResponse) -> Archive | None:
        index = response.header(FRAG_INDEX.lower())
        stamp = response.header("x-backend-durable-timestamp") or response.header("x-backend-timestamp")
        if index is None or not index.isdigit() or stamp is None:
            return None
        return cls(node, response, int(index), stamp)


@define
class Sources:
    """What the nodes answered a GET: archives by durable timestamp, and every other answer."""

    k: int
    by_timestamp: dict[str, dict[int, Archive]] = field(factory=dict)
    spare: list[Archive] = field(factory=list)  # duplicates of an index already held
    missing: list[StreamedResponse] = field(factory=list)  # 404s (with their tombstones' times)
    conditional: StreamedResponse | None = None  # a 304 or 412: the answer, whatever else
    failed: int = 0

    def add(self, node: Node, response: StreamedResponse) -> None:
        archive = Archive.of(node, response)
        if archive is None:
            self.spare.append(Archive(node, response, -1, ""))
            return
        held = self.by_timestamp.setdefault(archive.timestamp, {})
        if archive.index in held:
            self.spare.append(archive)
        else:
            held[archive.index] = archive

    def newest(self) -> str | None:
        return max(self.by_timestamp, key=Timestamp.parse, default=None)

    def complete(self) -> str | None:
        """The newest timestamp with ``k`` archives, if any."""
        whole = [stamp for stamp, held in self.by_timestamp.items() if len(held) >= self.k]
        return max(whole, key=Timestamp.parse, default=None)

    def wanted(self) -> int:
        """How many more nodes to ask: enough to complete the newest timestamp seen."""
        newest = self.newest()
        if newest is None:
            return self.k
        if self.complete() == newest:
            return 0
        return self.k - len(self.by_timestamp[newest])

    def release(self, keep: list[Archive] = ()) -> None:
        """Close every answer but ``keep`` (their bodies are not read)."""
        kept = {id(archive.response) for archive in keep}
        for held in self.by_timestamp.values():
            for archive in held.values():
                if id(archive.response) not in kept:
                    abandon(archive.response)
        for archive in self.spare:
            abandon(archive.response)
        self.spare = []


async def get_ec_object(context: ProxyContext, api: APIRequest, info: ContainerInfo, policy) -> SwiftResponse:
    if context.ec is None:
        raise APIError(503, "Service Unavailable: this proxy has no erasure-coding support")
    codec = context.ec.codec(policy)
    ring = context.rings.object_ring(info.policy_index)
    part = ring.get_part(api.account, api.container, api.obj)
    names = (api.account, api.container, api.obj)
    headers = {name: value for name, value in api.headers() if name.lower() in READ_HEADERS and name.lower() != "range"}
    # Conditionals compare the whole object's ETag (after any a middleware asked for first).
    asked = next((value for name, value in headers.items() if name.lower() == ETAG_IS_AT.lower()), None)
    headers = {name: value for name, value in headers.items() if name.lower() != ETAG_IS_AT.lower()}
    headers[ETAG_IS_AT] = f"{asked}, {EC_ETAG}" if asked else EC_ETAG
    headers.update({"X-Trans-Id": api.trans_id, "X-Backend-Storage-Policy-Index": str(info.policy_index),
                    **io_headers(api.request.environ)})
    nodes = _read_order(context, ring.get_part_nodes(part), ring.get_more_nodes(part), info.policy_index)
    if api.method == "HEAD":
        return await _head(context, api, nodes, part, names, headers)

    sources = Sources(codec.k)
    while (want := sources.wanted()) > 0 and sources.conditional is None:
        batch = list(islice(nodes, want))
        if not batch:
            break
        answers = await gatherResults(
            [Deferred.fromCoroutine(_ask(context, "GET", node, part, names, headers)) for node in batch]
        )
        for node, response in zip(batch, answers):
            _classify(context, sources, node, response)
    if sources.conditional is not None:
        sources.release()
        return await _answer_without_body(context, sources.conditional)
    stamp = sources.complete()
    newer_tombstone = any(
        Timestamp.parse(response.header("x-backend-timestamp")) > Timestamp.parse(stamp)
        for response in sources.missing if stamp is not None and response.header("x-backend-timestamp")
    )
    if stamp is None or newer_tombstone:
        sources.release()
        if sources.missing and (stamp is not None or not sources.by_timestamp):
            return SwiftResponse(404, HeaderMap({"Content-Type": "text/html; charset=UTF-8",
                                                 "Content-Length": str(len(NOT_FOUND_PAGE))}), NOT_FOUND_PAGE)
        raise APIError(503, f"Service Unavailable: fewer than {codec.k} fragment archives of one version answered")
    chosen = list(sources.by_timestamp[stamp].values())[: codec.k]
    spares = [archive for archive in sources.by_timestamp[stamp].values() if archive not in chosen]
    written = {archive.response.header(EC_SCHEME.lower()) for archive in chosen} - {None, codec.scheme}
    if written:
        # Decoded by another backend, the fragments would give wrong bytes, without an error.
        sources.release()
        raise APIError(503, f"Service Unavailable: the object was encoded as {sorted(written)[0]!r} and the"
                            f" policy now says {codec.scheme!r}; a policy's ec_type must not change")
    sources.release(keep=chosen + spares)
    first = chosen[0].response
    length = int(first.header(EC_CONTENT_LENGTH.lower()) or 0)
    segment_size = int(first.header(EC_SEGMENT_SIZE.lower()) or codec.segment_size)
    layout = ArchiveLayout.of(codec, length, segment_size)
    out = _client_headers(first, length)
    wanted = api.header("Range")
    ignore = [name.strip().lower() for name in (api.header(IGNORE_RANGE) or "").split(",") if name.strip()]
    if wanted is not None and any(first.header(name) is not None for name in ignore):
        wanted = None
    try:
        ranges = parse_range(wanted, length)
    except Unsatisfiable:
        for archive in chosen + spares:
            abandon(archive.response)
        out["Content-Range"] = f"bytes */{length}"
        return SwiftResponse(416, out, b"")
    reader = _Reader(context, codec, layout, part, names, headers, stamp, chosen, spares, nodes, api.trans_id)
    if ranges is None:
        status, parts, trailer = 200, [(b"", 0, length - 1)], b""
        out["Content-Length"] = str(length)
    elif len(ranges) == 1:
        (low, high), = ranges
        status, parts, trailer = 206, [(b"", low, high)], b""
        out["Content-Range"] = content_range(low, high, length)
        out["Content-Length"] = str(high - low + 1)
    else:
        boundary = new_boundary()
        content_type = out.get("Content-Type", "application/octet-stream")
        status = 206
        parts = list(multipart_parts(ranges, length, content_type, boundary))
        trailer = multipart_trailer(boundary)
        out["Content-Type"] = f"multipart/byteranges;boundary={boundary}"
        out["Content-Length"] = str(multipart_length(ranges, length, content_type, boundary))
    body = ECBody(reader, parts, trailer)
    if length == 0:
        body.stop()
        return SwiftResponse(status, out, b"")
    if length > WHOLE_BELOW:
        return SwiftResponse(status, out, body)
    # A small object is decoded whole before the answer: a failure is a 503, not a broken body.
    pieces = []
    try:
        while piece := await body.read():
            pieces.append(piece)
    except ResponseAborted as err:
        raise APIError(503, f"Service Unavailable: {err}") from None
    finally:
        body.stop()
    return SwiftResponse(status, out, b"".join(pieces))


async def _ask(context, method, node, part, names, headers) -> StreamedResponse | None:
    try:
        return await ask(context, method, node, part, names, headers)
    except CancelledError:
        raise
    except Exception as err:
        log.warn("{trans_id}: EC {method} from {node} failed: {error}", trans_id=headers.get("X-Trans-Id", "-"),
                 method=method, node=node.device_name, error=err)
        node_failed(context, node, err)
        return None


def _classify(context, sources: Sources, node: Node, response: StreamedResponse | None) -> None:
    if response is None:
        sources.failed += 1
        return
    status = response.status
    if status >= 500 or status == 507:
        node_failed(context, node)
        sources.failed += 1
        abandon(response)
        return
    node_ok(context, node)
    if status == 200:
        sources.add(node, response)
    elif status in (304, 412) and sources.conditional is None:
        sources.conditional = response
    else:
        if status == 404:
            sources.missing.append(response)
        abandon(response)


async def _head(context, api, nodes: Iterator[Node], part, names, headers) -> SwiftResponse:
    not_found = False
    for node in nodes:
        response = await _ask(context, "HEAD", node, part, names, headers)
        if response is None:
            continue
        if response.status >= 500:
            node_failed(context, node)
            await drain(context, response)
            continue
        node_ok(context, node)
        if response.status in (200, 304, 412):
            return await _answer_without_body(context, response)
        await drain(context, response)
        not_found = not_found or response.status == 404
    if not_found:
        return SwiftResponse(404, HeaderMap({"Content-Type": "text/html; charset=UTF-8",
                                             "Content-Length": str(len(NOT_FOUND_PAGE))}), b"")
    raise APIError(503, "Service Unavailable: no object server answered")


async def _answer_without_body(context, response: StreamedResponse) -> SwiftResponse:
    """A HEAD's answer, or a conditional GET's 304/412, in the object's own terms."""
    await drain(context, response)
    length_header = response.header(EC_CONTENT_LENGTH.lower())
    length = int(length_header) if length_header and length_header.isdigit() else None
    out = _client_headers(response, length)
    if length is not None and response.status == 200:
        out["Content-Length"] = str(length)
    return SwiftResponse(response.status, out, b"")


def _client_headers(response: StreamedResponse, length: int | None) -> HeaderMap:
    out = HeaderMap({name: value for name, value in response.headers.items()
                     if name not in _HIDDEN and not name.startswith(("x-backend-", _EC_SYSMETA))})
    etag = response.header(EC_ETAG.lower())
    if etag is not None:
        out["ETag"] = etag
    out["Accept-Ranges"] = "bytes"
    return out


def abandon(response: StreamedResponse) -> None:
    """Close a node's answer without reading its body."""
    response.abandon()


class _Fragments:
    """
    One archive's body, read a fragment (a given number of bytes) at a time. The node's pieces
    are kept as they came and joined once per fragment: only the piece that straddles two
    fragments is cut.
    """

    def __init__(self, archive: Archive, body: ObjectBody) -> None:
        self.archive = archive
        self._body = body
        self._held: list[bytes] = []
        self._count = 0

    async def take(self, size: int) -> bytes:
        held = self._held
        while self._count < size:
            piece = await self._body.read()
            if not piece:
                raise ResponseAborted(f"the archive from {self.archive.node.device_name} ended early")
            held.append(piece)
            self._count += len(piece)
        over = self._count - size
        if over:
            last = held[-1]
            held[-1] = last[:len(last) - over]
            rest = [last[len(last) - over:]]
        else:
            rest = []
        fragment = held[0] if len(held) == 1 else b"".join(held)
        self._held, self._count = rest, over
        return fragment

    def stop(self) -> None:
        self._body.stop()


@define(eq=False)
class _Reader:
    """
    Decoded segments of one durable version, from ``k`` archives: opens ranged reads for the
    segments asked, and replaces an archive that fails by another node's.
    """

    context: ProxyContext
    codec: ECCodec
    layout: ArchiveLayout
    _part: int
    _names: tuple  # account, container, object
    _headers: dict[str, str]
    _stamp: str
    _whole: list[Archive]  # whole-archive answers, not read yet: used by a read from segment 0
    _spares: list[Archive]
    _nodes: Iterator[Node]
    _trans_id: str
    _known: dict[int, Node] = field(init=False)  # archive index -> the node that has it
    _failed: set[Node] = field(factory=set, init=False)
    _open: list[_Fragments] = field(factory=list, init=False)
    _next_segment: int = field(default=-1, init=False)  # the segment the open archives are at

    @_known.default
    def _archives_known(self) -> dict[int, Node]:
        return {archive.index: archive.node for archive in self._whole + self._spares}

    async def segment(self, number: int) -> bytes:
        """The bytes of segment ``number`` (segments are asked for in increasing order)."""
        while True:
            if self._next_segment != number or not self._open:
                await self._open_at(number)
            size = self.layout.fragment_size if number < self.layout.segments - 1 else self.layout.last_fragment_size
            fragments = await gatherResults([Deferred.fromCoroutine(self._take(source, size)) for source in self._open])
            if any(fragment is None for fragment in fragments):
                for source in self._open:
                    source.stop()
                self._open = []
                continue  # reopened at this segment, without the archives that failed
            length = self.layout.segment_length(number)
            segment = await self.context.ec.run_segment(length, self.codec.decode, fragments)
            if len(segment) != length:
                self.stop()
                raise ResponseAborted(f"segment {number} decoded to {len(segment)} bytes, not {length}")
            self._next_segment = number + 1
            return segment

    async def _take(self, source: _Fragments, size: int) -> bytes | None:
        """The next fragment of ``source``; None when its archive broke off (its node is not asked again)."""
        try:
            return await source.take(size)
        except ResponseAborted as err:
            log.warn("{trans_id}: the archive from {node} broke off: {error}", trans_id=self._trans_id,
                     node=source.archive.node.device_name, error=err)
            self._failed.add(source.archive.node)
            self._known.pop(source.archive.index, None)
            return None

    async def _open_at(self, number: int) -> None:
        """Open ``k`` archives of the version at segment ``number`` (from the start: the GET's own)."""
        for source in self._open:
            source.stop()
        self._open = []
        if number == 0 and self._whole:
            whole, self._whole = self._whole, []
            self._open = [self._source(archive) for archive in whole]
            self._next_segment = 0
            return
        self._release_whole()
        first, _ = self.layout.archive_range(number, number)
        _, last = self.layout.archive_range(self.layout.segments - 1, self.layout.segments - 1)
        ranged = {**self._headers, "Range": f"bytes={first}-{last}"}
        opened: list[_Fragments] = []
        tried: set[Node] = set()
        # The nodes known to hold an archive of this version first, then any node not yet asked.
        candidates = [(index, node) for index, node in sorted(self._known.items()) if node not in self._failed]
        candidates += [(None, node) for node in self._nodes if node not in self._failed]
        for index, node in candidates:
            if len(opened) == self.codec.k:
                break
            if node in tried and index is None:
                continue
            tried.add(node)
            headers = dict(ranged)
            if index is not None:
                headers[BACKEND_FRAG_INDEX] = str(index)
            response = await _ask(self.context, "GET", node, self._part, self._names, headers)
            if response is None:
                self._failed.add(node)
                continue
            archive = Archive.of(node, response)
            if (response.status != 206 or archive is None or archive.timestamp != self._stamp
                    or any(source.archive.index == archive.index for source in opened)):
                abandon(response)
                continue
            opened.append(self._source(archive))
        if len(opened) < self.codec.k:
            for source in opened:
                source.stop()
            raise ResponseAborted(f"fewer than {self.codec.k} fragment archives could be read from segment {number}")
        self._open = opened
        self._next_segment = number

    def _source(self, archive: Archive) -> _Fragments:
        body = ObjectBody(archive.response, self.context.reactor, self.context.node_timeout, None, None,
                          self._trans_id)
        return _Fragments(archive, body)

    def _release_whole(self) -> None:
        whole, self._whole = self._whole, []
        for archive in whole:
            abandon(archive.response)

    def stop(self) -> None:
        self._release_whole()
        for archive in self._spares:
            abandon(archive.response)
        self._spares = []
        for source in self._open:
            source.stop()
        self._open = []


_UNPLANNED = object()


@implementer(IByteSource)
class ECBody:
    """The response body: ``parts`` (prefix, first, last byte of the object), then ``trailer``."""

    def __init__(self, reader: _Reader, parts: list[tuple[bytes, int, int]], trailer: bytes) -> None:
        self._reader = reader
        self._steps = self._plan(parts, trailer)
        self._coming: object = _UNPLANNED  # the step after the one being read
        self._ahead: Deferred | None = None  # the coming step's segment, read and decoded early
        self._stopped = False

    def _plan(self, parts, trailer) -> Iterator:
        layout = self._reader.layout
        for prefix, first, last in parts:
            if prefix:
                yield prefix
            start, end = layout.segments_for(first, last)
            for number in range(start, end + 1):
                offset = layout.object_offset(number)
                yield (number, max(first - offset, 0), min(last - offset, layout.segment_length(number) - 1))
        if trailer:
            yield trailer

    def read(self) -> Deferred:
        if self._stopped:
            return succeed(b"")
        return Deferred.fromCoroutine(self._read())

    async def _read(self) -> bytes:
        step = next(self._steps, None) if self._coming is _UNPLANNED else self._coming
        self._coming = next(self._steps, None)
        if step is None:
            self.stop()
            return b""
        if isinstance(step, bytes):
            return step
        number, low, high = step
        try:
            segment = await self._segment(number)
        except BaseException:
            self.stop()
            raise
        if isinstance(self._coming, tuple) and not self._stopped:
            # The next segment is fetched and decoded while this one goes to the client: the
            # nodes and the EC pool keep working while the client's connection drains.
            self._ahead = Deferred.fromCoroutine(self._reader.segment(self._coming[0]))
        if low == 0 and high == len(segment) - 1:
            return segment
        return segment[low:high + 1]

    def _segment(self, number: int) -> Deferred:
        """Segment ``number``: read ahead when it was the coming step (a segment right after one)."""
        ahead, self._ahead = self._ahead, None
        return ahead if ahead is not None else Deferred.fromCoroutine(self._reader.segment(number))

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            ahead, self._ahead = self._ahead, None
            self._reader.stop()
            if ahead is not None:
                ahead.addErrback(lambda _: None)  # its sources are stopped: its failure is no news
