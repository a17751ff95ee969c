# -*- test-case-name: txstore.test.unit.test_proxy_controllers -*-
"""
Object GET and HEAD: the first replica that answers is relayed as the response's body source.

The source (`ObjectBody`) queues what the node sends and pauses the node's socket once
``HIGH_WATER`` bytes wait (`txstore.common.flow.InboundQueue`), so a slow reader (the client, through the edge; a copy's
destination) slows the node and the proxy holds about that much per request. A node that
sends nothing for ``node_timeout`` while a reader waits is cut off. If a node fails mid-body,
the rest comes from the next replica with a Range (and If-Match on the ETag); if none can, the
read fails with `ResponseAborted`, so the client's connection is aborted and it never takes a
short body for a whole one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from itertools import chain, islice

from twisted.internet.defer import CancelledError, Deferred, gatherResults, succeed
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.web.client import ResponseDone
from zope.interface import implementer

from txstore.common.backend_client import StreamedResponse
from txstore.common.flow import InboundQueue
from txstore.common.timestamps import Timestamp
from txstore.common.web import ResponseAborted
from txstore.interfaces import IByteSource
from txstore.proxy.context import ProxyContext
from txstore.proxy.controllers.api import APIError, APIRequest
from txstore.proxy.controllers.base import (
    ContainerInfo, backend_path, by_affinity, node_failed, node_ok, placement, usable,
)
from txstore.proxy.messages import HeaderMap, SwiftResponse
from txstore.proxy.node_load import LOAD_HEADER
from txstore.qos.headers import backend_headers as io_headers
from txstore.ring.ring import Node

log = Logger()

READ_HEADERS = ("range", "if-match", "if-none-match", "if-modified-since", "if-unmodified-since",
                # set by middlewares (gatekeeper strips X-Backend-* from clients): where the ETag
                # that conditionals compare is, and metadata under which a Range is ignored (slo)
                "x-backend-etag-is-at", "x-backend-ignore-range-if-metadata-present")
_HIDDEN = {"connection", "keep-alive", "transfer-encoding", "date", "server", "content-length"}
# Bodies up to this size are read whole and answered as bytes (one socket read's worth).
WHOLE_BELOW = 64 * 1024
# A GET answered by a device busier than another primary's by this much (a whole round of its
# pool: `txstore.qos.meter`) is left for that one, once, when the body is at least this big.
SWITCH_LOAD = 1.0
SWITCH_BYTES = 1024 * 1024
NOT_FOUND_PAGE = b"<html><h1>Not Found</h1><p>The resource could not be found.</p></html>"


async def ask(context: ProxyContext, method: str, node: Node, part: int, names: tuple, headers: dict[str, str]):
    """
    One request to one object node, answered (headers in) within node_timeout; the load figure
    the answer carries is noted for the next reads' order.
    """
    response = await context.client.stream(method, node.ip, node.port, backend_path(node, part, *names), headers,
                                           timeout=context.node_timeout)
    if context.loads is not None:
        context.loads.record(node, response.headers.get(LOAD_HEADER))
    return response


async def drain(context: ProxyContext, response: StreamedResponse) -> bool:
    """Read and drop a (small) answer body, within node_timeout; False if the node stalled."""
    return await response.discard(context.reactor, context.node_timeout)


async def get_object(context: ProxyContext, api: APIRequest, info: ContainerInfo) -> SwiftResponse:
    ring = context.rings.object_ring(info.policy_index)
    part = ring.get_part(api.account, api.container, api.obj)
    names = (api.account, api.container, api.obj)
    headers = {name: value for name, value in api.headers() if name.lower() in READ_HEADERS}
    headers.update({"X-Trans-Id": api.trans_id, "X-Backend-Storage-Policy-Index": str(info.policy_index),
                    **io_headers(api.request.environ)})
    primaries = ring.get_part_nodes(part)
    candidates = _read_order(context, primaries, ring.get_more_nodes(part), info.policy_index)
    if api.flag("X-Newest"):
        newest = await _newest_first(context, primaries, part, names, headers)
        candidates = chain(newest, (n for n in candidates if n not in newest))
    not_found = False
    tried: list[Node] = []
    for node in candidates:
        tried.append(node)
        try:
            response = await ask(context, api.method, node, part, names, headers)
        except CancelledError:
            raise  # the client went away: no other replica is asked
        except Exception as err:
            log.warn("{trans_id}: GET from {node} failed: {error}", trans_id=api.trans_id,
                     node=node.device_name, error=err)
            node_failed(context, node, err)
            continue
        status = response.status
        if status >= 500:
            node_failed(context, node)
        else:
            node_ok(context, node)
        if status in (200, 206) and placement(context, info.policy_index).sorting_method == "load":
            response = await _from_an_idler_primary(context, api, response, node, primaries, tried, part, names,
                                                    headers)
        if status in (200, 206, 304, 412, 416):
            return await _relay(context, api, response, candidates, part, names, headers)
        if not await drain(context, response):
            node_failed(context, node)
            continue
        not_found = not_found or status == 404
    if not_found:
        body = NOT_FOUND_PAGE if api.method == "GET" else b""
        return SwiftResponse(404, HeaderMap({"Content-Type": "text/html; charset=UTF-8",
                                             "Content-Length": str(len(NOT_FOUND_PAGE))}), body)
    raise APIError(503, "Service Unavailable: no object server answered")


async def _from_an_idler_primary(context: ProxyContext, api: APIRequest, response: StreamedResponse, node: Node,
                                 primaries: list[Node], tried: list[Node], part: int, names: tuple,
                                 headers: dict[str, str]) -> StreamedResponse:
    """
    The answer to read: this one, or (once per GET) the same answer from an untried usable
    primary whose device is clearly idler than this one's as its answer just showed (a busy
    device is not read, so nothing renews its figure, and the decaying view sends a read there
    now and then; only its headers have been read). The idler primary's answer is taken only
    when it is the same status for a version at least as new; else this one is read after all.
    Not for X-Newest (the newest copy was chosen), HEADs, or bodies under SWITCH_BYTES.
    """
    if (context.loads is None or api.method != "GET" or api.flag("X-Newest")
            or (response.length or 0) < SWITCH_BYTES):
        return response
    others = [n for n in primaries if n not in tried and usable(context, n)]
    idler = context.loads.idlest(others)
    if idler is None or not context.loads.idler_than(node, [idler], SWITCH_LOAD):
        return response
    tried.append(idler)
    try:
        other = await ask(context, api.method, idler, part, names, headers)
    except CancelledError:
        response.abandon()
        raise
    except Exception as err:
        node_failed(context, idler, err)
        return response
    if other.status >= 500:
        node_failed(context, idler)
    if other.status == response.status and _stamp(other) >= _stamp(response):
        node_ok(context, idler)
        response.abandon()
        return other
    other.abandon()
    return response


def _stamp(response: StreamedResponse) -> Timestamp:
    stamp = response.header("x-backend-timestamp")
    try:
        return Timestamp.parse(stamp) if stamp else Timestamp(0)
    except ValueError:
        return Timestamp(0)


def _read_order(context: ProxyContext, primaries: list[Node], handoffs: Iterator[Node],
                policy_index: int | None = None) -> Iterator[Node]:
    """
    The nodes to read from, in order: the primaries, then as many handoffs, those the error
    limiter suppresses last (not never). By the policy's sorting_method: ``load``, the primaries
    the least loaded first (their devices' last load figures, `txstore.proxy.node_load`; ring
    order among equals), the handoffs in ring order; ``affinity``, primaries and handoffs each
    by read_affinity (`txstore.proxy.affinity`); ``ring``, ring order. Lazy: a read the first
    primary answers walks no handoff.
    """
    suppressed = []
    window = islice(handoffs, len(primaries))
    chosen = placement(context, policy_index)
    if chosen.sorting_method == "affinity":
        primaries = list(by_affinity(context, primaries, policy_index))
        window = by_affinity(context, window, policy_index)  # the handoffs ordered once one is wanted
    elif chosen.sorting_method == "load" and context.loads is not None:
        primaries = context.loads.order(primaries)
    for node in chain(primaries, window):
        if usable(context, node):
            yield node
        else:
            suppressed.append(node)
    yield from suppressed


async def _newest_first(context, primaries, part, names, headers) -> list[Node]:
    async def head(node: Node):
        try:
            response = await ask(context, "HEAD", node, part, names, headers)
            if not await drain(context, response):
                return None
            stamp = response.header("x-backend-timestamp")
            return (Timestamp.parse(stamp) if stamp else Timestamp(0), response.status, node)
        except CancelledError:
            raise
        except Exception:
            return None

    results = [r for r in await gatherResults([Deferred.fromCoroutine(head(n)) for n in primaries]) if r]
    good = [r for r in results if r[1] == 200]
    good.sort(key=lambda r: r[0], reverse=True)
    return [r[2] for r in good[:1]]


async def _relay(context, api, response: StreamedResponse, others: Iterator[Node], part, names, headers) -> SwiftResponse:
    out = HeaderMap({name: value for name, value in response.headers.items()
                     if name not in _HIDDEN and not name.startswith("x-backend-")})
    total = response.length
    if total is not None:
        out["Content-Length"] = str(total)
    if api.method == "HEAD" or total == 0:
        response.deliver(_Discard())
        return SwiftResponse(response.status, out, b"")
    etag = out.get("ETag", "")

    async def resume(offset: int):
        """The bytes from ``offset`` on, from another replica (None when none can)."""
        for other in others:
            try:
                attempt = await ask(context, "GET", other, part, names,
                                    {**headers, "Range": f"bytes={offset}-{total - 1}", "If-Match": etag})
            except CancelledError:
                raise
            except Exception:
                continue
            if attempt.status == 206:
                log.info("{trans_id}: resuming {name} at byte {offset} from {node}", trans_id=api.trans_id,
                         name="/".join(names), offset=offset, node=other.device_name)
                return attempt
            attempt.deliver(_Discard())
        return None

    whole = response.status == 200 and total is not None
    body = ObjectBody(response, context.reactor, context.node_timeout, total if whole else None,
                      resume if whole else None, api.trans_id)
    if total is None or total > WHOLE_BELOW:
        return SwiftResponse(response.status, out, body)
    # A small body is read whole before the answer (resumed from another replica if its node
    # breaks off): it goes out as bytes, without the pump and the source's layers, and a node
    # failing mid-way is a 503, never a broken response.
    pieces = []
    try:
        await body.settle()  # one wait for the whole answer, not one per piece and one for the end
        while piece := await body.read():
            pieces.append(piece)
    except ResponseAborted as err:
        raise APIError(503, f"Service Unavailable: {err}") from None
    finally:
        body.stop()  # nothing once the whole body is in; the node's connection else
    return SwiftResponse(response.status, out, b"".join(pieces))


@implementer(IByteSource)
class ObjectBody:
    """A storage node's response body, read with backpressure; resumed elsewhere if it breaks."""

    HIGH_WATER = 128 * 1024  # two socket reads: a slow reader pauses the node almost at once

    def __init__(
        self, response, reactor, stall_timeout: float, total: int | None,
        resume: Callable[[int], Awaitable] | None, trans_id: str = "-",
    ) -> None:
        self._reactor = reactor
        self._stall_timeout = stall_timeout
        self._total = total
        self._resume = resume
        self._trans_id = trans_id
        self._queue: InboundQueue[bytes] = InboundQueue(lambda: None, self.HIGH_WATER)
        self.delivered = 0  # bytes handed to the reader
        self._stream: _NodeStream | None = None
        self._stopped = False
        self._stalled = False  # `settle` found the node silent: the next read cuts it off
        self._attach(response)

    def _attach(self, response: StreamedResponse) -> None:
        stream = self._stream = _NodeStream(self)
        self._queue.attach(lambda: stream.transport if stream.ended is None else None)
        response.deliver(stream)

    # --- IByteSource -------------------------------------------------------------------------

    def read(self) -> Deferred:
        # The common cases take no coroutine: a piece is queued, or the next one is awaited
        # (once per socket read while the reader keeps up); the end, a break or a stall do.
        if self._stalled:
            self._stalled = False
            return Deferred.fromCoroutine(self._read(stalled=True))
        if self._queue:
            return succeed(self._take())
        stream = self._stream
        if stream is not None and stream.ended is None and not self._stopped:
            return stream.wait(self._stall_timeout).addCallback(self._woken)
        return Deferred.fromCoroutine(self._read())

    def settle(self) -> Deferred:
        """
        Fires once the node's answer has ended (or the node went silent for the stall timeout),
        however many pieces it came in: for a small body read whole, whose reads then find
        everything queued. What went wrong is for the reads to find (a cut-off, a resume).
        """
        stream = self._stream
        if stream is None or stream.ended is not None or self._stopped:
            return succeed(None)
        return stream.wait(self._stall_timeout, until_end=True).addCallback(self._settled)

    def _settled(self, alive: bool) -> None:
        self._stalled = not alive

    def _woken(self, alive: bool):
        if alive and self._queue:
            return self._take()
        return Deferred.fromCoroutine(self._read(stalled=not alive))

    def _take(self) -> bytes:
        """The oldest piece the node sent, as it came (no copy); the node resumes once few wait."""
        data = self._queue.take()
        self.delivered += len(data)
        return data

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._queue.clear()
        if self._stream is not None:
            self._stream.stop()

    # --- reading -----------------------------------------------------------------------------

    async def _read(self, stalled: bool = False) -> bytes:
        while True:
            stream = self._stream
            assert stream is not None
            if stalled:
                stalled = False
                log.warn("{trans_id}: node sent nothing for {timeout}s; cutting it off",
                         trans_id=self._trans_id, timeout=self._stall_timeout)
                stream.stop()
                await stream.wait(self._stall_timeout)  # until its connection has ended
            if self._queue:
                return self._take()
            if stream.ended is None:
                stalled = not await stream.wait(self._stall_timeout)
                continue
            complete = stream.ended.check(ResponseDone) is not None
            if complete and (self._total is None or self.delivered >= self._total):
                return b""
            if self._stopped or self._resume is None or self._total is None:
                raise ResponseAborted(f"object body broke off after {self.delivered} bytes")
            resumed = await self._resume(self.delivered)
            if resumed is None:
                raise ResponseAborted(
                    f"object body broke off after {self.delivered} bytes and no replica could resume it")
            self._attach(resumed)

    def _feed(self, data: bytes) -> None:
        if self._stopped:
            return
        self._queue.put(data)


class _NodeStream(Protocol):
    """One node response's bytes into an `ObjectBody`, pausing the node while they wait."""

    def __init__(self, body: ObjectBody) -> None:
        self._body = body
        self._waiter: Deferred | None = None
        self._timeout = 0.0
        self._since = 0.0  # the last sign of life: data, or a reader starting to wait
        self._watchdog = None  # one timer per silence, not one per wait (a wait per socket read)
        self._until_end = False  # the waiter wants the end, not each piece
        self.ended = None  # the Failure connectionLost gave (ResponseDone when complete)

    def dataReceived(self, data: bytes) -> None:
        self._since = self._body._reactor.seconds()
        self._body._feed(data)
        if not self._until_end:
            self._wake(True)

    def connectionLost(self, reason) -> None:
        self.ended = reason
        if self._watchdog is not None and self._watchdog.active():
            self._watchdog.cancel()
        self._watchdog = None
        self._wake(True)

    def _wake(self, result: bool) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.callback(result)

    def wait(self, timeout: float, until_end: bool = False) -> Deferred:
        """
        Until data (unless ``until_end``) or the end arrives: True, or False after ``timeout``
        seconds of silence.
        """
        self._body._queue.resume()
        self._until_end = until_end
        self._waiter = Deferred()
        self._timeout = timeout
        self._since = self._body._reactor.seconds()
        if self._watchdog is None:
            self._watchdog = self._body._reactor.callLater(timeout, self._check)
        return self._waiter

    def _check(self) -> None:
        self._watchdog = None
        if self._waiter is None or self.ended is not None:
            return  # nobody waits: the next wait arms the timer again
        silent = self._body._reactor.seconds() - self._since
        if silent >= self._timeout:
            self._wake(False)
        else:
            self._watchdog = self._body._reactor.callLater(self._timeout - silent, self._check)

    def stop(self) -> None:
        if self._watchdog is not None and self._watchdog.active():
            self._watchdog.cancel()
        self._watchdog = None
        if self.ended is None and self.transport is not None:
            # Not in this call: a reader that stops as the last bytes arrive does so inside
            # this response's own dataReceived, after which twisted ends the response and
            # pools its connection; closed here, that connection would be pooled while
            # closing, and the next request on it fails ("closed cleanly"). A turn later the
            # response has ended (the connection is reusable) or it really is unfinished.
            self._body._reactor.callLater(0, self._stop_unfinished)

    def _stop_unfinished(self) -> None:
        if self.ended is None and self.transport is not None:
            self.transport.stopProducing()


class _Discard(Protocol):
    def dataReceived(self, data: bytes) -> None:
        pass
