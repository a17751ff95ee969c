# -*- test-case-name: txstore.test.test_put_connection -*-
"""
One object PUT from the proxy to one storage node, as a small HTTP/1.1 client protocol over
h11 (which does the framing: the request head, chunked bodies, the interim and final answers).

Why not twisted.web's Agent: a PUT must learn whether the node will take the body *before*
sending it (``Expect: 100-continue``), so that a refused or full node is replaced by a handoff
while nothing is lost yet; and the proxy must feel each node's backpressure, to read from the
client only as fast as the slowest node takes. This protocol does both:

- `ready` fires with None on ``100 Continue``, or with the node's final `NodeAnswer` if it
  answered without inviting the body (507, 409, 412, ...).
- `write` / `finish` send the body (chunked framing when the head says ``Transfer-Encoding:
  chunked``); the
  connection is its transport's push producer, so `writable` is False while the node's socket
  buffer is full, and `wait_writable` waits for it to drain.
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

import h11
from attrs import frozen
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from txstore.common.connect import connect

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
    """What a PUT sends before its body: the (quoted) target, the node, the headers."""

    target: str
    host: str
    headers: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, target: str, host: str, headers: dict[str, str]) -> PutRequest:
        return cls(target, host, tuple(headers.items()))

    def event(self) -> h11.Request:
        # Values hold bytes as Latin-1 (txstore.proxy.messages), so they go out byte for byte.
        return h11.Request(
            method="PUT", target=self.target.encode("ascii"),
            headers=[("Host", self.host.encode("latin-1")),
                     *((name.encode("latin-1"), value.encode("latin-1")) for name, value in self.headers)],
        )


@implementer(IPushProducer)
class PutConnection(Protocol):
    """One node connection; h11 does the HTTP/1.1 framing both ways."""

    def __init__(self, request: PutRequest, pool: PutConnectionPool | None = None) -> None:
        self._pool = pool
        self._paused = False
        self._drained: Deferred | None = None
        self.connected = False
        self.lost: Deferred = Deferred()  # fires (with None) when the connection has ended
        self.exchanges = 0  # PUTs started on this connection
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
        self._start(request)

    def _start(self, request: PutRequest) -> None:
        self._request = request
        self.ready: Deferred = Deferred()
        self.answer: Deferred = Deferred()
        self._response: h11.Response | None = None
        self._body = b""
        self._done = False
        self._heard = False  # any byte from the node during this exchange
        self.exchanges += 1

    def _head(self) -> bytes:
        return self._h11.send(self._request.event())

    def reuse(self, request: PutRequest) -> None:
        """Start the next PUT on this (idle, pooled) connection."""
        self._h11.start_next_cycle()
        self._start(request)
        self.transport.write(self._head())

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
        self.transport.registerProducer(self, True)
        self.transport.write(self._head())

    def dataReceived(self, data: bytes) -> None:
        if self._done:
            if self._pool is not None and self._pool.is_idle(self):
                self.transport.abortConnection()  # nothing may come while idle
            return
        self._heard = True
        self._receive(data)

    def _receive(self, data: bytes) -> None:
        try:
            self._h11.receive_data(data)
            while not self._done:
                event = self._h11.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    return
                self._handle(event)
        except h11.RemoteProtocolError as err:
            self._broken(f"bad answer: {err}")

    def _handle(self, event) -> None:
        if isinstance(event, h11.InformationalResponse):
            if event.status_code == 100 and not self.ready.called:
                self.ready.callback(None)
        elif isinstance(event, h11.Response):
            self._response = event
            length = _headers(event).get("content-length", "")
            if length.isdigit() and int(length) > MAX_ANSWER_BODY:
                self._broken("answer body too large")
        elif isinstance(event, h11.Data):
            self._body += event.data
            if len(self._body) > MAX_ANSWER_BODY:
                self._broken("answer body too large")
        elif isinstance(event, h11.EndOfMessage):
            self._finish_answer()
        elif isinstance(event, h11.ConnectionClosed):
            self._broken("connection closed before an answer")

    def _finish_answer(self) -> None:
        self._done = True
        assert self._response is not None
        answer = NodeAnswer(self._response.status_code, _headers(self._response), self._body)
        # Kept only after a clean exchange: our whole body sent, the answer delimited by its
        # length on a keep-alive HTTP/1.1 connection (h11 says DONE for both), nothing after it.
        keep = (
            self._pool is not None and self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE
            and not self._h11.trailing_data[0]
        )
        if not self.ready.called:
            self.ready.callback(answer)
        self.answer.callback(answer)
        if keep and self.connected:
            assert self._pool is not None
            self._pool.release(self)
        elif self.connected:
            self.transport.loseConnection()

    def _broken(self, why: str) -> None:
        self._done = True
        if self.connected:
            self.transport.abortConnection()
        self._fail(Failure(NodeGone(why)))

    def _fail(self, failure: Failure) -> None:
        if not self.ready.called:
            self.ready.errback(failure)
        if not self.answer.called:
            self.answer.errback(failure)
        self._release()

    def connectionLost(self, reason: Failure) -> None:
        self.connected = False
        if self._pool is not None:
            self._pool.forget(self)
        if not self.lost.called:
            self.lost.callback(None)
        if not self._done:
            self._receive(b"")  # an answer delimited by the end of the connection ends here
        self._done = True
        self._fail(Failure(NodeGone(f"connection lost: {reason.getErrorMessage()}")))

    # --- body ------------------------------------------------------------------------------

    def write(self, chunk: bytes) -> None:
        if self._done or not chunk:
            return
        self.transport.writeSequence(self._h11.send_with_data_passthrough(h11.Data(data=chunk)))

    def finish(self) -> None:
        """The whole body has been written."""
        if not self._done and self._h11.our_state is h11.SEND_BODY:
            try:
                self.transport.write(self._h11.send(h11.EndOfMessage()))
            except h11.LocalProtocolError as err:  # fewer bytes than Content-Length said
                self._broken(f"body incomplete: {err}")

    def abort(self) -> None:
        if not self._done:
            self._done = True
            self.transport.abortConnection()

    @property
    def writable(self) -> bool:
        return not self._paused or self._done

    def wait_writable(self) -> Deferred:
        if self.writable:
            return succeed(None)
        if self._drained is None:
            self._drained = Deferred()
        return self._drained

    # --- IPushProducer: the transport's backpressure ---------------------------------------

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._release()

    def stopProducing(self) -> None:
        # The connection is going; connectionLost (which follows) settles the exchange, so an
        # answer delimited by the end of the connection is still read there.
        self._paused = False
        self._release()

    def _release(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None:
            drained.callback(None)


def _headers(response) -> dict[str, str]:
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in response.headers}


def connect_put(reactor, host: str, port: int, request: PutRequest, connect_timeout: float) -> Deferred:
    """Connect and send the head; fires with the `PutConnection` (whose `ready` then tells)."""
    return connect(reactor, host, port, PutConnection(request), connect_timeout)


class PutConnectionPool:
    """
    Idle PUT connections per node, at most ``max_idle_per_node`` each (the rest are closed).
    `open` takes an idle one or connects; `close` (at proxy stop) closes every idle one.
    """

    def __init__(self, reactor: Any, connect_timeout: float = 2.0, max_idle_per_node: int = 16) -> None:
        self._reactor = reactor
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
        conn = await connect(self._reactor, host, port, PutConnection(request, self), self.connect_timeout)
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

    def release(self, conn: PutConnection) -> None:
        """A connection whose exchange ended cleanly: keep it for the next PUT to its node."""
        key = self._where.get(conn)
        if key is None or self._closed:
            conn.transport.loseConnection()
            return
        idle = self._idle.setdefault(key, [])
        if len(idle) >= self.max_idle_per_node:
            conn.transport.loseConnection()
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
            conn.transport.loseConnection()
        return DeferredList([conn.lost for conn in idle])
