"""Tests for txstore.common.io: blocking work runs off the reactor thread, per device."""

import threading

from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from txstore.common.io import DeviceThreadPools, SynchronousRunner
from txstore.interfaces import IBlockingRunner


class SynchronousRunnerTests(SynchronousTestCase):
    def test_result_and_error(self) -> None:
        runner = SynchronousRunner()
        verifyObject(IBlockingRunner, runner)
        self.assertEqual(self.successResultOf(runner.run("d1", lambda a, b=0: a + b, 1, b=2)), 3)
        self.failureResultOf(runner.run("d1", lambda: 1 / 0), ZeroDivisionError)


class DeviceThreadPoolsTests(TestCase):
    async def test_runs_in_a_named_pool_thread(self) -> None:
        pools = DeviceThreadPools(reactor, threads_per_device=2)
        self.addCleanup(pools.stop)
        verifyObject(IBlockingRunner, pools)
        main = threading.current_thread()
        name = await pools.run("d1", lambda: threading.current_thread().name)
        self.assertNotEqual(name, main.name)
        self.assertIn("io-d1", name)
        other = await pools.run("d2", lambda: threading.current_thread().name)
        self.assertIn("io-d2", other)

    async def test_errors_arrive(self) -> None:
        pools = DeviceThreadPools(reactor)
        self.addCleanup(pools.stop)
        with self.assertRaises(ZeroDivisionError):
            await pools.run("d1", lambda: 1 / 0)


class StoppedPoolsTests(TestCase):
    async def test_no_new_threads_after_stop(self) -> None:
        pools = DeviceThreadPools(reactor)
        await pools.run("d1", lambda: None)
        pools.stop()
        with self.assertRaises(RuntimeError):
            await pools.run("d2", lambda: None)
        self.assertEqual(pools._pools, {})
