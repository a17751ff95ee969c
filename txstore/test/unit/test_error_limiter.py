"""Tests for txstore.proxy.error_limiter."""

from attrs import frozen
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txstore.proxy.error_limiter import ErrorLimiter


@frozen
class FakeNode:
    ip: str = "127.0.0.1"
    port: int = 6210
    device_name: str = "d1"


class ErrorLimiterTests(SynchronousTestCase):
    def test_suppressed_after_limit_for_interval(self) -> None:
        clock = Clock()
        limiter = ErrorLimiter(clock.seconds, limit=3, interval=60)
        node, other = FakeNode(), FakeNode(device_name="d2")
        for _ in range(2):
            limiter.error(node)
        self.assertFalse(limiter.is_limited(node))
        limiter.error(node)
        self.assertTrue(limiter.is_limited(node))
        self.assertFalse(limiter.is_limited(other))
        clock.advance(59)
        self.assertTrue(limiter.is_limited(node))
        clock.advance(1)
        self.assertFalse(limiter.is_limited(node))
        limiter.error(node)
        self.assertFalse(limiter.is_limited(node))  # the count started again

    def test_success_clears(self) -> None:
        limiter = ErrorLimiter(lambda: 0.0, limit=2)
        node = FakeNode()
        limiter.error(node)
        limiter.success(node)
        limiter.error(node)
        self.assertFalse(limiter.is_limited(node))

    def test_limit_now_suppresses_at_once_for_the_interval(self) -> None:
        clock = Clock()
        limiter = ErrorLimiter(clock.seconds, limit=10, interval=60)
        node = FakeNode()
        limiter.limit_now(node)
        self.assertTrue(limiter.is_limited(node))
        clock.advance(60)
        self.assertFalse(limiter.is_limited(node))
