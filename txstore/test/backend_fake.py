"""
The in-memory `IBackendClient`: storage nodes scripted per ``ip:port/device``, answering at
once, so the proxy's controllers (account, container and object) run on a `Clock`.

A behaviour maps a `Call` to a `BackendResponse` or an exception (the node is down, or timed
out). For streamed GETs a behaviour may answer `Cut` (the body breaks off after some bytes);
for PUTs a 2xx answer means "100 Continue, then this answer for the body" (its ETag the body's
md5 unless scripted), anything else the node's answer before the body.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable

from attrs import field, frozen
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionLost
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from zope.interface import implementer

from txstore.common.backend_client import BackendError, BackendResponse, BackendTimeout
from txstore.common.put_connection import NodeAnswer
from txstore.interfaces import IBackendClient


@frozen
class Call:
    method: str
    node: str  # ip:port/device
    path: str
    headers: dict[str, str]
    body: bytes | None
    query: str
    timeout: float | None = None
    received: bytearray = field(factory=bytearray, eq=False)  # a PUT's body as it arrives


@frozen
class Cut:
    """A GET answer whose body breaks off after ``after`` bytes."""

    response: BackendResponse
    after: int


@frozen
class Held:
    """
    An answer the node gives only once the test fires ``release`` (a PUT's, whatever its
    status, is the final one: the body is invited first);
    never fired, a node gone silent (the fake has no timeouts: the caller's must end the wait).
    """

    response: BackendResponse
    release: Deferred = field(factory=Deferred)


Behaviour = Callable[[Call], "BackendResponse | Cut | Held | BaseException"]


def reply(status: int, body: bytes = b"", **headers: str) -> Behaviour:
    """A node answering ``status`` (header names with ``_`` for ``-``)."""
    response = BackendResponse(status, {k.replace("_", "-").lower(): v for k, v in headers.items()}, body)
    return lambda call: response


def down(call: Call) -> BaseException:
    return BackendError(f"{call.method} {call.node}: connection refused")


def slow(call: Call) -> BaseException:
    return BackendTimeout(f"{call.method} {call.node}: no answer within 10s")


def usual(call: Call) -> BackendResponse:
    """What a healthy account or container server answers (and an object server to a PUT)."""
    status = {"PUT": 201, "POST": 204, "DELETE": 204, "HEAD": 204, "GET": 200}[call.method]
    return BackendResponse(status, {"x-backend-timestamp": "0000000001.00000"}, b"")


def in_turn(*outcomes: BackendResponse | BaseException, then: Behaviour = usual) -> Behaviour:
    """A node answering ``outcomes`` one call after the other, then as ``then``."""
    waiting = list(outcomes)
    return lambda call: waiting.pop(0) if waiting else then(call)


@implementer(IBackendClient)
class FakeBackend:
    """A backend client whose nodes answer as scripted in ``nodes`` (by ``ip:port/device``)."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.nodes: dict[str, Behaviour] = {}
        self.default: Behaviour = usual

    def _call(self, method: str, host: str, port: int, path: str, headers, body, query: str = "",
              timeout: float | None = None):
        device = path.split("/")[1]
        call = Call(method, f"{host}:{port}/{device}", path, dict(headers or {}), body, query, timeout)
        self.calls.append(call)
        return call, self.nodes.get(call.node, self.default)(call)

    async def request(
        self, method: str, host: str, port: int, path: str, headers: dict[str, str] | None = None,
        body: bytes | None = None, timeout: float | None = None, query: str = "",
    ) -> BackendResponse:
        _call, outcome = self._call(method, host, port, path, headers, body, query, timeout)
        if isinstance(outcome, BaseException):
            raise outcome
        if isinstance(outcome, Held):
            await outcome.release
        return outcome.response if isinstance(outcome, (Cut, Held)) else outcome

    async def notify(self, method: str, host: str, port: int, path: str, headers: dict[str, str],
                     timeout: float | None = None) -> BackendResponse:
        return await self.request(method, host, port, path, headers, timeout=timeout)

    async def stream(self, method: str, host: str, port: int, path: str, headers: dict[str, str],
                     timeout: float | None = None) -> FakeStreamedResponse:
        _call, outcome = self._call(method, host, port, path, headers, None, timeout=timeout)
        if isinstance(outcome, BaseException):
            raise outcome
        cut = outcome.after if isinstance(outcome, Cut) else None
        response = outcome.response if isinstance(outcome, Cut) else outcome
        headers = dict(response.headers)
        declared = headers.pop("content-length", None)
        length = len(response.body) if method == "GET" else (int(declared) if declared else None)
        return FakeStreamedResponse(response.status, headers, length, response.body if method == "GET" else b"", cut)

    async def put(self, host: str, port: int, path: str, headers: dict[str, str], timeout: float | None = None):
        call, outcome = self._call("PUT", host, port, path, headers, None, timeout=timeout)
        if isinstance(outcome, BaseException):
            raise outcome
        held = outcome.release if isinstance(outcome, Held) else None
        outcome = outcome.response if isinstance(outcome, Held) else outcome
        connection = FakePutConnection(call, outcome, held)
        if 200 <= outcome.status < 300 or held is not None:  # a held answer is the final one
            return connection, None
        connection.answer.callback(NodeAnswer(outcome.status, dict(outcome.headers), outcome.body))
        return connection, NodeAnswer(outcome.status, dict(outcome.headers), outcome.body)

    def close(self) -> Deferred:
        return succeed(None)

    def asked(self, method: str | None = None) -> list[str]:
        """The nodes asked, in order (only for ``method`` if given)."""
        return [c.node for c in self.calls if method is None or c.method == method]

    def to(self, node: str) -> list[Call]:
        return [c for c in self.calls if c.node == node]


class _FakeTransport:
    """What a body's protocol may do to the node's socket: pause, resume, stop."""

    def __init__(self, on_resume: Callable[[], None]) -> None:
        self.paused = False
        self.stopped = False
        self._on_resume = on_resume

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self._on_resume()

    def stopProducing(self) -> None:
        self.stopped = True
        self._on_resume()


class FakeStreamedResponse:
    """A scripted body, delivered in 64 KiB pieces while the protocol does not pause it."""

    PIECE = 64 * 1024

    def __init__(self, status: int, headers: dict[str, str], length: int | None, body: bytes, cut: int | None) -> None:
        self.status = status
        self.headers = headers
        self.length = length
        self._body = body if cut is None else body[:cut]
        self._cut = cut is not None
        self._sent = 0
        self._protocol = None
        self._transport: _FakeTransport | None = None
        self._ended = False

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    def deliver(self, protocol) -> None:
        self._protocol = protocol
        self._transport = _FakeTransport(self._pump)
        protocol.makeConnection(self._transport)
        self._pump()

    def _pump(self) -> None:
        transport = self._transport
        assert transport is not None and self._protocol is not None
        while not self._ended and not transport.paused and not transport.stopped and self._sent < len(self._body):
            piece = self._body[self._sent:self._sent + self.PIECE]
            self._sent += len(piece)
            self._protocol.dataReceived(piece)
        if self._ended or transport.paused:
            return
        if transport.stopped or self._cut:
            self._ended = True
            self._protocol.connectionLost(Failure(ConnectionLost("the node broke off")))
        elif self._sent >= len(self._body):
            self._ended = True
            self._protocol.connectionLost(Failure(ResponseDone()))

    async def discard(self, reactor, timeout: float) -> bool:
        return True

    def abandon(self) -> None:
        """As `StreamedResponse.abandon`: the body is not read and the connection is closed."""
        self.abandoned = True
        self.deliver(_Closer())


class _Closer(Protocol):
    def connectionMade(self) -> None:
        self.transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        pass


class FakePutConnection:
    """
    A node's PUT connection: takes the body at once; answers when it is finished. As a node
    that offers nothing on its 100 Continue, it makes an EC PUT take trailers and the POST.
    """

    def __init__(self, call: Call, outcome: BackendResponse, held: Deferred | None = None) -> None:
        self._held = held  # the final answer waits for it (`Held`)
        self.continue_headers: dict[str, str] = {}
        self.call = call
        self._outcome = outcome
        self.answer: Deferred = Deferred()
        self.aborted = False
        self.finished = False
        self.writable = True

    def write(self, chunk: bytes) -> None:
        self.call.received.extend(chunk)

    def finish(self, trailers: dict[str, str] | None = None) -> None:
        self.finished = True
        self.trailers = trailers  # an EC archive's (its object's ETag and length), a chunked body's md5
        headers = {"etag": hashlib.md5(bytes(self.call.received)).hexdigest(), **self._outcome.headers}
        if trailers and "X-Backend-Body-Md5" in trailers:  # a replicated body's (body_digest)
            body = bytes(self.call.received)
            if trailers != {"X-Backend-Body-Md5": hashlib.md5(body).hexdigest(),
                            "X-Backend-Body-Crc32": f"{zlib.crc32(body):08x}"}:
                raise AssertionError(f"the trailers {trailers} are not the body's")

        def answer(_ignored=None) -> None:
            if not self.answer.called:
                self.answer.callback(NodeAnswer(self._outcome.status, headers, self._outcome.body))

        if self._held is None:
            answer()
        else:
            self._held.addCallback(answer)

    def abort(self) -> None:
        self.aborted = True

    def wait_writable(self) -> Deferred:
        return succeed(None)
