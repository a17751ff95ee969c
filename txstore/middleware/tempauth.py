# -*- test-case-name: txstore.test.test_middleware -*-
"""
tempauth: Swift's built-in auth as a middleware (`txstore.proxy.tempauth` holds the decisions).

It answers the auth endpoint (``/auth/v1.0``, ``/auth/v1.0/``, ``/v1.0``, ``/v1.0/``) itself.
For every other request it turns the token into an identity (a token that names no one is a
401 at once, even where anonymous access would be allowed: the client learns its token went
stale) and leaves ``swift.authorize`` in the environ for the application to call once the
container's ACLs are known, unless a middleware before it has authorized the request its own
way (``swift.authorize_override``, as tempurl will).
"""

from __future__ import annotations

from zope.interface import implementer

from txstore.interfaces import IApp
from txstore.middleware.base import Middleware
from txstore.proxy.acl import parse_acl
from txstore.proxy.config import TEMPAUTH_OPTIONS, TEMPAUTH_PATTERNS
from txstore.proxy.messages import HeaderMap, SwiftRequest, SwiftResponse
from txstore.proxy.tempauth import TempAuth

AUTH_PATHS = ("/auth/v1.0", "/auth/v1.0/", "/v1.0", "/v1.0/")
AUTHORIZE = "swift.authorize"
OVERRIDE = "swift.authorize_override"


@implementer(IApp)
class TempAuthMiddleware:
    def __init__(self, app, auth: TempAuth) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, request: SwiftRequest) -> SwiftResponse:
        if request.path in AUTH_PATHS:
            request.discard_body()
            return self._authenticate(request)
        token = request.header("X-Auth-Token") or request.header("X-Storage-Token")
        identity = self.auth.identify(token)
        if token and identity is None:
            request.discard_body()
            return SwiftResponse.text(401, "Unauthorized: invalid or expired token")
        request.identity = identity
        if not request.environ.get(OVERRIDE):
            request.environ[AUTHORIZE] = self.authorize
        return await self.app(request)

    def authorize(self, request: SwiftRequest, account: str, container: str | None, obj: str | None, info):
        """The application's call, once it knows the container's ACLs (``info``)."""
        return self.auth.authorize(
            request.identity, request.method, account, container, obj,
            _acl(info.read_acl if info else None), _acl(info.write_acl if info else None, write=True),
            request.header("Referer"),
        )

    def _authenticate(self, request: SwiftRequest) -> SwiftResponse:
        # credentials are text: read the header bytes as UTF-8, as a user's key in proxy.conf is
        headers = {name.lower(): value.encode("latin-1").decode("utf-8", "surrogateescape")
                   for name, value in request.headers.items()}
        result = self.auth.authenticate(headers, request.host, request.scheme, request.method)
        response = SwiftResponse(result.status, HeaderMap(result.headers), result.body)
        response.headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        return response


def _acl(value: str | None, write: bool = False):
    """A stored ACL; one that no longer parses grants nothing."""
    if not value:
        return None
    try:
        return parse_acl(value, write=write)
    except ValueError:
        return None


def _build(app, settings, proxy) -> TempAuthMiddleware:
    auth = TempAuth.from_filter(settings, proxy.clock)
    proxy.info.register("tempauth")  # no account ACLs yet: nothing to claim
    return TempAuthMiddleware(app, auth)


middleware = Middleware("tempauth", _build, options=TEMPAUTH_OPTIONS, patterns=TEMPAUTH_PATTERNS)
