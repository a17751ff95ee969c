# -*- test-case-name: txstore.test.unit.test_dispersion -*-
"""
``[dispersion]`` settings: from ``dispersion.conf`` (Swift's option names where they carry over),
then the command line's overrides, then the cluster files they point to.

The tool reads the cluster's own ``txstore.conf`` (for the hash secret and the policies) and
rings (``ring_dir``), as the servers do (`txstore.common.server_config`), so it hashes names
exactly as the cluster does. An option this tool does not have (Swift's keystone ones, say) is
an error, not ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from attrs import frozen

from txstore.common import config as c
from txstore.common.cluster import ClusterConfig, load_cluster_config
from txstore.common.policies import ERASURE_CODING, StoragePolicy
from txstore.common.server_config import CLUSTER_TLS_SECTION, cluster_tls
from txstore.common.tls import Credentials
from txstore.ring.ring import Ring, RingError
from txstore.ring.ringset import ring_path

SECTION = "dispersion"


def _optional_path(raw: str, base: Path) -> Path | None:
    return c.path(raw, base) if raw else None


DEFAULT_CONFIG = Path("/etc/txstore/dispersion.conf")

DISPERSION_SECTION = c.Section(SECTION, options=(
    c.Option("auth_url", c.string, "", doc="tempauth v1.0 URL of a proxy, e.g. http://proxy:8080/auth/v1.0."),
    c.Option("auth_user", c.string, "", doc="<account>:<user>; a dedicated account with admin rights."),
    c.Option("auth_key", c.string, "", doc="The user's key."),
    c.Option("auth_version", c.choice("1.0", "1"), "1.0", doc="Only tempauth's v1.0 is built."),
    c.Option("txstore_conf", _optional_path, "", doc="The cluster-wide config file (default: in ring_dir)."),
    c.Option("ring_dir", c.path, "/etc/txstore", doc="Directory holding the *.ring.gz files."),
    c.Option("dispersion_coverage", c.number(0.0001, 100.0), 1.0, doc="Percent of partitions sampled."),
    c.Option("concurrency", c.integer(1, 1000), 25, doc="PUTs, or names asked of their primaries, at once."),
    c.Option("retries", c.integer(0, 100), 2, doc="Further attempts after a failed request."),
    c.Option("node_timeout", c.number(0.01), 10.0, doc="Seconds for a node's whole answer."),
    c.Option("conn_timeout", c.number(0.01), 2.0, doc="Seconds to connect to a node."),
    c.Option("proxy_timeout", c.number(0.01), 30.0, doc="Seconds for the proxy's whole answer."),
    c.Option("policy_name", c.string, "", doc="Object policy to sample (default: the default one)."),
    c.Option("dump_json", c.boolean, False, doc="Print the JSON form."),
    c.Option("container_report", c.boolean, True, doc="Run the container part."),
    c.Option("object_report", c.boolean, True, doc="Run the object part."),
))
# With the nodes' [cluster-tls] section the report dials them over mutual TLS, as the proxy does.
SCHEMA = c.Schema(sections=(DISPERSION_SECTION, CLUSTER_TLS_SECTION))


@frozen
class Settings:
    auth_url: str
    auth_user: str
    auth_key: str
    txstore_conf: Path
    ring_dir: Path
    coverage: float
    concurrency: int
    retries: int
    node_timeout: float
    conn_timeout: float
    proxy_timeout: float
    policy_name: str
    dump_json: bool
    container_report: bool
    object_report: bool
    tls: Credentials | None = None  # [cluster-tls]: nodes are dialled over mutual TLS


def load_settings(path: Path | None, overrides: dict[str, Any]) -> Settings:
    """
    ``path``'s ``[dispersion]`` (the default file only if it exists; a file named by the
    operator must exist), with ``overrides`` (option name -> value, None for not given) on top.
    """
    if path is None:
        path = DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None
    tls = None
    if path is None:
        values = c.parse_section(Path.cwd() / "-", SECTION, DISPERSION_SECTION, [])
    else:
        loaded = c.load_config(path, SCHEMA)
        values = dict(loaded.section(SECTION))
        tls = cluster_tls(loaded)
    section = DISPERSION_SECTION
    for name, raw in overrides.items():
        if raw is not None:  # checked as the file's values are
            values[name] = _parse_override(section, name, str(raw))
    ring_dir = Path(values["ring_dir"])
    settings = Settings(
        auth_url=values["auth_url"], auth_user=values["auth_user"], auth_key=values["auth_key"],
        txstore_conf=Path(values["txstore_conf"] or ring_dir / "txstore.conf"), ring_dir=ring_dir,
        coverage=float(values["dispersion_coverage"]), concurrency=int(values["concurrency"]),
        retries=int(values["retries"]), node_timeout=float(values["node_timeout"]),
        conn_timeout=float(values["conn_timeout"]), proxy_timeout=float(values["proxy_timeout"]),
        policy_name=values["policy_name"], dump_json=bool(values["dump_json"]),
        container_report=bool(values["container_report"]), object_report=bool(values["object_report"]),
        tls=tls,
    )
    for name in ("auth_url", "auth_user", "auth_key"):
        if not getattr(settings, name):
            raise c.ConfigError(f"{name} is needed (in [dispersion] of --config, or --{name.replace('_', '-')})",
                                path=path, section=SECTION, option=name)
    if not 0 < settings.coverage <= 100:
        raise c.ConfigError("is a percentage above 0 and at most 100", path=path, section=SECTION,
                            option="dispersion_coverage")
    return settings


def _parse_override(section: c.Section, name: str, raw: str) -> Any:
    """A command-line value, checked by the option's own parser (relative paths from here)."""
    option = section.option(name)
    assert option is not None
    try:
        return option.parse(raw, Path.cwd())
    except c.BadValue as err:
        raise c.ConfigError(f"{err}", option=f"--{name.replace('_', '-')}") from None


@frozen
class ClusterView:
    """What the tool needs of the cluster: its hashing and policies, and the rings sampled."""

    cluster: ClusterConfig
    container_ring: Ring
    policy: StoragePolicy
    object_ring: Ring

    @property
    def is_ec(self) -> bool:
        return self.policy.policy_type == ERASURE_CODING


def load_cluster_view(settings: Settings) -> ClusterView:
    """Read ``txstore.conf`` and the rings; `ConfigError` naming the file on any problem."""
    cluster = load_cluster_config(settings.txstore_conf)
    if settings.policy_name:
        policy = cluster.policies.by_name(settings.policy_name)
        if policy is None:
            known = ", ".join(p.name for p in cluster.policies)
            raise c.ConfigError(f"no storage policy {settings.policy_name!r} (known: {known})",
                                path=settings.txstore_conf)
    else:
        policy = cluster.policies.default
    return ClusterView(cluster, _ring(settings.ring_dir, "container", cluster),
                       policy, _ring(settings.ring_dir, policy.ring_name, cluster))


def _ring(ring_dir: Path, name: str, cluster: ClusterConfig) -> Ring:
    path = ring_path(ring_dir, name)
    try:
        return Ring(path, cluster.hasher, auto_reload=False)
    except RingError as err:
        raise c.ConfigError(f"cannot read the {name} ring: {err}", path=path) from None

