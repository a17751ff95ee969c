# -*- test-case-name: txstore.test.test_middleware -*-
"""
proxy_logging: one access line per request, written when its response body has gone out (or
stopped): client, method, path, status, bytes sent, duration, transaction id, and for a
sub-request the middleware that made it (``swift.source``).

As in Swift it appears twice in the pipeline: the outer one logs what clients asked, the inner
one (just before the application) the sub-requests that middlewares make; a request the outer
one logs is not logged again by the inner one.
"""

from __future__ import annotations

import time

from twisted.logger import Logger
from zope.interface import implementer

from txstore.interfaces import IApp
from txstore.middleware.base import Middleware
from txstore.proxy.messages import SwiftRequest, SwiftResponse, WatchedSource

LOGGED = "swift.proxy_access_log_made"


@implementer(IApp)
class ProxyLogging:
    access = Logger(namespace="txstore.proxy.access")

    def __init__(self, app, metrics=None) -> None:
        self.app = app
        self.metrics = metrics  # a ServerMetrics (the proxy's /metrics), or None

    async def __call__(self, request: SwiftRequest) -> SwiftResponse:
        if request.environ.get(LOGGED):
            return await self.app(request)
        request.environ[LOGGED] = True
        started = time.monotonic()
        try:
            response = await self.app(request)
        except BaseException:
            self._write(request, None, 0, started, " (failed)")
            raise
        if self.metrics is not None:  # the answer's head is ready: its time to first byte
            self.metrics.first_byte(request.method, response.status, time.monotonic() - started,
                                    source=request.environ.get("swift.source") or "")
        if response.streamed:
            response.body = _Counted(response.body, lambda sent, note: self._write(
                request, response.status, sent, started, note))
        else:
            self._write(request, response.status, 0 if request.method == "HEAD" else len(response.body), started, "")
        return response

    def _write(self, request: SwiftRequest, status: int | None, sent: int, started: float, note: str) -> None:
        source = request.environ.get("swift.source")
        duration = time.monotonic() - started
        self.access.info(
            "{client} {method} {path} {status} {sent} {duration:.4f}s {trans_id}{source}{note}",
            client=request.client_ip, method=request.method, path=_revealed(request.uri),
            status="-" if status is None else status, sent=sent, duration=duration,
            trans_id=request.trans_id, source=f" {source}" if source else "", note=note,
        )
        if self.metrics is not None:
            length = request.header("Content-Length")
            received = int(length) if length is not None and length.isdigit() else 0
            self.metrics.observe(request.method, status, duration, sent, received, source=source or "")


# Query parameters that are credentials: only their first 16 characters are logged, as Swift
# logs them, so an access log cannot be replayed as a temp URL.
SENSITIVE = ("temp_url_sig",)
REVEALED = 16


def _revealed(uri: str) -> str:
    path, mark, query = uri.partition("?")
    if not mark or not any(name in query for name in SENSITIVE):
        return uri
    params = []
    for param in query.split("&"):
        name, equals, value = param.partition("=")
        if equals and name in SENSITIVE and len(value) > REVEALED:
            param = f"{name}={value[:REVEALED]}..."
        params.append(param)
    return f"{path}?{'&'.join(params)}"


class _Counted(WatchedSource):
    """Reports the bytes read from a body once, at its end or when it stops."""

    def __init__(self, source, report) -> None:
        super().__init__(source)
        self._report = report
        self._done = False

    def ended(self, sent: int) -> None:
        self._finish(sent, "")

    def failed(self, failure, sent: int):
        self._finish(sent, " (body broke off)")
        return failure

    def stopped(self, sent: int) -> None:
        self._finish(sent, " (client gone)")

    def _finish(self, sent: int, note: str) -> None:
        if not self._done:
            self._done = True
            self._report(sent, note)


middleware = Middleware("proxy_logging", lambda app, settings, proxy: ProxyLogging(app, proxy.context.metrics))
