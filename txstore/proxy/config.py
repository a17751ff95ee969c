# -*- test-case-name: txstore.test.test_server_config -*-
"""
``proxy.conf``: what the proxy serves on, and its pipeline of middlewares
(``[pipeline:main]``, ``[filter:NAME]``: `txstore.proxy.pipeline`).

``[filter:tempauth]`` follows Swift's tempauth convention so an operator's users carry over:
``user_<account>_<user> = <key> [.admin] [.reseller_admin] [<storage url>]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from attrs import frozen

from txstore.common import config as c
from txstore.common.cluster import ClusterConfig
from txstore.common.server_config import (
    CLUSTER_FILE_OPTIONS,
    CLUSTER_TLS_SECTION,
    LISTENER_TLS_OPTIONS,
    MAX_FILE_SIZE_OPTION,
    STATSD_OPTIONS,
    listen_options,
    statsd_settings,
    load_cluster_from,
    cluster_tls,
    listener_tls,
)
from txstore.proxy.pipeline import PIPELINE_SECTION, RAW_FILTER_SECTION, Stage, load_pipeline

SECTION = "proxy"
KNOWN_GROUPS = (".admin", ".reseller_admin")


@frozen
class TempAuthUser:
    account: str
    user: str
    key: str
    groups: tuple[str, ...] = ()
    storage_url: str | None = None

    @property
    def is_admin(self) -> bool:
        return ".admin" in self.groups or self.is_reseller_admin

    @property
    def is_reseller_admin(self) -> bool:
        return ".reseller_admin" in self.groups


def _user_value(raw: str, _base: Path) -> tuple[str, tuple[str, ...], str | None]:
    words = raw.split()
    if not words:
        raise c.BadValue("needs a key: <key> [.admin] [.reseller_admin] [<storage url>]")
    key, rest = words[0], words[1:]
    groups: list[str] = []
    url = None
    for word in rest:
        if word.startswith("."):
            if word not in KNOWN_GROUPS:
                raise c.BadValue(f"unknown group {word!r} (known: {', '.join(KNOWN_GROUPS)})")
            groups.append(word)
        elif word.startswith(("http://", "https://")) and url is None:
            url = word
        else:
            raise c.BadValue(f"{word!r} is neither a group (.admin) nor a storage URL")
    return key, tuple(groups), url


SCHEMA = c.Schema(
    sections=(
        c.Section(
            SECTION, required=True, options=(
                *listen_options(8080), *CLUSTER_FILE_OPTIONS, MAX_FILE_SIZE_OPTION,
                c.Option("workers", c.integer(1, 64), 1,
                         doc="Proxy processes sharing the listening socket (1: this process serves)."),
                c.Option("sorting_method", c.choice("load", "ring"), "load",
                         doc="The order GETs try an object's primaries in: load (the least loaded device"
                             " first, by the nodes' X-Backend-Device-Load; ring order among equals) or ring."),
                *STATSD_OPTIONS,
                *LISTENER_TLS_OPTIONS,
            ),
        ),
        PIPELINE_SECTION,
        CLUSTER_TLS_SECTION,
    ),
    dynamic=((r"filter:.+", RAW_FILTER_SECTION),),
)

# The options of [filter:tempauth] (declared here, where its users are parsed).
TEMPAUTH_OPTIONS = (
    c.Option("token_life", c.integer(1), 86400, doc="Seconds a token stays valid."),
    c.Option("reseller_prefix", c.choice("AUTH"), "AUTH", doc="Account name prefix."),
    c.Option("token_store", c.choice("memory", "signed", "memcached"), "memory",
             doc="memory: tokens known to the proxy that issued them; signed: tokens that carry their"
                 " identity, signed with a key derived from the cluster secret, valid on every proxy;"
                 " memcached: tokens kept in [filter:cache]'s memcached, shared by every proxy."),
)
TEMPAUTH_PATTERNS = (c.Pattern(r"user_[A-Za-z0-9.-]+_\S+", _user_value, doc="A user and its key."),)


def tempauth_users(settings: Mapping[str, Any]) -> tuple[TempAuthUser, ...]:
    """The users of parsed ``[filter:tempauth]`` settings."""
    users = []
    for option, value in settings.items():
        if option.startswith("user_"):
            account, user = option[len("user_"):].split("_", 1)
            key, groups, url = value
            users.append(TempAuthUser(account, user, key, groups, url))
    return tuple(users)


@frozen
class ProxySettings:
    path: Path
    bind_ip: str
    bind_port: int
    ring_dir: Path
    cluster: ClusterConfig
    stages: tuple[Stage, ...] = ()
    max_file_size: int = 5 * 1024**3 + 2
    workers: int = 1
    sorting_method: str = "load"
    statsd: dict | None = None  # host, port, prefix, sample_rate (None: no StatsD)
    tls: Any = None  # txstore.common.tls.ServerCertificate: clients get HTTPS (None: plain HTTP)
    cluster_tls: Any = None  # txstore.common.tls.Credentials: the nodes are spoken to over TLS

    def stage(self, use: str) -> Stage | None:
        """The first filter of the pipeline that runs middleware ``use`` (``tempauth``)."""
        return next((s for s in self.stages if s.middleware.name == use), None)

    @property
    def users(self) -> tuple[TempAuthUser, ...]:
        """tempauth's users (none when the pipeline has no tempauth)."""
        tempauth = self.stage("tempauth")
        return tempauth_users(tempauth.settings) if tempauth else ()


def load_proxy_settings(path: str | Path) -> ProxySettings:
    """Read ``proxy.conf`` and the cluster file it names; raise `ConfigError` when wrong."""
    loaded = c.load_config(path, SCHEMA)
    proxy = loaded.section(SECTION)
    settings = ProxySettings(
        path=loaded.path,
        bind_ip=proxy["bind_ip"],
        bind_port=proxy["bind_port"],
        ring_dir=proxy["ring_dir"],
        cluster=load_cluster_from(loaded, SECTION),
        stages=load_pipeline(loaded),
        max_file_size=proxy["max_file_size"],
        workers=proxy["workers"],
        sorting_method=proxy["sorting_method"],
        statsd=statsd_settings(proxy),
        tls=listener_tls(loaded, SECTION),
        cluster_tls=cluster_tls(loaded),
    )
    _check_shared_state(loaded, settings)
    return settings


def _check_shared_state(loaded: c.LoadedConfig, settings: ProxySettings) -> None:
    """What several proxies share needs somewhere to share it: tokens in memcached need its servers."""
    tempauth, cache = settings.stage("tempauth"), settings.stage("memcache")
    if tempauth is not None and tempauth.settings.get("token_store") == "memcached" and (
            cache is None or not cache.settings["memcache_servers"]):
        raise loaded.error("memcached needs a [filter:cache] in the pipeline with memcache_servers",
                           f"filter:{tempauth.name}", "token_store")
