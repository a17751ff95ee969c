# -*- test-case-name: txstore.test.unit.test_eager_writes -*-
"""
Bytes written to a TCP connection sent at once, not on the reactor's next turn.

Twisted's TCP transport never sends in ``write``: it queues the bytes, registers the socket
with epoll for writing, and sends when the next ``epoll_wait`` says the socket is writable;
then it unregisters it. Every write that finds the connection idle (a node's answer, each
64 KiB piece of a body the proxy passes to three nodes) pays two ``epoll_ctl`` calls and a turn
of the reactor's dispatch, which is Python: 2 ms of the proxy's 4.5 ms of CPU per replicated
1 MiB PUT, measured (docs/performance.rst, "Writes sent at once").

Both servers install it at start (their taps). It made one old race likely: a client had its
answer, and sent SIGTERM, before the server had written the request's access line, and
twistd's handler then logged inside the log observer's lock (fixed there: c8ef100).

`install` makes ``write`` and ``writeSequence`` try the socket first when nothing is queued:
what the kernel takes is gone, the rest is queued as Twisted would have queued it (so order,
producers' pauses and connection loss are all Twisted's own from there on). Only connections
that turned Nagle's algorithm off (``setTcpNoDelay(True)``: twisted.web's server and client,
the PUT connections, replication) write this way. Twisted's queue joins the writes of one
reactor turn into one send; sent one by one, a small write after another would wait for the
first one's ACK under Nagle (a delayed ACK: up to 40 ms). Connections under Twisted's own TLS
layer (``startTLS``) and UNIX sockets passing descriptors keep Twisted's path.

Writes that belong in one packet, an answer's head and the first piece of its body (twisted.web
writes them apart), are held between `cork` and `uncork` and sent together
(``txstore.common.streaming.StreamingRequest.write``).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp

_installed = False
_FLAG = "_txstore_no_delay"  # set on a connection by setTcpNoDelay(True)
_MAX_PIECES = 64  # a longer sequence is joined and sent as one piece (sendmsg's IOV_MAX is 1024)
_CORK = "_txstore_cork"  # the writes held by `cork` on a connection, until `uncork`
_SMALL = 16 * 1024  # held pieces below this size are joined before the send (a head's many bits)


def _can_send_now(conn) -> bool:
    return (
        getattr(conn, _FLAG, False)
        and conn.connected
        and not conn.disconnecting
        and not conn._writeDisconnected
        and not conn._tempDataLen
        and conn.offset == len(conn.dataBuffer)
        and not conn.TLS
        and not getattr(conn, "_sendmsgQueue", None)
        # A pull producer is asked for more only from doWrite, which a write sent at once never
        # reaches; a paused one is resumed there too.
        and (conn.producer is None or (conn.streamingProducer and not conn.producerPaused))
    )


def no_delay(transport: Any) -> None:
    """
    Turn Nagle off on a connection (on the TCP transport under a TLS wrapper too), for a
    protocol that alternates small writes with waits for an answer: each small write would
    otherwise sit out a delayed ACK (~40 ms). Such a connection's writes are sent at once.
    """
    for candidate in (transport, getattr(transport, "transport", None)):
        setter = getattr(candidate, "setTcpNoDelay", None)
        if setter is not None:
            setter(True)
            return


def cork(transport: Any) -> bool:
    """
    Hold what is written to ``transport`` until `uncork`, to go out in one send: twisted.web
    writes an answer's head (``writeSequence``) and its first body piece (``write``) apart, and
    a small answer sent at once would be two packets, each its own wake-up at the other end.
    True when this call holds them (a TCP connection that writes at once, not held already):
    the caller then must `uncork`; otherwise nothing changes.
    """
    if not _installed or not isinstance(transport, tcp.Connection) or not getattr(transport, _FLAG, False):
        return False
    if getattr(transport, _CORK, None) is not None:
        return False  # held already: the outer `cork`'s caller sends
    setattr(transport, _CORK, [])
    return True


def uncork(transport: Any) -> None:
    """Send what `cork` held, as one ``writeSequence`` (small pieces joined, large ones as they are)."""
    held = getattr(transport, _CORK, None)
    if held is None:
        return
    setattr(transport, _CORK, None)
    pieces: list[bytes] = []
    small: list[bytes] = []
    for piece in held:
        if len(piece) < _SMALL:
            small.append(piece)
            continue
        if small:
            pieces.append(b"".join(small))
            small = []
        pieces.append(piece)
    if small:
        pieces.append(b"".join(small))
    if pieces:
        transport.writeSequence(pieces)


def install() -> None:
    """Patch Twisted's TCP connections (once per process; later calls do nothing)."""
    global _installed
    if _installed:
        return
    _installed = True
    queue_write = tcp.Connection.write
    queue_sequence = tcp.Connection.writeSequence
    set_no_delay = tcp.Connection.setTcpNoDelay

    def setTcpNoDelay(self, enabled: bool) -> None:
        set_no_delay(self, enabled)
        setattr(self, _FLAG, bool(enabled))

    def write(self, data: bytes) -> None:
        held = getattr(self, _CORK, None)
        if held is not None:
            if data:
                held.append(data)
            return
        if type(data) is bytes and data and _can_send_now(self):
            try:
                sent = self.socket.send(data)
            except OSError:  # EAGAIN, or an error the queued path's send will meet and report
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        queue_write(self, data)

    def writeSequence(self, iovec) -> None:
        held = getattr(self, _CORK, None)
        if held is not None:
            held.extend(piece for piece in iovec if piece)
            return
        if len(iovec) == 1 or len(iovec) > _MAX_PIECES:
            write(self, iovec[0] if len(iovec) == 1 else b"".join(iovec))
            return
        if not iovec or not all(type(piece) is bytes for piece in iovec) or not _can_send_now(self):
            queue_sequence(self, iovec)
            return
        try:
            sent = self.socket.sendmsg(iovec)
        except OSError:
            sent = 0
        rest = list(iovec)
        while rest and sent >= len(rest[0]):
            sent -= len(rest.pop(0))
        if rest:
            if sent:
                rest[0] = rest[0][sent:]
            queue_sequence(self, rest)

    tcp.Connection.setTcpNoDelay = setTcpNoDelay
    tcp.Connection.write = write
    tcp.Connection.writeSequence = writeSequence
