# -*- test-case-name: txstore.test.unit.test_quotas -*-
"""
container_quotas: a container's size and object count limits, Swift's API.

Whoever may set the container's metadata sets them::

    X-Container-Meta-Quota-Bytes   the most bytes the container may hold
    X-Container-Meta-Quota-Count   the most objects it may hold

A value that is not a whole number (digits only; empty removes it) is refused when set, on a
container PUT or POST: 400 ``Invalid bytes quota.`` / ``Invalid count quota.``, and nothing is
stored. An object PUT (a copy's too: ``COPY`` and ``X-Copy-From`` are PUTs of the destination by
the time they get here, with the source's length) whose Content-Length would take the
container's bytes past its quota, or that would be one object too many, is ``413 Upload exceeds
quota.``, once the requester is known to be allowed the write (anyone else gets the refusal the
authorizer gives, so a quota tells nothing to who may not write).

A container with versions (``X-Versions-Enabled``) counts its hidden versions container's bytes
too, as Swift's does. As Swift's: usage is the container's cached info (eventually consistent: a few PUTs at once may
all fit), and an upload of unknown length (chunked) is let in while the container is within its
quota, with its bytes counted as zero.
"""

from __future__ import annotations

from typing import Any


from txstore.middleware.base import ApiMiddleware, CachedContainers, Middleware
from txstore.proxy import subrequest
from txstore.proxy.messages import SwiftRequest, SwiftResponse

SOURCE = "CQ"
VERSIONS_CONTAINER = "versions-container"  # object_versioning's sysmeta: where the versions are
EXCEEDED = "Upload exceeds quota."
SETTINGS = (("X-Container-Meta-Quota-Bytes", "Invalid bytes quota."),
            ("X-Container-Meta-Quota-Count", "Invalid count quota."))


def content_length(request: SwiftRequest) -> int:
    """The upload's declared length; 0 when unknown (chunked) or not a number (refused below)."""
    value = (request.header("Content-Length") or "").strip()
    return int(value) if value.isdigit() else 0


def whole(value: str | None) -> int | None:
    """A stored quota: its number, or None when unset or not digits (an old, unchecked value)."""
    value = (value or "").strip()
    return int(value) if value.isdigit() else None


def refused(request: SwiftRequest, info, account: str, container: str, obj: str | None,
            reason: str) -> SwiftResponse:
    """413 with ``reason``, or the authorizer's own refusal when the requester may not write at all."""
    request.discard_body()
    authorize = request.environ.get(subrequest.AUTHORIZE)
    if authorize is not None:
        decision = authorize(request, account, container, obj, info)
        if not decision.allowed:
            status = decision.status or 403
            return SwiftResponse.text(status, "Unauthorized" if status == 401 else "Forbidden")
    return SwiftResponse.text(413, reason)


class ContainerQuotas(ApiMiddleware):
    depth = 2

    def __init__(self, app, containers) -> None:
        self.app = app
        self.containers = containers  # (request, account, container) -> Awaitable[ContainerInfo]

    def handle(self, request: SwiftRequest, account: str, container: str, obj: str | None):
        # Reads and deletes are the next stage's call itself.
        if request.method not in ("PUT", "POST"):
            return self.app(request)
        if obj is None:
            for name, reason in SETTINGS:
                value = (request.header(name) or "").strip()
                if value and not value.isdigit():
                    request.discard_body()
                    return _answer(SwiftResponse.text(400, reason))
            return self.app(request)
        if request.method != "PUT":
            return self.app(request)
        return self._checked_put(request, account, container, obj)

    async def _checked_put(self, request: SwiftRequest, account: str, container: str, obj: str) -> SwiftResponse:
        info = await self.containers(request, account, container)
        if not info.exists:
            return await self.app(request)
        quota = whole(info.meta.get("quota-bytes"))
        if quota is not None:
            used = await self._bytes_used(request, account, container, info)
            if used + content_length(request) > quota:
                return refused(request, info, account, container, obj, EXCEEDED)
        quota = whole(info.meta.get("quota-count"))
        if quota is not None and info.object_count + 1 > quota:
            return refused(request, info, account, container, obj, EXCEEDED)
        return await self.app(request)

    async def _bytes_used(self, request: SwiftRequest, account: str, container: str, info) -> int:
        """
        The container's bytes; for a container with versions, as object_versioning below reports
        them (its hidden versions container's included, as Swift counts them): a HEAD of our own.
        """
        if not info.sysmeta.get(VERSIONS_CONTAINER):
            return info.bytes_used
        head = await self.app(subrequest.make(request, "HEAD", f"/v1/{account}/{container}", source=SOURCE,
                                              system=True))
        head.discard_body()
        used = (head.headers.get("X-Container-Bytes-Used") or "").strip()
        return int(used) if head.status // 100 == 2 and used.isdigit() else info.bytes_used


async def _answer(response: SwiftResponse) -> SwiftResponse:
    return response


def _build(app, settings: dict[str, Any], proxy) -> ContainerQuotas:
    proxy.info.register("container_quotas")
    return ContainerQuotas(app, CachedContainers(proxy.context))


middleware = Middleware("container_quotas", _build)
