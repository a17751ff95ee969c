# -*- test-case-name: txstore.test.unit.test_quotas -*-
"""
account_quotas: an account's size and object count limits, set by a reseller admin, Swift's API.

A reseller admin (tempauth's ``.reseller_admin``) sets them on the account (PUT or POST)::

    X-Account-Quota-Bytes        the most bytes the account may hold
    X-Account-Quota-Count        the most objects it may hold
    X-Account-Meta-Quota-Bytes   the older form of X-Account-Quota-Bytes, still honoured

and removes them with an empty value or ``X-Remove-Account-Quota-…``. A value that is not a
whole number is 400 and nothing is stored; anyone else naming any of them (the account's own
admin included) is 403: a user cannot lift their own limit. The first two are kept as account
sysmeta (``X-Account-Sysmeta-Quota-Bytes``, ``-Count``) and shown back, under their client names,
in the account's HEAD and GET to whoever may see it.

An object PUT (a copy's too) that would take the account's bytes past its quota (the newer
header first, else the older one), or be one object too many, is ``413 Upload exceeds quota.``,
once the requester is known to be allowed the write; a reseller admin's uploads are not limited.
Usage is the account's cached info, as the account databases last reported it: eventually
consistent, as Swift's (a container's objects reach the account when its updater reports).

Per-policy quotas (``X-Account-Quota-Bytes-Policy-<name>``, ``-Count-Policy-<name>``) are
refused with 501: the account servers do not report usage per policy yet, so such a quota could
not be enforced, and one that is stored but not enforced would be a lie.
"""

from __future__ import annotations

from typing import Any


from txstore.middleware.base import ApiMiddleware, Middleware
from txstore.middleware.container_quotas import EXCEEDED, content_length, refused, whole
from txstore.proxy.messages import SwiftRequest, SwiftResponse

SOURCE = "AQ"
# client header -> the account sysmeta it is kept as (None: plain metadata, kept as it is)
QUOTAS = {
    "x-account-quota-bytes": "X-Account-Sysmeta-Quota-Bytes",
    "x-account-quota-count": "X-Account-Sysmeta-Quota-Count",
    "x-account-meta-quota-bytes": None,
}
POLICY_QUOTA = ("x-account-quota-bytes-policy-", "x-account-quota-count-policy-")
REMOVE = "x-remove-"


def quota_headers(request: SwiftRequest) -> list[str]:
    """The quota headers a request names, set or removed (lower case, without ``X-Remove-``)."""
    named = []
    for name in request.headers:
        lower = name.lower()
        bare = "x-" + lower[len(REMOVE):] if lower.startswith(REMOVE) else lower
        if bare in QUOTAS or bare.startswith(POLICY_QUOTA):
            named.append(bare)
    return named


class AccountQuotas(ApiMiddleware):
    depth = 1

    def __init__(self, app, accounts, containers) -> None:
        self.app = app
        self.accounts = accounts  # (request, account) -> Awaitable[AccountInfo]
        self.containers = containers  # (request, account, container) -> Awaitable[ContainerInfo]

    def handle(self, request: SwiftRequest, account: str, container: str | None, obj: str | None):
        # Deletes, object reads and POSTs are the next stage's call itself.
        method = request.method
        if method not in ("PUT", "POST", "GET", "HEAD"):
            return self.app(request)
        if container is None:
            return self._account(request)
        if method != "PUT" or obj is None:
            return self.app(request)
        return self._checked_put(request, account, container, obj)

    async def _account(self, request: SwiftRequest) -> SwiftResponse:
        if request.method in ("PUT", "POST"):
            refusal = self._set_quotas(request)
            if refusal is not None:
                request.discard_body()
                return refusal
        response = await self.app(request)
        for header, sysmeta in QUOTAS.items():
            if sysmeta is not None:
                value = response.headers.pop(sysmeta)
                if value:
                    response.headers[header.title()] = value
        return response

    def _set_quotas(self, request: SwiftRequest) -> SwiftResponse | None:
        """Check the quota headers of an account write and turn them into sysmeta; a refusal, else None."""
        named = quota_headers(request)
        if not named:
            return None
        if not _reseller(request):
            return SwiftResponse.text(403, "Forbidden: only a reseller admin may set or remove account quotas")
        if any(name.startswith(POLICY_QUOTA) for name in named):
            return SwiftResponse.text(501, "Per-policy account quotas are not supported: the account servers do "
                                           "not report usage per storage policy")
        for header, sysmeta in QUOTAS.items():
            removed = REMOVE + header[2:]
            value = request.headers.get(header)
            if value is not None and value.strip() and not value.strip().isdigit():
                return SwiftResponse.text(400, f"Invalid {header.title()}: a whole number, or empty to remove it")
            if sysmeta is None:
                continue  # plain metadata: the account server stores and removes it
            if value is not None:
                request.headers.pop(header)
                request.headers[sysmeta] = value.strip()
            elif removed in request.headers:
                request.headers.pop(removed)
                request.headers[sysmeta] = ""
        return None

    async def _checked_put(self, request: SwiftRequest, account: str, container: str, obj: str) -> SwiftResponse:
        if _reseller(request):
            return await self.app(request)
        info = await self.accounts(request, account)
        if not info.exists:
            return await self.app(request)
        bytes_quota = whole(info.sysmeta.get("quota-bytes"))
        if bytes_quota is None:
            bytes_quota = whole(info.meta.get("quota-bytes"))
        count_quota = whole(info.sysmeta.get("quota-count"))
        over = ((bytes_quota is not None and info.bytes_used + content_length(request) > bytes_quota)
                or (count_quota is not None and info.object_count + 1 > count_quota))
        if not over:
            return await self.app(request)
        container_info = await self.containers(request, account, container)
        return refused(request, container_info, account, container, obj, EXCEEDED)


def _reseller(request: SwiftRequest) -> bool:
    identity = request.identity
    return identity is not None and bool(getattr(identity, "is_reseller_admin", False))


class CachedAccounts:
    """The proxy's cached account info (`txstore.proxy.controllers.base.account_info`)."""

    def __init__(self, context) -> None:
        self.context = context

    async def __call__(self, request: SwiftRequest, account: str):
        from txstore.proxy.controllers.base import account_info

        return await account_info(self.context, account, request.trans_id)


def _build(app, settings: dict[str, Any], proxy) -> AccountQuotas:
    from txstore.middleware.base import CachedContainers

    proxy.info.register("account_quotas")
    return AccountQuotas(app, CachedAccounts(proxy.context), CachedContainers(proxy.context))


middleware = Middleware("account_quotas", _build)
