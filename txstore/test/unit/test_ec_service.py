"""Tests for txstore.ec.service: where a segment is coded, in place or in the EC pool."""

from __future__ import annotations

import threading

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from txstore.ec.service import INLINE_MAX, ECService


def _thread_name() -> str:
    return threading.current_thread().name


def _fails() -> None:
    raise ValueError("bad fragments")


class RunSegmentTests(TestCase):
    def setUp(self) -> None:
        self.service = ECService(reactor, threads=1)
        self.addCleanup(self.service.stop)

    def test_a_small_segment_is_coded_in_place(self) -> None:
        done = self.service.run_segment(INLINE_MAX, _thread_name)
        self.assertEqual(self.successResultOf(done), threading.current_thread().name)
        self.assertIsNone(self.service._pool)  # the pool was never started

    def test_a_failure_in_place_is_a_failed_deferred(self) -> None:
        self.failureResultOf(self.service.run_segment(10, _fails), ValueError)

    async def test_a_larger_segment_is_coded_in_the_pool(self) -> None:
        name = await self.service.run_segment(INLINE_MAX + 1, _thread_name)
        self.assertNotEqual(name, threading.current_thread().name)
