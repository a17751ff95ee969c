# -*- test-case-name: txstore.test.test_proxy_controllers -*-
"""
Object PUT: the body goes to every replica at once, chunk by chunk as it is read from its
source (the client's upload, or a copy's source object); the source is read only while every
node keeps up (each node connection is its socket's push producer), so the proxy holds at most
a chunk or two per request whatever the object's size. Each node is asked first
(``Expect: 100-continue``) whether it takes the body; a node that cannot is replaced by a
handoff before any byte is sent. 201 needs a quorum of nodes that stored the same ETag.
"""

from __future__ import annotations

import mimetypes

from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger

from txstore.common.constraints import check_metadata
from txstore.common.quorum import best_status, quorum_size
from txstore.common.streaming import BodyIncomplete
from txstore.common.timestamps import Timestamp
from txstore.common.web import ResponseAborted
from txstore.proxy.context import ProxyContext
from txstore.proxy.controllers.api import APIError, APIRequest
from txstore.proxy.controllers.base import (
    ContainerInfo,
    HandoffPool,
    answer,
    backend_path,
    node_failed,
    node_ok,
    usable,
)
from txstore.proxy.controllers.obj import (
    OBJECT_HEADERS,
    STORED,
    check_content_type,
    container_headers,
    delete_at_header,
)
from txstore.proxy.messages import HeaderMap, SwiftResponse
from txstore.common.put_connection import NodeAnswer, PutConnection
from txstore.ring.ring import Node

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
    chunked = length is None
    timestamp = Timestamp.now(context.clock).internal
    headers = {
        **object_headers,
        "X-Timestamp": timestamp,
        "X-Trans-Id": api.trans_id,
        "X-Backend-Storage-Policy-Index": str(info.policy_index),
        "Expect": "100-continue",
    }
    if not headers.get("ETag"):
        headers.pop("ETag", None)
    if if_none_match:
        headers["If-None-Match"] = "*"
    if chunked:
        headers["Transfer-Encoding"] = "chunked"
    else:
        headers["Content-Length"] = str(length)

    ring = context.rings.object_ring(info.policy_index)
    part = ring.get_part(api.account, api.container, api.obj)
    primaries = ring.get_part_nodes(part)
    containers = container_headers(context, api)
    handoffs = HandoffPool(ring, part)
    names = (api.account, api.container, api.obj)

    async def open_slot(index: int, node: Node | None) -> PutConnection | NodeAnswer | None:
        while node is not None:
            if not usable(context, node):
                node = handoffs.next()
                continue
            try:
                conn, reply = await context.client.put(
                    node.ip, node.port, backend_path(node, part, *names),
                    {**headers, **containers[index % len(containers)]}, timeout=context.node_timeout,
                )
                if reply is None:
                    node_ok(context, node)
                    return conn
                if reply.status < 500 and reply.status != 507:
                    return reply  # a real answer (409, 412, ...): not the node's failure
                log.warn("{trans_id}: PUT to {node} refused: {status}", trans_id=api.trans_id,
                         node=node.device_name, status=reply.status)
            except Exception as err:  # connection refused, timeout, protocol error (the connection is closed)
                log.warn("{trans_id}: PUT to {ip}:{port}/{dev} failed: {error}", trans_id=api.trans_id, ip=node.ip,
                         port=node.port, dev=node.device_name, error=err)
                node_failed(context, node, err)
                node = handoffs.next()
                continue
            node_failed(context, node)
            node = handoffs.next()
        return None

    slots = await gatherResults(
        [Deferred.fromCoroutine(open_slot(i, n)) for i, n in enumerate(primaries)], consumeErrors=True
    )
    conns = [s for s in slots if s is not None and not isinstance(s, NodeAnswer)]  # connections that took the body
    early = [s for s in slots if isinstance(s, NodeAnswer)]
    quorum = quorum_size(len(primaries))
    if any(a.status == 409 for a in early) and not any(a.status == 412 for a in early):
        # A node already holds a newer (or the same) version: this write has lost before it
        # began, and Swift answers it 202, sending no body anywhere.
        for conn in conns:
            _drop(conn)
        source.stop()
        return _superseded(api)
    if len(conns) < quorum:
        for conn in conns:
            _drop(conn)
        status = best_status([a.status for a in early], len(primaries)) if early else 503
        if status < 400:
            status = 503
        source.stop()
        raise APIError(status, "Service Unavailable: not enough storage nodes" if status == 503 else "Precondition Failed" if status == 412 else "Conflict" if status == 409 else "Request refused")

    try:
        await _stream_body(context, source, conns, quorum, length, api.trans_id)
    except BaseException:
        source.stop()
        for conn in conns:
            _drop(conn)
        raise
    for conn in conns:
        conn.finish()

    async def final(conn: PutConnection) -> NodeAnswer | None:
        waiting = conn.answer
        waiting.addTimeout(context.node_timeout, context.reactor)
        try:
            return await waiting
        except Exception as err:
            log.warn("{trans_id}: PUT answer lost: {error}", trans_id=api.trans_id, error=err)
            conn.abort()
            return None

    answers = [a for a in await gatherResults([Deferred.fromCoroutine(final(c)) for c in conns]) if a is not None]
    answers += early
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
        return _superseded(api)  # a newer version arrived while the body streamed
    body = next((a.body for a in answers if a.status == status), b"")
    return answer(api, status, body, "text/plain; charset=utf-8")


def _superseded(api: APIRequest) -> SwiftResponse:
    """What a PUT older than the stored version gets: Swift's 202 (the newer one stays)."""
    return answer(api, 202, b"Accepted: a newer version of this object is already stored.\n",
                  "text/plain; charset=utf-8")


def _drop(conn: PutConnection) -> None:
    """Abort a node's PUT whose answer nobody will wait for (so its NodeGone is not an error)."""
    conn.answer.addErrback(lambda _failure: None)
    conn.abort()


async def _stream_body(
    context: ProxyContext, source, conns: list[PutConnection], quorum: int, length: int | None,
    trans_id: str = "-",
) -> None:
    """Copy the body to every node, reading ``source`` only while all of them keep up."""
    limit = context.constraints.max_file_size
    received = 0
    while True:
        slow = [c for c in conns if not c.writable]
        if slow:
            waiting = gatherResults([c.wait_writable() for c in slow], consumeErrors=True)
            waiting.addTimeout(context.node_timeout, context.reactor)
            try:
                await waiting
            except Exception:
                still = [c for c in slow if not c.writable]
                for conn in still:
                    log.warn("{trans_id}: a node took no data for {timeout}s; dropped", trans_id=trans_id,
                             timeout=context.node_timeout)
                    _drop(conn)
                    conns.remove(conn)
                if len(conns) < quorum:
                    raise APIError(503, "Service Unavailable: storage nodes too slow") from None
        try:
            chunk = await source.read()
        except BodyIncomplete as err:
            raise APIError(499, f"Client Disconnect: {err}") from None
        except ResponseAborted as err:  # a copy's source that broke off and could not resume
            raise APIError(503, f"Service Unavailable: the source broke off: {err}") from None
        if not chunk:
            break
        received += len(chunk)
        if received > limit:
            raise APIError(413, f"Your request is too large: over {limit} bytes")
        for conn in conns:
            conn.write(chunk)
    if length is not None and received != length:
        raise APIError(499, f"Client Disconnect: {received} of {length} bytes")


