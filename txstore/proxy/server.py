# -*- test-case-name: txstore.test.test_proxy -*-
"""
The proxy's HTTP front: every client request gets a transaction id, is authenticated and
authorized, routed by its raw path to the account, container or object controller, and
logged in one access-log line.

Paths are decoded once (invalid UTF-8 or NUL → 412, malformed → 400); names keep every byte,
so ``a//b``, ``dir/`` and an encoded ``%2F`` reach the object servers as written.
"""

from __future__ import annotations

import json
import time

from attrs import define, evolve
from twisted.logger import Logger
from twisted.web.http import Request
from twisted.web.resource import Resource

from txstore import __version__
from txstore.common.paths import BadPath, decode_path, split_path
from txstore.common.web import DispatchResource, ResponseAborted, healthcheck, log_access, plain_text
from txstore.proxy.acl import parse_acl
from txstore.proxy.context import ProxyContext
from txstore.proxy.controllers.account import handle_account
from txstore.proxy.controllers.api import APIError, APIRequest
from txstore.proxy.controllers.base import container_info
from txstore.proxy.controllers.container import handle_container
from txstore.proxy.controllers.obj import handle_object
from txstore.proxy.transaction import new_trans_id

AUTH_PATHS = (b"/auth/v1.0", b"/auth/v1.0/", b"/v1.0", b"/v1.0/")


@define
class ProxyServer:
    context: ProxyContext
    auth: object  # txstore.proxy.tempauth.TempAuth
    clock: object = time.time
    log = Logger()
    access = Logger(namespace="txstore.proxy.access")

    def resource(self) -> Resource:
        return DispatchResource(self.handle)

    def handle(self, request: Request):
        trans_id = new_trans_id(self.clock)
        request.setHeader(b"X-Trans-Id", trans_id.encode())
        request.setHeader(b"X-Openstack-Request-Id", trans_id.encode())
        log_access(self.access, request, trans_id, time.monotonic())
        path = request.path
        if path == b"/healthcheck":
            return healthcheck(request)
        if path == b"/info":
            return self._info(request)
        if path in AUTH_PATHS:
            return self._authenticate(request)
        if path.startswith(b"/v1/"):
            return self._api(request, trans_id)
        return plain_text(request, 404, "Not Found")

    async def _authorize_copy_source(self, api: APIRequest):
        """A copy reads its source: the requester must be allowed to GET it."""
        assert api.copy_from is not None
        account, container, obj = api.copy_from
        info = await container_info(self.context, account, container, api.trans_id)
        return self.auth.authorize(
            api.identity, "GET", account, container, obj,
            _acl(info.read_acl), _acl(info.write_acl, write=True), api.header("Referer"),
        )

    # --- operational endpoints -------------------------------------------------------------

    def _info(self, request: Request) -> bytes:
        if request.method not in (b"GET", b"HEAD"):
            return plain_text(request, 405, "Method Not Allowed")
        limits = self.context.constraints
        info = {
            "swift": {
                "version": f"txstore-{__version__}",
                "max_file_size": limits.max_file_size,
                "max_meta_name_length": limits.max_meta_name_length,
                "max_meta_value_length": limits.max_meta_value_length,
                "max_meta_count": limits.max_meta_count,
                "max_meta_overall_size": limits.max_meta_overall_size,
                "max_header_size": limits.max_header_size,
                "max_object_name_length": limits.max_object_name_length,
                "container_listing_limit": limits.container_listing_limit,
                "account_listing_limit": limits.account_listing_limit,
                "max_account_name_length": limits.max_account_name_length,
                "max_container_name_length": limits.max_container_name_length,
                "account_autocreate": self.context.account_autocreate,
                "policies": [
                    {"name": p.name, "aliases": ", ".join(p.all_names), **({"default": True} if p.is_default else {})}
                    for p in self.context.policies if not p.deprecated
                ],
                "strict_cors_mode": True,
            },
            "tempauth": {"account_acls": True},
        }
        body = json.dumps(info, sort_keys=True).encode()
        request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
        request.setHeader(b"Content-Length", b"%d" % len(body))
        return b"" if request.method == b"HEAD" else body

    def _authenticate(self, request: Request) -> bytes:
        headers = {
            name.decode("latin-1").lower(): values[-1].decode("utf-8", "surrogateescape")
            for name, values in request.requestHeaders.getAllRawHeaders()
        }
        host = headers.get("host") or f"{request.getHost().host}:{request.getHost().port}"
        method = request.method.decode("ascii", "replace")
        result = self.auth.authenticate(headers, host, "https" if request.isSecure() else "http", method)
        for name, value in result.headers:
            request.setHeader(name.encode("latin-1"), value.encode("latin-1"))
        body = result.body if isinstance(result.body, bytes) else str(result.body).encode()
        request.setResponseCode(result.status)
        if not any(n.lower() == "content-type" for n, _ in result.headers):
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"Content-Length", b"%d" % len(body))
        return b"" if request.method == b"HEAD" else body

    # --- the Swift API ---------------------------------------------------------------------

    def _api(self, request: Request, trans_id: str):
        try:
            _version, account, container, obj = split_path(decode_path(request.path), 2, 4)
        except BadPath as err:
            return plain_text(request, err.status, err.reason)
        assert account is not None
        if len(account.encode("utf-8")) > self.context.constraints.max_account_name_length:
            return plain_text(request, 400, "Account name too long")
        method = request.method.decode("ascii", "replace").upper()
        query = ""
        if b"?" in request.uri:
            query = "?" + request.uri.split(b"?", 1)[1].decode("latin-1")
        token = request.getHeader(b"x-auth-token") or request.getHeader(b"x-storage-token")
        identity = self.auth.identify(token.decode("latin-1") if token else None)
        if token and identity is None:
            _discard_body(request)  # a token that identifies no one is refused, not treated as anonymous
            return plain_text(request, 401, "Unauthorized: invalid or expired token")
        api = APIRequest(request, method, account, container, obj, query, trans_id, identity)
        try:
            api = _as_copy(api)
        except BadPath as err:
            _discard_body(request)
            return plain_text(request, err.status, err.reason)
        return self._serve(api)

    async def _serve(self, api: APIRequest) -> bytes:
        request = api.request
        try:
            info = None
            if api.container is not None and (api.obj is not None or api.method in ("GET", "HEAD")):
                info = await container_info(self.context, api.account, api.container, api.trans_id)
            decision = self.auth.authorize(
                api.identity, api.method, api.account, api.container, api.obj,
                _acl(info.read_acl if info else None), _acl(info.write_acl if info else None, write=True),
                api.header("Referer"),
            )
            if decision.allowed and api.copy_from is not None:
                decision = await self._authorize_copy_source(api)
            if not decision.allowed:
                _discard_body(request)
                return plain_text(request, decision.status, "Unauthorized" if decision.status == 401 else "Forbidden")
            if api.obj is not None:
                assert info is not None
                if info.status == 503:
                    raise APIError(503, "Service Unavailable: container servers did not answer")
                if not info.exists:
                    _discard_body(request)
                    return plain_text(request, 404, "Not Found: no such container")
                return await handle_object(self.context, api, info)
            if api.container is not None:
                return await handle_container(self.context, api, decision.is_owner)
            return await handle_account(self.context, api)
        except APIError as err:
            _discard_body(request)
            for name, value in err.headers.items():
                request.setHeader(name.encode("latin-1"), value.encode("latin-1"))
            return plain_text(request, err.status, err.reason)
        except ResponseAborted:
            raise
        except Exception:
            self.log.failure("{trans_id}: {method} {path} failed", trans_id=api.trans_id, method=api.method,
                             path=request.path)
            if request.startedWriting:
                raise ResponseAborted("internal error mid-response") from None
            return plain_text(request, 500, "Internal Server Error")


def _copy_target(value: str, what: str) -> tuple[str, str]:
    """``/container/object`` (percent-encoded) from a Destination or X-Copy-From header."""
    text = decode_path(value.encode("utf-8", "surrogateescape"))
    container, _, obj = text.lstrip("/").partition("/")
    if not container or not obj:
        raise BadPath(412, f"{what} header must be of the form <container name>/<object name>")
    return container, obj


def _as_copy(api: APIRequest) -> APIRequest:
    """COPY (to Destination) and PUT with X-Copy-From both become a PUT that copies."""
    if api.obj is None:
        return api
    if api.method == "COPY":
        destination = api.header("Destination")
        if not destination:
            raise BadPath(412, "Destination header required")
        container, obj = _copy_target(destination, "Destination")
        account = api.header("Destination-Account") or api.account
        return evolve(api, method="PUT", account=account, container=container, obj=obj,
                      copy_from=(api.account, api.container, api.obj))
    if api.method == "PUT":
        source = api.header("X-Copy-From")
        if source:
            container, obj = _copy_target(source, "X-Copy-From")
            account = api.header("X-Copy-From-Account") or api.account
            return evolve(api, copy_from=(account, container, obj))
    return api


def _acl(value: str | None, write: bool = False):
    """A stored ACL; one that no longer parses grants nothing."""
    if not value:
        return None
    try:
        return parse_acl(value, write=write)
    except ValueError:
        return None


def _discard_body(request: Request) -> None:
    body = getattr(request, "body", None)
    if body is not None:
        body.discard()
