# -*- test-case-name: txstore.test.unit.test_middleware -*-
"""
tempauth: Swift's built-in auth as a middleware (`txstore.proxy.tempauth` holds the decisions).

It answers the auth endpoint (``/auth/v1.0``, ``/auth/v1.0/``, ``/v1.0``, ``/v1.0/``) itself.
For every other request it turns the token into an identity (a token that names no one is a
401 at once, even where anonymous access would be allowed: the client learns its token went
stale) and leaves ``swift.authorize`` in the environ for the application to call once the
container's ACLs are known, unless a middleware before it has authorized the request its own
way (``swift.authorize_override``, as tempurl does).

Account ACLs (``X-Account-Access-Control``, `txstore.proxy.account_acl`) are checked and stored
here as Swift's tempauth does: a PUT or POST of an account that sets one has it checked (400
with the reason) and sent on as sysmeta; a request whose user does not own the account has the
account's ACL looked up (cached account info) for the authorizer; an owner's HEAD or GET of the
account shows it.
"""

from __future__ import annotations

from zope.interface import implementer

from txstore.common.paths import BadPath
from txstore.interfaces import IApp
from txstore.middleware.base import Middleware
from txstore.proxy.account_acl import (
    HEADER as ACCOUNT_ACL_HEADER,
    SYSMETA_HEADER,
    SYSMETA_NAME,
    format_account_acl,
    parse_account_acl,
    stored_account_acl,
)
from txstore.proxy.acl import InvalidACL, stored_acl
from txstore.proxy.controllers.base import account_info
from txstore.proxy.config import TEMPAUTH_OPTIONS, TEMPAUTH_PATTERNS
from txstore.proxy.messages import HeaderMap, SwiftRequest, SwiftResponse
from txstore.proxy.tempauth import TempAuth

AUTH_PATHS = ("/auth/v1.0", "/auth/v1.0/", "/v1.0", "/v1.0/")
AUTHORIZE = "swift.authorize"
OVERRIDE = "swift.authorize_override"
ACCOUNT_ACL = "txstore.account_acl"  # the account's ACL, for the authorizer
OWNER = "swift_owner"  # what the authorizer decided: the requester owns the account


@implementer(IApp)
class TempAuthMiddleware:
    def __init__(self, app, auth: TempAuth, account_info) -> None:
        self.app = app
        self.auth = auth
        self.account_info = account_info  # (request, account) -> Awaitable[AccountInfo]

    async def __call__(self, request: SwiftRequest) -> SwiftResponse:
        if request.path in AUTH_PATHS:
            request.discard_body()
            return await self._authenticate(request)
        token = request.header("X-Auth-Token") or request.header("X-Storage-Token")
        identity = await self.auth.identify(token)
        if token and identity is None:
            request.discard_body()
            return SwiftResponse.text(401, "Unauthorized: invalid or expired token")
        if token or not request.environ.get(OVERRIDE):
            request.identity = identity  # else s3api's, above: stages below (staticweb) see who asks
        try:
            version, account, container, _obj = request.split(1, 4)
        except BadPath:
            version = account = container = None
        if version != "v1" or account is None:
            account = None
        elif container is None and request.method in ("PUT", "POST") and ACCOUNT_ACL_HEADER in request.headers:
            refusal = _store_account_acl(request)
            if refusal is not None:
                request.discard_body()
                return refusal
        if not request.environ.get(OVERRIDE):
            request.environ[AUTHORIZE] = self.authorize
            if account is not None and identity is not None and not self._owns(identity, account):
                info = await self.account_info(request, account)
                request.environ[ACCOUNT_ACL] = stored_account_acl(info.sysmeta.get(SYSMETA_NAME))
        response = await self.app(request)
        if account is not None and container is None and request.method in ("GET", "HEAD"):
            stored = response.headers.pop(SYSMETA_HEADER)
            if stored and request.environ.get(OWNER) and response.status // 100 == 2:
                acl = stored_account_acl(stored)
                if acl is not None:
                    response.headers[ACCOUNT_ACL_HEADER] = format_account_acl(parse_account_acl(stored))
        return response

    def authorize(self, request: SwiftRequest, account: str, container: str | None, obj: str | None, info):
        """The application's call, once it knows the container's ACLs (``info``)."""
        decision = self.auth.authorize(
            request.identity, request.method, account, container, obj,
            stored_acl(info.read_acl if info else None), stored_acl(info.write_acl if info else None, write=True),
            request.header("Referer"), request.environ.get(ACCOUNT_ACL),
        )
        request.environ[OWNER] = decision.allowed and decision.is_owner
        return decision

    def _owns(self, identity, account: str) -> bool:
        """An owner needs no account ACL looked up: a reseller admin, or the account's admin."""
        return identity.is_reseller_admin or (identity.is_admin and identity.account == account)

    async def _authenticate(self, request: SwiftRequest) -> SwiftResponse:
        # credentials are text: read the header bytes as UTF-8, as a user's key in proxy.conf is
        headers = {name.lower(): value.encode("latin-1").decode("utf-8", "surrogateescape")
                   for name, value in request.headers.items()}
        result = await self.auth.authenticate(headers, request.host, request.scheme, request.method)
        response = SwiftResponse(result.status, HeaderMap(result.headers), result.body)
        response.headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        return response



def _store_account_acl(request: SwiftRequest) -> SwiftResponse | None:
    """A client's X-Account-Access-Control, checked and sent on as the account's sysmeta."""
    value = request.headers.pop(ACCOUNT_ACL_HEADER) or ""
    try:
        acl = parse_account_acl(value)
    except InvalidACL as err:
        return SwiftResponse.text(400, str(err))
    request.headers[SYSMETA_HEADER] = format_account_acl(acl) if any(acl.values()) else ""
    return None


def _build(app, settings, proxy) -> TempAuthMiddleware:
    store = settings.get("token_store")
    auth = TempAuth.from_filter(
        settings, proxy.clock,
        hasher=proxy.context.rings.account.hasher if store == "signed" else None,  # the key: from the cluster secret
        memcache=proxy.context.memcache if store == "memcached" else None,  # [filter:cache]'s
    )
    proxy.info.register("tempauth", account_acls=True)
    provided = getattr(proxy, "provided", None)
    if provided is not None:
        provided["tempauth"] = auth  # s3api, above it, takes its users as S3 credentials

    def info(request: SwiftRequest, account: str):
        return account_info(proxy.context, account, request.trans_id)

    return TempAuthMiddleware(app, auth, info)


middleware = Middleware("tempauth", _build, options=TEMPAUTH_OPTIONS, patterns=TEMPAUTH_PATTERNS)
