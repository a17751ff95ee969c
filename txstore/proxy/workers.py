# -*- test-case-name: txstore.test.integration.test_services -*-
"""
Proxy workers: ``[proxy] workers = N`` runs N proxy processes on one listening socket.

The ``twistd proxy`` process then serves nothing itself: it opens the listening socket (so a
port in use fails the start, as with one process) and starts N children, each a ``twistd
proxy`` given the socket as its file descriptor 3 (``--listen-fd 3``), which the kernel hands
new connections to in turn. A child that dies is started again after a second; SIGTERM to the
supervisor ends the children (SIGTERM, then SIGKILL after ``STOP_TIMEOUT``) and waits for them.

Each worker logs to a file of its own beside the supervisor's (``proxy.log`` → ``proxy-worker0.log``,
``proxy-worker1.log``, ...: one file per process, as ``LogFile`` appends without locking); a
supervisor in the foreground without ``--logfile`` shares its stdout with them.

The workers share nothing but the socket: each has its own caches, metrics and tokens. Use
``token_store = signed`` in ``[filter:tempauth]`` (or ``memcached``, with ``[filter:cache]``
``memcache_servers``, which shares the info cache too) so that a token from one worker is good
on every other (docs/auth.rst); the default, in-memory store only works with one worker.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger

CHILD_FD = 3
RESTART_DELAY = 1.0
STOP_TIMEOUT = 15.0


def worker_log_base(twistd_options: Any) -> str | None:
    """The supervisor's log file from twistd's options, when it writes one (not stdout or syslog)."""
    if twistd_options is None or not hasattr(twistd_options, "get") or twistd_options.get("syslog"):
        return None
    name = twistd_options.get("logfile") or ""
    if name == "-" or (not name and twistd_options.get("nodaemon")):
        return None
    return os.path.abspath(name or "twistd.log")


def worker_log(base: str, number: int) -> str:
    """Worker ``number``'s log file beside ``base``: ``log/proxy.log`` -> ``log/proxy-worker0.log``."""
    stem, dot, suffix = os.path.basename(base).partition(".")
    return os.path.join(os.path.dirname(base), f"{stem}-worker{number}{dot}{suffix}")


class _Worker(ProcessProtocol):
    def __init__(self, supervisor: WorkerSupervisor, number: int) -> None:
        self.supervisor = supervisor
        self.number = number
        self.ended: Deferred = Deferred()

    def processEnded(self, reason) -> None:
        self.ended.callback(None)
        self.supervisor._ended(self, reason)


class WorkerSupervisor(Service):
    log = Logger()

    def __init__(self, reactor: Any, bind_ip: str, bind_port: int, config_path: str, workers: int,
                 log_file: str | None = None) -> None:
        self._reactor = reactor
        self._log_file = log_file  # the supervisor's log file (each worker's is beside it), or None
        self.bind_ip = bind_ip
        self.bind_port = bind_port
        self._config = config_path
        self.count = workers
        self._socket: socket.socket | None = None
        self.workers: dict[int, _Worker] = {}
        self._restarts: dict[int, Any] = {}

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        family = socket.AF_INET6 if ":" in self.bind_ip else socket.AF_INET
        listening = socket.socket(family, socket.SOCK_STREAM)
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listening.bind((self.bind_ip, self.bind_port))
        except OSError as error:
            listening.close()
            raise SystemExit(f"proxy: cannot listen on {self.bind_ip}:{self.bind_port}: {error.strerror}") from None
        listening.listen(1024)
        listening.setblocking(False)  # the workers' reactors accept until EAGAIN (shared by every copy)
        listening.set_inheritable(True)
        self._socket = listening
        port = listening.getsockname()[1]
        self.log.info("proxy listening on {host}:{port} ({count} workers)", host=self.bind_ip, port=port,
                      count=self.count)

    def startService(self) -> None:
        if self._socket is None:
            self.privilegedStartService()
        super().startService()
        for number in range(self.count):
            self._spawn(number)

    def _spawn(self, number: int) -> None:
        self._restarts.pop(number, None)
        assert self._socket is not None
        worker = _Worker(self, number)
        logging = [f"--logfile={worker_log(self._log_file, number)}"] if self._log_file else []
        args = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--nodaemon", "--pidfile=",
                *logging, "proxy", "--config", self._config, "--listen-fd", str(CHILD_FD)]
        process = self._reactor.spawnProcess(
            worker, sys.executable, args, env=os.environ.copy(),
            childFDs={0: "w", 1: 1, 2: 2, CHILD_FD: self._socket.fileno()},
        )
        worker.pid = process.pid
        self.workers[number] = worker
        self.log.info("proxy worker {number} started (pid {pid})", number=number, pid=process.pid)

    def _ended(self, worker: _Worker, reason) -> None:
        if self.workers.get(worker.number) is worker:
            del self.workers[worker.number]
        if self.running:
            self.log.warn("proxy worker {number} (pid {pid}) ended: {why}; starting another",
                          number=worker.number, pid=getattr(worker, "pid", "?"), why=reason.getErrorMessage())
            self._restarts[worker.number] = self._reactor.callLater(RESTART_DELAY, self._spawn, worker.number)

    def stopService(self) -> Deferred:
        super().stopService()
        for call in self._restarts.values():
            if call.active():
                call.cancel()
        self._restarts.clear()
        workers = list(self.workers.values())
        for worker in workers:
            _signal(worker, "TERM")
        kill = self._reactor.callLater(STOP_TIMEOUT, lambda: [_signal(w, "KILL") for w in workers])
        done = DeferredList([w.ended for w in workers])

        def finished(result):
            if kill.active():
                kill.cancel()
            if self._socket is not None:
                self._socket.close()
                self._socket = None
            return result

        return done.addBoth(finished)


def _signal(worker: _Worker, name: str) -> None:
    try:
        worker.transport.signalProcess(name)
    except Exception:  # already gone
        pass


class ParentWatch(Service):
    """
    In a worker: its stdin is a pipe from the supervisor, so EOF there means the supervisor is
    gone (even killed with SIGKILL); the worker then stops rather than serve on as an orphan.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def startService(self) -> None:
        super().startService()
        from twisted.internet.protocol import Protocol
        from twisted.internet.stdio import StandardIO

        reactor = self._reactor

        class _Stdin(Protocol):
            def connectionLost(self, reason=None) -> None:
                if reactor.running:
                    reactor.stop()

        StandardIO(_Stdin(), reactor=reactor)
