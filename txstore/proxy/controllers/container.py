# -*- test-case-name: txstore.test.unit.test_proxy_controllers -*-
"""``/v1/<account>/<container>``: create, delete, metadata, ACLs and object listings."""

from __future__ import annotations

from txstore.common.backend_client import listing_update_headers
from txstore.common.constraints import check_metadata
from txstore.common.timestamps import Timestamp
from txstore.proxy.acl import parse_acl
from txstore.proxy.context import ProxyContext
from txstore.proxy.controllers.api import APIError, APIRequest
from txstore.proxy.messages import SwiftResponse
from txstore.proxy.controllers.base import (
    account_status,
    answer,
    create_account,
    forget_info,
    read_for_client,
    relay,
    write_to_replicas,
)

PASSED_ON = ("x-container-meta-", "x-remove-container-meta-", "x-container-sysmeta-", "x-versions-",
             "x-history-", "x-remove-versions-", "x-remove-history-", "x-container-sync-")
ACL_HEADERS = ("x-container-read", "x-container-write")
# Shown to and set by the account's owner only, as Swift's swift_owner_headers: the ACLs,
# container sync's target and key, and tempurl's keys. A non-owner's (a container ACL's writer,
# an account ACL's read-write user) are dropped from its request, as Swift drops them.
TEMPURL_KEYS = ("x-container-meta-temp-url-key", "x-container-meta-temp-url-key-2")
SYNC_HEADERS = ("x-container-sync-key", "x-container-sync-to")
OWNER_HEADERS = (*ACL_HEADERS, *SYNC_HEADERS, *TEMPURL_KEYS)
REMOVE_ACL_HEADERS = ("x-remove-container-read", "x-remove-container-write")
SWIFT_HTML = {"Content-Type": "text/html; charset=UTF-8"}  # how Swift labels some answers
# Versioning's locations are the versioned_writes middleware's to take (into container sysmeta);
# one that reaches the controller was taken by no one: refused, never stored and ignored. Empty
# values pass on: they clear what containers stored before versioned_writes existed.
VERSIONING_HEADERS = ("x-versions-location", "x-history-location")


def validate_acls(api: APIRequest) -> None:
    """Bad ACL syntax is the client's error (400), never stored."""
    for name in ACL_HEADERS:
        value = api.header(name)
        if value:
            try:
                parse_acl(value, write=name.endswith("write"))
            except ValueError as err:
                raise APIError(400, f"Invalid {name}: {err}") from None


def _write_headers(api: APIRequest) -> dict[str, str]:
    headers = api.passthrough(*PASSED_ON, names=ACL_HEADERS)
    for name in REMOVE_ACL_HEADERS:
        if api.header(name) is not None:
            headers[name.replace("remove-", "")] = ""
    if not api.is_owner:  # as Swift: only the owner sets them, or removes them
        for name in [n for n in headers if n.lower() in OWNER_HEADERS
                     or n.lower().replace("x-remove-", "x-", 1) in OWNER_HEADERS]:
            del headers[name]
    return headers


def _policy(context: ProxyContext, api: APIRequest):
    name = api.header("X-Storage-Policy")
    if not name:
        return context.policies.default
    found = context.policies.by_name(name)
    if found is None or found.deprecated:
        raise APIError(400, f"Invalid X-Storage-Policy {name!r}")
    return found


async def handle_container(context: ProxyContext, api: APIRequest) -> SwiftResponse:
    assert api.container is not None
    ring = context.rings.container
    part = ring.get_part(api.account, api.container)
    if api.method in ("GET", "HEAD"):
        response = await read_for_client(context, api, ring, part, (api.account, api.container), "container")
        return relay(api, response, hide=() if api.is_owner else OWNER_HEADERS)

    if api.method in ("PUT", "POST"):
        length, limit = len(api.container.encode("utf-8")), context.constraints.max_container_name_length
        if length > limit:
            # Swift's words, and its label: clients check both
            raise APIError(400, f"Container name length of {length} longer than {limit}", SWIFT_HTML)
        reason = check_metadata(api.text_headers(), "container", context.constraints)
        if reason:
            raise APIError(400, reason)
        validate_acls(api)
        if any(api.header(name) for name in VERSIONING_HEADERS):
            raise APIError(412, "Versioned Writes is disabled")
    if api.method not in ("PUT", "POST", "DELETE"):
        raise APIError(405, "Method Not Allowed", {"Allow": "DELETE, GET, HEAD, POST, PUT"})
    timestamp = Timestamp.now(context.clock).internal
    headers = {"X-Timestamp": timestamp, "X-Trans-Id": api.trans_id}
    if api.method in ("PUT", "POST"):
        headers.update(_write_headers(api))
    if api.method == "PUT":
        policy = _policy(context, api)
        if api.header("X-Storage-Policy"):
            # Only a policy asked for is sent: without one, the nodes create a new container
            # in the default policy and leave an existing one in its own, as Swift's do (a
            # re-PUT of a container of another policy is 202, not a conflict).
            headers["X-Backend-Storage-Policy-Index"] = str(policy.index)
        status = await account_status(context, api.account, api.trans_id)
        if status == 404 and context.account_autocreate:
            status = await create_account(context, api.account, api.trans_id)
        if not 200 <= status < 300:
            raise APIError(404 if status == 404 else 503, "Account not found" if status == 404 else "Account unavailable")
    account_ring = context.rings.account
    account_part = account_ring.get_part(api.account)
    account_nodes = account_ring.get_part_nodes(account_part)

    def headers_for(index: int, node) -> dict[str, str]:
        """Each container replica reports to one account replica."""
        account_node = account_nodes[index % len(account_nodes)]
        return {**headers, **listing_update_headers("Account", account_node, account_part)}

    status, answers = await write_to_replicas(context, ring, part, api.method, (api.account, api.container), headers_for)
    forget_info(context, api.account, api.container)
    forget_info(context, api.account)
    body = b""
    for reply in answers:
        if reply.status == status:
            body = reply.body
            break
    if status == 409 and api.method == "DELETE":
        body = b"There was a conflict when trying to complete your request.\n"
    return answer(api, status, body if status >= 400 else b"", "text/plain; charset=utf-8" if status >= 400 else None)
