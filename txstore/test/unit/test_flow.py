"""txstore.common.flow: the inbound queue that pauses its producer, and the drain waiter."""

from __future__ import annotations

from twisted.internet.defer import CancelledError
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from txstore.common.flow import DrainWaiter, InboundQueue


class InboundQueueTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.transport = StringTransport()
        self.gone = False

    def producer(self):
        return None if self.gone else self.transport

    def queue(self, high: int = 10, low: int | None = None, **kwargs) -> InboundQueue:
        return InboundQueue(self.producer, high, low, **kwargs)

    def test_pauses_at_high_water_once(self) -> None:
        queue = self.queue()
        queue.put(b"12345")
        queue.put(b"1234")
        self.assertEqual(self.transport.producerState, "producing")
        queue.put(b"1")
        self.assertEqual((self.transport.producerState, queue.paused, queue.queued), ("paused", True, 10))
        queue.put(b"more")  # already paused: not paused twice (StringTransport would raise)
        self.assertEqual(len(queue), 4)

    def test_take_resumes_below_high_water_by_default(self) -> None:
        queue = self.queue()
        for piece in (b"123456", b"7890"):
            queue.put(piece)
        self.assertEqual(queue.take(), b"123456")
        self.assertEqual((self.transport.producerState, queue.queued), ("producing", 4))
        self.assertEqual(queue.take(), b"7890")
        self.assertEqual(len(queue), 0)

    def test_low_water_holds_the_pause_until_below_it(self) -> None:
        queue = self.queue(high=10, low=4)
        for piece in (b"aaa", b"bbb", b"cccc"):
            queue.put(piece)
        self.assertEqual(self.transport.producerState, "paused")
        queue.take()
        self.assertEqual(self.transport.producerState, "paused")  # 7 left
        queue.take()
        self.assertEqual(self.transport.producerState, "paused")  # 4 left: not below 4
        queue.take()
        self.assertEqual(self.transport.producerState, "producing")

    def test_size_counts_items(self) -> None:
        queue = self.queue(high=100, size=lambda item: item[1])
        queue.put(("big", 99))
        self.assertFalse(queue.paused)
        queue.put(("small", 1))
        self.assertTrue(queue.paused)
        self.assertEqual(queue.take(), ("big", 99))
        self.assertFalse(queue.paused)

    def test_take_all_empties_and_resumes(self) -> None:
        queue = self.queue()
        for piece in (b"12345", b"67890"):
            queue.put(piece)
        self.assertEqual(queue.take_all(), [b"12345", b"67890"])
        self.assertEqual((len(queue), queue.queued, self.transport.producerState), (0, 0, "producing"))

    def test_clear_drops_without_resuming(self) -> None:
        queue = self.queue()
        queue.put(b"x" * 10)
        queue.clear()
        self.assertEqual((len(queue), queue.queued, self.transport.producerState), (0, 0, "paused"))
        queue.resume()  # a reader about to wait
        self.assertEqual(self.transport.producerState, "producing")

    def test_a_producer_gone_is_left_alone(self) -> None:
        queue = self.queue()
        self.gone = True
        queue.put(b"x" * 20)
        self.assertFalse(queue.paused)
        self.gone = False
        queue.put(b"y")
        self.assertTrue(queue.paused)
        self.gone = True
        queue.take_all()
        self.assertTrue(queue.paused)  # it could not be resumed
        self.assertEqual(self.transport.producerState, "paused")

    def test_attach_starts_unpaused_with_the_new_producer(self) -> None:
        queue = self.queue()
        queue.put(b"x" * 10)
        other = StringTransport()
        queue.attach(lambda: other)
        self.assertFalse(queue.paused)
        queue.take()
        self.assertEqual((self.transport.producerState, other.producerState), ("paused", "producing"))
        queue.put(b"y" * 10)
        self.assertEqual(other.producerState, "paused")


class DrainWaiterTests(SynchronousTestCase):
    def test_wait_fires_at_once_unless_paused(self) -> None:
        drain = DrainWaiter()
        self.assertIsNone(self.successResultOf(drain.wait()))

    def test_resume_fires_every_waiter(self) -> None:
        drain = DrainWaiter()
        drain.pause()
        first, second = drain.wait(), drain.wait()
        self.assertNoResult(first)
        self.assertNoResult(second)
        drain.resume()
        self.assertFalse(drain.paused)
        self.assertIsNone(self.successResultOf(first))
        self.assertIsNone(self.successResultOf(second))
        self.assertIsNone(self.successResultOf(drain.wait()))

    def test_release_fires_waiters_and_stays_paused(self) -> None:
        drain = DrainWaiter()
        drain.pause()
        waiting = drain.wait()
        drain.release()
        self.assertIsNone(self.successResultOf(waiting))
        self.assertTrue(drain.paused)
        self.assertNoResult(drain.wait())

    def test_a_cancelled_waiter_is_skipped(self) -> None:
        drain = DrainWaiter()
        drain.pause()
        given_up, waiting = drain.wait(), drain.wait()
        given_up.cancel()
        self.failureResultOf(given_up, CancelledError)
        drain.resume()
        self.assertIsNone(self.successResultOf(waiting))
