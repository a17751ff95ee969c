# -*- test-case-name: txstore.test.unit.test_small_middlewares -*-
"""
etag_quoter: Swift's RFC 7232 ETags. Swift answers an object's ETag as bare hex, which many
clients expect; RFC 7232 wants it quoted. An account or container chooses quoted ETags with
``X-Account-Rfc-Compliant-Etags`` / ``X-Container-Rfc-Compliant-Etags: true`` (kept as their
sysmeta, shown back under the client's name; empty or ``X-Remove-…`` removes it), the
container's choice over the account's, ``enable_by_default`` when neither says. Then the ETag
of every answer about its objects is put in double quotes (unless it already is, or is weak).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


from txstore.common import config as c
from txstore.middleware.base import ApiMiddleware, CachedContainers, Middleware
from txstore.middleware.ratelimit import CachedAccounts
from txstore.proxy.messages import TRUE_VALUES, SwiftRequest, SwiftResponse

FLAG = "rfc-compliant-etags"
OPTIONS = (
    c.Option("enable_by_default", c.boolean, False,
             doc="Quote ETags where neither the container nor the account says."),
)


class EtagQuoter(ApiMiddleware):
    depth = 1

    def __init__(self, app, settings: Mapping[str, Any], containers, accounts) -> None:
        self.app = app
        self.by_default = settings["enable_by_default"]
        self.containers, self.accounts = containers, accounts

    def handle(self, request: SwiftRequest, account: str, container: str | None, obj: str | None):
        if obj is None:
            kind = "Container" if container else "Account"
            if request.method in ("GET", "HEAD") or f"X-{kind}-Rfc-Compliant-Etags" in request.headers \
                    or f"X-Remove-{kind}-Rfc-Compliant-Etags" in request.headers:
                return self._setting(request, kind)
            return self.app(request)
        return self._object(request, account, container)

    async def _setting(self, request: SwiftRequest, kind: str) -> SwiftResponse:
        client, sysmeta = f"X-{kind}-Rfc-Compliant-Etags", f"X-{kind}-Sysmeta-Rfc-Compliant-Etags"
        given = request.headers.pop(client)
        if given is not None:
            request.headers[sysmeta] = str(given.strip().lower() in TRUE_VALUES) if given.strip() else ""
        if request.headers.pop(f"X-Remove-{kind}-Rfc-Compliant-Etags"):
            request.headers[sysmeta] = ""
        response = await self.app(request)
        value = response.headers.pop(sysmeta)
        if value is not None:
            response.headers[client] = value
        return response

    async def _object(self, request: SwiftRequest, account: str, container: str) -> SwiftResponse:
        info = await self.containers(request, account, container)
        if not info.exists:
            return await self.app(request)
        flag = info.sysmeta.get(FLAG)
        if flag is None:
            account_info = await self.accounts(request, account)
            if not account_info.exists:
                return await self.app(request)
            flag = account_info.sysmeta.get(FLAG)
        quoted = self.by_default if flag is None else flag.strip().lower() in TRUE_VALUES
        response = await self.app(request)
        etag = response.headers.get("ETag")
        if quoted and etag is not None and not (etag.startswith(('"', 'W/"')) and etag.endswith('"')):
            response.headers["ETag"] = f'"{etag}"'
        return response


def _build(app, settings: dict[str, Any], proxy) -> EtagQuoter:
    proxy.info.register("etag_quoter", enable_by_default=settings["enable_by_default"])
    return EtagQuoter(app, settings, CachedContainers(proxy.context), CachedAccounts(proxy.context))


middleware = Middleware("etag_quoter", _build, options=OPTIONS)
