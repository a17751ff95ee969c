"""Tests for txstore.common.connect: quiet, resolver-free connections to nodes."""

from __future__ import annotations

from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from txstore.common.connect import connect, endpoint_for


class EndpointForTests(SynchronousTestCase):
    def test_ipv4_literal_dials_directly(self) -> None:
        self.assertIsInstance(endpoint_for(MemoryReactorClock(), "127.0.0.1", 6200, 2.0), TCP4ClientEndpoint)

    def test_ipv6_literal_dials_directly(self) -> None:
        self.assertIsInstance(endpoint_for(MemoryReactorClock(), "::1", 6200, 2.0), TCP6ClientEndpoint)

    def test_a_name_is_resolved(self) -> None:
        self.assertIsInstance(endpoint_for(MemoryReactorClock(), "node1.example", 6200, 2.0), HostnameEndpoint)


class ConnectTests(SynchronousTestCase):
    def test_connects_the_given_protocol_quietly(self) -> None:
        reactor = MemoryReactorClock()
        protocol = Protocol()
        connecting = connect(reactor, "127.0.0.1", 6201, protocol, 2.0)
        host, port, factory, timeout, _bind = reactor.tcpClients[0]
        self.assertEqual((host, port, timeout), ("127.0.0.1", 6201, 2.0))
        # The endpoint wraps our factory; the wrapped one is quiet and builds our protocol.
        inner = factory._wrappedFactory
        self.assertFalse(inner.noisy)
        self.assertIs(inner.buildProtocol(None), protocol)
        self.assertNoResult(connecting)

    def test_times_out(self) -> None:
        reactor = MemoryReactorClock()
        connecting = connect(reactor, "127.0.0.1", 6201, Protocol(), 2.0)
        reactor.advance(3.1)
        self.failureResultOf(connecting)
