# -*- test-case-name: txstore.test.unit.test_replication_channel -*-
"""
A framed, flow-controlled channel over one TCP (or TLS) connection: the I/O half of a session.

Backpressure, both ways:

- sending: the channel registers as the transport's streaming producer. When the transport's
  buffer passes its limit it calls `pauseProducing`, and `drained()` then waits until it calls
  `resumeProducing`; the sender awaits `drained()` before each body chunk, so it never queues
  more than one chunk beyond what the socket takes.
- receiving: records wait in a queue until the session code takes them with `receive()`.
  Past `HIGH_WATER` bytes queued the channel stops reading the socket (the peer's TCP window
  fills and its transport pauses it in turn); below `LOW_WATER` it reads again.

Both are `txstore.common.flow`'s (`InboundQueue`, `DrainWaiter`).

Every wait (`receive`, `drained`) has a deadline; when it passes the channel sends ERROR 408
and closes. Any frame the protocol does not allow (checked by the state machine when the
session code takes it, so that frames this side sent meanwhile count) gets ERROR 400 and a
close. A received
ERROR, a close by the peer or a timeout all surface as `SessionFailed` from the wait.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from txstore.common.eager_writes import no_delay
from txstore.common.flow import DrainWaiter, DrainedProducer, InboundQueue
from txstore.replication.frames import FrameDecoder, FrameType, ProtocolError, Record, encode, record
from txstore.replication.states import R, S, SessionMachine

HIGH_WATER = 1024 * 1024
LOW_WATER = 256 * 1024


class SessionFailed(Exception):
    """The session cannot go on; ``code`` as in an ERROR frame (the peer's, or ours)."""

    def __init__(self, code: int, reason: str, *, from_peer: bool = False) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason
        self.from_peer = from_peer


@implementer(IPushProducer)
class FramedChannel(Protocol, DrainedProducer):
    """Frames in and out for one side (``side`` is S or R) of one session."""

    log = Logger()

    def __init__(self, side: str, reactor: Any, timeout: float) -> None:
        self.side = side
        self.peer_side = R if side == S else S
        self.reactor = reactor
        self.timeout = timeout
        self.machine = SessionMachine()
        self._decoder = FrameDecoder()
        self._queue: InboundQueue[Record] = InboundQueue(
            lambda: self.transport, HIGH_WATER, LOW_WATER, size=lambda item: item.size + 64)
        self._waiting: Deferred | None = None
        self._drain = DrainWaiter()
        self._failure: SessionFailed | None = None
        self._producing = False

    # Protocol

    def connectionMade(self) -> None:
        no_delay(self.transport)
        self.transport.registerProducer(self, True)
        self._producing = True

    def dataReceived(self, data: bytes) -> None:
        if self._failure is not None:
            return
        try:
            for item in self._decoder.feed(data):
                self._queue.put(item)
        except ProtocolError as error:
            self.abort(400, str(error))
            return
        self._wake()

    def connectionLost(self, reason: Failure = None) -> None:
        self._producing = False  # the transport let go of its producer with the connection
        if self._failure is None:
            if reason is None or reason.check(ConnectionDone):
                self._failure = SessionFailed(499, "connection closed by the peer")
            else:  # a reset, or TLS refusing a certificate (either side's): say which
                self._failure = SessionFailed(499, f"connection lost: {reason.getErrorMessage()}")
        self._wake()
        self._drain.release()

    # IPushProducer (the transport tells us when its buffer is full)

    def stopProducing(self) -> None:
        self._drain.release()

    # What the session code uses

    def send(self, item: Record) -> None:
        """Write one record (checked by the state machine first)."""
        if self._failure is not None:
            raise self._failure
        self.machine.step(self.side, item)
        self.transport.write(encode(item))

    def end(self) -> None:
        """Send END and close: the normal way for this side to finish."""
        self.send(record(FrameType.END))
        self._failure = SessionFailed(0, "session ended")
        self._close()

    def close(self) -> None:
        """Close after the peer's END (nothing more to say)."""
        if self._failure is None:
            self._failure = SessionFailed(0, "session ended")
        self._close()

    def abort(self, code: int, reason: str) -> None:
        """Send ERROR with ``reason`` (if the connection still stands) and close."""
        if self._failure is None:
            self._failure = SessionFailed(code, reason)
            if not self.machine.closed:
                self.machine.step(self.side, record(FrameType.ERROR, code=code, reason=reason))
                self.transport.write(encode(record(FrameType.ERROR, code=code, reason=reason)))
            self._close()
        self._wake()
        self._drain.release()

    async def receive(self) -> Record:
        """The next record from the peer; SessionFailed on ERROR, close or timeout."""
        while not self._queue:
            if self._failure is not None:
                raise self._failure
            self._waiting = Deferred()
            await self._bounded(self._waiting, "a frame from the peer")
        item = self._queue.take()
        try:
            # Checked when taken, not when it arrived: our own frames sent in between count.
            self.machine.step(self.peer_side, item)
        except ProtocolError as error:
            self.abort(400, str(error))
            raise self._failure from None
        if item.type is FrameType.ERROR:
            self._failure = SessionFailed(item["code"], item["reason"], from_peer=True)
            self._close()
            raise self._failure
        if self.machine.closed:
            # The peer's END: this side sends nothing more, so it stops being the producer now
            # (a TLS transport's loseConnection waits for that; see `_close`).
            self._stop_being_producer()
        return item

    async def expect(self, *kinds: FrameType) -> Record:
        """The next record, which must be one of ``kinds`` (else ERROR 400)."""
        item = await self.receive()
        if item.type not in kinds:
            reason = f"expected {' or '.join(k.name for k in kinds)}, got {item.type.name}"
            self.abort(400, reason)
            raise SessionFailed(400, reason)
        return item

    async def drained(self) -> None:
        """Return once the transport takes more data (at once unless it asked us to pause)."""
        while self._drain.paused:
            if self._failure is not None:
                raise self._failure
            await self._bounded(self._drain.wait(), "the peer to take more data")
        if self._failure is not None:
            raise self._failure

    # Inside

    def _stop_being_producer(self) -> None:
        if self._producing:
            self._producing = False
            self.transport.unregisterProducer()

    def _close(self) -> None:
        # Unregister first: TLSMemoryBIOProtocol.loseConnection does not start the TLS shutdown
        # (nor close the socket) while a producer is registered, so the connection would stay
        # open until the peer or the OS dropped it. Plain TCP closes either way.
        self._stop_being_producer()
        self.transport.loseConnection()

    async def _bounded(self, waiting: Deferred, what: str) -> None:
        timer = self.reactor.callLater(self.timeout, waiting.cancel)
        try:
            await waiting
        except CancelledError:
            self.abort(408, f"timed out after {self.timeout:g}s waiting for {what}")
            raise self._failure from None
        finally:
            if timer.active():
                timer.cancel()

    def _wake(self) -> None:
        waiting, self._waiting = self._waiting, None
        if waiting is not None and not waiting.called:
            waiting.callback(None)
