# -*- test-case-name: txstore.test.unit.test_metrics -*-
"""
StatsD, for operators whose dashboards expect Swift's metric names: with ``log_statsd_host``
set, each server sends one UDP datagram per metric as requests end (Swift's names: the proxy's
``proxy-server.<type>.<method>.<status>.timing`` / ``.first-byte.timing`` / ``.xfer``, a node's
``object-server.<method>.timing``, ...). Fire and forget: a missing or slow StatsD server costs
nothing but the datagram, and never an error.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger


class StatsdClient:
    log = Logger()

    def __init__(self, reactor: Any, host: str, port: int = 8125, prefix: str = "", sample_rate: float = 1.0,
                 rng=random.random) -> None:
        self._address = (host, port)
        self._prefix = f"{prefix}." if prefix and not prefix.endswith(".") else prefix
        self._rate = sample_rate
        self._rng = rng
        self._protocol = DatagramProtocol()
        self._port = reactor.listenUDP(0, self._protocol, interface="::" if ":" in host else "0.0.0.0")

    def timing(self, name: str, milliseconds: float) -> None:
        self._send(f"{name}:{milliseconds:.3f}|ms")

    def increment(self, name: str) -> None:
        self._send(f"{name}:1|c")

    def update_stats(self, name: str, value: int) -> None:
        self._send(f"{name}:{value}|c")

    def _send(self, metric: str) -> None:
        if self._rate < 1.0:
            if self._rng() >= self._rate:
                return
            metric += f"|@{self._rate}"
        try:
            self._protocol.transport.write(f"{self._prefix}{metric}".encode(), self._address)
        except Exception as error:  # unreachable address, full buffer: a metric is not worth an error
            self.log.debug("statsd: {error}", error=error)

    def close(self):
        return self._port.stopListening()
