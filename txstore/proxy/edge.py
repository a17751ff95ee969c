# -*- test-case-name: txstore.test.test_proxy_edge -*-
"""
The proxy's HTTP edge: the one module that touches twisted's ``Request``.

A Klein app turns each client request into a `SwiftRequest`, hands it to the pipeline (the
outermost `IApp`) and renders the `SwiftResponse` it gets back: status, headers, and the body,
written whole or pumped from its `IByteSource` only while the client keeps up (the edge is the
response's push producer; while twisted pauses it, no chunk is read, so the source holds back
the storage node's socket in turn). A body that breaks off mid-way aborts the connection, so
the client never takes a short body for a whole one. A client that goes away cancels the
pipeline's work (Klein cancels the handler's Deferred) and stops the body source.

Every path goes to the pipeline: middlewares answer some (``/healthcheck``, ``/auth/v1.0``, S3
paths) and the proxy application routes the rest (`txstore.proxy.application`). Klein cannot
route a path that is not UTF-8 once percent-decoded (nor a request whose Host is not); such a
request skips the Klein map and still goes through the pipeline, so the client gets Swift's
412 from the application.
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from klein import Klein
from txstore.common.routing import klein_can_route, swift_routes
from txstore.proxy.messages import BytesSource, HeaderMap, SwiftRequest, SwiftResponse

log = Logger()

NO_BODY_STATUSES = (204, 304)
# Requests whose work stops when the client goes away. A write goes on: once its body is in,
# the nodes' commit (fsync, rename, container updates) must not be torn by a client's hang-up;
# one whose body is cut short fails on its own (the body's read fails).
READS = (b"GET", b"HEAD")


class ProxyEdge:
    """Serves ``pipeline`` (an `IApp`) over twisted.web."""

    app = swift_routes(Klein())

    def __init__(self, pipeline) -> None:
        self.pipeline = pipeline

    def resource(self) -> Resource:
        return _EdgeResource(self, self.app.resource())

    @app.route("/", methods=None)
    @app.route("/<objname:_rest>", methods=None)
    def route(self, request, _rest: str = "") -> Deferred:
        served = ensureDeferred(self.serve(request))
        if request.method in READS:
            return served  # Klein cancels it when the client goes away: the nodes are let go
        return _shielded(served)

    @app.handle_errors(Exception)
    def unexpected(self, request, failure: Failure) -> bytes:
        """The last resort (the catch_errors middleware answers first): plain text, no page."""
        log.failure("unhandled error at the edge for {method} {path}", failure, method=request.method,
                    path=request.path)
        if request.startedWriting:
            _abort(request)
            return b""
        request.setResponseCode(500)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"Content-Length", b"22")
        return b"Internal Server Error\n"

    async def serve(self, request) -> None:
        swift_request = to_swift_request(request)
        response = await self.pipeline(swift_request)
        await render(request, response)


class _EdgeResource(Resource):
    """The Klein resource, but a path Klein cannot decode goes to the pipeline unrouted."""

    isLeaf = True

    def __init__(self, edge: ProxyEdge, routed: Resource) -> None:
        super().__init__()
        self._edge = edge
        self._routed = routed

    def render(self, request):
        if klein_can_route(request):
            return self._routed.render(request)
        served = ensureDeferred(self._edge.serve(request))
        served.addErrback(lambda failure: self._edge.unexpected(request, failure))
        return NOT_DONE_YET


def to_swift_request(request) -> SwiftRequest:
    """What the pipeline sees of a twisted request: values only, the body as a byte source."""
    headers = HeaderMap()
    for name, values in request.requestHeaders.getAllRawHeaders():
        headers[name.decode("latin-1")] = ",".join(v.decode("latin-1") for v in values)
    uri = request.uri.decode("latin-1")
    path, _, query = uri.partition("?")
    body = getattr(request, "body", None)
    if body is None:  # not a StreamingRequest (tests with a plain Site): the body was spooled
        request.content.seek(0)
        body = BytesSource(request.content.read())
    address = request.getClientAddress()
    host = headers.get("Host")
    if not host:
        local = request.getHost()
        host = f"{local.host}:{local.port}"
    return SwiftRequest(
        method=request.method.decode("latin-1"),
        path=path,
        query=query,
        headers=headers,
        body=body,
        client_ip=getattr(address, "host", "-"),
        host=host,
        scheme="https" if request.isSecure() else "http",
    )


async def render(request, response: SwiftResponse) -> None:
    """Write ``response`` onto twisted's ``request`` (status, headers, body) and finish it."""
    if _gone(request):
        response.discard_body()
        return
    request.setResponseCode(response.status)
    for name, value in response.headers.items():
        request.responseHeaders.setRawHeaders(name.encode("latin-1"), [value.encode("latin-1")])
    head = request.method == b"HEAD"
    if not response.streamed:
        body = b"" if response.status in NO_BODY_STATUSES else response.body
        if not (head and "Content-Length" in response.headers):
            request.setHeader(b"Content-Length", b"%d" % len(body))
        if body and not head:
            request.write(body)
        request.finish()
        return
    if head or response.status in NO_BODY_STATUSES:
        response.body.stop()
        request.finish()
        return
    pump = _Pump(request, response.body)
    if await pump.run():
        request.finish()
    else:
        _abort(request)
        await _finished(request)


@implementer(IPushProducer)
class _Pump:
    """Reads the body source only while the client's connection takes more."""

    def __init__(self, request, source) -> None:
        self._request = request
        self._source = source
        self._paused = False
        self._resume: Deferred | None = None
        self._stopped = False

    async def run(self) -> bool:
        """True once the whole body went out; False when it broke off or the client went."""
        request = self._request
        request.registerProducer(self, True)
        try:
            while not self._stopped:
                if self._paused:
                    self._resume = Deferred()
                    await self._resume
                    continue
                try:
                    chunk = await self._source.read()
                except Exception as err:
                    log.warn("response body broke off after {sent} bytes: {error}", sent=request.sentLength,
                             error=err)
                    self._source.stop()
                    return False
                if not chunk:
                    return True
                if self._stopped:
                    break
                request.write(chunk)
            self._source.stop()
            return False
        finally:
            if request.channel is not None:
                request.unregisterProducer()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._wake()

    def stopProducing(self) -> None:
        self._stopped = True
        self._wake()

    def _wake(self) -> None:
        waiter, self._resume = self._resume, None
        if waiter is not None:
            waiter.callback(None)


def _shielded(work: Deferred) -> Deferred:
    """A Deferred for Klein whose cancellation leaves ``work`` running."""
    shield: Deferred = Deferred(lambda _d: None)

    def done(result):
        if not shield.called:
            shield.callback(result)
        elif isinstance(result, Failure) and not result.check(CancelledError):
            log.failure("after the client went away", result)

    work.addBoth(done)
    return shield


def _gone(request) -> bool:
    return request.channel is None or getattr(request, "_disconnected", False)


def _abort(request) -> None:
    if request.channel is not None:
        request.channel.transport.abortConnection()


async def _finished(request) -> None:
    """Wait until twisted has seen the connection end (Klein then leaves the request alone)."""
    if _gone(request):
        return
    try:
        await request.notifyFinish()
    except Exception:
        pass
