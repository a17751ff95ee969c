# -*- test-case-name: txstore.test.unit.test_streaming -*-
"""
Request bodies as streams: the resource runs when the headers are in, and reads the body as it
arrives, with backpressure.

twisted.web buffers a whole request body (in memory, or a temp file past 100 KB) before any
resource sees the request. An object store cannot: a 5 GiB PUT would be spooled whole, a
client that goes away mid-body would still cost the spool, and a refusal (401, 413, 507) could
only come after the whole upload. This module is the one place that bends twisted.web's
internals to stream instead; it is small and tested on its own because of that.

How it works:

- `StreamingRequest.gotLength` (called by the channel once all headers are parsed) sets the
  request up as ``requestReceived`` would and renders it at once, with ``request.body`` a
  `RequestBody`. Requests without a body (length 0) take Twisted's ordinary path.
- The channel's chunks arrive in `handleContentChunk` and are queued in the `RequestBody`;
  past ``high_water`` bytes queued, the client's transport is paused, and it is resumed when a
  reader drains the queue (`txstore.common.flow.InboundQueue`). What is queued stays bounded
  by ``high_water`` plus one socket read.
- The channel's own ``100 Continue`` is suppressed: the body sends it on the first `read`, so a
  handler that refuses the request early never invites the client to send the body.
- A response finished before the body ended closes the connection (the rest of the body is
  never read), since the next request on it could not be found.
- A client that goes away fails the pending and later reads with `BodyIncomplete`.
"""

from __future__ import annotations

from io import BytesIO

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, _ChunkedTransferDecoder, parse_qs
from twisted.web.server import Request, Site
from zope.interface import implementer

from txstore.common.eager_writes import cork, uncork
from txstore.common.flow import InboundQueue
from txstore.interfaces import IByteSource

DEFAULT_HIGH_WATER = 1024 * 1024
# While a body of at least LARGE_BODY bytes (or of unknown length) arrives, the connection reads
# up to BODY_READ_SIZE bytes per socket read instead of Twisted's 64 KiB: a sixteenth of the
# trips through the reactor, the channel, the body's queue and the handler per byte
# (docs/performance.rst, "Larger reads while a body streams"). Only then: the same attribute
# sets how much a response buffers before its producer pauses.
LARGE_BODY = 1024 * 1024
BODY_READ_SIZE = 1024 * 1024


class BodyIncomplete(Exception):
    """The client went away (or the connection failed) before the whole body arrived."""


@implementer(IByteSource)
class RequestBody:
    """The body of one request, read chunk by chunk with ``await body.read()``."""

    def __init__(self, request: StreamingRequest, length: int | None, high_water: int = DEFAULT_HIGH_WATER) -> None:
        self._request = request
        self.length = length  # None for a chunked body
        self.high_water = high_water
        self.received = 0
        self._queue: InboundQueue[bytes] = InboundQueue(request._transport, high_water)
        self._complete = False
        self._failure: Failure | None = None
        self._waiter: Deferred | None = None
        self._started = False
        self._discarding = False

    @property
    def complete(self) -> bool:
        """Whether the channel has seen the end of the body (not whether it has been read)."""
        return self._complete

    def read(self) -> Deferred:
        """
        The next bytes of the body (whatever has arrived, at least one byte), or ``b""`` once
        the whole body has been read. Fails with `BodyIncomplete` if the client went away.
        """
        if self._waiter is not None:
            raise RuntimeError("one read at a time")
        self._start()
        if self._queue:
            return succeed(b"".join(self._queue.take_all()))
        if self._failure is not None:
            return _failed(self._failure)
        if self._complete:
            return succeed(b"")
        self._queue.resume()
        self._waiter = Deferred()
        return self._waiter

    def discard(self) -> None:
        """Drop what is queued and whatever still arrives (the response will not use it)."""
        self._discarding = True
        self._queue.clear()

    stop = discard  # as an IByteSource

    # --- called by StreamingRequest ------------------------------------------------------

    def _start(self) -> None:
        if not self._started:
            self._started = True
            self._request._send_continue_if_expected()

    def _feed(self, data: bytes) -> None:
        self.received += len(data)
        if self._discarding or not data:
            return
        if self._waiter is not None:  # (a reader waits only on an empty queue)
            waiter, self._waiter = self._waiter, None
            waiter.callback(data)
        else:
            self._queue.put(data)

    def _finish(self) -> None:
        self._complete = True
        self._queue.resume()
        if self._waiter is not None and not self._queue:
            waiter, self._waiter = self._waiter, None
            waiter.callback(b"")

    def _fail(self, reason: Failure) -> None:
        if self._complete:
            return
        self._failure = Failure(BodyIncomplete(f"client went away after {self.received} bytes: {reason.getErrorMessage()}"))
        self._queue.clear()
        if self._waiter is not None:
            waiter, self._waiter = self._waiter, None
            waiter.errback(self._failure)


def _failed(failure: Failure) -> Deferred:
    d: Deferred = Deferred()
    d.errback(failure)
    return d


class StreamingRequest(Request):
    """A `twisted.web.server.Request` whose resource runs before its body has arrived."""

    body: RequestBody
    high_water = DEFAULT_HIGH_WATER

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.body = RequestBody(self, 0, self.high_water)
        self.body._complete = True
        self._streaming = False
        self._continue_expected = False
        self._read_size: int | None = None  # the transport's own, while a large body is read
        # A chunked body's trailer fields (lower-case names), known once the body has ended:
        # where a sender puts what it learns only from the body (an EC PUT's object ETag).
        self.trailers: dict[str, str] = {}
        # Fields the handler sends with its 100 Continue (a node saying it does what was asked).
        self.continue_headers: dict[str, str] = {}

    def gotLength(self, length: int | None) -> None:
        if length == 0:
            super().gotLength(length)
            return
        self._streaming = True
        if length is None or length >= LARGE_BODY:
            self._read_large()
        self.content = BytesIO()
        self.body = RequestBody(self, length, self.high_water)
        channel = self.channel
        expect = self.requestHeaders.getRawHeaders(b"expect")
        self._continue_expected = bool(
            expect and expect[0].lower() == b"100-continue" and channel._version == b"HTTP/1.1"
        )
        self._set_request_line(channel._command, channel._path, channel._version)
        self.process()

    def handleContentChunk(self, data: bytes) -> None:
        if self._streaming:
            self.body._feed(data)
        else:
            super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if not self._streaming:
            super().requestReceived(command, path, version)
            return
        self._read_as_before()
        self.body._finish()

    def _read_large(self) -> None:
        transport = self._transport()
        size = getattr(transport, "bufferSize", None)
        if isinstance(size, int) and size < BODY_READ_SIZE:
            self._read_size = size
            transport.bufferSize = BODY_READ_SIZE

    def _read_as_before(self) -> None:
        if self._read_size is not None:
            transport = self._transport()
            if transport is not None:
                transport.bufferSize = self._read_size
            self._read_size = None

    def _set_request_line(self, command: bytes, path: bytes, version: bytes) -> None:
        """What Request.requestReceived sets up, without its form parsing (bodies are ours)."""
        self.method, self.uri, self.clientproto = command, path, version
        self.args = {}
        if b"?" in path:
            self.path, query = path.split(b"?", 1)
            self.args = parse_qs(query, 1)
        else:
            self.path = path

    def _send_continue_if_expected(self) -> None:
        if self._continue_expected and not self.startedWriting and self.channel is not None:
            self._continue_expected = False
            fields = "".join(f"{name}: {value}\r\n" for name, value in self.continue_headers.items())
            self.channel.transport.write(b"HTTP/1.1 100 Continue\r\n" + fields.encode("latin-1") + b"\r\n")

    def send_interim(self) -> bool:
        """
        A further ``100 Continue`` while the body is still arriving: how a node tells the
        sender it has stored what came so far (an EC archive waiting for its commit line).
        False when it cannot be sent (the response began, or the connection is gone).
        """
        if self.startedWriting or self.channel is None or self.channel.transport is None:
            return False
        self.channel.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return True

    def _transport(self):
        channel = self.channel
        return channel.transport if channel is not None else None

    def _answer_before_body_end(self) -> None:
        """The rest of the body will not be read: this connection cannot carry another request."""
        self._read_as_before()
        if self._streaming and not self.body.complete and self.channel is not None:
            self.body.discard()
            self.channel.persistent = False
            if not self.startedWriting:
                self.setHeader(b"Connection", b"close")

    def write(self, data: bytes) -> None:
        if self.startedWriting:
            super().write(data)
            return
        self._answer_before_body_end()
        # The head and the first piece of the body in one send (txstore.common.eager_writes).
        transport = self._transport()
        held = cork(transport)
        try:
            super().write(data)
        finally:
            if held:
                uncork(transport)

    def finish(self) -> None:
        self._answer_before_body_end()
        super().finish()

    def connectionLost(self, reason: Failure) -> None:
        if self._streaming:
            self.body._fail(reason)
        super().connectionLost(reason)


def quote_raw_target(line: bytes) -> bytes:
    """
    A request line whose target carries raw bytes outside ASCII (UTF-8 names sent unquoted, as
    Swift accepts them), with each such byte percent-encoded: the same path and query once
    unquoted, and a line twisted.web's strict parser accepts (it answers 400 otherwise).
    Anything else malformed is left for that parser to refuse.
    """
    parts = line.split(b" ")
    if len(parts) != 3 or parts[1].isascii():
        return line
    target = b"".join(b"%%%02X" % byte if byte >= 0x80 else bytes((byte,)) for byte in parts[1])
    return b" ".join((parts[0], target, parts[2]))


class _ChunkBodyDecoder(_ChunkedTransferDecoder):
    """
    twisted.web's chunked decoder, but a socket read that falls inside a chunk's data goes on
    as it is: twisted's appends every read to a buffer and copies it out again, two copies of
    every byte, and a body sent as one large chunk (a replicated PUT of known length,
    `txstore.common.body_digest`) is all chunk data.
    """

    def dataReceived(self, data: bytes) -> None:
        if self.state == "BODY" and not self._buffer and data:
            if len(data) < self.length:
                self.length -= len(data)
                self.dataCallback(data)
                return
            head, data = data[: self.length], data[self.length :]
            self.state = "CRLF"
            self.dataCallback(head)
            if not data:
                return
        super().dataReceived(data)


class StreamingChannel(HTTPChannel):
    """
    An HTTPChannel that leaves ``100 Continue`` to the request, survives early answers, takes
    request targets with raw UTF-8 in them (`quote_raw_target`), and answers a transfer coding
    it does not implement with 501.
    """

    # The longest request line or header line taken: Swift's max_header_size (its eventlet
    # server's limit for both), 8192 bytes, against twisted.web's 16384.
    MAX_LENGTH = 8192

    def lineReceived(self, line: bytes) -> None:
        if self._HTTPChannel__first_line and not line.isascii():  # the request line
            line = quote_raw_target(line)
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        """
        A line over MAX_LENGTH: answered as Swift answers it (414 for the request line, 400
        for a header line) with the reason, then closed; twisted.web would close in silence.
        """
        if self._HTTPChannel__first_line:
            status, reason = b"414 Request URI Too Long", b"the request line is over %d bytes" % self.MAX_LENGTH
        else:
            status, reason = b"400 Bad Request", b"Header Line Too Long: a header line is over %d bytes" % self.MAX_LENGTH
        self._answer_and_close(status, reason)

    def _maybeChooseTransferDecoder(self, header: bytes, data: bytes) -> bool:
        """
        A transfer coding before ``chunked`` (``gzip, chunked``) is one we do not implement:
        501 Not Implemented, as Swift answers it (and RFC 9112 section 6.1 asks), where
        twisted.web answers 400. A body whose length cannot be known (``gzip`` alone) stays 400.
        """
        if header == b"Transfer-Encoding":
            codings = [coding.strip().lower() for coding in data.split(b",")]
            if len(codings) > 1 and codings[-1] == b"chunked":
                self._answer_and_close(
                    b"501 Not Implemented",
                    b"Unsupported Transfer-Coding header value specified in Transfer-Encoding header",
                )
                self.length = None
                return False
        chosen = super()._maybeChooseTransferDecoder(header, data)
        decoder = self._transferDecoder
        if type(decoder) is _ChunkedTransferDecoder:
            self._transferDecoder = _ChunkBodyDecoder(decoder.dataCallback, decoder.finishCallback)
        return chosen

    def _answer_and_close(self, status: bytes, reason: bytes) -> None:
        """A plain-text answer from the channel itself, before any request is rendered."""
        body = reason + b"\n"
        self.transport.write(
            b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
        )
        self.loseConnection()

    def _send100Continue(self) -> None:
        if not self.requests:
            return  # already answered: the client must not send the body
        request = self.requests[-1]
        if not isinstance(request, StreamingRequest) or not request._streaming:
            super()._send100Continue()

    def allContentReceived(self) -> None:
        fields = getattr(self._transferDecoder, "_trailerHeaders", None)  # twisted.web keeps, never parses, them
        if fields and self.requests:
            self.requests[-1].trailers = parse_trailers(fields)
        if not self.requests:
            # The response went out before the body ended and the connection is closing.
            self.length = 0
            self._transferDecoder = None
            return
        super().allContentReceived()


def parse_trailers(lines) -> dict[str, str]:
    """A chunked body's trailer lines (``name: value``, bounded by twisted.web) as a dict."""
    fields = {}
    for line in lines:
        name, sep, value = bytes(line).partition(b":")
        if sep and name.strip():
            fields[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return fields


class StreamingSite(Site):
    """A Site whose requests stream their bodies (`StreamingRequest` over `StreamingChannel`)."""

    protocol = StreamingChannel
    requestFactory = StreamingRequest
