# -*- test-case-name: txstore.test.unit.test_slo -*-
"""
The body of a composed object (a static or dynamic large object): its segments read one after
the other with GET sub-requests, streamed to the client with the pipeline's backpressure.

A `SegmentedBody` is an `IByteSource` over *pieces*: literal bytes (a data segment, the part
headers of a multipart/byteranges answer) and `SegmentRead`\\ s, each a byte range of one
stored object. The pieces come from an async iterator, so a manifest that nests other manifests
is expanded only as far as the read has got, and a listing-driven object (DLO) is listed page by
page.

While one segment streams, the next one's GET is already sent: its connection and first bytes
are ready when the current one ends, so a segmented download does not pause at each boundary.
At most two segments are open, each holding what the object GET path buffers (its high-water
mark), so the memory a download takes does not grow with the object.

Each segment must answer as the manifest says: 200 (or 206 for a part of it) with exactly the
bytes asked for. One that answers otherwise (gone, overwritten since the manifest was written,
so that its ``If-Match`` fails, unreadable to the requester) fails the read with
`ResponseAborted`, so the client's connection is aborted rather than given wrong or short
bytes. `prime` opens the first segment before any header is sent, so a manifest whose first
segment is bad is answered with an error status instead (Swift's 409): `segmented_response`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from attrs import frozen
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.logger import Logger
from zope.interface import implementer

from txstore.common.web import ResponseAborted
from txstore.interfaces import IByteSource
from txstore.proxy import subrequest
from txstore.proxy.messages import HeaderMap, SwiftRequest, SwiftResponse

log = Logger()


@frozen
class SegmentRead:
    """Bytes ``first``..``last`` (inclusive) of the object at ``path`` (``/v1/a/c/o``, decoded)."""

    path: str
    first: int
    last: int
    size: int | None = None  # the whole segment's size, when known (a whole read needs no Range)
    etag: str | None = None  # the segment's ETag, when the manifest pins it (sent as If-Match)

    @property
    def length(self) -> int:
        return self.last - self.first + 1

    @property
    def whole(self) -> bool:
        return self.first == 0 and self.size is not None and self.last == self.size - 1

    def headers(self) -> dict[str, str]:
        """The GET's headers: the pinned ETag, and the range unless the whole segment is read."""
        headers = {}
        if self.etag:
            headers["If-Match"] = self.etag
        if not self.whole:
            headers["Range"] = f"bytes={self.first}-{self.last}"
        return headers


class SegmentError(Exception):
    """A segment did not answer as its manifest says (its status or its length)."""


Piece = bytes | SegmentRead
Fetch = Callable[[SegmentRead], Awaitable[SwiftResponse]]


class _Open:
    """A segment whose GET has answered: its body still to read, and how much of it is owed."""

    def __init__(self, piece: SegmentRead, response: SwiftResponse) -> None:
        self.piece = piece
        self.source = response.body_source()
        self.remaining = piece.length

    def stop(self) -> None:
        self.source.stop()


@implementer(IByteSource)
class SegmentedBody:
    def __init__(self, pieces: AsyncIterator[Piece], fetch: Fetch, trans_id: str = "-") -> None:
        self._pieces = pieces
        self._fetch = fetch
        self._trans_id = trans_id
        self._current: _Open | None = None
        self._ahead: Deferred | None = None  # the next piece, opened while the current streams
        self._stopped = False
        self._ended = False

    async def prime(self) -> None:
        """Open the first piece now; raises `SegmentError` when it cannot be read as promised."""
        if self._ahead is None and self._current is None and not self._ended:
            self._ahead = Deferred.fromCoroutine(self._open_next())
        if self._ahead is not None:
            opened = await self._ahead
            self._ahead = succeed(opened)

    # --- IByteSource -------------------------------------------------------------------------

    def read(self) -> Deferred:
        return Deferred.fromCoroutine(self._read())

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._current is not None:
            self._current.stop()
            self._current = None
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            ahead.addCallback(_stop_opened)
            ahead.addErrback(lambda _failure: None)
            ahead.cancel()
        close = getattr(self._pieces, "aclose", None)
        if close is not None:
            Deferred.fromCoroutine(close()).addErrback(lambda _failure: None)

    # --- reading -----------------------------------------------------------------------------

    async def _read(self) -> bytes:
        try:
            return await self._next_chunk()
        except (SegmentError, ResponseAborted) as err:
            self.stop()
            log.warn("{trans_id}: large object read broke off: {error}", trans_id=self._trans_id, error=err)
            raise ResponseAborted(str(err)) from None
        except CancelledError:
            self.stop()
            raise

    async def _next_chunk(self) -> bytes:
        while not self._stopped:
            current = self._current
            if current is None:
                if self._ended:
                    return b""
                if self._ahead is None:
                    self._ahead = Deferred.fromCoroutine(self._open_next())
                ahead, self._ahead = self._ahead, None
                opened = await ahead
                if opened is None:
                    self._ended = True
                    return b""
                if isinstance(opened, bytes):
                    if opened:
                        return opened
                    continue
                self._current = current = opened
                # The next segment's GET goes out now, while this one streams.
                self._ahead = Deferred.fromCoroutine(self._open_next())
            chunk = await current.source.read()
            if not chunk:
                self._current = None
                current.stop()
                if current.remaining:
                    raise SegmentError(f"segment {current.piece.path} ended {current.remaining} bytes short")
                continue
            if len(chunk) > current.remaining:
                raise SegmentError(f"segment {current.piece.path} is longer than its manifest says")
            current.remaining -= len(chunk)
            return chunk
        return b""

    async def _open_next(self) -> _Open | bytes | None:
        """The next piece: bytes, an opened segment, or None at the end."""
        try:
            piece = await self._pieces.__anext__()
        except StopAsyncIteration:
            return None
        if isinstance(piece, bytes):
            return piece
        if piece.length <= 0:
            return b""
        response = await self._fetch(piece)
        expected = (200,) if piece.whole else (206, 200) if piece.first == 0 else (206,)
        if response.status not in expected:
            response.discard_body()
            raise SegmentError(f"segment {piece.path} answered {response.status}")
        if response.status == 200:
            # The whole object: its length must be what the manifest says (a resized first
            # segment is then refused before the answer, not mid-body).
            length = response.headers.get("Content-Length")
            if length is not None and (not length.isdigit() or int(length) - 1 != piece.last):
                response.discard_body()
                raise SegmentError(f"segment {piece.path} is not the size its manifest says")
        return _Open(piece, response)


def _stop_opened(opened) -> None:
    if isinstance(opened, _Open):
        opened.stop()


async def segmented_response(app, request: SwiftRequest, source: str, status: int, headers: HeaderMap,
                             pieces: AsyncIterator[Piece]) -> SwiftResponse:
    """
    The answer that streams ``pieces``, each segment read by a GET sub-request of ``request``
    (its ``source`` the middleware's) to ``app``, once the first segment has answered; a 409
    when that one cannot be read as promised.
    """
    def fetch(piece: SegmentRead) -> Awaitable[SwiftResponse]:
        return app(subrequest.make(request, "GET", piece.path, source=source, headers=piece.headers()))

    body = SegmentedBody(pieces, fetch, request.trans_id)
    try:
        await body.prime()
    except SegmentError as err:
        body.stop()
        return SwiftResponse.text(409, f"Conflict: {err}")
    return SwiftResponse(status, headers, body)
