"""Tests for the proxy's reading of a node's response body: how a reader that stops lets go."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone

from txstore.proxy.controllers.obj_get import ObjectBody


class _Transport:
    """The body's transport as twisted's client gives it: stopProducing closes the connection."""

    def __init__(self) -> None:
        self.stopped = 0

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        self.stopped += 1


class _Response:
    def __init__(self) -> None:
        self.transport = _Transport()
        self.protocol = None

    def deliver(self, protocol) -> None:
        self.protocol = protocol
        protocol.makeConnection(self.transport)


class StopTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.response = _Response()
        self.body = ObjectBody(self.response, self.clock, 10.0, None, None)

    def test_a_stop_as_the_last_bytes_arrive_leaves_the_finished_connection_alone(self) -> None:
        """
        The reader stops inside the dataReceived of the body's last bytes; twisted then ends
        the response and pools the connection, which must not be closing by then.
        """
        stream = self.response.protocol
        self.body.read().addCallback(lambda _: self.body.stop())
        stream.dataReceived(b"the last bytes")
        self.assertEqual(self.response.transport.stopped, 0)
        stream.connectionLost(Failure(ResponseDone()))  # twisted, unwinding that same call
        self.clock.advance(0)
        self.assertEqual(self.response.transport.stopped, 0)

    def test_a_stop_mid_body_closes_the_connection_a_turn_later(self) -> None:
        self.response.protocol.dataReceived(b"part of it")
        self.body.stop()
        self.clock.advance(0)
        self.assertEqual(self.response.transport.stopped, 1)
