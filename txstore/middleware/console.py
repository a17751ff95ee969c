# -*- test-case-name: txstore.test.integration.test_console -*-
"""
console: the operators' web page, served by the proxy.

``GET /console`` is one static page (``console_page.html``: no build step, no data in it) whose
script signs in with tempauth (or takes ``#token=`` in its address) and polls
``GET /console/status`` every 5 seconds: every node the rings name with its state (a node that
does not answer within 2 s is down), last answer, disk usage per device as bars, async
pendings, quarantines and the age of its last replication pass; the rings' shape; this
proxy's requests and their mean time per minute over the last hour, drawn as charts. The
status is for reseller admins only (401 without a token, 403 for anyone else). It sits after
tempauth, which has said who is asking by then. Any other request passes through.
"""

from __future__ import annotations

import json
from importlib import resources

from zope.interface import implementer

from txstore.interfaces import IApp
from txstore.middleware.base import Middleware
from txstore.proxy.cluster_status import ClusterStatus
from txstore.proxy.messages import HeaderMap, SwiftRequest, SwiftResponse

PAGE = "/console"
STATUS = "/console/status"


def _page() -> bytes:
    return resources.files("txstore.middleware").joinpath("console_page.html").read_bytes()


@implementer(IApp)
class Console:
    def __init__(self, app, status: ClusterStatus) -> None:
        self.app = app
        self._status = status
        self._page = _page()

    def __call__(self, request: SwiftRequest):
        if request.path not in (PAGE, STATUS):
            return self.app(request)
        return self._serve(request)

    async def _serve(self, request: SwiftRequest) -> SwiftResponse:
        if request.method not in ("GET", "HEAD"):
            return SwiftResponse(405, HeaderMap({"Allow": "GET, HEAD", "Content-Type": "text/plain; charset=utf-8"}),
                                 b"Method Not Allowed\n")
        if request.path == PAGE:
            return self._answer(request, self._page, "text/html; charset=utf-8")
        identity = request.identity
        if identity is None:
            return SwiftResponse.text(401, "Unauthorized: the console's status needs a reseller admin's token")
        if not getattr(identity, "is_reseller_admin", False):
            return SwiftResponse.text(403, "Forbidden: the console's status is for reseller admins")
        body = json.dumps(await self._status.current()).encode()
        return self._answer(request, body, "application/json")

    @staticmethod
    def _answer(request: SwiftRequest, body: bytes, content_type: str) -> SwiftResponse:
        headers = HeaderMap({"Content-Type": content_type, "Content-Length": str(len(body)),
                             "Cache-Control": "no-store"})
        return SwiftResponse(200, headers, b"" if request.method == "HEAD" else body)


middleware = Middleware("console", lambda app, settings, proxy: Console(app, ClusterStatus(proxy.context)))
