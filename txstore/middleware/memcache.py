# -*- test-case-name: txstore.test.unit.test_info_cache -*-
"""
cache: where the proxy keeps what several proxies share, configured as Swift's ``cache``
filter (``egg:swift#memcache``)::

    [filter:cache]
    use = egg:txstore#memcache
    memcache_servers = 10.0.0.1:11211, 10.0.0.2:11211

With ``memcache_servers`` the proxy keeps account and container info in memcached
(`txstore.proxy.info_cache.SharedInfoCache`), tempauth can keep its tokens there
(``token_store = memcached``) and ratelimit its counters; without, everything stays in this
process (one proxy needs no memcached). The proxy builds its memcached client from this
section before any middleware (`memcache_client`), so the filter itself passes requests on
untouched, wherever it stands in the pipeline.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from txstore.common import config as c
from txstore.common import memcache
from txstore.middleware.base import Middleware

OPTIONS = (
    c.Option("memcache_servers", memcache.servers, (),
             doc="memcached servers (host:port, comma-separated) every proxy of the cluster shares;"
                 " empty: this proxy keeps everything in its memory."),
    c.Option("connect_timeout", c.timeout, memcache.CONNECT_TIMEOUT,
             doc="Seconds to wait for a connection to a memcached server."),
    c.Option("io_timeout", c.timeout, memcache.IO_TIMEOUT, doc="Seconds to wait for an answer."),
    c.Option("tries", c.integer(1), memcache.TRIES, doc="Servers asked for a key before giving up (a miss)."),
    c.Option("error_suppression_limit", c.integer(1), memcache.ERROR_LIMIT,
             doc="Failures of a server within error_suppression_interval that have it left alone."),
    c.Option("error_suppression_interval", c.number(0.1), memcache.ERROR_INTERVAL,
             doc="Seconds a failing server is left alone (and the window its failures are counted in)."),
    c.Option("local_ttl", c.number(0), 1.0,
             doc="Seconds this proxy keeps info it read from memcached before asking again: how late it"
                 " sees a change made through another proxy (0: ask memcached every time)."),
)


def memcache_client(settings: Mapping[str, Any], reactor) -> memcache.MemcacheClient | None:
    """The client a ``[filter:cache]`` section's settings describe; None without servers."""
    if not settings["memcache_servers"]:
        return None
    return memcache.MemcacheClient(
        reactor, settings["memcache_servers"], connect_timeout=settings["connect_timeout"],
        io_timeout=settings["io_timeout"], tries=settings["tries"],
        error_limit=settings["error_suppression_limit"], error_interval=settings["error_suppression_interval"],
    )


def _build(app, settings, proxy):
    return app  # the proxy took its client from this section (txstore.proxy.tap.build_proxy)


middleware = Middleware("memcache", _build, options=OPTIONS)
