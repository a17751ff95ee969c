# -*- test-case-name: txstore.test.unit.test_tap -*-
"""``twistd proxy``: the client-facing Swift API server."""

from __future__ import annotations

from twisted.application.service import MultiService, Service
from twisted.internet.defer import DeferredList

from txstore.common.backend_client import BackendClient
from txstore.common.constraints import Constraints
from txstore.common.memcache import MemcacheClient
from txstore.common.metrics import proxy_metrics
from txstore.common.statsd import StatsdClient
from txstore.common import eager_writes
from txstore.common.malloc_tuning import tune_malloc
from txstore.common.tap_support import LoadedServer, http_service, server_options
from txstore.ec.service import ECService
from txstore.middleware.memcache import memcache_client
from txstore.proxy.config import ProxySettings, load_proxy_settings
from txstore.proxy.context import ProxyContext
from txstore.proxy.error_limiter import ErrorLimiter
from txstore.proxy.controllers.base import AccountInfo, ContainerInfo
from txstore.proxy.info_cache import AttrsCodec, IInfoCache, InMemoryInfoCache, SharedInfoCache
from txstore.proxy.node_load import NodeLoad
from txstore.proxy.server import ProxyServer
from txstore.proxy.workers import ParentWatch, WorkerSupervisor, worker_log_base
from txstore.ring.reloader import RingReloader


class Options(server_options("/etc/txstore/proxy.conf", load_proxy_settings, "proxy")):
    # Given by a supervising proxy (`txstore.proxy.workers`) to its workers: serve this socket.
    optParameters = [["listen-fd", None, None, "Serve the listening socket on this descriptor (workers).", int]]


class _Pools(Service):
    """Closes the pooled backend connections when the proxy stops."""

    def __init__(self, *closers) -> None:
        self._closers = closers

    def stopService(self):
        super().stopService()
        return DeferredList([close() for close in self._closers])


def shared_state(settings: ProxySettings, reactor) -> tuple[MemcacheClient | None, IInfoCache]:
    """
    The memcached client of ``[filter:cache]`` and the info cache over it (None and this
    process's memory without ``memcache_servers``).
    """
    local = InMemoryInfoCache(reactor.seconds)
    stage = settings.stage("memcache")
    memcache = memcache_client(stage.settings, reactor) if stage is not None else None
    if memcache is None:
        return None, local
    codec = AttrsCodec((ContainerInfo, AccountInfo))
    return memcache, SharedInfoCache(memcache, local, codec, stage.settings["local_ttl"])


def build_proxy(loaded: LoadedServer, reactor) -> tuple[ProxyServer, Service]:
    settings = loaded.settings
    clock = reactor.seconds
    timeouts = settings.timeouts
    client = BackendClient(reactor, timeout=timeouts.node, connect_timeout=timeouts.connect, max_per_host=32,
                           tls=settings.cluster_tls)
    memcache, cache = shared_state(settings, reactor)
    context = ProxyContext(
        reactor=reactor,
        rings=loaded.rings,
        policies=settings.cluster.policies,
        client=client,
        cache=cache,
        memcache=memcache,
        constraints=Constraints(max_file_size=settings.max_file_size),
        node_timeout=timeouts.node,
        post_quorum_timeout=timeouts.post_quorum,
        concurrency_timeout=timeouts.concurrency,
        errors=ErrorLimiter(clock),
        metrics=proxy_metrics(),
        ec=ECService(reactor),
        io_classes=settings.cluster.io_classes,
        loads=NodeLoad(clock) if settings.affinity.uses("load") else None,
        affinity=settings.affinity,
    )
    context.metrics.watch_error_limiter(context.errors)
    closers = [client.close]
    if memcache is not None:
        closers.append(memcache.close)
    if settings.statsd is not None:
        context.metrics.statsd = StatsdClient(reactor, **settings.statsd)
        closers.append(context.metrics.statsd.close)
    server = ProxyServer(context, settings.stages)
    services = MultiService()
    _Pools(*closers).setServiceParent(services)
    for service in server.background:
        service.setServiceParent(services)
    return server, services


def makeService(options: Options, reactor=None) -> MultiService:
    if reactor is None:
        from twisted.internet import reactor
    tune_malloc()  # large buffers reused, not faulted in again (txstore.common.malloc_tuning)
    eager_writes.install()  # a write to an idle connection is sent at once (txstore.common.eager_writes)
    loaded: LoadedServer = options.loaded
    settings = loaded.settings
    listen_fd = options["listen-fd"]
    if settings.workers > 1 and listen_fd is None:
        top = MultiService()  # the supervisor: the workers serve
        WorkerSupervisor(reactor, settings.bind_ip, settings.bind_port, str(settings.path),
                         settings.workers, log_file=worker_log_base(options.parent)).setServiceParent(top)
        return top
    server, pools = build_proxy(loaded, reactor)
    top = http_service(
        reactor, settings.bind_ip, settings.bind_port, server.resource(), "proxy", twisted_access_log=False,
        adopt_fd=listen_fd, twistd_options=options.parent,
        tls=settings.tls.options() if settings.tls is not None else None, endpoint=settings.endpoint,
    )
    pools.setServiceParent(top)
    if listen_fd is not None:
        ParentWatch(reactor).setServiceParent(top)  # a worker ends with its supervisor
    RingReloader(loaded.rings.all(), reactor, on_sighup=True).setServiceParent(top)
    return top
