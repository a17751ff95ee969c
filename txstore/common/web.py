# -*- test-case-name: txstore.test.test_web -*-
"""
HTTP plumbing shared by the proxy and the storage node: errors as short plain text that says
why (never Twisted's HTML pages), a handler's answer settled onto the request (`settle`), the
healthcheck and the access line.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.web.http import Request
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

class HTTPError(Exception):
    """Raised by handlers to answer ``status`` with a one-line ``reason`` (and headers)."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


class ResponseAborted(Exception):
    """
    Raised by a handler that has begun a response and cannot complete it truthfully (a body
    that fails its checksum, a disk error mid-read): the connection is aborted, so the client
    sees a broken response, never a complete wrong one.
    """


Handler = Callable[[Request], "bytes | Deferred[bytes] | object"]


def plain_text(request: Request, code: int, body: str | bytes) -> bytes:
    """Set a plain-text response and return its body (for a handler to return)."""
    data = body.encode("utf-8") if isinstance(body, str) else body
    if data and not data.endswith(b"\n"):
        data += b"\n"
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    request.setHeader(b"Content-Length", b"%d" % len(data))
    return b"" if request.method == b"HEAD" else data


def settle(request: Request, handler: Handler, log: Logger) -> bytes | Deferred:
    """
    ``handler(request)``'s body: bytes at once, or a Deferred of them for the caller to write
    and finish the request with. An error is a logged plain-text 500, or, once the response has
    begun, a dropped connection; `ResponseAborted` aborts the connection. After that, or once
    the client is gone, the Deferred never fires: the request is not written to again.

    The Deferred is not the handler's and has no canceller: cancelling it (Klein does when the
    client goes away) stops the waiting, not the handler, whose commit steps (fsync, rename,
    container updates) must never be cut short.
    """
    try:
        result = handler(request)
    except Exception:
        log.failure("unhandled error for {method} {path}", method=request.method, path=request.path)
        return plain_text(request, 500, "Internal Server Error")
    if isinstance(result, bytes):
        return result
    answer: Deferred = Deferred()
    lost: list[bool] = []
    request.notifyFinish().addErrback(lambda _f: lost.append(True))

    def done(body: bytes) -> None:
        if not lost:
            answer.callback(body)

    def fail(failure) -> None:
        if failure.check(ResponseAborted):
            if not lost and request.channel is not None:
                request.channel.transport.abortConnection()
            return
        log.failure("unhandled error for {method} {path}", failure, method=request.method, path=request.path)
        if not lost and not request.startedWriting:
            answer.callback(plain_text(request, 500, "Internal Server Error"))
        elif not lost:
            request.loseConnection()

    ensureDeferred(result).addCallbacks(done, fail)  # type: ignore[arg-type]
    return answer


def finish_with(body: bytes, request: Request) -> None:
    """Write ``body`` (if any) and finish: the callback for `settle`'s Deferred."""
    if body:
        request.write(body)
    request.finish()


class DispatchResource(Resource):
    """
    A leaf resource that hands every request to ``handler(request)`` (`settle`): a small
    server for tests and tools that need no routing.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, handler: Handler) -> None:
        super().__init__()
        self._handler = handler

    def render(self, request: Request) -> bytes | int:
        answer = settle(request, self._handler, self.log)
        if isinstance(answer, bytes):
            return answer
        answer.addCallback(finish_with, request)
        return NOT_DONE_YET


def healthcheck(request: Request) -> bytes:
    """``/healthcheck``: 200 ``OK`` while the process serves, for load balancers and launchers."""
    if request.method not in (b"GET", b"HEAD"):
        request.setHeader(b"Allow", b"GET, HEAD")
        return plain_text(request, 405, "Method Not Allowed")
    return plain_text(request, 200, "OK")


def log_access(logger: Logger, request: Request, trans_id: str, started: float) -> None:
    """
    Write one access line when ``request`` finishes (or its client goes away): client, method,
    path, status, bytes sent, duration and transaction id. ``started`` is a monotonic time.
    """

    def write(result: object) -> None:
        address = request.getClientAddress()
        logger.info(
            "{client} {method} {path} {status} {sent} {duration:.4f}s {trans_id}{aborted}",
            client=getattr(address, "host", "-"),
            method=request.method.decode("ascii", "replace"),
            path=request.uri.decode("latin-1"),
            status=request.code,
            sent=request.sentLength,
            duration=time.monotonic() - started,
            trans_id=trans_id,
            aborted="" if result is None else " (client gone)",
        )

    request.notifyFinish().addBoth(write)
