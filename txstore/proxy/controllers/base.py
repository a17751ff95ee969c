# -*- test-case-name: txstore.test.unit.test_proxy_controllers -*-
"""
Talking to the replicas of one partition: fan-out writes with handoffs, first-good reads,
and the newest answer when asked (X-Newest).

A replica that cannot be reached, times out, or answers 507 (its device is gone) is replaced
by the next handoff, so a write still lands on as many nodes as the ring has replicas.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import TypeVar

from attrs import field, frozen
from twisted.internet import defer
from twisted.internet import error as internet_error
from twisted.internet.defer import Deferred, DeferredQueue, gatherResults
from twisted.logger import Logger
from twisted.python.failure import Failure

from txstore.common.backend_client import BackendError, BackendResponse, BackendTimeout
from txstore.common.paths import ALLOW_RESERVED
from txstore.common.timestamps import Timestamp
from txstore.proxy.affinity import Placement
from txstore.proxy.context import ProxyContext
from txstore.proxy.controllers.api import APIError, APIRequest
from txstore.proxy.messages import HeaderMap, SwiftResponse
from txstore.common.quorum import best_status, has_quorum
from txstore.proxy.controllers.gather import until_decided
from txstore.ring.ring import Node, Ring

log = Logger()

HeadersFor = Callable[[int, Node], dict[str, str]]


class HandoffPool:
    """The partition's handoffs, handed out one at a time to slots whose primary failed."""

    def __init__(self, ring: Ring, part: int, taken: Iterable[Node] = ()) -> None:
        skip = {node.id for node in taken}
        self._more: Iterator[Node] = (node for node in ring.get_more_nodes(part) if node.id not in skip)

    def next(self) -> Node | None:
        return next(self._more, None)


def placement(context: ProxyContext, policy_index: int | None = None) -> Placement:
    """
    How reads and writes choose nodes for objects of ``policy_index`` (None: accounts and
    containers): the proxy's sorting_method and read / write affinity (`txstore.proxy.affinity`).
    """
    if context.affinity is None:
        return Placement("load" if context.loads is not None else "ring")
    return context.affinity.for_policy(policy_index)


def by_affinity(context: ProxyContext, nodes: Iterable[Node], policy_index: int | None = None) -> Iterator[Node]:
    """
    ``nodes`` by read_affinity under sorting_method = affinity, else in the order given; lazy:
    nothing is taken from ``nodes`` (handoffs cost a walk of the ring) until the first is wanted.
    """
    chosen = placement(context, policy_index)
    if chosen.sorting_method == "affinity" and chosen.read is not None:
        yield from chosen.read.order(nodes)
    else:
        yield from nodes


def usable(context: ProxyContext, node: Node) -> bool:
    return context.errors is None or not context.errors.is_limited(node)


def node_failed(context: ProxyContext, node: Node, error: BaseException | None = None) -> None:
    """Count a failure of ``node``; a timeout (``error``) suppresses it at once."""
    timed_out = error is not None and is_timeout(error)
    if context.errors is not None:
        if timed_out:
            context.errors.limit_now(node)
        else:
            context.errors.error(node)
    if context.metrics is not None:
        kind = "timeout" if timed_out else "error" if error is not None else "status"
        context.metrics.backend_failure(f"{node.ip}:{node.port}/{node.device_name}", kind)


def is_timeout(error: BaseException) -> bool:
    return isinstance(error, (BackendTimeout, defer.TimeoutError, internet_error.TimeoutError, TimeoutError))


def node_ok(context: ProxyContext, node: Node) -> None:
    if context.errors is not None:
        context.errors.success(node)


def backend_path(node: Node, part: int, *names: str | None) -> str:
    return "/" + "/".join([node.device_name, str(part), *[n for n in names if n is not None]])


async def _one_slot(
    context: ProxyContext, index: int, node: Node, handoffs: HandoffPool, part: int, method: str,
    names: tuple[str | None, ...], headers_for: HeadersFor, body: bytes | None, query: str,
) -> BackendResponse | None:
    """One replica's write: its primary, else handoffs until one answers (not 507)."""
    current: Node | None = node
    while current is not None:
        if not usable(context, current):
            current = handoffs.next()
            continue
        headers = headers_for(index, current)
        trans_id = headers.get("X-Trans-Id", "-")
        try:
            response = await context.client.request(
                method, current.ip, current.port, backend_path(current, part, *names),
                headers, body, timeout=context.node_timeout, query=query,
            )
            if response.status != 507 and response.status < 500:
                node_ok(context, current)
                return response
            log.warn("{trans_id}: {method} to {node} answered {status}", trans_id=trans_id, method=method,
                     node=_name(current), status=response.status)
        except BackendError as err:
            log.warn("{trans_id}: {method} to {node} failed: {error}", trans_id=trans_id, method=method,
                     node=_name(current), error=err)
            node_failed(context, current, err)
            current = handoffs.next()
            continue
        node_failed(context, current)
        current = handoffs.next()
    return None


def _name(node: Node) -> str:
    return f"{node.ip}:{node.port}/{node.device_name}"


async def write_to_replicas(
    context: ProxyContext, ring: Ring, part: int, method: str, names: tuple[str | None, ...],
    headers_for: HeadersFor, body: bytes | None = None, query: str = "", policy_index: int | None = None,
) -> tuple[int, list[BackendResponse]]:
    """
    Send a write to every replica (handoffs for failed ones); the quorum status and the answers
    in by ``post_quorum_timeout`` after a quorum decided it (`until_decided`).
    An object DELETE under write affinity (``policy_index`` given) goes to local handoffs as
    well, where a recent PUT may still sit, and its quorum counts them (as Swift's
    write_affinity_handoff_delete_count).
    """
    primaries = ring.get_part_nodes(part)
    write = placement(context, policy_index).write if policy_index is not None and method == "DELETE" else None
    if write is not None:
        primaries = primaries + write.delete_handoffs(primaries, ring.get_more_nodes(part))
    handoffs = HandoffPool(ring, part, primaries)
    attempts = [
        Deferred.fromCoroutine(_one_slot(context, i, node, handoffs, part, method, names, headers_for, body, query))
        for i, node in enumerate(primaries)
    ]
    results = await until_decided(
        context.reactor, attempts,
        lambda got: has_quorum([r.status if r is not None else 503 for r in got], len(primaries)),
        context.post_quorum_timeout,
    )
    answers = [r for r in results if r is not None]
    return best_status([r.status for r in answers], len(primaries)), answers


def response_timestamp(response: BackendResponse) -> Timestamp:
    for name in ("x-backend-timestamp", "x-backend-put-timestamp", "x-timestamp", "x-put-timestamp"):
        raw = response.header(name)
        if raw:
            try:
                return Timestamp.parse(raw)
            except ValueError:
                continue
    return Timestamp(0)


@frozen
class ReadResult:
    response: BackendResponse | None
    statuses: tuple[int, ...]


async def read_from_replicas(
    context: ProxyContext, ring: Ring, part: int, method: str, names: tuple[str | None, ...],
    headers: dict[str, str], query: str = "", newest: bool = False,
) -> ReadResult:
    """
    The first successful answer from the primaries then handoffs, in ring order; with
    ``newest``, every primary is asked and the answer with the newest timestamp wins. When no
    node succeeds, the answer is a 404 if one said so (the most authoritative failure), else
    None (the caller answers 503).
    """
    primaries = list(by_affinity(context, ring.get_part_nodes(part)))
    statuses: list[int] = []
    not_found: list[BackendResponse] = []

    async def ask(node: Node) -> BackendResponse | None:
        try:
            response = await context.client.request(
                method, node.ip, node.port, backend_path(node, part, *names), headers,
                timeout=context.node_timeout, query=query,
            )
        except BackendError as err:
            log.warn("{trans_id}: {method} to {node} failed: {error}", trans_id=headers.get("X-Trans-Id", "-"),
                     method=method, node=_name(node), error=err)
            node_failed(context, node, err)
            statuses.append(503)
            return None
        if response.status >= 500:
            node_failed(context, node)
        else:
            node_ok(context, node)
        statuses.append(response.status)
        return response

    if newest:
        results = await gatherResults([Deferred.fromCoroutine(ask(n)) for n in primaries], consumeErrors=True)
        answered = [r for r in results if r is not None and (r.status < 300 or r.status == 404)]
        if not answered:
            return ReadResult(None, tuple(statuses))
        best = max(answered, key=response_timestamp)
        return ReadResult(best, tuple(statuses))

    handoffs = by_affinity(context, islice(ring.get_more_nodes(part), len(primaries)))
    # Nodes suppressed for their errors are asked last, not never: a read should still succeed.
    candidates: list[Node] = sorted(primaries, key=lambda n: not usable(context, n))
    tried = 0

    def next_node() -> Node | None:
        nonlocal tried
        if not candidates and tried < 2 * len(primaries) and len(not_found) < len(primaries):
            more = next(handoffs, None)
            if more is not None:
                candidates.append(more)
        if not candidates:
            return None
        tried += 1
        return candidates.pop(0)

    # One node at a time; with concurrent_gets, the next one too whenever the ones asked have
    # not answered within concurrency_timeout (a silent node then costs that, not node_timeout).
    arrived: DeferredQueue[BackendResponse | None] = DeferredQueue()
    running = 0
    node = next_node()
    while node is not None or running:
        if node is not None:
            Deferred.fromCoroutine(ask(node)).addBoth(arrived.put)
            running += 1
        waiting = arrived.get()
        if context.concurrency_timeout is not None and node is not None:
            waiting.addTimeout(context.concurrency_timeout, context.reactor)
        try:
            response = await waiting
        except defer.TimeoutError:
            node = next_node()  # None once there is no other node: then wait for those asked
            continue
        running -= 1
        if isinstance(response, Failure):
            response.raiseException()
        if response is not None:
            if response.status < 400 or (400 <= response.status < 500 and response.status != 404):
                # success, or the client's own error (every replica would say the same)
                return ReadResult(response, tuple(statuses))
            if response.status == 404:
                not_found.append(response)
        node = next_node()
    if not_found:
        return ReadResult(max(not_found, key=response_timestamp), tuple(statuses))
    return ReadResult(None, tuple(statuses))


# --- answering the client --------------------------------------------------------------------

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "content-length",
               "date", "server"}


async def read_for_client(
    context: ProxyContext, api: APIRequest, ring: Ring, part: int, names: tuple[str, ...], server: str,
) -> BackendResponse:
    """
    A client's GET or HEAD of an account or a container, from its replicas (``X-Newest`` heeded,
    its ``Accept`` passed on); 503 when no ``server`` (account, container) answered.
    """
    headers = {"X-Trans-Id": api.trans_id}
    accept = api.header("Accept")
    if accept:
        headers["Accept"] = accept
    if api.request.allow_reserved:  # a middleware's listing, reserved names included
        headers[ALLOW_RESERVED] = "true"
    result = await read_from_replicas(context, ring, part, api.method, names, headers, api.query, api.flag("X-Newest"))
    if result.response is None:
        raise APIError(503, f"Service Unavailable: no {server} server answered")
    return result.response


def relay(api: APIRequest, response: BackendResponse, hide: tuple[str, ...] = ()) -> SwiftResponse:
    """A backend answer for the client, less hop-by-hop and backend-only headers and those in ``hide``."""
    headers = HeaderMap()
    for name, value in response.headers.items():
        if name in _HOP_BY_HOP or name.startswith("x-backend-") or name in hide:
            continue
        headers[name] = value
    return answer(api, response.status, response.body, headers=headers)


def answer(api: APIRequest, status: int, body: bytes = b"", content_type: str | None = None,
           headers: HeaderMap | None = None) -> SwiftResponse:
    """A whole answer; a HEAD's carries the length its GET's body would have."""
    headers = headers if headers is not None else HeaderMap()
    if content_type:
        headers["Content-Type"] = content_type
    if status in (204, 304):
        body = b""
    headers["Content-Length"] = str(len(body))
    return SwiftResponse(status, headers, b"" if api.method == "HEAD" else body)


# --- cached info -------------------------------------------------------------------------------


@frozen
class ContainerInfo:
    status: int
    read_acl: str | None = None
    write_acl: str | None = None
    policy_index: int = 0
    object_count: int = 0
    bytes_used: int = 0
    # Swift's container_info ``sysmeta``: ``X-Container-Sysmeta-<name>`` as ``<name>`` (lower
    # case), what middlewares keep on the container (versioned_writes' location and mode).
    sysmeta: dict[str, str] = field(factory=dict, hash=False)
    # Swift's ``versions``: a location stored as plain ``X-Versions-Location`` metadata (before
    # versioned_writes kept it in sysmeta), which versioned_writes still honours.
    versions: str | None = None
    # Swift's container_info ``meta``: ``X-Container-Meta-<name>`` as ``<name>`` (lower case),
    # the user metadata middlewares act on (tempurl's keys).
    meta: dict[str, str] = field(factory=dict, hash=False)

    @property
    def exists(self) -> bool:
        return 200 <= self.status < 300


SYSMETA = "x-container-sysmeta-"
META = "x-container-meta-"


def _named(response: BackendResponse, prefix: str) -> dict[str, str]:
    """The headers under ``prefix`` (lower case), by the rest of their names: info's sysmeta, meta."""
    return {name[len(prefix):]: value for name, value in response.headers.items() if name.startswith(prefix)}


def _cache_key(account: str, container: str | None = None) -> str:
    return f"container/{account}/{container}" if container is not None else f"account/{account}"


Info = TypeVar("Info")  # ContainerInfo or AccountInfo


NOT_FOUND_TTL = 0.1  # of info_ttl: how long a not-found account or container is believed


async def _info(
    context: ProxyContext, ring: Ring, names: tuple[str, ...], trans_id: str, kind: Callable[[int], Info],
    found: Callable[[BackendResponse], Info],
) -> Info:
    """
    The cached info of an account or container (``names``), else a HEAD of its replicas: ``kind``
    of its status when it failed, ``found`` of the answer when it succeeded; cached either way,
    but not when no node answered (a 503: asked again next time). A not-found is kept a tenth
    of ``info_ttl`` (as Swift keeps it): it may be a replica that has not received the database
    yet, or another proxy's creation this one has not heard of, and a write into a container
    just made should not be refused for long.
    """
    key = _cache_key(*names)
    cached = context.cache.get(key)
    if cached is None:
        cached = await context.cache.fetch(key)  # memcached, where the proxies share it
    if cached is not None:
        return cached
    part = ring.get_part(*names)
    response = (await read_from_replicas(context, ring, part, "HEAD", names, {"X-Trans-Id": trans_id})).response
    if response is None:
        return kind(503)
    info = kind(response.status) if response.status >= 300 else found(response)
    context.cache.set(key, info, context.info_ttl if response.status < 300 else context.info_ttl * NOT_FOUND_TTL)
    return info


def _container_found(response: BackendResponse) -> ContainerInfo:
    policy = response.header("x-backend-storage-policy-index", "0") or "0"
    return ContainerInfo(
        response.status,
        response.header("x-container-read"),
        response.header("x-container-write"),
        int(policy) if policy.isdigit() else 0,
        int(response.header("x-container-object-count", "0") or 0),
        int(response.header("x-container-bytes-used", "0") or 0),
        _named(response, SYSMETA),
        response.header("x-versions-location") or None,
        _named(response, META),
    )


async def container_info(context: ProxyContext, account: str, container: str, trans_id: str = "-") -> ContainerInfo:
    return await _info(context, context.rings.container, (account, container), trans_id, ContainerInfo,
                       _container_found)


@frozen
class AccountInfo:
    status: int
    # ``X-Account-Sysmeta-<name>`` as ``<name>`` (lower case): what middlewares keep on the
    # account (tempauth's account ACL, ``core-access-control``).
    sysmeta: dict[str, str] = field(factory=dict, hash=False)
    # ``X-Account-Meta-<name>`` as ``<name>`` (lower case): user metadata (tempurl's keys).
    meta: dict[str, str] = field(factory=dict, hash=False)
    # usage, as the account's databases last reported it (account_quotas)
    bytes_used: int = 0
    object_count: int = 0

    @property
    def exists(self) -> bool:
        return 200 <= self.status < 300


ACCOUNT_SYSMETA = "x-account-sysmeta-"
ACCOUNT_META = "x-account-meta-"


def _account_found(response: BackendResponse) -> AccountInfo:
    return AccountInfo(response.status, _named(response, ACCOUNT_SYSMETA), _named(response, ACCOUNT_META),
                       _count(response.header("x-account-bytes-used")), _count(response.header("x-account-object-count")))


async def account_info(context: ProxyContext, account: str, trans_id: str = "-") -> AccountInfo:
    return await _info(context, context.rings.account, (account,), trans_id, AccountInfo, _account_found)


def _count(value: str | None) -> int:
    value = (value or "").strip()
    return int(value) if value.isdigit() else 0


async def account_status(context: ProxyContext, account: str, trans_id: str = "-") -> int:
    return (await account_info(context, account, trans_id)).status


def forget_info(context: ProxyContext, account: str, container: str | None = None) -> None:
    context.cache.delete(_cache_key(account, container))


async def create_account(context: ProxyContext, account: str, trans_id: str) -> int:
    """Autocreate: a user's first container creates the account (as Swift's account_autocreate)."""
    ring = context.rings.account
    part = ring.get_part(account)
    timestamp = Timestamp.now(context.clock).internal
    status, _ = await write_to_replicas(
        context, ring, part, "PUT", (account,), lambda i, n: {"X-Timestamp": timestamp, "X-Trans-Id": trans_id}
    )
    forget_info(context, account)
    return status
