# -*- test-case-name: txstore.test.unit.test_tap -*-
"""
What the two twistd plugins share: a ``--config`` option that is checked before anything starts,
and the service tree around one HTTP site.

Loading the configuration in `Options.postOptions` turns every `ConfigError` into twistd's usage
error: the operator sees one line naming file, section and option, and the exit status is
non-zero, with no traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import frozen
from twisted.application.service import MultiService
from twisted.python import usage
from twisted.web.resource import Resource

from txstore.common.config import ConfigError
from txstore.common.listener import TCPListener
from txstore.common.log_observer import ServerService
from txstore.common.streaming import StreamingSite
from txstore.common.tls import wrap_listening
from txstore.ring.ringset import RingSet


def config_options(default_path: str, load: Callable[[str], Any], what: str) -> type[usage.Options]:
    """An Options class whose ``--config`` file is loaded by ``load`` into ``options.loaded``."""

    class Options(usage.Options):
        optParameters = [["config", "c", default_path, f"The {what} config file."]]
        loaded: Any = None

        def postOptions(self) -> None:
            try:
                self.loaded = load(self["config"])
            except ConfigError as err:
                raise usage.UsageError(str(err)) from None

    Options.__name__ = Options.__qualname__ = f"{what.title().replace(' ', '')}Options"
    return Options


@frozen
class LoadedServer:
    """A server's checked settings and the rings they name, read once before anything starts."""

    settings: Any
    rings: RingSet


def server_options(default_path: str, load_settings: Callable[[str], Any], what: str) -> type[usage.Options]:
    """
    `config_options` for a server whose settings name a ``ring_dir`` and a cluster: its rings
    are loaded with them (a missing or damaged ring is a usage error too); the `RingReloader`
    the tap starts reloads them, not the rings themselves.
    """

    def load(config_path: str) -> LoadedServer:
        settings = load_settings(config_path)
        cluster = settings.cluster
        return LoadedServer(settings, RingSet.load(settings.ring_dir, cluster.hasher, cluster.policies, auto_reload=False))

    return config_options(default_path, load, what)


def http_service(
    reactor, bind_ip: str, bind_port: int, resource: Resource, label: str, client_timeout: float = 60.0,
    twisted_access_log: bool = True, adopt_fd: int | None = None, twistd_options=None, tls: Any = None,
    endpoint: str = "",
) -> MultiService:
    """
    A MultiService with the site listening; other services (daemons) join it later. Request
    bodies stream (`StreamingSite`); a client idle for ``client_timeout`` seconds is dropped.
    ``twistd_options`` (twistd's own, the parent of the plugin's): the process logs through
    txstore's writer (`ServerService`) where twistd would write a file or stdout. ``tls``: server
    TLS options (`txstore.common.tls`); the site then speaks HTTPS only (a plain HTTP client's
    bytes fail the handshake and the connection is closed). ``endpoint``: a Twisted server
    endpoint string to listen on instead of ``bind_ip:bind_port`` (its own TLS, if ``ssl:``).
    """
    top = ServerService(twistd_options, reactor)
    site = StreamingSite(resource, timeout=client_timeout, reactor=reactor)
    site.displayTracebacks = False
    if not twisted_access_log:  # the server writes its own access lines (with trans ids)
        site.log = lambda request: None
    factory = wrap_listening(tls, site) if tls is not None else site
    shown = f"{label} (TLS)" if tls is not None else label  # "proxy (TLS) listening on ..."
    listener = TCPListener(reactor, bind_ip, bind_port, factory, label=shown, adopt_fd=adopt_fd, endpoint=endpoint)
    listener.setName(label)
    listener.setServiceParent(top)
    return top
