# -*- test-case-name: txstore.test.unit.test_proxy_controllers -*-
"""
``/v1/<account>/<container>/<object>``: what the object methods share, POST and DELETE.
GET and HEAD are in `obj_get`, PUT in `obj_put`; server-side copy is the copy middleware.
"""

from __future__ import annotations

from txstore.common.backend_client import listing_update_headers
from txstore.common.constraints import check_metadata
from txstore.common.timestamps import Timestamp
from txstore.proxy.context import ProxyContext
from txstore.proxy.controllers.api import APIError, APIRequest
from txstore.proxy.controllers.base import ContainerInfo, answer, write_to_replicas
from txstore.proxy.messages import SwiftResponse
from txstore.ring.ring import Node


OBJECT_HEADERS = ("x-object-meta-", "x-object-sysmeta-", "x-object-transient-sysmeta-")
STORED = ("content-disposition", "content-encoding", "content-language", "cache-control", "expires",
          "x-delete-at", "x-object-manifest", "x-static-large-object", "x-robots-tag")


def check_name(context: ProxyContext, api: APIRequest) -> None:
    assert api.obj is not None
    limit = context.constraints.max_object_name_length
    if len(api.obj.encode("utf-8")) > limit:
        raise APIError(400, f"Object name length of {len(api.obj.encode('utf-8'))} longer than {limit}")


def container_headers(context: ProxyContext, api: APIRequest) -> list[dict[str, str]]:
    ring = context.rings.container
    part = ring.get_part(api.account, api.container)
    return [listing_update_headers("Container", n, part) for n in ring.get_part_nodes(part)]


def check_content_type(api: APIRequest) -> None:
    """
    A ``Content-Type`` that is not valid UTF-8 (or holds NUL) is a 400 "Invalid Content-Type",
    as in Swift: stored, it could not be listed nor sent back.
    """
    value = api.header("Content-Type")
    if value is None:
        return
    try:
        text = value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        raise APIError(400, "Invalid Content-Type") from None
    if "\x00" in text:
        raise APIError(400, "Invalid Content-Type")


# The latest X-Delete-At there is: a later one (``1`` * 100) means never, and is stored as
# this, as Swift stores it (ten digits, so expiry queues sort by time).
LATEST_DELETE_AT = 9_999_999_999


def delete_at_header(context: ProxyContext, api: APIRequest) -> dict[str, str]:
    at, after = api.header("X-Delete-At"), api.header("X-Delete-After")
    now = context.clock()
    if after is not None:
        try:
            seconds = int(after)
        except ValueError:
            raise APIError(400, "Non-integer X-Delete-After") from None
        if seconds < 0:
            raise APIError(400, "X-Delete-After in past")
        return {"X-Delete-At": str(min(int(now + seconds), LATEST_DELETE_AT))}
    if at is not None:
        try:
            value = int(at)
        except ValueError:
            raise APIError(400, "Non-integer X-Delete-At") from None
        if value < now:
            raise APIError(400, "X-Delete-At in past")
        return {"X-Delete-At": str(min(value, LATEST_DELETE_AT))}
    return {}


def if_delete_at_header(api: APIRequest) -> dict[str, str]:
    """A DELETE's ``X-If-Delete-At`` (delete only while the object's X-Delete-At is that), checked."""
    value = api.header("X-If-Delete-At")
    if value is None:
        return {}
    try:
        return {"X-If-Delete-At": str(int(value))}
    except ValueError:
        raise APIError(400, "Bad X-If-Delete-At header value") from None


# --- POST / DELETE ---------------------------------------------------------------------------


async def post_or_delete(context: ProxyContext, api: APIRequest, info: ContainerInfo) -> SwiftResponse:
    ring = context.rings.object_ring(info.policy_index)
    part = ring.get_part(api.account, api.container, api.obj)
    timestamp = Timestamp.now(context.clock).internal
    extra: dict[str, str] = {}
    if api.method == "POST":
        reason = check_metadata(api.text_headers(), "object", context.constraints)
        if reason:
            raise APIError(400, reason)
        check_content_type(api)
        extra = api.passthrough(*OBJECT_HEADERS, names=STORED + ("content-type",))
        extra.pop("X-Delete-After", None)
        extra.update(delete_at_header(context, api))
    else:
        extra = if_delete_at_header(api)
    # A DELETE removes the container's row; a POST that changes the content type changes it
    # (the object server sends the row only then).
    containers = container_headers(context, api)

    def headers_for(index: int, node: Node) -> dict[str, str]:
        headers = {"X-Timestamp": timestamp, "X-Trans-Id": api.trans_id,
                   "X-Backend-Storage-Policy-Index": str(info.policy_index), **extra}
        if containers:
            headers.update(containers[index % len(containers)])
        return headers

    status, _ = await write_to_replicas(context, ring, part, api.method, (api.account, api.container, api.obj), headers_for,
                                        policy_index=info.policy_index)
    # Swift labels these bodiless answers text/html, and its clients' tests check the label
    return answer(api, status, content_type="text/html; charset=UTF-8")


