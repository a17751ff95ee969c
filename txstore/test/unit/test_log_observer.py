"""
Tests for txstore.common.log_observer: the servers' log writer writes what twistd's would, and
when.
"""

from __future__ import annotations

import io
import signal
import sys
import threading
from pathlib import Path

from twisted.application.service import Application
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, Logger, textFileLogObserver
from twisted.python.logfile import LogFile
from twisted.trial.unittest import SynchronousTestCase

from txstore.common.log_observer import BUFFER_BYTES, FLUSH_SECONDS, ServerLogObserver, ServerService, observer_for
from txstore.common.web import log_line


class _Recorded(LogFile):
    """A log file that counts its writes and reads back what it holds."""

    writes = 0

    def write(self, data) -> None:
        self.writes += 1
        super().write(data)

    def getvalue(self) -> bytes:
        return Path(self.path).read_bytes()


class _Reactor(MemoryReactorClock):
    """A memory reactor whose callFromThread runs the call at once (as the reactor soon would)."""

    def callFromThread(self, f, *args, **kwargs) -> None:
        f(*args, **kwargs)


def events_of(emit) -> list[dict]:
    events: list[dict] = []
    emit(Logger(namespace="txstore.storage.access", observer=events.append))
    return events


class ServerLogObserverTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        directory = Path(self.mktemp())
        directory.mkdir()
        self.out = _Recorded("node.log", str(directory))
        self.addCleanup(self.out.close)
        self.observer = ServerLogObserver(self.out, self.reactor)

    def twistd_text(self, events: list[dict]) -> str:
        """What twistd's own writer makes of ``events``."""
        out = io.StringIO()
        observer = textFileLogObserver(out)
        for event in events:
            observer(event)
        return out.getvalue()

    def test_the_same_lines_as_twistd_writes(self) -> None:
        def emit(log: Logger) -> None:
            log_line(log, "127.0.0.1 PUT /d1/3/a/c/{o} 201 0 0.0031s tx1")
            log.warn("a warning about {what}", what="the disk")
            log_line(log, "127.0.0.1 GET /d1/3/a/c/o 200 5 0.0004s tx2")
            log_line(log, "a line\nin two")
            try:
                1 / 0
            except ZeroDivisionError:
                log.failure("it broke")
        events = events_of(emit)
        for event in events:
            self.observer(event)
        self.observer.flush()
        self.assertEqual(self.out.getvalue().decode("utf-8"), self.twistd_text(events))
        self.assertIn("ZeroDivisionError", self.out.getvalue().decode("utf-8"))
        self.flushLoggedErrors(ZeroDivisionError)

    def test_access_lines_are_written_together_within_the_flush_interval(self) -> None:
        events = events_of(lambda log: [log_line(log, f"line {n}") for n in range(3)])
        for event in events:
            self.observer(event)
        self.assertEqual(self.out.writes, 0)
        self.reactor.advance(FLUSH_SECONDS)
        self.assertEqual(self.out.writes, 1)
        self.assertEqual(self.out.getvalue().decode().count("\n"), 3)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_another_event_writes_the_buffered_lines_first(self) -> None:
        def emit(log: Logger) -> None:
            log_line(log, "first")
            log.error("second")
        events = events_of(emit)
        for event in events:
            self.observer(event)
        lines = self.out.getvalue().decode().splitlines()
        self.assertEqual([line.rsplit(" ", 1)[-1] for line in lines], ["first", "second"])
        writes = self.out.writes
        self.reactor.advance(FLUSH_SECONDS)  # the timer finds nothing left to write
        self.assertEqual(self.out.writes, writes)

    def test_a_full_buffer_is_written_at_once(self) -> None:
        line = "x" * 1000
        events = events_of(lambda log: [log_line(log, line) for _ in range(BUFFER_BYTES // 1000 + 1)])
        for event in events:
            self.observer(event)
        self.assertEqual(self.out.writes, 1)

    def test_buffered_lines_are_written_at_shutdown(self) -> None:
        for event in events_of(lambda log: log_line(log, "last words")):
            self.observer(event)
        self.assertEqual(self.out.writes, 0)
        for trigger, args, kwargs in self.reactor.triggers["after"]["shutdown"]:
            trigger(*args, **kwargs)
        self.assertIn(b"last words", self.out.getvalue())

    def test_a_text_stream_gets_text_a_line_at_a_time(self) -> None:
        """stdout (proxy workers share their supervisor's): no batch to mix with another's."""
        out = io.StringIO()
        observer = ServerLogObserver(out, self.reactor)
        for event in events_of(lambda log: log_line(log, "on stdout")):
            observer(event)
        self.assertTrue(out.getvalue().endswith("[txstore.storage.access#info] on stdout\n"))
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_events_from_other_threads(self) -> None:
        """Nodes log from their device threads: nothing is lost, the order is kept, no timer is touched."""
        def emit(log: Logger) -> None:
            log_line(log, "first, from the reactor")
        for event in events_of(emit):
            self.observer(event)
        [timer] = self.reactor.getDelayedCalls()

        def from_a_thread() -> None:
            def emit(log: Logger) -> None:
                log.warn("second, a warning from a device thread")
                log_line(log, "third, an access line from a thread")
            for event in events_of(emit):
                self.observer(event)
        thread = threading.Thread(target=from_a_thread)
        thread.start()
        thread.join()
        lines = self.out.getvalue().decode().splitlines()
        self.assertEqual([line.split("] ", 1)[1].split(",")[0] for line in lines], ["first", "second", "third"])
        self.assertTrue(timer.active())  # left to fire on the reactor (on an empty buffer)
        self.reactor.advance(FLUSH_SECONDS)
        self.assertEqual(len(self.out.getvalue().decode().splitlines()), 3)


    def call_in_a_thread(self, call) -> None:
        """``call()`` on a thread this test can give up on: a deadlock fails it, never hangs it."""
        thread = threading.Thread(target=call, daemon=True)
        thread.start()
        thread.join(10)
        self.assertFalse(thread.is_alive(), "the observer waited for ever on itself")

    def test_a_signal_handler_that_logs_during_a_write(self) -> None:
        """
        twisted's SIGTERM handler logs on the thread it interrupts, which may be inside this
        observer (seen: twistd objectnode hung at shutdown, its handler waiting on the lock the
        access line it interrupted held). Its line is written after the interrupted one.
        """
        [interrupting] = events_of(lambda log: log.info("Received SIGTERM, shutting down."))
        writes = []

        def write(data) -> None:
            writes.append(data)
            if len(writes) == 1:
                self.observer(interrupting)  # as the handler would, between two bytecodes
            _Recorded.write(self.out, data)
        self.out.write = write
        self.call_in_a_thread(lambda: [self.observer(event) for event in events_of(lambda log: log.error("first"))])
        lines = self.out.getvalue().decode().splitlines()
        self.assertEqual([line.split("] ", 1)[1] for line in lines], ["first", "Received SIGTERM, shutting down."])

    def test_a_signal_handler_that_logs_while_a_line_is_formatted(self) -> None:
        test = self

        class Interrupted:
            def __format__(self, spec: str) -> str:
                for event in events_of(lambda log: log.info("interrupting")):
                    test.observer(event)
                return "interrupted"

        def log_both() -> None:
            for event in events_of(lambda log: [log_line(log, "buffered"), log.warn("{x}", x=Interrupted())]):
                self.observer(event)
            self.observer.flush()
        self.call_in_a_thread(log_both)
        lines = self.out.getvalue().decode().splitlines()
        self.assertEqual([line.split("] ", 1)[1] for line in lines], ["buffered", "interrupted", "interrupting"])


class ObserverForTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = _Reactor()
        previous = signal.getsignal(signal.SIGUSR1)
        self.addCleanup(signal.signal, signal.SIGUSR1, previous)
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)

    def test_a_log_file_as_twistd_opens_it(self) -> None:
        path = Path(self.mktemp())
        observer = observer_for({"logfile": str(path), "nodaemon": False}, self.reactor)
        self.assertIsInstance(observer._out, LogFile)
        self.addCleanup(observer._out.close)
        for event in events_of(lambda log: log_line(log, "into the file")):
            observer(event)
        observer.flush()
        self.assertIn("into the file", path.read_text())

    def test_sigusr1_rotates_after_writing_what_was_logged_before(self) -> None:
        path = Path(self.mktemp())
        observer = observer_for({"logfile": str(path), "nodaemon": False}, self.reactor)
        self.addCleanup(observer._out.close)
        for event in events_of(lambda log: log_line(log, "before the signal")):
            observer(event)
        signal.getsignal(signal.SIGUSR1)(signal.SIGUSR1, None)  # as twistd: SIGUSR1 rotates the file
        for event in events_of(lambda log: log_line(log, "after the signal")):
            observer(event)
        observer.flush()
        self.assertIn("before the signal", Path(f"{path}.1").read_text())
        self.assertNotIn("before the signal", path.read_text())
        self.assertIn("after the signal", path.read_text())

    def test_stdout_in_the_foreground(self) -> None:
        for options in ({"logfile": "", "nodaemon": True}, {"logfile": "-", "nodaemon": True}):
            self.assertIs(observer_for(options, self.reactor)._out, sys.stdout)

    def test_twistd_decides_the_rest(self) -> None:
        for options in ({"syslog": True, "logfile": "x"}, {"logger": "some.factory"},
                        {"logfile": "-", "nodaemon": False}, None):
            self.assertIsNone(observer_for(options, self.reactor), options)


class ServerServiceTests(SynchronousTestCase):
    def test_the_application_gets_the_observer(self) -> None:
        application = Application("test")
        ServerService({"logfile": "", "nodaemon": True}, MemoryReactorClock()).setServiceParent(application)
        self.assertIsInstance(application.getComponent(ILogObserver), ServerLogObserver)

    def test_an_observer_already_set_stays(self) -> None:
        application = Application("test")
        mine = textFileLogObserver(io.StringIO())
        application.setComponent(ILogObserver, mine)
        ServerService({"logfile": "", "nodaemon": True}, MemoryReactorClock()).setServiceParent(application)
        self.assertIs(application.getComponent(ILogObserver), mine)

    def test_nothing_without_twistd(self) -> None:
        application = Application("test")
        ServerService(None, MemoryReactorClock()).setServiceParent(application)
        self.assertIsNone(application.getComponent(ILogObserver, None))
