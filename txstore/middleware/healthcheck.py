# -*- test-case-name: txstore.test.unit.test_middleware -*-
"""healthcheck: ``GET /healthcheck`` answers 200 ``OK`` while the proxy serves (load balancers)."""

from __future__ import annotations

from zope.interface import implementer

from txstore.interfaces import IApp
from txstore.middleware.base import Middleware
from txstore.proxy.messages import SwiftRequest, SwiftResponse

PATH = "/healthcheck"


@implementer(IApp)
class Healthcheck:
    def __init__(self, app) -> None:
        self.app = app

    def __call__(self, request: SwiftRequest):
        # Any other path is the next stage's call itself: no coroutine of its own per request.
        if request.path != PATH:
            return self.app(request)
        return self._answer(request)

    async def _answer(self, request: SwiftRequest) -> SwiftResponse:
        request.discard_body()
        if request.method not in ("GET", "HEAD"):
            return SwiftResponse.text(405, "Method Not Allowed", {"Allow": "GET, HEAD"})
        return SwiftResponse.text(200, "OK")


middleware = Middleware("healthcheck", lambda app, settings, proxy: Healthcheck(app))
