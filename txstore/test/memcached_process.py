"""
A real memcached (Debian's package) for tests, on a free loopback port, stopped in cleanup.
Tests that need one call `memcached_for(case)`, which skips the test with the reason when
``/usr/bin/memcached`` (or ``memcached`` on PATH) is missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time

from twisted.trial.unittest import SkipTest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def memcached_binary() -> str | None:
    return shutil.which("memcached") or (os.path.exists("/usr/bin/memcached") and "/usr/bin/memcached") or None


class MemcachedProcess:
    """One memcached on 127.0.0.1:``port``; `kill` (SIGKILL) and `start` again on the same port."""

    def __init__(self, binary: str, port: int) -> None:
        self.binary, self.port = binary, port
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        as_root = ["-u", "root"] if os.geteuid() == 0 else []  # memcached will not run as root unasked
        self.process = subprocess.Popen(
            [self.binary, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", "-m", "16", *as_root],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"memcached did not start on port {self.port}") from None
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: gone at once, as a crashed memcached (its values with it)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def memcached_for(case) -> MemcachedProcess:
    """A started memcached, stopped when ``case`` ends; skips the test without one."""
    binary = memcached_binary()
    if binary is None:
        raise SkipTest("no memcached (apt-get install memcached)")
    memcached = MemcachedProcess(binary, free_port())
    memcached.start()
    case.addCleanup(memcached.stop)
    return memcached
