# -*- test-case-name: txstore.test.unit.test_connect -*-
"""
Outgoing TCP connections to other nodes, made quietly and without a resolver.

Two costs of Twisted's ready-made ``connectProtocol(HostnameEndpoint(...))`` showed up in a
profile of an idle all-in-one (a replicator opens one session per partition and peer: 1,300
connections a pass per node):

- its one-shot factory is *noisy*: two log lines ("Starting factory", "Stopping factory") per
  connection, a megabyte of log every twenty seconds;
- ``HostnameEndpoint`` resolves even an IP literal through ``getaddrinfo`` in the reactor's
  thread pool, a thread round trip per connection.

Ring addresses are IP literals, so `connect` dials them directly (IPv4 or IPv6); a host name
still goes through ``HostnameEndpoint``.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory, Protocol


class _OneProtocol(Factory):
    """Hands out one given protocol, and says nothing about starting or stopping."""

    noisy = False

    def __init__(self, protocol: Protocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: Any) -> Protocol:
        return self._protocol


def endpoint_for(reactor: Any, host: str, port: int, timeout: float):
    """A client endpoint for ``host``: direct for an IP literal, resolving otherwise."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return HostnameEndpoint(reactor, host, port, timeout=timeout)
    if address.version == 6:
        return TCP6ClientEndpoint(reactor, host, port, timeout=timeout)
    return TCP4ClientEndpoint(reactor, host, port, timeout=timeout)


def connect(reactor: Any, host: str, port: int, protocol: Protocol, timeout: float, tls: Any = None) -> Deferred:
    """
    Connect ``protocol`` to ``host:port`` (through TLS when ``tls`` client options are given);
    fires with the protocol once connected, fails if the connection does not complete within
    ``timeout`` seconds.
    """
    endpoint = endpoint_for(reactor, host, port, timeout)
    if tls is not None:
        endpoint = wrapClientTLS(tls, endpoint)
    connecting = endpoint.connect(_OneProtocol(protocol))
    connecting.addTimeout(timeout + 1.0, reactor)
    return connecting
