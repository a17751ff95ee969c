"""
An all-in-one (``txstore-aio``'s files under one root) turned to TLS by hand, as an operator
would: TLS options written into the generated config files, then each process restarted with
twistd on the pid and log files the all-in-one uses (so ``txstore-aio --stop`` still stops it).
For the integration tests and ``benchmarks/tls_cost.py``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from txstore.aio.launcher import twistd_command

START_TIMEOUT = 60.0


def add_listener_tls(config: Path, certificate: Path, key: Path) -> None:
    """The proxy at ``config`` serves HTTPS with this certificate and key."""
    text = config.read_text()
    assert "[proxy]\n" in text
    config.write_text(text.replace("[proxy]\n", f"[proxy]\ntls_certificate = {certificate}\ntls_private_key = {key}\n", 1))


def add_cluster_tls(config: Path, certificate: Path, key: Path, ca: Path) -> None:
    """The proxy or node at ``config`` speaks backend HTTP and replication over mutual TLS."""
    text = config.read_text()
    assert "[cluster-tls]" not in text
    config.write_text(text + f"\n[cluster-tls]\ntls_certificate = {certificate}\ntls_private_key = {key}\ntls_ca = {ca}\n")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _accepting(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def stop(root: Path, name: str, timeout: float = 30.0) -> None:
    """Stop the all-in-one's process ``name`` (``proxy``, ``node1``, ...) by its pid file."""
    pid_file = root / "run" / f"{name}.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.05)


def start(root: Path, name: str, port: int) -> int:
    """
    Start ``name`` from its config in ``<root>/etc`` (twistd, in its own session as the
    all-in-one starts it) and wait until its port accepts connections; its pid.
    """
    plugin = "proxy" if name == "proxy" else "objectnode"
    config = root / "etc" / ("proxy.conf" if name == "proxy" else f"{name}.conf")
    pid_file = root / "run" / f"{name}.pid"
    pid_file.unlink(missing_ok=True)
    with open(root / "log" / f"{name}.stderr", "ab") as stderr:
        process = subprocess.Popen(
            [*twistd_command(), "--nodaemon", f"--pidfile={pid_file}", f"--logfile={root / 'log' / f'{name}.log'}",
             plugin, f"--config={config}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while not (pid_file.exists() and _accepting(port)):
        if process.poll() is not None:
            tail = (root / "log" / f"{name}.stderr").read_text()[-2000:]
            raise RuntimeError(f"{name} exited ({process.returncode}):\n{tail}")
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"{name} did not listen on {port} within {START_TIMEOUT:.0f}s")
        time.sleep(0.1)
    return process.pid


def restart(root: Path, name: str, port: int) -> int:
    stop(root, name)
    return start(root, name, port)
