# -*- test-case-name: txstore.test.unit.test_proxy_controllers -*-
"""``/v1/<account>``: stats, metadata and container listings of an account."""

from __future__ import annotations

from txstore.common.constraints import check_metadata
from txstore.common.timestamps import Timestamp
from txstore.proxy.context import ProxyContext
from txstore.proxy.controllers.api import APIError, APIRequest
from txstore.proxy.messages import HeaderMap, SwiftResponse
from txstore.proxy.controllers.base import (
    answer,
    forget_info,
    read_for_client,
    relay,
    write_to_replicas,
)

META = ("x-account-meta-", "x-remove-account-meta-", "x-account-sysmeta-")
JSON_TYPE = "application/json; charset=utf-8"
# Shown to and set by the account's owner only (Swift's swift_owner_headers): tempurl's keys.
OWNER_HEADERS = ("x-account-meta-temp-url-key", "x-account-meta-temp-url-key-2")


async def handle_account(context: ProxyContext, api: APIRequest) -> SwiftResponse:
    ring = context.rings.account
    part = ring.get_part(api.account)
    if api.method in ("GET", "HEAD"):
        response = await read_for_client(context, api, ring, part, (api.account,), "account")
        if response.status == 404 and context.account_autocreate and response.header("x-account-status") != "Deleted":
            # An account that was never written looks empty, as Swift's autocreate shows it.
            headers = HeaderMap({
                "X-Account-Container-Count": "0", "X-Account-Object-Count": "0", "X-Account-Bytes-Used": "0",
                "X-Timestamp": Timestamp.now(context.clock).normal,
            })
            # In JSON, as the nodes are asked for it: the listing_formats middleware renders
            # the client's format. A HEAD answers 204, as a node does for an account.
            if api.method == "HEAD":
                return answer(api, 204, content_type=JSON_TYPE, headers=headers)
            return answer(api, 200, b"[]", JSON_TYPE, headers)
        return relay(api, response, hide=() if api.is_owner else OWNER_HEADERS)
    if api.method == "POST":
        reason = check_metadata(api.text_headers(), "account", context.constraints)
        if reason:
            raise APIError(400, reason)
        timestamp = Timestamp.now(context.clock).internal
        extra = api.passthrough(*META)
        status, answers = await write_to_replicas(
            context, ring, part, "POST", (api.account,),
            lambda i, n: {"X-Timestamp": timestamp, "X-Trans-Id": api.trans_id, **extra},
        )
        if status == 404 and context.account_autocreate:
            status, answers = await write_to_replicas(
                context, ring, part, "PUT", (api.account,),
                lambda i, n: {"X-Timestamp": timestamp, "X-Trans-Id": api.trans_id, **extra},
            )
            status = 204 if 200 <= status < 300 else status
        forget_info(context, api.account)
        return answer(api, status)
    if api.method in ("PUT", "DELETE"):
        timestamp = Timestamp.now(context.clock).internal
        extra = api.passthrough(*META) if api.method == "PUT" else {}
        status, _ = await write_to_replicas(
            context, ring, part, api.method, (api.account,),
            lambda i, n: {"X-Timestamp": timestamp, "X-Trans-Id": api.trans_id, **extra},
        )
        forget_info(context, api.account)
        return answer(api, status)
    raise APIError(405, "Method Not Allowed", {"Allow": "DELETE, GET, HEAD, POST, PUT"})

