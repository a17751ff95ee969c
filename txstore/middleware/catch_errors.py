# -*- test-case-name: txstore.test.unit.test_middleware -*-
"""
catch_errors, the outermost stage: gives each request its transaction id (on every response
and every log line of its work) and turns any failure below into a 500 that names the id,
never a traceback. A body that fails mid-way aborts the connection instead (the status is out).
Every 401 gets Swift's ``WWW-Authenticate`` challenge, whichever stage refused.
"""

from __future__ import annotations

from urllib.parse import quote

from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from zope.interface import implementer

from txstore.common.paths import BadPath
from txstore.common.web import ResponseAborted
from txstore.interfaces import IApp
from txstore.middleware.base import Middleware
from txstore.proxy.messages import SwiftRequest, SwiftResponse, WatchedSource
from txstore.proxy.transaction import new_trans_id


@implementer(IApp)
class CatchErrors:
    log = Logger()

    def __init__(self, app, clock) -> None:
        self.app = app
        self.clock = clock

    async def __call__(self, request: SwiftRequest) -> SwiftResponse:
        trans_id = request.trans_id = new_trans_id(self.clock)
        try:
            response = await self.app(request)
        except (CancelledError, ResponseAborted):
            raise
        except Exception:
            self.log.failure("{trans_id}: {method} {path} failed", trans_id=trans_id, method=request.method,
                             path=request.path)
            request.discard_body()
            response = SwiftResponse.text(500, f"Internal Server Error (transaction {trans_id})")
        response.headers["X-Trans-Id"] = trans_id
        response.headers["X-Openstack-Request-Id"] = trans_id
        if response.status == 401 and "WWW-Authenticate" not in response.headers:
            response.headers["WWW-Authenticate"] = www_authenticate(request)
        if response.streamed:
            response.body = _Guarded(response.body, trans_id)
        return response


def www_authenticate(request: SwiftRequest) -> str:
    """
    The challenge every 401 carries, as Swift's: ``Swift realm="<account>"``, the account
    percent-quoted (so that nothing a client put in its path can break out of the header or
    the quotes), or ``unknown`` when the path names none (the auth endpoints included).
    """
    try:
        realm = request.split(2, 4)[1]
    except BadPath:
        realm = None
    if not realm or realm in ("v1.0", "auth"):
        realm = "unknown"
    return f'Swift realm="{quote(realm)}"'


class _Guarded(WatchedSource):
    """A body whose unexpected failure is logged and becomes an abort (the status is sent)."""

    log = Logger()

    def __init__(self, source, trans_id: str) -> None:
        super().__init__(source)
        self._trans_id = trans_id

    def failed(self, failure, sent: int):
        if not failure.check(ResponseAborted, CancelledError):
            self.log.failure("{trans_id}: response body failed", failure, trans_id=self._trans_id)
            raise ResponseAborted("internal error mid-response")
        return failure


middleware = Middleware("catch_errors", lambda app, settings, proxy: CatchErrors(app, proxy.clock))
