# -*- test-case-name: txstore.test.unit.test_proxy_edge -*-
"""
The proxy's HTTP edge: the one module that touches twisted's ``Request``.

It turns each client request into a `SwiftRequest`, hands it to the pipeline (the outermost
`IApp`) and renders the `SwiftResponse` it gets back: status, headers, and the body, written
whole or pumped from its `IByteSource` only while the client keeps up (the edge is the
response's push producer; while twisted pauses it, no chunk is read, so the source holds back
the storage node's socket in turn). A body that breaks off mid-way aborts the connection, so
the client never takes a short body for a whole one. A client that goes away from a GET or
HEAD cancels the pipeline's work and stops the body source; a write goes on (below).

Every path goes to the pipeline: middlewares answer some (``/healthcheck``, ``/auth/v1.0``, S3
paths) and the proxy application routes the rest with its Klein routes
(`txstore.proxy.application`). The edge itself routes nothing, so it is a plain leaf resource
rather than a Klein resource: serving a catch-all route through ``KleinResource`` cost 45 µs
per request here (measured: 98 against 54 µs for a fixed 4 KiB answer), a third of what the
whole proxy spent on a small request before the pipeline. It also takes any path and Host,
where Klein refuses those it cannot decode as UTF-8 with its own page.
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError, ensureDeferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from txstore.common.flow import DrainWaiter, DrainedProducer
from txstore.proxy.messages import BytesSource, HeaderMap, SwiftRequest, SwiftResponse, unwatched

log = Logger()

NO_BODY_STATUSES = (204, 304)
# Requests whose work stops when the client goes away. A write goes on: once its body is in,
# the nodes' commit (fsync, rename, container updates) must not be torn by a client's hang-up;
# one whose body is cut short fails on its own (the body's read fails).
READS = (b"GET", b"HEAD")
# What a client's connection may hold unsent before the pump pauses. Twisted's 64 KiB, the
# size of one socket read, paused it after every piece (a pause, a resume and a read through
# the body's layers per 64 KiB); at 256 KiB a streamed response holds at most that plus the
# body source's own queue.
STREAM_BUFFER = 256 * 1024


class ProxyEdge(Resource):
    """Serves ``pipeline`` (an `IApp`) over twisted.web: a leaf resource, every path to the pipeline."""

    isLeaf = True

    def __init__(self, pipeline, metrics=None) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.metrics = metrics  # a ServerMetrics served at /metrics (before the pipeline: no token)

    def resource(self) -> Resource:
        return self

    def render(self, request) -> int | bytes:
        if self.metrics is not None and request.path == b"/metrics":
            return self.metrics.resource().render(request)
        served = ensureDeferred(self.serve(request))
        served.addErrback(self._unexpected, request)
        if request.method in READS:
            # A client that goes away cancels the work, so the nodes are let go at once.
            request.notifyFinish().addErrback(lambda _failure: served.cancel())
        return NOT_DONE_YET

    async def serve(self, request) -> None:
        swift_request = to_swift_request(request)
        response = await self.pipeline(swift_request)
        await render(request, response)

    def _unexpected(self, failure: Failure, request) -> None:
        """The last resort (catch_errors answers first): plain text, never a page or a traceback."""
        if failure.check(CancelledError) or _gone(request):
            return
        log.failure("unhandled error at the edge for {method} {path}", failure, method=request.method,
                    path=request.path)
        if request.startedWriting:
            _abort(request)
            return
        request.setResponseCode(500)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"Content-Length", b"22")
        request.write(b"Internal Server Error\n")
        request.finish()


def to_swift_request(request) -> SwiftRequest:
    """What the pipeline sees of a twisted request: values only, the body as a byte source."""
    headers = HeaderMap()
    for name, values in request.requestHeaders.getAllRawHeaders():
        value = values[0] if len(values) == 1 else b",".join(values)
        headers[name.decode("latin-1")] = value.decode("latin-1")
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
        environ={"SERVER_PROTOCOL": request.clientproto.decode("latin-1")},
    )


async def render(request, response: SwiftResponse) -> None:
    """Write ``response`` onto twisted's ``request`` (status, headers, body) and finish it."""
    if _gone(request):
        response.discard_body()
        return
    request.setResponseCode(response.status)
    for name, value in response.headers.items():
        request.responseHeaders.setRawHeaders(name.encode("latin-1"), [value.encode("latin-1")])
    if _asks_keep_alive(request):
        request.setHeader(b"Connection", b"keep-alive")
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
    transport = request.channel.transport
    if getattr(transport, "bufferSize", STREAM_BUFFER) < STREAM_BUFFER:
        transport.bufferSize = STREAM_BUFFER
    pump = _Pump(request, response.body)
    if await pump.run():
        request.finish()
    else:
        _abort(request)
        await _finished(request)


@implementer(IPushProducer)
class _Pump(DrainedProducer):
    """
    Reads the body source only while the client's connection takes more. The middlewares that
    only watch the body (`WatchedSource`: the access line, the abort on a failure) are told at
    the end; the chunks are read from the source under them, one read each.
    """

    def __init__(self, request, source) -> None:
        self._request = request
        self._source, self._watchers = unwatched(source)
        self._sent = 0
        self._drain = DrainWaiter()
        self._stopped = False

    async def run(self) -> bool:
        """True once the whole body went out; False when it broke off or the client went."""
        request = self._request
        source = self._source
        request.registerProducer(self, True)
        try:
            while not self._stopped:
                if self._drain.paused:
                    await self._drain.wait()
                    continue
                try:
                    chunk = await source.read()
                except Exception:
                    failure = self._failed(Failure())
                    log.warn("response body broke off after {sent} bytes: {error}", sent=request.sentLength,
                             error=failure.value)
                    self._stop_source()
                    return False
                if not chunk:
                    for watcher in reversed(self._watchers):  # innermost first, as their callbacks run
                        watcher.ended(self._sent)
                    return True
                self._sent += len(chunk)
                if self._stopped:
                    break
                request.write(chunk)
            self._stop_source()
            return False
        finally:
            if request.channel is not None:
                request.unregisterProducer()

    def _failed(self, failure: Failure) -> Failure:
        """The failure as the watchers pass it on, innermost first (catch_errors makes it an abort)."""
        for watcher in reversed(self._watchers):
            try:
                failure = watcher.failed(failure, self._sent)
            except BaseException:
                failure = Failure()
        return failure

    def _stop_source(self) -> None:
        for watcher in self._watchers:  # outermost first, as their stop() calls run
            watcher.stopped(self._sent)
        self._source.stop()

    def stopProducing(self) -> None:
        self._stopped = True
        self._drain.release()


def _asks_keep_alive(request) -> bool:
    """
    An HTTP/1.1 request that says ``Connection: keep-alive``: Swift's server says it back (its
    functional tests check it), and twisted keeps such a connection open. An HTTP/1.0 one is
    closed whatever it asks, so it is not told otherwise.
    """
    if request.clientproto != b"HTTP/1.1":
        return False
    tokens = {token.strip().lower() for value in request.requestHeaders.getRawHeaders(b"Connection", [])
              for token in value.split(b",")}
    return b"keep-alive" in tokens and b"close" not in tokens


def _gone(request) -> bool:
    return request.channel is None or getattr(request, "_disconnected", False)


def _abort(request) -> None:
    if request.channel is not None:
        request.channel.transport.abortConnection()


async def _finished(request) -> None:
    """Wait until twisted has seen the connection end."""
    if _gone(request):
        return
    try:
        await request.notifyFinish()
    except Exception:
        pass
