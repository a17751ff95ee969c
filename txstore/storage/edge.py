# -*- test-case-name: txstore.test.unit.test_node_edge -*-
"""
The storage node's HTTP edge: the one module of the node that writes to twisted's ``Request``.

The node's handlers (the account, container and object servers, recon, the healthcheck) read
the request and answer a `NodeResponse` value. `serve` runs a handler and `render` writes its
answer: the status, the headers as given (twisted adds ``Server`` and ``Date``; its default
``text/html`` type is turned off), then the body, written whole or, for an `IResponseBody` (an
object's bytes), streamed: the body is registered as the push producer of the client's
connection and writes to the request itself, chunk by chunk, only while the client keeps up, so
no layer sits between its read-ahead loop and the socket. A HEAD's body is never written.

Why a module of its own and not ``server.py``'s root resource: the node's routes and
`DispatchResource` (a server of one handler, for tests and tools) answer through the same
rendering, and what touches twisted's response side is then in one place, tested on its own, as
the proxy's ``proxy/edge.py`` is; ``server.py`` only routes.

What `serve` guarantees:

- The handler is never cancelled. Nothing here cancels it when the client goes away, so its
  commit steps (fsync, rename, container updates) run to their end; its answer is then dropped
  (a streamed body is let go unwritten).
- An `HTTPError` is answered as its short plain text, after its headers. Any other error is
  logged and answered with a plain-text 500 while the response has not begun, and drops the
  connection once it has.
- `ResponseAborted` aborts the connection: a response that began and cannot complete truthfully
  is cut off, never finished short or wrong.
- A streamed body that fails with `HTTPError` before its first byte (a one-chunk object found
  rotten) is answered as that error instead, without the response's headers.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import Request
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from txstore.common.web import HTTPError, ResponseAborted
from txstore.interfaces import IResponseBody
from txstore.storage.http_support import NodeResponse, plain_text

Handler = Callable[[Request], "NodeResponse | Awaitable[NodeResponse]"]

INTERNAL_ERROR = plain_text(500, "Internal Server Error")
NO_BODY_STATUSES = (204, 304)


def serve(request: Request, handler: Handler, log: Logger) -> None:
    """Answer ``request`` with what ``handler(request)`` answers, now or once it is done."""
    try:
        answer = handler(request)
        if not isinstance(answer, NodeResponse):
            # No canceller reaches the handler: only this callback pair waits for it.
            ensureDeferred(answer).addCallbacks(  # type: ignore[arg-type]
                _answered, _handler_failed, callbackArgs=(request, log), errbackArgs=(request, log)
            )
            return
    except HTTPError as err:
        answer = _error_text(err)
    except Exception:
        log.failure("unhandled error for {method} {path}", method=request.method, path=request.path)
        answer = INTERNAL_ERROR
    render(request, answer, log)


def _wire(value: str | bytes) -> bytes:
    """
    A header as the bytes it came as: nodes read headers as UTF-8 text with bytes that are not
    UTF-8 kept as surrogates, and send them back the same way (twisted's strict UTF-8 would
    fail on those, and a stored value would answer 500 forever).
    """
    return value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value


def render(request: Request, response: NodeResponse, log: Logger) -> None:
    """Write ``response`` onto ``request`` and finish it (or start streaming its body)."""
    body = response.body
    if request.channel is None:  # the client went away while the handler worked
        if not isinstance(body, bytes):
            _let_go(body, request, log)
        return
    # A streamed body may fail before its first byte: its error is answered with these headers.
    before = None if isinstance(body, bytes) else request.responseHeaders.copy()
    request.defaultContentType = None  # twisted's text/html: the headers are the handler's
    try:
        request.setResponseCode(response.status)
        for name, value in response.headers.items():
            request.setHeader(_wire(name), _wire(value))
    except Exception:  # a value twisted refuses (a line break): a 500 on what was set
        log.failure("unhandled error for {method} {path}", method=request.method, path=request.path)
        if before is not None:
            _let_go(body, request, log)
        render(request, INTERNAL_ERROR, log)
        return
    if before is None:
        if body and request.method != b"HEAD":
            request.write(body)  # type: ignore[arg-type]
        request.finish()
    elif request.method == b"HEAD" or response.status in NO_BODY_STATUSES:
        _let_go(body, request, log)
        request.finish()
    else:
        ensureDeferred(_stream(request, body, before, log))  # type: ignore[arg-type]


async def _stream(request: Request, body: IResponseBody, before, log: Logger) -> None:
    """Write a streamed body with it as the connection's producer; then finish, answer or abort."""
    request.registerProducer(body, True)
    failure: Failure | None = None
    complete = False
    try:
        complete = await body.write_to(request)
    except Exception:
        failure = Failure()
    unsent = not request.startedWriting
    if failure is not None and not (failure.check(ResponseAborted) or (failure.check(HTTPError) and unsent)):
        log.failure("unhandled error for {method} {path}", failure, method=request.method, path=request.path)
    if request.channel is None:  # the client went away
        return
    request.unregisterProducer()
    if failure is None:
        if complete:
            request.finish()
        else:  # stopped while the client is still there: never finish a body short
            _abort(request)
    elif failure.check(ResponseAborted):
        _abort(request)
    elif not unsent:
        request.loseConnection()
    else:
        request.responseHeaders = before
        render(request, _error_text(failure.value) if failure.check(HTTPError) else INTERNAL_ERROR, log)


def _answered(response: NodeResponse, request: Request, log: Logger) -> None:
    if not isinstance(response, NodeResponse):
        _handler_failed(Failure(TypeError(f"a handler answered {response!r}, not a NodeResponse")), request, log)
        return
    render(request, response, log)


def _handler_failed(failure: Failure, request: Request, log: Logger) -> None:
    """A handler that failed never wrote anything: the edge had not rendered yet."""
    if failure.check(HTTPError):
        render(request, _error_text(failure.value), log)
        return
    if failure.check(ResponseAborted):
        _abort(request)
        return
    log.failure("unhandled error for {method} {path}", failure, method=request.method, path=request.path)
    render(request, INTERNAL_ERROR, log)


def _error_text(err: HTTPError) -> NodeResponse:
    return plain_text(err.status, err.reason, err.headers)


def _let_go(body: IResponseBody, request: Request, log: Logger) -> None:
    """A body that will not be written: stopped first, its `write_to` only lets go of what it holds."""
    body.stopProducing()
    done = ensureDeferred(body.write_to(request))  # type: ignore[arg-type]
    done.addErrback(lambda failure: log.failure("letting go of a response body failed", failure))


def _abort(request: Request) -> None:
    if request.channel is not None:
        request.channel.transport.abortConnection()


class DispatchResource(Resource):
    """
    A leaf resource that answers every request with ``handler(request)`` through the edge
    (`serve`): a small server for tests and tools that need no routing.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, handler: Handler) -> None:
        super().__init__()
        self._handler = handler

    def render(self, request: Request) -> int:
        serve(request, self._handler, self.log)
        return NOT_DONE_YET
