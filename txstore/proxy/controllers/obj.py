# -*- test-case-name: txstore.test.test_proxy -*-
"""
``/v1/<account>/<container>/<object>``: objects, streamed both ways.

PUT: the body goes to every replica at once, chunk by chunk as it arrives from the client;
the client is read only while every node keeps up (each node connection is its socket's push
producer), so the proxy holds at most a chunk or two per request whatever the object's size.
Each node is asked first (``Expect: 100-continue``) whether it takes the body; a node that
cannot is replaced by a handoff before any byte is sent. 201 needs a quorum of nodes that
stored the same ETag.

GET: the first replica that answers is relayed with its socket registered as the producer of
the client's response, so a slow client slows the node's read and nothing piles up in the
proxy. If the node fails mid-stream, the rest comes from the next replica with a Range (and
If-Match on the ETag); if none can, the client's connection is aborted so it never mistakes
a short body for a whole one.
"""

from __future__ import annotations

import mimetypes

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.web.client import ResponseDone, readBody
from twisted.web.http_headers import Headers
from zope.interface import implementer

from txstore.common.backend_client import listing_update_headers, quote_path
from txstore.common.constraints import check_metadata
from txstore.common.streaming import BodyIncomplete
from txstore.common.timestamps import Timestamp
from txstore.common.web import ResponseAborted
from txstore.proxy.context import ProxyContext
from txstore.proxy.controllers.api import APIError, APIRequest
from txstore.proxy.controllers.base import (
    ContainerInfo,
    HandoffPool,
    container_info,
    node_failed,
    node_ok,
    usable,
    answer,
    backend_path,
    write_to_replicas,
)
from txstore.proxy.put_connection import NodeAnswer, PutConnection, connect_put, request_head
from txstore.common.quorum import best_status, quorum_size
from txstore.ring.ring import Node

log = Logger()

OBJECT_HEADERS = ("x-object-meta-", "x-object-sysmeta-", "x-object-transient-sysmeta-")
STORED = ("content-disposition", "content-encoding", "content-language", "cache-control", "expires",
          "x-delete-at", "x-object-manifest", "x-static-large-object")
READ_HEADERS = ("range", "if-match", "if-none-match", "if-modified-since", "if-unmodified-since")
_HIDDEN = {"connection", "keep-alive", "transfer-encoding", "date", "server", "content-length"}


def _check_name(context: ProxyContext, api: APIRequest) -> None:
    assert api.obj is not None
    limit = context.constraints.max_object_name_length
    if len(api.obj.encode("utf-8")) > limit:
        raise APIError(400, f"Object name length of {len(api.obj.encode('utf-8'))} longer than {limit}")


def _container_headers(context: ProxyContext, api: APIRequest) -> list[dict[str, str]]:
    ring = context.rings.container
    part = ring.get_part(api.account, api.container)
    return [listing_update_headers("Container", n, part) for n in ring.get_part_nodes(part)]


def _delete_at(context: ProxyContext, api: APIRequest) -> dict[str, str]:
    at, after = api.header("X-Delete-At"), api.header("X-Delete-After")
    now = context.clock()
    if after is not None:
        try:
            seconds = int(after)
        except ValueError:
            raise APIError(400, "Non-integer X-Delete-After") from None
        if seconds < 0:
            raise APIError(400, "X-Delete-After in past")
        return {"X-Delete-At": str(int(now + seconds))}
    if at is not None:
        try:
            value = int(at)
        except ValueError:
            raise APIError(400, "Non-integer X-Delete-At") from None
        if value < now:
            raise APIError(400, "X-Delete-At in past")
        return {"X-Delete-At": str(value)}
    return {}


async def handle_object(context: ProxyContext, api: APIRequest, info: ContainerInfo) -> bytes:
    _check_name(context, api)
    if api.method in ("GET", "HEAD"):
        return await get_object(context, api, info)
    if api.method == "PUT":
        return await put_object(context, api, info)
    if api.method in ("POST", "DELETE"):
        return await post_or_delete(context, api, info)
    raise APIError(405, "Method Not Allowed", {"Allow": "DELETE, GET, HEAD, POST, PUT"})


# --- POST / DELETE ---------------------------------------------------------------------------


async def post_or_delete(context: ProxyContext, api: APIRequest, info: ContainerInfo) -> bytes:
    ring = context.rings.object_ring(info.policy_index)
    part = ring.get_part(api.account, api.container, api.obj)
    timestamp = Timestamp.now(context.clock).internal
    extra: dict[str, str] = {}
    if api.method == "POST":
        reason = check_metadata(api.headers(), "object", context.constraints)
        if reason:
            raise APIError(400, reason)
        extra = api.passthrough(*OBJECT_HEADERS, names=STORED + ("content-type",))
        extra.pop("X-Delete-After", None)
        extra.update(_delete_at(context, api))
    containers = _container_headers(context, api) if api.method == "DELETE" else []

    def headers_for(index: int, node: Node) -> dict[str, str]:
        headers = {"X-Timestamp": timestamp, "X-Trans-Id": api.trans_id,
                   "X-Backend-Storage-Policy-Index": str(info.policy_index), **extra}
        if containers:
            headers.update(containers[index % len(containers)])
        return headers

    status, _ = await write_to_replicas(context, ring, part, api.method, (api.account, api.container, api.obj), headers_for)
    return answer(api.request, status)


# --- PUT -------------------------------------------------------------------------------------


async def put_object(context: ProxyContext, api: APIRequest, info: ContainerInfo) -> bytes:
    limits = context.constraints
    reason = check_metadata(api.headers(), "object", limits)
    if reason:
        raise APIError(400, reason)
    delete_at = _delete_at(context, api)
    if_none_match = api.header("If-None-Match")
    if if_none_match is not None and if_none_match.strip() != "*":
        raise APIError(400, "If-None-Match only supports *")
    if api.copy_from is not None:
        return await _copy(context, api, info, delete_at, if_none_match is not None)

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
    return await _store(context, api, info, headers, length, if_none_match is not None, api.request.body)


async def _copy(
    context: ProxyContext, api: APIRequest, info: ContainerInfo, delete_at: dict[str, str], if_none_match: bool
) -> bytes:
    """A server-side copy: the source's body streams from its nodes into the destination's."""
    assert api.copy_from is not None
    api.request.body.discard()
    source_account, source_container, source_obj = api.copy_from
    source_info = await container_info(context, source_account, source_container, api.trans_id)
    if not source_info.exists:
        raise APIError(404 if source_info.status == 404 else 503, "Source container not found")
    ring = context.rings.object_ring(source_info.policy_index)
    part = ring.get_part(source_account, source_container, source_obj)
    names = (source_account, source_container, source_obj)
    read_headers = {"X-Trans-Id": api.trans_id, "X-Backend-Storage-Policy-Index": str(source_info.policy_index)}
    nodes = list(ring.get_part_nodes(part))
    handoffs = HandoffPool(ring, part)
    nodes += [n for n in (handoffs.next() for _ in range(len(nodes))) if n is not None]
    source = None
    for node in nodes:
        try:
            response = await _ask(context, "GET", node, part, names, read_headers)
        except Exception:
            continue
        if response.code == 200:
            source = response
            break
        await _drain(context, response)
    if source is None:
        raise APIError(404, "Source object not found")
    raw = {k.decode("latin-1").lower(): v[-1].decode("latin-1") for k, v in source.headers.getAllRawHeaders()}
    length = source.length if isinstance(source.length, int) else None  # the Agent keeps it out of headers
    fresh = (api.header("X-Fresh-Metadata") or "").lower() in ("true", "yes", "1")
    headers: dict[str, str] = {}
    if not fresh:
        for name, value in raw.items():
            if name.startswith(OBJECT_HEADERS) or name in STORED:
                headers[name.title()] = value
    headers.pop("X-Delete-At", None)
    headers.update(api.passthrough(*OBJECT_HEADERS, names=STORED))
    headers.pop("X-Delete-After", None)
    headers.update(delete_at)
    headers["Content-Type"] = api.header("Content-Type") or raw.get("content-type", "application/octet-stream")
    headers["ETag"] = raw.get("etag", "")
    reader = _ResponseReader(source, context.reactor, context.node_timeout)
    try:
        result = await _store(context, api, info, headers, length, if_none_match, reader)
    finally:
        reader.stop()
    source_path = "/".join(quote_path(n) for n in (source_container, source_obj))
    api.request.setHeader(b"X-Copied-From", source_path.encode("ascii"))
    api.request.setHeader(b"X-Copied-From-Account", quote_path(source_account).encode("ascii"))
    return result


class _ResponseReader(Protocol):
    """A backend response body read chunk by chunk, pausing the node while chunks wait."""

    HIGH_WATER = 1024 * 1024

    def __init__(self, response, reactor, stall_timeout: float) -> None:
        self._reactor = reactor
        self._stall_timeout = stall_timeout
        self._chunks: list[bytes] = []
        self._queued = 0
        self._ended = None
        self._waiter: Deferred | None = None
        self._paused = False
        response.deliverBody(self)

    def dataReceived(self, data: bytes) -> None:
        self._chunks.append(data)
        self._queued += len(data)
        if self._waiter is not None:
            self._wake()
        elif self._queued >= self.HIGH_WATER and not self._paused:
            self._paused = True
            self.transport.pauseProducing()

    def connectionLost(self, reason) -> None:
        self._ended = reason
        if self._waiter is not None:
            self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        waiter.callback(None)

    async def read(self) -> bytes:
        if not self._chunks and self._ended is None:
            waiter = self._waiter = Deferred()
            if self._paused:
                self._paused = False
                self.transport.resumeProducing()
            waiter.addTimeout(self._stall_timeout, self._reactor)
            try:
                await waiter
            except Exception:
                self._waiter = None
                self.stop()
                raise APIError(503, "Service Unavailable: the copy source stalled") from None
        if self._chunks:
            data = b"".join(self._chunks)
            self._chunks, self._queued = [], 0
            if self._paused:
                self._paused = False
                self.transport.resumeProducing()
            return data
        if self._ended is not None and not self._ended.check(ResponseDone):
            raise APIError(503, "Service Unavailable: the copy source broke off")
        return b""

    def stop(self) -> None:
        if self._ended is None and self.transport is not None:
            self.transport.stopProducing()


async def _store(
    context: ProxyContext, api: APIRequest, info: ContainerInfo, object_headers: dict[str, str],
    length: int | None, if_none_match: bool, source,
) -> bytes:
    """Stream ``source`` (anything with ``async read()``) to a quorum of the object's nodes."""
    request = api.request
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
    containers = _container_headers(context, api)
    handoffs = HandoffPool(ring, part)
    names = (api.account, api.container, api.obj)

    async def open_slot(index: int, node: Node | None) -> PutConnection | NodeAnswer | None:
        while node is not None:
            if not usable(context, node):
                node = handoffs.next()
                continue
            head = request_head(
                "PUT", quote_path(backend_path(node, part, *names)), f"{node.ip}:{node.port}",
                {**headers, **containers[index % len(containers)]},
            )
            conn: PutConnection | None = None
            try:
                if context.put_pool is not None:
                    conn, reply = await context.put_pool.open(node.ip, node.port, head, chunked, context.node_timeout)
                else:
                    conn = await connect_put(context.reactor, node.ip, node.port, head, chunked, context.conn_timeout)
                    ready = conn.ready
                    ready.addTimeout(context.node_timeout, context.reactor)
                    reply = await ready
                if reply is None:
                    node_ok(context, node)
                    return conn
                if reply.status < 500 and reply.status != 507:
                    return reply  # a real answer (409, 412, ...): not the node's failure
                log.warn("{trans_id}: PUT to {node} refused: {status}", trans_id=api.trans_id,
                         node=node.device_name, status=reply.status)
            except Exception as err:  # connection refused, timeout, protocol error
                log.warn("{trans_id}: PUT to {ip}:{port}/{dev} failed: {error}", trans_id=api.trans_id, ip=node.ip, port=node.port,
                         dev=node.device_name, error=err)
                if conn is not None:
                    _drop(conn)
            node_failed(context, node)
            node = handoffs.next()
        return None

    slots = await gatherResults(
        [Deferred.fromCoroutine(open_slot(i, n)) for i, n in enumerate(primaries)], consumeErrors=True
    )
    conns = [s for s in slots if isinstance(s, PutConnection)]
    early = [s for s in slots if isinstance(s, NodeAnswer)]
    quorum = quorum_size(len(primaries))
    if len(conns) < quorum:
        for conn in conns:
            _drop(conn)
        status = best_status([a.status for a in early], len(primaries)) if early else 503
        if status < 400:
            status = 503
        if source is request.body:
            request.body.discard()
        raise APIError(status, "Service Unavailable: not enough storage nodes" if status == 503 else "Precondition Failed" if status == 412 else "Conflict" if status == 409 else "Request refused")

    try:
        await _stream_body(context, source, conns, quorum, length, api.trans_id)
    except BaseException:
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
            request.setHeader(b"ETag", etag.encode("latin-1"))
            request.setHeader(b"Last-Modified", Timestamp.parse(timestamp).last_modified.encode())
            return answer(request, 201, content_type="text/html; charset=UTF-8")
    status = best_status([a.status for a in answers], len(primaries))
    if status == 201:
        status = 503
    body = next((a.body for a in answers if a.status == status), b"")
    return answer(request, status, body, "text/plain; charset=utf-8")


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
        if not chunk:
            break
        received += len(chunk)
        if received > limit:
            raise APIError(413, f"Your request is too large: over {limit} bytes")
        for conn in conns:
            conn.write(chunk)
    if length is not None and received != length:
        raise APIError(499, f"Client Disconnect: {received} of {length} bytes")


# --- GET / HEAD ------------------------------------------------------------------------------


@implementer(IPushProducer)
class _Relay(Protocol):
    """
    Writes a node's body to the client. It is the client response's producer and passes the
    client's pause/resume to the node's socket, so a slow client slows the node. A node that
    sends nothing for ``stall_timeout`` seconds while the client is ready is cut off (one timer
    per response, re-armed only when it fires), and the caller resumes from another replica.
    """

    def __init__(self, request, sent: list[int], reactor, stall_timeout: float, trans_id: str = "-") -> None:
        self._trans_id = trans_id
        self.request = request
        self.sent = sent
        self.done: Deferred = Deferred()
        self._reactor = reactor
        self._stall_timeout = stall_timeout
        self._paused = False
        self._last = reactor.seconds()
        self._watchdog = None

    def connectionMade(self) -> None:
        if self.request.channel is None:  # the client went away while the node was answering
            self.transport.stopProducing()
            return
        self.request.registerProducer(self, True)
        self._watchdog = self._reactor.callLater(self._stall_timeout, self._check)

    def _check(self) -> None:
        now = self._reactor.seconds()
        idle = now - self._last
        if not self._paused and idle >= self._stall_timeout:
            log.warn("{trans_id}: node sent nothing for {idle:.1f}s; cutting it off", trans_id=self._trans_id,
                     idle=idle)
            self._watchdog = None
            self.transport.stopProducing()
            return
        wait = self._stall_timeout if self._paused else self._stall_timeout - idle
        self._watchdog = self._reactor.callLater(wait, self._check)

    def dataReceived(self, data: bytes) -> None:
        self._last = self._reactor.seconds()
        self.sent[0] += len(data)
        self.request.write(data)

    def pauseProducing(self) -> None:
        self._paused = True
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        self._last = self._reactor.seconds()
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        self.transport.stopProducing()

    def connectionLost(self, reason) -> None:
        if self._watchdog is not None and self._watchdog.active():
            self._watchdog.cancel()
        self._watchdog = None
        if self.request.channel is not None:  # None once the client has gone
            self.request.unregisterProducer()
        self.done.callback((reason,))  # a tuple: a bare Failure would fire the errback chain


def _node_url(node: Node, part: int, names: tuple) -> bytes:
    return f"http://{node.ip}:{node.port}{quote_path(backend_path(node, part, *names))}".encode("ascii")


async def _ask(context: ProxyContext, method: str, node: Node, part: int, names: tuple, headers: dict[str, str]):
    raw = Headers({k.encode("latin-1"): [v.encode("latin-1")] for k, v in headers.items()})
    attempt = context.agent.request(method.encode("ascii"), _node_url(node, part, names), raw)
    attempt.addTimeout(context.node_timeout, context.reactor)
    return await attempt


async def get_object(context: ProxyContext, api: APIRequest, info: ContainerInfo) -> bytes:
    request = api.request
    ring = context.rings.object_ring(info.policy_index)
    part = ring.get_part(api.account, api.container, api.obj)
    names = (api.account, api.container, api.obj)
    headers = {name: value for name, value in api.headers() if name.lower() in READ_HEADERS}
    headers.update({"X-Trans-Id": api.trans_id, "X-Backend-Storage-Policy-Index": str(info.policy_index)})
    primaries = list(ring.get_part_nodes(part))
    handoffs = HandoffPool(ring, part)
    candidates = primaries + [n for n in (handoffs.next() for _ in range(len(primaries))) if n is not None]
    if (api.header("X-Newest") or "").lower() in ("true", "yes", "1"):
        candidates = await _newest_first(context, primaries, part, names, headers) + candidates
    not_found: list[tuple[Timestamp, int]] = []
    candidates.sort(key=lambda n: not usable(context, n))  # suppressed nodes last, not never
    for node in candidates:
        try:
            response = await _ask(context, api.method, node, part, names, headers)
        except Exception as err:
            log.warn("{trans_id}: GET from {node} failed: {error}", trans_id=api.trans_id,
                     node=node.device_name, error=err)
            node_failed(context, node)
            continue
        status = response.code
        if status >= 500:
            node_failed(context, node)
        else:
            node_ok(context, node)
        if status in (200, 206, 304, 412, 416):
            return await _relay(context, api, response, candidates, node, part, names, headers)
        if not await _drain(context, response):
            node_failed(context, node)
            continue
        if status == 404:
            stamp = response.headers.getRawHeaders(b"x-backend-timestamp")
            not_found.append((Timestamp.parse(stamp[0].decode()) if stamp else Timestamp(0), status))
    if not_found:
        return answer(request, 404, b"<html><h1>Not Found</h1><p>The resource could not be found.</p></html>" if api.method == "GET" else b"", "text/html; charset=UTF-8")
    raise APIError(503, "Service Unavailable: no object server answered")


async def _drain(context: ProxyContext, response) -> bool:
    """Read and drop a (small) answer body, within node_timeout; False if the node stalled."""
    reading = readBody(response)
    reading.addTimeout(context.node_timeout, context.reactor)
    try:
        await reading
    except Exception:
        return False
    return True


async def _newest_first(context, primaries, part, names, headers) -> list[Node]:
    async def head(node: Node):
        try:
            response = await _ask(context, "HEAD", node, part, names, headers)
            if not await _drain(context, response):
                return None
            stamp = response.headers.getRawHeaders(b"x-backend-timestamp")
            return (Timestamp.parse(stamp[0].decode()) if stamp else Timestamp(0), response.code, node)
        except Exception:
            return None

    results = [r for r in await gatherResults([Deferred.fromCoroutine(head(n)) for n in primaries]) if r]
    good = [r for r in results if r[1] == 200]
    good.sort(key=lambda r: r[0], reverse=True)
    return [r[2] for r in good[:1]]


async def _relay(context, api, response, candidates, node, part, names, headers) -> bytes:
    request = api.request
    request.setResponseCode(response.code)
    for name, values in response.headers.getAllRawHeaders():
        lower = name.decode("latin-1").lower()
        if lower in _HIDDEN or lower.startswith("x-backend-"):
            continue
        request.responseHeaders.setRawHeaders(name, values)
    # The Agent takes Content-Length out of the headers into ``length`` (a HEAD's stays a header).
    header_length = response.headers.getRawHeaders(b"content-length")
    total = response.length if isinstance(response.length, int) else None
    if api.method == "HEAD" and header_length:
        request.setHeader(b"Content-Length", header_length[0])
    elif total is not None:
        request.setHeader(b"Content-Length", b"%d" % total)
    if api.method == "HEAD" or total == 0:
        response.deliverBody(_Discard())
        return b""
    sent = [0]
    etag = (response.headers.getRawHeaders(b"etag") or [b""])[0].decode()
    whole = response.code == 200
    remaining = [n for n in candidates if n is not node]
    current = response
    while True:
        relay = _Relay(request, sent, context.reactor, context.node_timeout, api.trans_id)
        current.deliverBody(relay)
        (reason,) = await relay.done
        if reason.check(ResponseDone) and (total is None or sent[0] >= total or not whole):
            return b""
        if request.channel is None:
            raise ResponseAborted("the client went away")  # nobody to resume for
        if not whole or total is None:
            break
        # Resume from another replica with exactly the bytes still missing.
        resumed = None
        while remaining and resumed is None:
            other = remaining.pop(0)
            try:
                attempt = await _ask(context, "GET", other, part, names,
                                     {**headers, "Range": f"bytes={sent[0]}-{total - 1}", "If-Match": etag})
            except Exception:
                continue
            if attempt.code == 206:
                resumed = attempt
            else:
                attempt.deliverBody(_Discard())
        if resumed is None:
            break
        log.info("{trans_id}: resuming {name} at byte {offset} from {node}", trans_id=api.trans_id,
                 name="/".join(names), offset=sent[0], node=other.device_name)
        current = resumed
    raise ResponseAborted(f"object body broke off after {sent[0]} bytes and no replica could resume it")


class _Discard(Protocol):
    def dataReceived(self, data: bytes) -> None:
        pass
