# -*- test-case-name: txstore.test.unit.test_tap -*-
"""``twistd objectnode``: the storage node of one host (account, container, object storage)."""

from __future__ import annotations

from attrs import frozen
from twisted.application.service import MultiService

from txstore.common.tap_support import config_options, http_service
from txstore.ring.reloader import RingReloader
from txstore.ring.ringset import RingSet
from txstore.storage.config import NodeSettings, load_node_settings
from txstore.storage.node import build_node


@frozen
class LoadedNode:
    settings: NodeSettings
    rings: RingSet


def load(config_path: str) -> LoadedNode:
    settings = load_node_settings(config_path)
    rings = RingSet.load(settings.ring_dir, settings.cluster.hasher, settings.cluster.policies, auto_reload=False)
    return LoadedNode(settings, rings)


Options = config_options("/etc/txstore/objectnode.conf", load, "object node")


def makeService(options: Options, reactor=None) -> MultiService:
    if reactor is None:
        from twisted.internet import reactor
    loaded: LoadedNode = options.loaded
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
