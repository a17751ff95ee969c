# -*- test-case-name: txstore.test.unit.test_proxy_controllers -*-
"""
Object PUT: the body goes to every replica at once, chunk by chunk as it is read from its
source (the client's upload, or a copy's source object); the source is read only while every
node keeps up (each node connection is its socket's push producer), so the proxy holds at most
a chunk or two per request whatever the object's size. Each node is asked first
(``Expect: 100-continue``) whether it takes the body; a node that cannot is replaced by a
handoff before any byte is sent. For a large body the proxy computes the md5 once as it passes
and sends it after the body, with a CRC-32 each node checks (``txstore.common.body_digest``);
a smaller one each node hashes itself. 201 needs a quorum of nodes that stored the same ETag.
"""

from __future__ import annotations

import mimetypes

from twisted.logger import Logger

from txstore.common.body_digest import MD5_FOOTER, MD5_FOOTER_KIND, OBJ_CONTENT_LENGTH, PROXY_MD5_MIN, BodyDigest
from txstore.common.constraints import check_metadata
from txstore.common.quorum import best_status, quorum_size
from txstore.common.timestamps import Timestamp
from txstore.proxy.context import ProxyContext
from txstore.proxy.controllers.api import APIError, APIRequest
from txstore.proxy.controllers.base import ContainerInfo, answer
from txstore.proxy.controllers.obj import (
    OBJECT_HEADERS,
    STORED,
    check_content_type,
    container_headers,
    delete_at_header,
)
from txstore.proxy.messages import HeaderMap, SwiftResponse
from txstore.common.put_connection import NodeAnswer, PutConnection
from txstore.proxy.controllers.ec_put import store_ec
from txstore.proxy.controllers.put_slots import (
    Slot, drop, final_answers, open_slots, read_source, refusal, superseded, wait_for_nodes,
)
from txstore.qos.headers import backend_headers as io_headers

log = Logger()


async def put_object(context: ProxyContext, api: APIRequest, info: ContainerInfo) -> SwiftResponse:
    limits = context.constraints
    reason = check_metadata(api.text_headers(), "object", limits)
    if reason:
        raise APIError(400, reason)
    check_content_type(api)
    delete_at = delete_at_header(context, api)
    if_none_match = api.header("If-None-Match")
    if if_none_match is not None and if_none_match.strip() != "*":
        raise APIError(400, "If-None-Match only supports *")
    length_header = api.header("Content-Length")
    chunked = (api.header("Transfer-Encoding") or "").lower() == "chunked"
    length: int | None = None
    if length_header is not None and not chunked:
        if not length_header.isdigit():
            raise APIError(400, "Invalid Content-Length")
        length = int(length_header)
        if length > limits.max_file_size:
            raise APIError(413, f"Your request is too large: over {limits.max_file_size} bytes")
    elif not chunked:
        raise APIError(411, "Length Required")
    content_type = api.header("Content-Type")
    if not content_type or (api.header("X-Detect-Content-Type") or "").lower() == "true":
        content_type = mimetypes.guess_type(api.obj or "")[0] or "application/octet-stream"
    headers = {
        **api.passthrough(*OBJECT_HEADERS, names=STORED + ("etag",)),
        **delete_at,
        "Content-Type": content_type,
    }
    headers.pop("X-Delete-After", None)
    return await store(context, api, info, headers, length, if_none_match is not None, api.body)


async def store(
    context: ProxyContext, api: APIRequest, info: ContainerInfo, object_headers: dict[str, str],
    length: int | None, if_none_match: bool, source,
) -> SwiftResponse:
    """Stream ``source`` (an `IByteSource`) to a quorum of the object's nodes."""
    policy = context.policies.by_index(info.policy_index)
    if policy is not None and policy.ec is not None:
        return await store_ec(context, api, info, policy, object_headers, length, if_none_match, source)
    chunked = length is None
    timestamp = Timestamp.now(context.clock).internal
    headers = {
        **object_headers,
        "X-Timestamp": timestamp,
        "X-Trans-Id": api.trans_id,
        "X-Backend-Storage-Policy-Index": str(info.policy_index),
        **io_headers(api.request.environ),
        "Expect": "100-continue",
    }
    if not headers.get("ETag"):
        headers.pop("ETag", None)
    if if_none_match:
        headers["If-None-Match"] = "*"
    # A large body's md5 and CRC-32 follow it as trailer fields, so the nodes need not compute
    # the md5 themselves (txstore.common.body_digest): chunked, a known length as one chunk.
    digest = BodyDigest() if length is None or length >= PROXY_MD5_MIN else None
    if digest is not None:
        headers[MD5_FOOTER] = MD5_FOOTER_KIND
    if chunked:
        headers["Transfer-Encoding"] = "chunked"
    elif digest is not None:
        headers["Transfer-Encoding"] = "chunked"
        headers[OBJ_CONTENT_LENGTH] = str(length)
    else:
        headers["Content-Length"] = str(length)

    ring = context.rings.object_ring(info.policy_index)
    part = ring.get_part(api.account, api.container, api.obj)
    primaries = ring.get_part_nodes(part)
    containers = container_headers(context, api)
    quorum = quorum_size(len(primaries))
    slots = await open_slots(context, api, ring, part, lambda index: {**headers, **containers[index % len(containers)]},
                             info.policy_index)
    conns = [slot.conn for slot in slots if isinstance(slot, Slot)]
    refused = refusal(api, slots, quorum, source)
    if refused is not None:
        return refused

    try:
        await _stream_body(context, source, conns, quorum, length, api.trans_id, digest)
    except BaseException:
        source.stop()
        for conn in conns:
            drop(conn)
        raise
    trailers = digest.trailers() if digest is not None else None
    for conn in conns:
        conn.finish(trailers)

    sent = [slot for slot in slots if isinstance(slot, Slot) and any(slot.conn is conn for conn in conns)]
    answers = [a for a in await final_answers(context, api, sent, quorum) if a is not None]
    answers += [slot for slot in slots if isinstance(slot, NodeAnswer)]
    created = [a for a in answers if a.status == 201]
    etags = {}
    for reply in created:
        etag = reply.header("etag", "")
        etags[etag] = etags.get(etag, 0) + 1
    if etags:
        etag, count = max(etags.items(), key=lambda item: item[1])
        if count >= quorum:
            created_headers = HeaderMap({"ETag": etag, "Last-Modified": Timestamp.parse(timestamp).last_modified})
            return answer(api, 201, content_type="text/html; charset=UTF-8", headers=created_headers)
    status = best_status([a.status for a in answers], len(primaries))
    if status == 201:
        status = 503
    if status == 409:
        return superseded(api)  # a newer version arrived while the body streamed
    body = next((a.body for a in answers if a.status == status), b"")
    return answer(api, status, body, "text/plain; charset=utf-8")


async def _stream_body(
    context: ProxyContext, source, conns: list[PutConnection], quorum: int, length: int | None,
    trans_id: str = "-", digest: BodyDigest | None = None,
) -> None:
    """
    Copy the body to every node, reading ``source`` only while all of them keep up, and feed
    it to ``digest``.
    """
    limit = context.constraints.max_file_size
    received = 0
    while True:
        await wait_for_nodes(context, conns, lambda conn: conn, quorum, trans_id)
        chunk = await read_source(source)
        if not chunk:
            break
        received += len(chunk)
        if received > limit:
            raise APIError(413, f"Your request is too large: over {limit} bytes")
        for conn in conns:
            conn.write(chunk)
        if digest is not None:
            digest.update(chunk)
    if length is not None and received != length:
        raise APIError(499, f"Client Disconnect: {received} of {length} bytes")


