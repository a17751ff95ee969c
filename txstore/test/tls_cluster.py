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
    pid = _pid(root / "run" / f"{name}.pid")
    if pid is None:
        return
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
    Start ``name`` (``proxy``, ``node1``, or another ``proxy-*`` written beside them) from its
    config ``<root>/etc/<name>.conf`` and wait until its port accepts connections; its pid.
    twistd daemonizes it, as no child of ours: a stopped process is then reaped by init, not
    left a zombie that ``txstore-aio --stop`` (or `stop`) would wait for until it kills it.
    """
    plugin = "proxy" if name.startswith("proxy") else "objectnode"
    config = root / "etc" / f"{name}.conf"
    pid_file = root / "run" / f"{name}.pid"
    pid_file.unlink(missing_ok=True)
    with open(root / "log" / f"{name}.stderr", "ab") as stderr:
        started = subprocess.run(
            [*twistd_command(), f"--pidfile={pid_file}", f"--logfile={root / 'log' / f'{name}.log'}",
             plugin, f"--config={config}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, timeout=START_TIMEOUT,
        )
    if started.returncode != 0:
        tail = (root / "log" / f"{name}.stderr").read_text()[-2000:]
        raise RuntimeError(f"{name} did not start ({started.returncode}):\n{tail}")
    deadline = time.monotonic() + START_TIMEOUT
    while (pid := _pid(pid_file)) is None or not _accepting(port):
        if pid is not None and not _alive(pid):
            raise RuntimeError(f"{name} exited; see {root / 'log' / f'{name}.log'}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not listen on {port} within {START_TIMEOUT:.0f}s")
        time.sleep(0.1)
    return pid


def _pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text())
    except (OSError, ValueError):  # not there yet, or being written
        return None


def restart(root: Path, name: str, port: int) -> int:
    stop(root, name)
    return start(root, name, port)


def all_tls(root: Path, proxy_port: int, base_port: int, nodes: int, pki) -> None:
    """
    The all-in-one at ``root`` (node N on ``base_port + 10 N``) restarted with HTTPS to its
    clients and mutual TLS between its processes, certificates from ``pki`` (`txstore.test.pki.PKI`).
    """
    etc = root / "etc"
    for number in range(1, nodes + 1):
        add_cluster_tls(etc / f"node{number}.conf", *pki.issue(f"node{number}", "127.0.0.1"), pki.cluster_ca)
    add_listener_tls(etc / "proxy.conf", *pki.node)  # names 127.0.0.1 and localhost
    add_cluster_tls(etc / "proxy.conf", *pki.issue("proxy-client", "proxy.internal"), pki.cluster_ca)
    names = [f"node{number}" for number in range(1, nodes + 1)]
    for name in ("proxy", *names):
        stop(root, name)
    for number, name in enumerate(names, 1):
        start(root, name, base_port + 10 * number)
    start(root, "proxy", proxy_port)
