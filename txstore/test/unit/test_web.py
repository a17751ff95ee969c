"""
Tests for txstore.common.web: the errors handlers raise, and the access line. How a node's
answers reach the wire is tested in test_node_edge, the proxy's in test_proxy_edge.
"""

from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from txstore.common.web import HTTPError, log_access


class HTTPErrorTests(SynchronousTestCase):
    def test_reason_and_headers(self) -> None:
        err = HTTPError(409, "Conflict: newer", {"X-Backend-Timestamp": "1.00000"})
        self.assertEqual((err.status, err.reason, str(err)), (409, "Conflict: newer", "Conflict: newer"))
        self.assertEqual(err.headers, {"X-Backend-Timestamp": "1.00000"})
        self.assertEqual(HTTPError(404, "Not Found").headers, {})


class _Logged(Resource):
    """Logs each request's access line; answers at once, or never when ``hold`` is set."""

    isLeaf = True

    def __init__(self, events: list[dict], hold: bool = False) -> None:
        super().__init__()
        self.logger = Logger(observer=events.append)
        self.hold = hold

    def render(self, request):
        log_access(self.logger, request, "tx1", 0.0)
        if self.hold:
            return NOT_DONE_YET
        request.setResponseCode(201)
        return b"made"


class AccessLogTests(SynchronousTestCase):
    def request(self, resource: Resource):
        channel = Site(resource, reactor=Clock()).buildProtocol(None)
        channel.makeConnection(StringTransport())
        channel.dataReceived(b"PUT /a/b%20c?x=1 HTTP/1.1\r\nHost: h\r\n\r\n")
        return channel

    def test_one_line_when_the_request_finishes(self) -> None:
        events: list[dict] = []
        self.request(_Logged(events))
        [event] = events
        client, method, path, status, sent, duration, trans_id = formatEvent(event).split(" ")
        self.assertEqual((method, path, status, sent, trans_id), ("PUT", "/a/b%20c?x=1", "201", "4", "tx1"))
        self.assertTrue(duration.endswith("s"))

    def test_a_client_gone_is_said(self) -> None:
        events: list[dict] = []
        channel = self.request(_Logged(events, hold=True))
        self.assertEqual(events, [])
        channel.connectionLost(Failure(ConnectionDone()))
        [event] = events
        self.assertTrue(formatEvent(event).endswith(" tx1 (client gone)"))
