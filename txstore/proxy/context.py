# -*- test-case-name: txstore.test.unit.test_proxy_controllers -*-
"""What every proxy controller needs, injected: the reactor, rings, the backend client, cache, limits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import field, frozen

from txstore.common.constraints import DEFAULT_CONSTRAINTS, Constraints
from txstore.common.policies import PolicyCollection
from txstore.proxy.info_cache import IInfoCache
from txstore.ring.ringset import RingSet
from txstore.qos.classes import DEFAULT_CLASSES, IOClasses


@frozen
class ProxyContext:
    reactor: Any  # IReactorTime (and the TCP/TLS a backend client needs): the one clock, a Clock in tests
    rings: RingSet
    policies: PolicyCollection
    client: Any  # IBackendClient: small requests, streamed GETs, 100-continue PUTs, and their pools
    cache: IInfoCache
    constraints: Constraints = DEFAULT_CONSTRAINTS
    node_timeout: float = 10.0  # a node's answer (headers, or the next body bytes): [proxy] node_timeout
    # after a quorum of a write's nodes decided it, how long the others are still waited for
    post_quorum_timeout: float = 0.5
    # reads of accounts and containers: ask the next node too when one has not answered in this
    # long, and take the first good answer ([proxy] concurrent_gets; None: one node at a time)
    concurrency_timeout: float | None = None
    info_ttl: float = 10.0
    account_autocreate: bool = True
    memcache: Any = None  # an IMemcache: what the proxies share ([filter:cache] memcache_servers), else None
    errors: Any = None  # an ErrorLimiter: nodes that keep failing are skipped for a while
    metrics: Any = None  # a txstore.common.metrics.ServerMetrics: served at /metrics, fed by proxy_logging
    ec: Any = None  # a txstore.ec.service.ECService: the EC policies' codecs and their thread pool
    io_classes: IOClasses = DEFAULT_CLASSES  # txstore.conf's IO classes (the qos middleware)
    loads: Any = None  # a txstore.proxy.node_load.NodeLoad: the devices' load, to read the least busy first
    # a txstore.proxy.affinity.AffinityConfig: sorting_method, read and write affinity per policy
    # (None: the proxy's defaults, sorting by ``loads`` when there are some)
    affinity: Any = None

    @property
    def clock(self) -> Callable[[], float]:
        """The reactor's ``seconds``: wall-clock time (Swift timestamps, expiries) on the one clock."""
        return self.reactor.seconds


@frozen
class ProxyServices:
    """
    What a middleware is built with: the controllers' context, the ``/info`` registry, and what
    the middlewares built before it (those below it) ``provided`` for the ones above (tempauth
    its `TempAuth`, whose users s3api takes as S3 credentials), and the ``background`` services
    a middleware needs running while the proxy serves (qos's tenant-cap controller).
    """

    context: ProxyContext
    info: Any  # txstore.proxy.info.InfoRegistry
    provided: dict[str, Any] = field(factory=dict)
    background: list[Any] = field(factory=list)  # twisted.application.service.IService

    @property
    def reactor(self) -> Any:
        return self.context.reactor

    @property
    def clock(self) -> Callable[[], float]:
        return self.context.clock
