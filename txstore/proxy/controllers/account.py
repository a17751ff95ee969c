# -*- test-case-name: txstore.test.test_proxy -*-
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
    read_from_replicas,
    relay_headers,
    write_to_replicas,
)

META = ("x-account-meta-", "x-remove-account-meta-", "x-account-sysmeta-")


async def handle_account(context: ProxyContext, api: APIRequest) -> SwiftResponse:
    ring = context.rings.account
    part = ring.get_part(api.account)
    if api.method in ("GET", "HEAD"):
        newest = api.flag("X-Newest")
        headers = {"X-Trans-Id": api.trans_id}
        accept = api.header("Accept")
        if accept:
            headers["Accept"] = accept
        result = await read_from_replicas(context, ring, part, api.method, (api.account,), headers, api.query, newest)
        response = result.response
        if response is None:
            raise APIError(503, "Service Unavailable: no account server answered")
        if response.status == 404 and context.account_autocreate and response.header("x-account-status") != "Deleted":
            # An account that was never written looks empty, as Swift's autocreate shows it.
            headers = HeaderMap({
                "X-Account-Container-Count": "0", "X-Account-Object-Count": "0", "X-Account-Bytes-Used": "0",
                "X-Timestamp": Timestamp.now(context.clock).normal,
            })
            if api.method == "GET" and not _wants_structured(api):
                return answer(api, 204, content_type="text/plain; charset=utf-8", headers=headers)
            body = b"[]" if "json" in _format(api) else (
                b'<?xml version="1.0" encoding="UTF-8"?>\n<account name="%s"></account>' % api.account.encode()
                if "xml" in _format(api) else b"")
            ctype = ("application/json; charset=utf-8" if "json" in _format(api) else
                     "application/xml; charset=utf-8" if "xml" in _format(api) else "text/plain; charset=utf-8")
            return answer(api, 200 if body else 204, body, ctype, headers)
        headers = HeaderMap()
        relay_headers(headers, response)
        return answer(api, response.status, response.body, headers=headers)
    if api.method == "POST":
        reason = check_metadata(api.headers(), "account", context.constraints)
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


def _format(api: APIRequest) -> str:
    query = api.query.lower()
    if "format=json" in query:
        return "json"
    if "format=xml" in query:
        return "xml"
    accept = (api.header("Accept") or "").lower()
    if "json" in accept:
        return "json"
    if "xml" in accept:
        return "xml"
    return "plain"


def _wants_structured(api: APIRequest) -> bool:
    return _format(api) != "plain"
