# -*- test-case-name: txstore.test.test_tap -*-
"""``twistd proxy``: the client-facing Swift API server."""

from __future__ import annotations

from attrs import frozen
from twisted.application.service import MultiService

from txstore.common.tap_support import config_options, http_service
from txstore.proxy.config import ProxySettings, load_proxy_settings
from txstore.proxy.server import ProxyServer
from txstore.ring.ringset import RingSet


@frozen
class LoadedProxy:
    settings: ProxySettings
    rings: RingSet


def load(config_path: str) -> LoadedProxy:
    settings = load_proxy_settings(config_path)
    rings = RingSet.load(settings.ring_dir, settings.cluster.hasher, settings.cluster.policies)
    return LoadedProxy(settings, rings)


Options = config_options("/etc/txstore/proxy.conf", load, "proxy")


def makeService(options: Options, reactor=None) -> MultiService:
    if reactor is None:
        from twisted.internet import reactor
    loaded: LoadedProxy = options.loaded
    server = ProxyServer(loaded.settings, loaded.rings)
    settings = loaded.settings
    return http_service(reactor, settings.bind_ip, settings.bind_port, server.resource(), "proxy")
