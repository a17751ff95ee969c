# -*- test-case-name: txstore.test.test_proxy_server -*-
"""
The proxy's HTTP front: routes a request by its raw path to what serves it.

Today it serves the operational endpoints; the Swift v1 API controllers plug in here.
"""

from __future__ import annotations

from attrs import frozen
from twisted.web.http import Request
from twisted.web.resource import Resource

from txstore.common.web import DispatchResource, healthcheck, plain_text
from txstore.proxy.config import ProxySettings
from txstore.ring.ringset import RingSet


@frozen
class ProxyServer:
    settings: ProxySettings
    rings: RingSet

    def resource(self) -> Resource:
        return DispatchResource(self.handle)

    def handle(self, request: Request) -> bytes:
        if request.path == b"/healthcheck":
            return healthcheck(request)
        return plain_text(request, 404, "Not Found")
