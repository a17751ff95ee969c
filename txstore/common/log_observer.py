# -*- test-case-name: txstore.test.unit.test_log_observer -*-
"""
The servers' log writer, in place of twistd's own: the same lines in the same file (twisted's
classic text, ``<time> [<system>] <text>``, rotated by ``LogFile`` and on SIGUSR1 as twistd
does), for less per access line.

Every request a server answers writes an access line, and twistd's writer spends on each what
the request's own handling spends in a tenth of its time (docs/metrics.rst): the local time
zone's offset found and the time formatted again, the system and the text through
twisted.logger's formatter, and one unbuffered ``write`` per line. Here an access line (an event
with an ``access_line`` field, `txstore.common.web.log_line`) takes the time formatted once per
second, its system name once per namespace, and, in a log file, joins a buffer written out
within ``FLUSH_SECONDS``, at ``BUFFER_BYTES``, before any other event, before a rotation and
at shutdown; every other event (warnings, errors, tracebacks) is formatted by twisted and
written at once, as before. A process killed outright loses at most the last
``FLUSH_SECONDS`` of access lines.

Installed by the proxy and the node when twistd would write to a file or to stdout
(`observer_for`, `ServerService`): as the application's ``ILogObserver`` component, which
twistd takes instead of building its own; ``--syslog`` and ``--logger`` are left to twistd.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

from twisted.application.service import IServiceCollection, MultiService
from twisted.logger import ILogObserver, formatEventAsClassicLogText, formatTime, timeFormatRFC3339
from twisted.python.compat import ioType
from twisted.python.logfile import LogFile
from zope.interface import implementer

ACCESS_LINE = "access_line"
FLUSH_SECONDS = 0.5
BUFFER_BYTES = 64 * 1024


@implementer(ILogObserver)
class ServerLogObserver:
    """
    Writes events to ``out``: a `LogFile` (bytes; access lines batched) or a text stream such
    as stdout (each line written alone: proxy workers share their supervisor's stdout, where a
    write longer than a pipe's atomic size could mix their lines).

    twisted.logger calls an observer in the thread that logged, and the nodes log from their
    device threads too (the auditor, the expirer, a temp file cleaned up): the buffer is only
    touched under a lock, and the flush timer only from the reactor's thread (the one that
    made this observer, in ``makeService``). An access line from another thread is written at
    once, as every other event is.
    """

    def __init__(self, out: Any, reactor: Any) -> None:
        self._out = out
        self._reactor = reactor
        self._reactor_thread = threading.get_ident()
        self._binary = ioType(out) is not str  # LogFile takes bytes; stdout takes text
        self._batched = isinstance(out, LogFile)
        # Re-entrant: a signal handler runs on the reactor's thread, between any two bytecodes.
        self._lock = threading.RLock()
        self._busy = False  # a call is writing or buffering (on the thread holding the lock)
        self._interrupting: list[dict] = []
        self._second: int | None = None
        self._stamp = ""
        self._systems: dict[str, str] = {}
        self._pending: list[str] = []
        self._pending_size = 0
        self._flush_call = None  # only set and cancelled on the reactor's thread
        self._shutdown_hooked = False

    def __call__(self, event: dict) -> None:
        with self._lock:
            if self._busy:
                # A signal handler logged while this thread was inside this observer (twisted's
                # SIGTERM handler logs "Received SIGTERM"): a plain lock would wait for ever, and a
                # file's buffer refuses a re-entrant write. The interrupted call writes it next.
                self._interrupting.append(event)
                return
            self._busy = True
            try:
                self._write_interrupting()
                start_timer = self._log(event, batch=self._batched and threading.get_ident() == self._reactor_thread)
                self._write_interrupting()
            finally:
                self._busy = False
        if start_timer and self._flush_call is None:
            self._flush_call = self._reactor.callLater(FLUSH_SECONDS, self._timer)
            if not self._shutdown_hooked:
                self._shutdown_hooked = True
                self._reactor.addSystemEventTrigger("after", "shutdown", self.flush)

    def _log(self, event: dict, batch: bool) -> bool:
        """(busy) Write or buffer one event; True when an access line was buffered."""
        line = event.get(ACCESS_LINE)
        when = event.get("log_time")
        if line is None or when is None or "log_failure" in event or "log_system" in event:
            text = formatEventAsClassicLogText(event, formatTime=_rfc3339)
            self._write_pending()  # what was logged first is written first
            if text:
                self._write(text)
            return False
        text = self._access_text(event, line, when)
        if not batch:
            self._write_pending()
            self._write(text)
            return False
        self._pending.append(text)
        self._pending_size += len(text)
        if self._pending_size >= BUFFER_BYTES:
            self._write_pending()
            return False
        return True

    def _write_interrupting(self) -> None:
        """(busy) The events a signal handler logged while this observer was busy, in order."""
        while self._interrupting:
            self._log(self._interrupting.pop(0), batch=False)

    def _access_text(self, event: dict, line: str, when: float) -> str:
        """The line as twisted's classic text has it: ``<time> [<namespace>#<level>] <line>``."""
        second = int(when)
        if second != self._second:
            self._second, self._stamp = second, formatTime(when, timeFormatRFC3339)
        namespace = event.get("log_namespace", "-")
        system = self._systems.get(namespace)
        if system is None:
            level = event.get("log_level")
            system = self._systems[namespace] = f"{namespace}#{level.name if level is not None else '-'}"
        if "\n" in line:
            line = line.replace("\n", "\n\t")
        return f"{self._stamp} [{system}] {line}\n"

    def _timer(self) -> None:
        self._flush_call = None
        self.flush()

    def flush(self) -> None:
        """Write the buffered access lines out now (from any thread)."""
        with self._lock:
            if self._busy:
                return  # a signal handler interrupted a call, which writes them
            self._busy = True
            try:
                self._write_interrupting()
                self._write_pending()
            finally:
                self._busy = False

    def _write_pending(self) -> None:
        """(busy) The buffered lines, in one write. A failed write loses them, as
        it would have lost each line alone; the next lines are tried again."""
        if self._pending:
            text, self._pending, self._pending_size = "".join(self._pending), [], 0
            self._write(text)

    def _write(self, text: str) -> None:
        self._out.write(text.encode("utf-8") if self._binary else text)
        self._out.flush()


def _rfc3339(when: float | None) -> str:
    return formatTime(when, timeFormatRFC3339)


def observer_for(twistd_options: Any, reactor: Any) -> ServerLogObserver | None:
    """
    The observer for where twistd would write (its ``--logfile``, or stdout when it runs in the
    foreground without one), or None where twistd's own choice stands: ``--syslog``,
    ``--logger``, a daemon asked to log to stdout (twistd refuses it), or options that are not
    twistd's (a service built by a test).
    """
    if twistd_options is None or not hasattr(twistd_options, "get"):
        return None
    if twistd_options.get("syslog") or twistd_options.get("logger"):
        return None
    name = twistd_options.get("logfile") or ""
    foreground = bool(twistd_options.get("nodaemon"))
    if name == "-" or (foreground and not name):
        return ServerLogObserver(sys.stdout, reactor) if foreground else None
    log_file = LogFile.fromFullPath(name or "twistd.log")
    observer = ServerLogObserver(log_file, reactor)
    if not signal.getsignal(signal.SIGUSR1):  # as twistd: SIGUSR1 rotates the file
        def rotate() -> None:
            observer.flush()  # the lines logged before the signal stay in the old file
            log_file.rotate()
        signal.signal(signal.SIGUSR1, lambda _signal, _frame: reactor.callFromThread(rotate))
    return observer


class ServerService(MultiService):
    """
    A server's top service: when twistd makes it a child of its application, it gives the
    application its log observer (`observer_for`), which twistd then uses instead of its own.
    """

    def __init__(self, twistd_options: Any = None, reactor: Any = None) -> None:
        super().__init__()
        self._twistd_options = twistd_options
        self._reactor = reactor

    def setServiceParent(self, parent: IServiceCollection) -> None:
        super().setServiceParent(parent)
        set_component = getattr(parent, "setComponent", None)
        get_component = getattr(parent, "getComponent", None)
        if set_component is None or get_component is None or get_component(ILogObserver, None) is not None:
            return
        observer = observer_for(self._twistd_options, self._reactor)
        if observer is not None:
            set_component(ILogObserver, observer)
