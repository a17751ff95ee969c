# -*- test-case-name: txstore.test.unit.test_put_connection -*-
"""
One object PUT from the proxy to one storage node, as a small HTTP/1.1 client protocol.

The framing is written here rather than taken from h11: measured on this machine, a whole
pooled exchange (head, 100 Continue, a 4 KiB body, the answer) costs 81 µs through h11 0.16,
43 µs through its mypyc build and 11 µs here, and a client PUT makes three of them, so h11
would add a sixth to the proxy's CPU per small PUT (docs/proxy.rst). What is parsed is small
and bounded: a status line, headers, and an answer body delimited by Content-Length or by the
end of the connection, each with a size limit; anything else breaks the exchange (NodeGone).

Why not twisted.web's Agent: a PUT must learn whether the node will take the body *before*
sending it (``Expect: 100-continue``), so that a refused or full node is replaced by a handoff
while nothing is lost yet; and the proxy must feel each node's backpressure, to read from the
client only as fast as the slowest node takes. This protocol does both:

- `ready` fires with None on ``100 Continue`` (its fields in `continue_headers`), or with the
  node's final `NodeAnswer` if it answered without inviting the body (507, 409, 412, ...).
- `wait_stored()` fires with None on a second ``100 Continue`` (an EC archive stored, waiting
  for its commit line: `txstore.ec.headers`), or with the final answer if that came instead.
- `write` / `finish` send the body (chunked framing when asked: a chunk per write when the
  length is unknown, one chunk for the whole body when ``X-Backend-Obj-Content-Length`` gives
  it, so that trailer fields can follow a body of known length: ``txstore.common.body_digest``;
  an EC archive of ``X-Backend-Ec-Archive-Length`` bytes as one chunk, then a chunk per write);
  the connection is its transport's push producer, so `writable` is False while the node's socket
  buffer is full, and `wait_writable` waits for it to drain (`txstore.common.flow.DrainWaiter`).
- `answer` fires with the final `NodeAnswer` (its body read whole: nodes answer in one line),
  or fails with `NodeGone` when the connection ends first.

Connections are kept for the next PUT to the same node (`PutConnectionPool`): a new TCP
connection per replica per PUT costs a handshake and a node-side accept on every small
object, and under load those connects are what timed out. A connection goes back to the pool
only after a clean exchange: the whole body sent, then an HTTP/1.1 answer delimited by its
Content-Length without ``Connection: close`` and nothing after it. Anything else (an answer
before the body, an abort, a timeout) closes it. A pooled connection the node closed while
it was idle can only fail before the node said anything, and nothing but the head was sent
on it, so the pool retries once on a new connection; whatever happens then is the node's
answer as before (a handoff replaces a node that fails).
"""

from __future__ import annotations

from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from txstore.common.connect import connect
from txstore.common.eager_writes import no_delay
from txstore.common.flow import DrainWaiter, DrainedProducer

MAX_HEAD = 64 * 1024
MAX_ANSWER_BODY = 64 * 1024


class NodeGone(Exception):
    """The node closed the connection (or broke the protocol) before answering."""


@frozen
class NodeAnswer:
    status: int
    headers: dict[str, str]
    body: bytes

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)


@frozen
class PutRequest:
    """
    What a PUT sends before its body: the (quoted) target, the node, the headers. Also a
    body-less request of another method (a container update's DELETE), whose answer is all
    there is to it.
    """

    target: str
    host: str
    headers: tuple[tuple[str, str], ...]
    method: str = "PUT"

    @classmethod
    def of(cls, target: str, host: str, headers: dict[str, str], method: str = "PUT") -> PutRequest:
        return cls(target, host, tuple(headers.items()), method)

    @property
    def bodiless(self) -> bool:
        """Sent whole with its head: ``Content-Length: 0`` and no ``100 Continue`` to wait for."""
        return self.length == 0 and not any(n.lower() == "expect" for n, _ in self.headers)

    @property
    def chunked(self) -> bool:
        return any(n.lower() == "transfer-encoding" and v.lower() == "chunked" for n, v in self.headers)

    @property
    def length(self) -> int | None:
        return self._number("content-length")

    @property
    def one_chunk(self) -> int | None:
        """
        A chunked body's length when the sender knows it (``X-Backend-Obj-Content-Length``):
        it then goes as one chunk of that size, written as it comes, and the trailer fields.
        """
        return self._number("x-backend-obj-content-length") if self.chunked else None

    @property
    def lead_chunk(self) -> int | None:
        """
        The length of a chunked body's leading chunk, written as it comes: the whole body when
        it is `one_chunk`, else an EC archive's (``X-Backend-Ec-Archive-Length``), after which
        the footer and commit lines go as chunks of their own. None (or 0) for none.
        """
        if not self.chunked:
            return None
        one = self.one_chunk
        return one if one is not None else self._number("x-backend-ec-archive-length")

    def _number(self, field: str) -> int | None:
        for name, value in self.headers:
            if name.lower() == field and value.isdigit():
                return int(value)
        return None

    def head(self) -> bytes:
        """
        The request line and headers; for a body with a leading chunk, that chunk's size line.
        The size line goes ahead of ``100 Continue`` (a client may send body bytes before it)
        so that the body's first write is the only bytes in the transport's buffer: twisted
        joins what is buffered before a send, and a size line written just before a 1 MiB
        body cost a copy of the body per replica (docs/performance.rst).
        """
        lines = [f"{self.method} {self.target} HTTP/1.1", f"Host: {self.host}"]
        lines += [f"{name}: {value}" for name, value in self.headers]
        # Values hold bytes as Latin-1 (txstore.proxy.messages), so they go out byte for byte.
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        lead = self.lead_chunk
        return head + b"%x\r\n" % lead if lead else head


@implementer(IPushProducer)
class PutConnection(Protocol, DrainedProducer):
    def __init__(self, request: PutRequest, pool: PutConnectionPool | None = None) -> None:
        self._pool = pool
        self._drain = DrainWaiter()
        self.connected = False
        self.lost: Deferred = Deferred()  # fires (with None) when the connection has ended
        self.exchanges = 0  # PUTs started on this connection
        self._start(request)

    def _start(self, request: PutRequest) -> None:
        self._head = request.head()
        self._chunked = request.chunked
        self._length = request.length
        self._one_chunk = request.one_chunk
        self._lead = request.lead_chunk or None
        self._lead_open = self._lead is not None  # its closing CRLF not written yet
        self._written = 0
        self.ready: Deferred = Deferred()
        self._stored: list = []  # what `wait_stored` gives: [None], [answer] or [failure] once known
        self._stored_waiter: Deferred | None = None
        self.answer: Deferred = Deferred()
        self.continue_headers: dict[str, str] = {}
        self._buffer = b""
        self._status: int | None = None
        self._http11 = False
        self._headers: dict[str, str] = {}
        self._body_left: int | None = None
        self._body = b""
        self._done = False
        self._body_sent = request.bodiless
        self._heard = False  # any byte from the node during this exchange
        self.exchanges += 1

    def reuse(self, request: PutRequest) -> None:
        """Start the next PUT on this (idle, pooled) connection."""
        self._start(request)
        self.transport.write(self._head)

    @property
    def reused(self) -> bool:
        return self.exchanges > 1

    @property
    def heard(self) -> bool:
        """Whether the node sent anything in this exchange (a failure before that may be a stale connection)."""
        return self._heard

    # --- connection ------------------------------------------------------------------------

    def connectionMade(self) -> None:
        self.connected = True
        # A body's last piece and its trailers go out as written, not after a delayed ACK; and
        # so every write is sent at once (txstore.common.eager_writes).
        no_delay(self.transport)
        self.transport.registerProducer(self, True)
        self.transport.write(self._head)

    def dataReceived(self, data: bytes) -> None:
        if self._done:
            if self._pool is not None and self._pool.is_idle(self):
                self.transport.abortConnection()  # nothing may come while idle
            return
        self._heard = True
        self._buffer += data
        while not self._done:
            if self._status is None:
                end = self._buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(self._buffer) > MAX_HEAD:
                        self._broken("response head too large")
                    return
                head, self._buffer = self._buffer[:end], self._buffer[end + 4 :]
                if not self._parse_head(head):
                    return
                if self._status == 100:
                    self._status = None
                    if not self.ready.called:
                        self.continue_headers = self._headers
                        self.ready.callback(None)
                    else:
                        self._settle_stored(None)
                    self._headers = {}
                    continue
            if self._body_left is None:
                self._body += self._buffer
                self._buffer = b""
                if len(self._body) > MAX_ANSWER_BODY:
                    self._broken("answer body too large")
                return
            take = self._buffer[: self._body_left]
            self._buffer = self._buffer[len(take) :]
            self._body += take
            self._body_left -= len(take)
            if self._body_left == 0:
                self._finish_answer()
            return

    def _parse_head(self, head: bytes) -> bool:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            self._broken(f"bad status line {lines[0]!r}")
            return False
        self._status = int(parts[1])
        self._http11 = parts[0] == "HTTP/1.1"
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self._headers = headers
        if self._status == 100:
            return True
        if self._status in (204, 304):
            self._body_left = 0  # no body, whatever the headers say
            self._finish_answer()
            return False
        length = headers.get("content-length")
        if length is not None and length.isdigit():
            self._body_left = int(length)
            if self._body_left > MAX_ANSWER_BODY:
                self._broken("answer body too large")
                return False
            if self._body_left == 0:
                self._finish_answer()
                return False
        return True

    def _finish_answer(self) -> None:
        self._done = True
        answer = NodeAnswer(self._status or 0, self._headers, self._body)
        keep = (
            self._pool is not None and self._body_sent and self._http11 and self._body_left == 0
            and not self._buffer and "close" not in self._headers.get("connection", "").lower()
        )
        # Back to the pool before anyone hears the answer: what they do next (the next update
        # to the same node, at once) finds the connection idle. This exchange's Deferreds are
        # taken first, as the next one's `_start` makes new ones.
        ready, done = self.ready, self.answer
        self._settle_stored(answer)
        if keep and self.connected:
            assert self._pool is not None
            self._pool.release(self)
        else:
            self.close()
        if not ready.called:
            ready.callback(answer)
        done.callback(answer)

    def close(self) -> None:
        """
        End the connection cleanly. The transport's producer goes first: a TLS transport
        closes only once no producer is registered (a plain one would not wait).
        """
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    def wait_stored(self) -> Deferred:
        """None once the node says it stored what it was sent; its final answer if it answered instead."""
        if self._stored:
            known = self._stored[0]
            return fail(known) if isinstance(known, Failure) else succeed(known)
        if self._stored_waiter is None:
            self._stored_waiter = Deferred()
        return self._stored_waiter

    def _settle_stored(self, outcome) -> None:
        if self._stored:
            return
        self._stored.append(outcome)
        waiter, self._stored_waiter = self._stored_waiter, None
        if waiter is None or waiter.called:  # (a waiter given up on: cancelled by its timeout)
            return
        if isinstance(outcome, Failure):
            waiter.errback(outcome)
        else:
            waiter.callback(outcome)

    def _broken(self, why: str) -> None:
        self._done = True
        self.transport.abortConnection()
        self._fail(Failure(NodeGone(why)))

    def _fail(self, failure: Failure) -> None:
        if not self.ready.called:
            self.ready.errback(failure)
        self._settle_stored(failure)
        if not self.answer.called:
            self.answer.errback(failure)
        self._drain.release()

    def connectionLost(self, reason: Failure) -> None:
        self.connected = False
        if self._pool is not None:
            self._pool.forget(self)
        if not self.lost.called:
            self.lost.callback(None)
        if not self._done and self._status is not None and self._body_left is None:
            # An answer delimited by the end of the connection.
            self._finish_answer()
            return
        # (the transport stops its producer just before this; that does not end the exchange)
        self._done = True
        self._fail(Failure(NodeGone(f"connection lost: {reason.getErrorMessage()}")))

    # --- body ------------------------------------------------------------------------------

    def write(self, chunk: bytes) -> None:
        if self._done or not chunk:
            return
        if self._lead is not None and self._written < self._lead:
            # Inside the leading chunk, whose size line went with the head: the bytes alone.
            room = self._lead - self._written
            if len(chunk) <= room:
                self._written += len(chunk)
                self.transport.write(chunk)
                return
            if self._one_chunk is not None:
                self._broken(f"body longer than its {self._one_chunk} bytes")
                return
            # The leading chunk's end and what follows it in one write: the rest is a chunk.
            self._written += room
            self.transport.write(chunk[:room])
            chunk = chunk[room:]
        if self._one_chunk is not None:
            self._broken(f"body longer than its {self._one_chunk} bytes")
            return
        self._written += len(chunk)
        if self._chunked:
            opening = b"%x\r\n" % len(chunk)
            if self._lead_open:
                opening, self._lead_open = b"\r\n" + opening, False
            self.transport.writeSequence([opening, chunk, b"\r\n"])
        else:
            self.transport.write(chunk)

    def finish(self, trailers: dict[str, str] | None = None) -> None:
        """
        The whole body has been written. ``trailers`` (a chunked body's only) are fields known
        once the body is: an EC archive's object ETag and length.
        """
        if self._lead is not None:  # (more may follow it: an EC archive's footer and commit lines)
            expected, short = self._lead, self._written < self._lead
        else:
            expected, short = self._length, self._length is not None and self._written != self._length
        if short and not self._done:
            self._broken(f"body incomplete: {self._written} of {expected} bytes")  # never a short object
            return
        if trailers and not self._chunked:
            raise ValueError("trailer fields need a chunked body")
        self._body_sent = True
        if not self._done and self._chunked:
            fields = "".join(f"{name}: {value}\r\n" for name, value in (trailers or {}).items())
            end = b"\r\n" if self._lead_open else b""  # the leading chunk's own end
            self.transport.write(end + b"0\r\n" + fields.encode("latin-1") + b"\r\n")

    def abort(self) -> None:
        if not self._done:
            self._done = True
            self.transport.abortConnection()

    @property
    def writable(self) -> bool:
        return not self._drain.paused or self._done

    def wait_writable(self) -> Deferred:
        if self.writable:
            return succeed(None)
        return self._drain.wait()

    # --- IPushProducer: the transport's backpressure ---------------------------------------

    def stopProducing(self) -> None:
        # The connection is going; connectionLost (which follows) settles the exchange, so an
        # answer delimited by the end of the connection is still read there.
        self._drain.resume()


class PutConnectionPool:
    """
    Idle PUT connections per node, at most ``max_idle_per_node`` each (the rest are closed).
    `open` takes an idle one or connects (through TLS with the cluster's credentials ``tls``);
    `close` (at proxy stop) closes every idle one.
    """

    def __init__(self, reactor: Any, connect_timeout: float = 2.0, max_idle_per_node: int = 16,
                 tls: Any = None) -> None:
        self._reactor = reactor
        self._tls = tls
        self._tls_options: dict[str, Any] = {}  # host -> client options (one SSL context each)
        self.connect_timeout = connect_timeout
        self.max_idle_per_node = max_idle_per_node
        self._idle: dict[tuple[str, int], list[PutConnection]] = {}
        self._where: dict[PutConnection, tuple[str, int]] = {}
        self._closed = False
        self.connects = 0  # new connections made (for tests and figures)

    async def open(self, host: str, port: int, request: PutRequest, ready_timeout: float):
        """
        A connection to the node with ``head`` sent, and what its `ready` said: None (100
        Continue: send the body) or the node's `NodeAnswer`. Fails as `ready` does (`NodeGone`,
        a timeout, a refused connection); the connection is then closed.
        """
        key = (host, port)
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.connected:
                continue
            conn.reuse(request)
            try:
                return conn, await self._ready(conn, ready_timeout)
            except NodeGone:
                if conn.heard:
                    raise
                # The node closed it while it was idle: nothing was sent but the head.
        self.connects += 1
        conn = await connect(self._reactor, host, port, PutConnection(request, self), self.connect_timeout,
                             self._options_for(host))
        self._where[conn] = key
        return conn, await self._ready(conn, ready_timeout)

    async def _ready(self, conn: PutConnection, timeout: float) -> NodeAnswer | None:
        ready = conn.ready
        ready.addTimeout(timeout, self._reactor)
        try:
            return await ready
        except BaseException:
            conn.answer.addErrback(lambda _failure: None)
            conn.abort()
            raise

    def _options_for(self, host: str) -> Any:
        if self._tls is None:
            return None
        options = self._tls_options.get(host)
        if options is None:
            options = self._tls_options[host] = self._tls.options_for(host)
        return options

    def release(self, conn: PutConnection) -> None:
        """A connection whose exchange ended cleanly: keep it for the next PUT to its node."""
        key = self._where.get(conn)
        if key is None or self._closed:
            conn.close()
            return
        idle = self._idle.setdefault(key, [])
        if len(idle) >= self.max_idle_per_node:
            conn.close()
            return
        idle.append(conn)

    def is_idle(self, conn: PutConnection) -> bool:
        key = self._where.get(conn)
        return key is not None and conn in self._idle.get(key, ())

    def forget(self, conn: PutConnection) -> None:
        """The connection has ended."""
        key = self._where.pop(conn, None)
        idle = self._idle.get(key) if key is not None else None
        if idle and conn in idle:
            idle.remove(conn)

    def close(self) -> Deferred:
        """
        Close the idle connections (those in use close when their PUT ends); fires when the
        idle ones have ended.
        """
        self._closed = True
        idle = [conn for conns in self._idle.values() for conn in conns]
        self._idle = {}
        for conn in idle:
            conn.close()
        return DeferredList([conn.lost for conn in idle])
