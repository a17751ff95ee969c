# -*- test-case-name: txstore.test.unit.test_proxy_controllers -*-
"""
What every object PUT does before and after its body, replicated or erasure-coded: open one
connection per ring slot (the primary, or a handoff for one that fails or refuses) that invites
the body with ``100 Continue``; decide from the nodes' first answers whether the PUT goes on;
collect their final answers (until a quorum decides, then ``post_quorum_timeout`` for the rest).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TypeVar

from attrs import frozen
from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger

from txstore.common.put_connection import NodeAnswer, PutConnection
from txstore.common.quorum import best_status, status_class
from txstore.common.streaming import BodyIncomplete
from txstore.common.web import ResponseAborted
from txstore.proxy.context import ProxyContext
from txstore.proxy.controllers.api import APIError, APIRequest
from txstore.proxy.affinity import SlotNodes
from txstore.proxy.controllers.base import answer, backend_path, node_failed, node_ok, placement, usable
from txstore.proxy.controllers.gather import until_decided
from txstore.proxy.messages import SwiftResponse
from txstore.ring.ring import Node

log = Logger()
T = TypeVar("T")


@frozen
class Slot:
    """A node that invited a PUT's body: the ring's index it stands for, and the connection."""

    index: int
    node: Node
    conn: PutConnection


async def open_slots(
    context: ProxyContext, api: APIRequest, ring, part: int, headers_for: Callable[[int], dict[str, str]],
    policy_index: int | None = None, per_index: bool = False,
) -> list[Slot | NodeAnswer | None]:
    """
    For each of the part's primaries, a node that invites the body (``Expect: 100-continue``):
    the primary, else the next handoff; a node's real answer instead (409, 412, ...); or None
    when no node was left. ``headers_for(index)`` are the PUT's headers for the index's slot.
    Under the policy's write affinity the slots start on local nodes (`SlotNodes`); with
    ``per_index`` (EC), slot *i* only ever uses primary *i* or handoffs.
    """
    primaries = ring.get_part_nodes(part)
    write = placement(context, policy_index).write if policy_index is not None else None
    nodes = SlotNodes(primaries, lambda: ring.get_more_nodes(part), write, per_index)
    names = (api.account, api.container, api.obj)

    async def open_slot(index: int, node: Node | None) -> Slot | NodeAnswer | None:
        while node is not None:
            if not usable(context, node):
                node = nodes.next(index)
                continue
            try:
                conn, reply = await context.client.put(
                    node.ip, node.port, backend_path(node, part, *names), headers_for(index),
                    timeout=context.node_timeout,
                )
                if reply is None:
                    node_ok(context, node)
                    return Slot(index, node, conn)
                if reply.status < 500 and reply.status != 507:
                    return reply  # a real answer (409, 412, ...): not the node's failure
                log.warn("{trans_id}: PUT to {node} refused: {status}", trans_id=api.trans_id,
                         node=node.device_name, status=reply.status)
            except Exception as err:  # connection refused, timeout, protocol error (the connection is closed)
                log.warn("{trans_id}: PUT to {ip}:{port}/{dev} failed: {error}", trans_id=api.trans_id, ip=node.ip,
                         port=node.port, dev=node.device_name, error=err)
                node_failed(context, node, err)
                node = nodes.next(index)
                continue
            node_failed(context, node)
            node = nodes.next(index)
        return None

    return await gatherResults(
        [Deferred.fromCoroutine(open_slot(i, n)) for i, n in enumerate(nodes.starts)], consumeErrors=True
    )


def refusal(api: APIRequest, slots: list[Slot | NodeAnswer | None], quorum: int, source) -> SwiftResponse | None:
    """
    What the PUT is answered before any body byte is sent, if the nodes' first answers decide
    it (the connections then dropped, the source stopped): a newer version already stored
    (Swift's 202), or fewer than ``quorum`` nodes inviting the body (their best refusal, or 503).
    """
    conns = [slot.conn for slot in slots if isinstance(slot, Slot)]
    early = [slot for slot in slots if isinstance(slot, NodeAnswer)]
    if any(a.status == 409 for a in early) and not any(a.status == 412 for a in early):
        # A node already holds a newer (or the same) version: this write has lost before it
        # began, and Swift answers it 202, sending no body anywhere.
        for conn in conns:
            drop(conn)
        source.stop()
        return superseded(api)
    if len(conns) >= quorum:
        return None
    for conn in conns:
        drop(conn)
    status = best_status([a.status for a in early], len(slots)) if early else 503
    if status < 400:
        status = 503
    source.stop()
    raise APIError(status, "Service Unavailable: not enough storage nodes" if status == 503 else "Precondition Failed" if status == 412 else "Conflict" if status == 409 else "Request refused")


def superseded(api: APIRequest) -> SwiftResponse:
    """What a PUT older than the stored version gets: Swift's 202 (the newer one stays)."""
    return answer(api, 202, b"Accepted: a newer version of this object is already stored.\n",
                  "text/plain; charset=utf-8")


def drop(conn: PutConnection) -> None:
    """Abort a node's PUT whose answer nobody will wait for (so its NodeGone is not an error)."""
    conn.answer.addErrback(lambda _failure: None)
    conn.abort()


@frozen
class Lost:
    """What `node_result` gives when the node's answer failed or did not come in time."""

    error: Exception


async def node_result(
    context: ProxyContext, api: APIRequest, slot: Slot, waiting: Deferred[T], what: str,
) -> T | Lost:
    """
    ``waiting``'s result (something of ``slot``'s node), or `Lost` when it fails or takes more
    than ``node_timeout``: logged as "``what`` <node> lost"; what becomes of the node and its
    connection is the caller's to say.
    """
    waiting.addTimeout(context.node_timeout, context.reactor)
    try:
        return await waiting
    except Exception as err:
        log.warn("{trans_id}: {what} {node} lost: {error}", trans_id=api.trans_id, what=what,
                 node=slot.node.device_name, error=err)
        return Lost(err)


async def final_answers(
    context: ProxyContext, api: APIRequest, slots: list[Slot], quorum: int | None = None,
) -> list[NodeAnswer | None]:
    """
    Each node's answer once its body was sent: None for one that did not answer within
    ``node_timeout`` (the node is error-limited, as one answering 5xx counts an error), and with
    ``quorum``, None too for one still silent ``post_quorum_timeout`` after a quorum decided the
    PUT (`put_decided`): that one is not waited for, but its answer is still awaited in the
    background and counted (`txstore.proxy.controllers.gather`).
    """

    async def final(slot: Slot) -> NodeAnswer | None:
        reply = await node_result(context, api, slot, slot.conn.answer, "PUT answer from")
        if isinstance(reply, Lost):
            node_failed(context, slot.node, reply.error)
            slot.conn.abort()
            return None
        if reply.status >= 500:
            node_failed(context, slot.node)
        return reply

    attempts = [Deferred.fromCoroutine(final(slot)) for slot in slots]
    if quorum is None:
        return await gatherResults(attempts)
    return await until_decided(context.reactor, attempts, lambda got: put_decided(got, quorum),
                               context.post_quorum_timeout)


def put_decided(answers: list[NodeAnswer | None], quorum: int) -> bool:
    """Whether more answers could not change a replicated PUT's outcome: a quorum of 201s with one ETag, or of another class."""
    etags = Counter(a.header("etag", "") for a in answers if a is not None and a.status == 201)
    if etags and max(etags.values()) >= quorum:
        return True
    others = Counter(status_class(a.status) for a in answers if a is not None and a.status != 201)
    return any(count >= quorum for count in others.values())


async def wait_for_nodes(
    context: ProxyContext, held: list[T], conn_of: Callable[[T], PutConnection], quorum: int, trans_id: str,
) -> None:
    """
    Until every node of ``held`` (connections, or what holds them) can take more; one that
    took nothing for ``node_timeout`` is dropped and removed from ``held``, and fewer than
    ``quorum`` left is a 503.
    """
    slow = [item for item in held if not conn_of(item).writable]
    if not slow:
        return
    waiting = gatherResults([conn_of(item).wait_writable() for item in slow], consumeErrors=True)
    waiting.addTimeout(context.node_timeout, context.reactor)
    try:
        await waiting
    except Exception:
        for item in [item for item in slow if not conn_of(item).writable]:
            log.warn("{trans_id}: a node took no data for {timeout}s; dropped", trans_id=trans_id,
                     timeout=context.node_timeout)
            drop(conn_of(item))
            held.remove(item)
        if len(held) < quorum:
            raise APIError(503, "Service Unavailable: storage nodes too slow") from None


async def read_source(source) -> bytes:
    """The next chunk of a PUT's source (an `IByteSource`); its failures as the PUT's answers."""
    try:
        return await source.read()
    except BodyIncomplete as err:
        raise APIError(499, f"Client Disconnect: {err}") from None
    except ResponseAborted as err:  # a copy's source that broke off and could not resume
        raise APIError(503, f"Service Unavailable: the source broke off: {err}") from None
