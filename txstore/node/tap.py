# -*- test-case-name: txstore.test.unit.test_tap -*-
"""``twistd objectnode``: the storage node of one host (account, container, object storage)."""

from __future__ import annotations

from twisted.application.service import MultiService

from txstore.common import eager_writes
from txstore.common.malloc_tuning import tune_malloc
from txstore.common.tap_support import LoadedServer, http_service, server_options
from txstore.node.assembly import build_node
from txstore.ring.reloader import RingReloader
from txstore.storage.config import load_node_settings


Options = server_options("/etc/txstore/objectnode.conf", load_node_settings, "object node")


def makeService(options: Options, reactor=None) -> MultiService:
    if reactor is None:
        from twisted.internet import reactor
    tune_malloc()  # large buffers reused, not faulted in again (txstore.common.malloc_tuning)
    eager_writes.install()  # a write to an idle connection is sent at once (txstore.common.eager_writes)
    loaded: LoadedServer = options.loaded
    settings = loaded.settings
    server, services = build_node(settings, reactor, rings=loaded.rings)
    top = http_service(
        reactor, settings.bind_ip, settings.bind_port, server.resource(), "objectnode", twisted_access_log=False,
        twistd_options=options.parent,
        # [cluster-tls]: backend HTTP over mutual TLS only, as replication (docs/tls.rst).
        tls=settings.cluster_tls.server_options() if settings.cluster_tls is not None else None,
    )
    services.setServiceParent(top)
    RingReloader(loaded.rings.all(), reactor, on_sighup=True).setServiceParent(top)
    return top
