# -*- test-case-name: txstore.test.unit.test_server_config -*-
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
    CLUSTER_TLS_SECTION,
    ENDPOINT_OPTION,
    LISTENER_TLS_OPTIONS,
    cluster_tls,
    endpoint_string,
    listener_tls,
    server_section,
    server_settings,
)
from txstore.proxy.affinity import (
    AffinityConfig, NodeCount, Placement, WriteAffinity, parse_delete_count, parse_node_count, parse_places,
    parse_read_affinity, parse_sorting_method,
)
from txstore.proxy.pipeline import PIPELINE_SECTION, RAW_FILTER_SECTION, Stage, load_pipeline

SECTION = "proxy"
POLICY_SECTION_RE = r"proxy:policy:\d+"  # Swift's [proxy-server:policy:<index>]: one policy's affinity
# None: not given (a [proxy:policy:N] section inherits it from [proxy]).
AFFINITY_OPTIONS = (
    c.Option("read_affinity", parse_read_affinity, None,
             doc="With sorting_method = affinity: r<region>[z<zone>]=<priority>, ... (lower first)."),
    c.Option("write_affinity", parse_places, None,
             doc="Object PUTs go first to these regions / zones: r<region>[z<zone>], ..."),
    c.Option("write_affinity_node_count", parse_node_count, None,
             doc="How many local nodes a PUT tries first: a number or '<N> * replicas' (2 * replicas)."),
    c.Option("write_affinity_handoff_delete_count", parse_delete_count, None,
             doc="Local handoffs a DELETE goes to besides the primaries (auto: replicas - local primaries)."),
)
# Swift's names and defaults, but concurrent_gets (docs/proxy.rst, "Timeouts").
TIMEOUT_OPTIONS = (
    c.Option("node_timeout", c.timeout, 10.0,
             doc="Seconds a node may take to answer a request, or between the body bytes it sends or takes."),
    c.Option("conn_timeout", c.timeout, 0.5,
             doc="Seconds to connect to a node (a new connection; pooled ones are reused)."),
    c.Option("post_quorum_timeout", c.number(0.0), 0.5,
             doc="Once a quorum of a write's nodes answered alike, seconds the others are still waited for"
                 " (their answers are still taken, in the background)."),
    c.Option("concurrent_gets", c.boolean, True,
             doc="Account and container reads ask the next node too when the ones asked have not answered"
                 " within concurrency_timeout; the first good answer wins."),
    c.Option("concurrency_timeout", c.timeout, None, doc="Seconds before the next node is asked (default:"
             " conn_timeout)."),
)
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
        server_section(
            SECTION, 8080,
            c.Option("workers", c.integer(1, 64), 1,
                     doc="Proxy processes sharing the listening socket (1: this process serves)."),
            c.Option("sorting_method", parse_sorting_method, "load",
                     doc="The order GETs try an object's primaries in: load (the least loaded device"
                         " first, by the nodes' X-Backend-Device-Load; ring order among equals), ring,"
                         " or affinity (by read_affinity: docs/proxy.rst)."),
            *AFFINITY_OPTIONS,
            *TIMEOUT_OPTIONS,
            *LISTENER_TLS_OPTIONS,
            ENDPOINT_OPTION,
        ),
        PIPELINE_SECTION,
        CLUSTER_TLS_SECTION,
    ),
    dynamic=((r"filter:.+", RAW_FILTER_SECTION),
             (POLICY_SECTION_RE, c.Section("proxy:policy:<index>", options=(
                 c.Option("sorting_method", parse_sorting_method, None), *AFFINITY_OPTIONS)))),
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
class BackendTimeouts:
    """How long the proxy waits for the nodes ([proxy]'s ``TIMEOUT_OPTIONS``)."""

    node: float = 10.0
    connect: float = 0.5
    post_quorum: float = 0.5
    concurrency: float | None = 0.5  # None: concurrent_gets off

    @classmethod
    def from_section(cls, proxy: Mapping[str, Any]) -> BackendTimeouts:
        concurrency = proxy["concurrency_timeout"]
        if concurrency is None:
            concurrency = proxy["conn_timeout"]
        return cls(proxy["node_timeout"], proxy["conn_timeout"], proxy["post_quorum_timeout"],
                   concurrency if proxy["concurrent_gets"] else None)


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
    affinity: AffinityConfig = AffinityConfig()  # sorting_method and read / write affinity, per policy
    tls: Any = None  # txstore.common.tls.ServerCertificate: clients get HTTPS (None: plain HTTP)
    cluster_tls: Any = None  # txstore.common.tls.Credentials: the nodes are spoken to over TLS
    endpoint: str = ""  # a Twisted server endpoint string, listened on instead of bind_ip:bind_port
    timeouts: BackendTimeouts = BackendTimeouts()

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
    common = server_settings(loaded, SECTION)
    settings = ProxySettings(
        **common,
        stages=load_pipeline(loaded),
        workers=proxy["workers"],
        sorting_method=proxy["sorting_method"],
        affinity=affinity_config(loaded, proxy, common["cluster"]),
        tls=listener_tls(loaded, SECTION),
        cluster_tls=cluster_tls(loaded),
        endpoint=endpoint_string(loaded, SECTION, proxy["workers"]),
        timeouts=BackendTimeouts.from_section(proxy),
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


_AFFINITY_NAMES = ("sorting_method", *(option.name for option in AFFINITY_OPTIONS))


def _placement(loaded: c.LoadedConfig, section: str, options: Mapping[str, Any],
               base_options: Mapping[str, Any] | None = None) -> Placement:
    """A `Placement` from one section's affinity options (unset ones from ``base_options``)."""
    values = {name: options.get(name) for name in _AFFINITY_NAMES}
    for name, value in (base_options or {}).items():
        if values.get(name) is None:
            values[name] = value
    sorting = values["sorting_method"] or "load"
    own_read = options.get("read_affinity")
    if own_read is not None and own_read.rules and sorting != "affinity":
        raise loaded.error(f"needs sorting_method = affinity (it is {sorting}): it would be ignored",
                           section, "read_affinity")
    write = None
    if values["write_affinity"]:
        write = WriteAffinity(values["write_affinity"], values["write_affinity_node_count"] or NodeCount(2, True),
                              values["write_affinity_handoff_delete_count"])
    else:
        for name in ("write_affinity_node_count", "write_affinity_handoff_delete_count"):
            if options.get(name) is not None:
                raise loaded.error("needs write_affinity: it would be ignored", section, name)
    return Placement(sorting, values["read_affinity"] if sorting == "affinity" else None, write)


def affinity_config(loaded: c.LoadedConfig, proxy: Mapping[str, Any], cluster: ClusterConfig) -> AffinityConfig:
    """[proxy]'s sorting and affinity, and each [proxy:policy:<index>]'s (an unknown index fails)."""
    default = _placement(loaded, SECTION, proxy)
    policies = {}
    for name, options in loaded.values.items():
        if not name.startswith("proxy:policy:"):
            continue
        index = int(name.rsplit(":", 1)[1])
        if cluster.policies.by_index(index) is None:
            raise loaded.error(f"there is no storage policy {index} in the cluster file", name)
        policies[index] = _placement(loaded, name, options, {key: proxy.get(key) for key in _AFFINITY_NAMES})
    return AffinityConfig(default, policies)
