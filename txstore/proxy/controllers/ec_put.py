# -*- test-case-name: txstore.test.integration.test_ec_proxy -*-
"""
An erasure-coded object's PUT: the body is cut into segments, each segment encoded (in the EC
pool) into ``k + m`` fragments, and fragment *i* streamed to the node of ring index *i* (a
handoff where the primary fails), so each node stores one fragment archive.

The source is read only while every node keeps up, and one segment is encoded while the
previous one's fragments are written, so a PUT holds about two segments whatever the object's
size. The whole object's ETag and length, known only once the body has passed, go to every
node as trailer fields after its archive (``X-Object-Sysmeta-Ec-Etag``, ``-Ec-Content-Length``).

Two phases, as in Swift: a node stores its archive not durable; once ``durable_quorum`` nodes
(*k* + 1 for Reed-Solomon) have theirs, each is asked to mark it durable, after which the node
tells the container. The client gets 201 only when ``durable_quorum`` archives are durable, so a
half-written object is never served: nodes serve durable archives only.

Both phases go over the PUT's own connection when the body's length is known and the node
agrees on its ``100 Continue`` (Swift's multiphase PUT, in a framing of our own: the archive,
a footer line, the node's second ``100 Continue`` once the archive is on disk, the commit
line; docs/backend-api.rst). That spares a request per node, the dearest part of a small EC
PUT. A node that does not agree gets its footer as trailer fields and a durable POST after.
"""

from __future__ import annotations

import hashlib
import json

from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger

from txstore.common.quorum import best_status, quorum_size
from txstore.common.timestamps import Timestamp
from txstore.ec.codec import ECCodec
from txstore.ec.layout import ArchiveLayout, SegmentCutter
from txstore.proxy.context import ProxyContext
from txstore.proxy.controllers.api import APIError, APIRequest
from txstore.proxy.controllers.base import ContainerInfo, answer, backend_path, node_failed
from txstore.proxy.controllers.obj import container_headers
from txstore.proxy.controllers.put_slots import (
    Lost, Slot, drop, final_answers, node_result, open_slots, read_source, refusal, superseded, wait_for_nodes,
)
from txstore.common.put_connection import NodeAnswer
from txstore.proxy.messages import HeaderMap, SwiftResponse
from txstore.qos.headers import backend_headers as io_headers
from txstore.ec.headers import (
    BACKEND_FRAG_INDEX, COMMIT_LINE, COMMIT_ON_CONNECTION, EC_ARCHIVE_LENGTH, EC_COMMIT, EC_COMMITTED,
    EC_CONTENT_LENGTH, EC_DURABLE, EC_ETAG, EC_SCHEME, EC_SEGMENT_SIZE, FRAG_INDEX,
)

log = Logger()



async def store_ec(
    context: ProxyContext, api: APIRequest, info: ContainerInfo, policy, object_headers: dict[str, str],
    length: int | None, if_none_match: bool, source,
) -> SwiftResponse:
    """Stream ``source`` (an `IByteSource`) as fragment archives to the policy's nodes."""
    if context.ec is None:
        source.stop()
        raise APIError(503, "Service Unavailable: this proxy has no erasure-coding support")
    codec = context.ec.codec(policy)
    ring = context.rings.object_ring(info.policy_index)
    if ring.replica_count != codec.k + codec.m:
        source.stop()
        log.error("ring {ring} has {n} replicas, policy {name} needs {want}", ring=policy.ring_name,
                  n=ring.replica_count, name=policy.name, want=codec.k + codec.m)
        raise APIError(503, "Service Unavailable: the policy's ring does not match its fragments")
    timestamp = Timestamp.now(context.clock).internal
    headers = {name: value for name, value in object_headers.items() if name.lower() != "etag"}
    expected_etag = (object_headers.get("ETag") or "").strip('"').lower() or None
    headers.update({
        "X-Timestamp": timestamp,
        "X-Trans-Id": api.trans_id,
        "X-Backend-Storage-Policy-Index": str(info.policy_index),
        **io_headers(api.request.environ),
        "Expect": "100-continue",
        # Always chunked: the archive is followed by trailer fields (the object's ETag).
        "Transfer-Encoding": "chunked",
        EC_SCHEME: codec.scheme,
        EC_SEGMENT_SIZE: str(codec.segment_size),
    })
    if length is not None:
        headers[EC_CONTENT_LENGTH] = str(length)
        headers[EC_COMMIT] = COMMIT_ON_CONNECTION
        headers[EC_ARCHIVE_LENGTH] = str(ArchiveLayout.of(codec, length).archive_length)
    if if_none_match:
        headers["If-None-Match"] = "*"
    part = ring.get_part(api.account, api.container, api.obj)
    containers = container_headers(context, api)
    quorum = codec.durable_quorum
    # Not every node lists the object: each container replica needs one update, and enough
    # nodes send them that a quorum of container replicas hears of the object even when as
    # many nodes fail as the PUT tolerates (the container replicator brings the others
    # along), as Swift counts them. A node sends its update once its archive is durable.
    width = ring.replica_count
    updates = max(len(containers), quorum_size(len(containers)) + width - quorum)

    def container_update(index: int) -> dict[str, str]:
        return containers[index % len(containers)] if containers and index < updates else {}

    slots = await open_slots(context, api, ring, part,
                             lambda index: {**headers, FRAG_INDEX: str(index), **container_update(index)},
                             info.policy_index, per_index=True)
    live = [slot for slot in slots if isinstance(slot, Slot)]
    refused = refusal(api, slots, quorum, source)
    if refused is not None:
        return refused

    try:
        etag, received = await _stream_fragments(context, codec, source, live, quorum, length, api.trans_id)
        if expected_etag is not None and expected_etag != etag:
            raise APIError(422, "Unprocessable Entity: the body's md5 differs from its ETag")
    except BaseException:
        source.stop()
        for slot in live:
            drop(slot.conn)
        raise
    footer = {EC_ETAG: etag, EC_CONTENT_LENGTH: str(received)}
    here = [slot for slot in live if _commits_here(slot)]
    posted = [slot for slot in live if not _commits_here(slot)]
    for slot in here:
        slot.conn.write(json.dumps(footer).encode("ascii") + b"\n")
    for slot in posted:
        slot.conn.finish(footer)
    outcomes = await gatherResults(
        [Deferred.fromCoroutine(_stored(context, api, slot)) for slot in here]
        + [Deferred.fromCoroutine(_answered(context, api, slot)) for slot in posted]
    )
    stored = [slot for slot, outcome in zip(here + posted, outcomes) if outcome is STORED]
    if len(stored) < quorum:
        for slot in here:
            drop(slot.conn)  # its archive stays not durable, as after a failed phase two
        replies = [outcome for outcome in outcomes if isinstance(outcome, NodeAnswer)]
        statuses = [reply.status for reply in replies]
        if 409 in statuses:
            return superseded(api)  # a newer version arrived while the body streamed
        status = best_status(statuses, len(slots))
        status = 503 if status < 400 else status
        body = next((reply.body for reply in replies if reply.status == status), b"")
        return answer(api, status, body or b"Service Unavailable: too few fragment archives stored\n",
                      "text/plain; charset=utf-8")

    # Phase two: every node holding an archive marks it durable (on the PUT's connection, or
    # by a POST); the nodes chosen above list the object once theirs is.
    async def commit_here(slot: Slot) -> int:
        slot.conn.write(COMMIT_LINE)
        slot.conn.finish()
        reply = await _answered(context, api, slot)
        if reply is STORED:
            return 202
        return reply.status if isinstance(reply, NodeAnswer) else 503

    async def commit(slot: Slot) -> int:
        node = slot.node
        commit_headers = {
            EC_DURABLE: timestamp,
            BACKEND_FRAG_INDEX: str(slot.index),
            "X-Trans-Id": api.trans_id,
            "X-Backend-Storage-Policy-Index": str(info.policy_index),
            **container_update(slot.index),
        }
        try:
            response = await context.client.request(
                "POST", node.ip, node.port, backend_path(node, part, api.account, api.container, api.obj),
                commit_headers, None, timeout=context.node_timeout,
            )
        except Exception as err:
            log.warn("{trans_id}: durable mark on {node} failed: {error}", trans_id=api.trans_id,
                     node=node.device_name, error=err)
            node_failed(context, node, err)
            return 503
        return response.status

    statuses = await gatherResults([
        Deferred.fromCoroutine(commit_here(slot) if _commits_here(slot) else commit(slot)) for slot in stored
    ])
    if sum(1 for status in statuses if status == 202) < quorum:
        if 409 in statuses:
            return superseded(api)  # a DELETE or newer PUT came between the two phases
        return answer(api, 503, b"Service Unavailable: too few fragment archives made durable\n",
                      "text/plain; charset=utf-8")
    created = HeaderMap({"ETag": etag, "Last-Modified": Timestamp.parse(timestamp).last_modified})
    return answer(api, 201, content_type="text/html; charset=UTF-8", headers=created)


STORED = object()  # a node's archive is on disk (not durable yet)


def _commits_here(slot: Slot) -> bool:
    """Whether the node agreed (on its 100 Continue) to be made durable on the PUT's connection."""
    return slot.conn.continue_headers.get(EC_COMMIT.lower(), "").lower() == COMMIT_ON_CONNECTION


async def _stored(context: ProxyContext, api: APIRequest, slot: Slot):
    """STORED once a node committing here has its archive on disk; its answer if it gave one instead; None if lost."""
    outcome = await node_result(context, api, slot, slot.conn.wait_stored(), "archive PUT to")
    if isinstance(outcome, Lost):
        drop(slot.conn)
        return None
    return STORED if outcome is None else outcome


async def _answered(context: ProxyContext, api: APIRequest, slot: Slot):
    """
    A node's final answer to its archive PUT: STORED for a 201 (and, committed here, only one
    that says ``X-Backend-Ec-Committed``), else the answer; None if it was lost.
    """
    replies = await final_answers(context, api, [slot])
    reply = replies[0]
    if reply is None:
        return None
    if reply.status == 201 and (not _commits_here(slot) or reply.header(EC_COMMITTED.lower()) == "yes"):
        return STORED
    return reply


def _encode(codec: ECCodec, md5, segment: bytes) -> list[bytes]:
    """(blocking, in the EC pool) The segment's fragments; its bytes added to the object's md5."""
    md5.update(segment)
    return codec.encode(segment)


async def _stream_fragments(
    context: ProxyContext, codec: ECCodec, source, live: list[Slot], quorum: int, length: int | None,
    trans_id: str,
) -> tuple[str, int]:
    """
    Read the body, encode it segment by segment, and write fragment *i* of each segment to
    the slot of index *i*; the object's md5 and length. One segment is encoded while the
    previous one's fragments are written; a node that takes nothing for ``node_timeout`` is
    dropped, and fewer than ``quorum`` nodes left is a 503.
    """
    limit = context.constraints.max_file_size
    cutter = SegmentCutter(codec.segment_size)
    md5 = hashlib.md5()
    received = 0
    encoding: Deferred | None = None

    async def send(pending: Deferred) -> None:
        fragments = await pending
        await wait_for_nodes(context, live, lambda slot: slot.conn, quorum, trans_id)
        for slot in live:
            slot.conn.write(fragments[slot.index])

    try:
        while chunk := await read_source(source):
            received += len(chunk)
            if received > limit:
                raise APIError(413, f"Your request is too large: over {limit} bytes")
            for segment in cutter.feed(chunk):
                if encoding is not None:
                    await send(encoding)
                encoding = context.ec.run_segment(len(segment), _encode, codec, md5, segment)
        if length is not None and received != length:
            raise APIError(499, f"Client Disconnect: {received} of {length} bytes")
    except BaseException:
        if encoding is not None:
            encoding.addErrback(lambda _: None)  # its thread finishes; nobody needs its fragments
        raise
    last = cutter.finish()
    if encoding is not None:
        await send(encoding)
    if last is not None:
        await send(context.ec.run_segment(len(last), _encode, codec, md5, last))
    return md5.hexdigest(), received
