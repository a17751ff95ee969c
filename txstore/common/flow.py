# -*- test-case-name: txstore.test.unit.test_flow -*-
"""
Flow control, both ways, in one place: an `InboundQueue` for what a transport delivers faster
than its reader takes it, and a `DrainWaiter` for a writer waiting until its consumer takes more.

Inbound: what arrives waits in the queue; once ``high_water`` (by ``size``) waits, the producer
(the transport) is paused, and once a take leaves less than ``low_water`` it is resumed. A
reader about to wait on an empty queue calls `resume` itself. Its users, and where they differ
for real:

- `txstore.common.streaming.RequestBody` (a request body, proxy and nodes): bytes, taken all
  at once (`take_all`), so every read resumes; the producer is the request's channel
  transport, looked up each time since the request lets go of its channel when it is done.
- `txstore.replication.channel.FramedChannel` (a replication session's records): records
  taken one at a time, counted by their size plus a frame's overhead, and a ``low_water``
  well under ``high_water`` so a paused socket is not resumed for every record taken.
- `txstore.proxy.controllers.obj_get.ObjectBody` (a node's GET body at the proxy): pieces
  taken one at a time; a body resumed from another replica `attach`es the new node's
  connection, which starts unpaused, and an ended connection is paused or resumed no more.

Outbound: a producer registered with a transport (or a request) is told `pauseProducing` when
the consumer's buffer is full and `resumeProducing` when it drained. It keeps a `DrainWaiter`
and forwards those calls to `pause` and `resume`; writers await `wait` before the next write.
`release` lets the waiters go without unpausing (a connection going away: each user then
decides what that means). Its users:

- `FramedChannel.drained` (replication): waits with a deadline, and on release re-checks both
  the failure and the pause (a `stopProducing` alone does not let a sender go on).
- `txstore.common.put_connection.PutConnection.wait_writable` (a proxy PUT to a node): a
  stopped or failed connection counts as writable, so its writer goes on to find the failure.
- `txstore.storage.object_body.ObjectBody` (a node's GET body): `stopProducing` resumes, and
  the writer finds it stopped.
- `txstore.proxy.edge._Pump` (a response to a proxy client): `stopProducing` releases, and
  the pump finds it stopped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IPushProducer

T = TypeVar("T")


class InboundQueue(Generic[T]):
    """
    Items waiting for their reader; ``producer()`` (None once it is gone) is paused while
    ``high_water`` waits and resumed below ``low_water`` (``high_water`` unless given).
    """

    def __init__(
        self,
        producer: Callable[[], IPushProducer | None],
        high_water: int,
        low_water: int | None = None,
        size: Callable[[T], int] = len,  # type: ignore[assignment]
    ) -> None:
        self._producer = producer
        self.high_water = high_water
        self.low_water = high_water if low_water is None else low_water
        self._size = size
        self._items: deque[T] = deque()
        self.queued = 0  # by ``size``
        self.paused = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> None:
        self._items.append(item)
        self.queued += self._size(item)
        if self.queued >= self.high_water:
            self.pause()

    def take(self) -> T:
        """The oldest item; the producer resumes if less than ``low_water`` is left."""
        item = self._items.popleft()
        self.queued -= self._size(item)
        if self.queued < self.low_water:
            self.resume()
        return item

    def take_all(self) -> list[T]:
        """Every item, oldest first; the producer resumes."""
        items = list(self._items)
        self.clear()
        self.resume()
        return items

    def clear(self) -> None:
        """Drop what waits (the producer stays as it is: the caller knows why it dropped it)."""
        self._items.clear()
        self.queued = 0

    def attach(self, producer: Callable[[], IPushProducer | None]) -> None:
        """Items come from another producer from now on, one not paused by this queue."""
        self._producer = producer
        self.paused = False

    def pause(self) -> None:
        producer = self._producer()
        if not self.paused and producer is not None:
            self.paused = True
            producer.pauseProducing()

    def resume(self) -> None:
        producer = self._producer()
        if self.paused and producer is not None:
            self.paused = False
            producer.resumeProducing()


class DrainWaiter:
    """Whether the consumer a producer writes to is full, and who waits until it is not."""

    def __init__(self) -> None:
        self.paused = False
        self._waiters: list[Deferred] = []

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self.release()

    def release(self) -> None:
        """Fire every waiter (with None), paused or not; one given up on (cancelled) is skipped."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.called:
                waiter.callback(None)

    def wait(self) -> Deferred:
        """Fires at once unless paused; else on the next `resume` or `release`."""
        if not self.paused:
            return succeed(None)
        waiter: Deferred = Deferred()
        self._waiters.append(waiter)
        return waiter


class DrainedProducer:
    """
    The IPushProducer half every writer with a `DrainWaiter` (``self._drain``) has alike: its
    consumer's pause and resume are the waiter's. Each says what ``stopProducing`` means to it.
    """

    _drain: DrainWaiter

    def pauseProducing(self) -> None:
        self._drain.pause()

    def resumeProducing(self) -> None:
        self._drain.resume()
