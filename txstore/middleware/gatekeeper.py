# -*- test-case-name: txstore.test.unit.test_middleware -*-
"""
gatekeeper: clients never write or read what only txstore may (as Swift's gatekeeper).

System metadata (``X-Account-``/``X-Container-``/``X-Object-Sysmeta-*``), transient object
sysmeta and ``X-Backend-*`` are taken out of every client request on the way in and out of
every response on the way out. Middlewares below it (copy, large objects, versioning) set and
read them freely; that is what they are for.
"""

from __future__ import annotations

from zope.interface import implementer

from txstore.interfaces import IApp
from txstore.middleware.base import Middleware
from txstore.proxy.messages import SwiftRequest, SwiftResponse

RESERVED = ("x-backend-", "x-account-sysmeta-", "x-container-sysmeta-", "x-object-sysmeta-",
            "x-object-transient-sysmeta-")


@implementer(IApp)
class Gatekeeper:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, request: SwiftRequest) -> SwiftResponse:
        request.headers.remove_prefix(*RESERVED)
        response = await self.app(request)
        response.headers.remove_prefix(*RESERVED)
        return response


middleware = Middleware("gatekeeper", lambda app, settings, proxy: Gatekeeper(app))
