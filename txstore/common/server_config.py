# -*- test-case-name: txstore.test.unit.test_config,txstore.test.unit.test_server_config -*-
"""Options that every server's config file shares: where to listen, and the cluster's files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from txstore.common import config as c
from txstore.common.cluster import ClusterConfig, load_cluster_config
from txstore.common.config import ConfigError, LoadedConfig
from txstore.common.tls import Credentials, ServerCertificate, TLSFileError


def listen_options(default_port: int) -> tuple[c.Option, ...]:
    return (
        c.Option("bind_ip", c.ip_address, "127.0.0.1", doc="Address to listen on."),
        c.Option("bind_port", c.port, default_port, doc="Port to listen on; 0 picks a free one."),
    )


# StatsD (Swift's option names): off while log_statsd_host is empty.
STATSD_OPTIONS = (
    c.Option("log_statsd_host", c.string, "", doc="StatsD server to send Swift's metrics to (empty: none)."),
    c.Option("log_statsd_port", c.port, 8125, doc="Its UDP port."),
    c.Option("log_statsd_metric_prefix", c.string, "", doc="Put before every metric name."),
    c.Option("log_statsd_default_sample_rate", c.number(0.0, 1.0), 1.0, doc="Share of the events sent."),
)


def statsd_settings(section) -> dict | None:
    """The StatsD options of a parsed section, or None when StatsD is off."""
    if not section["log_statsd_host"]:
        return None
    return {"host": section["log_statsd_host"], "port": section["log_statsd_port"],
            "prefix": section["log_statsd_metric_prefix"], "sample_rate": section["log_statsd_default_sample_rate"]}


MAX_FILE_SIZE_OPTION = c.Option(
    "max_file_size", c.size, 5 * 1024**3 + 2, doc="Largest object accepted, in bytes (413 above)."
)

CLUSTER_FILE_OPTIONS = (
    c.Option("txstore_conf", c.path, "txstore.conf", doc="The cluster-wide config file."),
    c.Option("ring_dir", c.path, ".", doc="Directory holding the *.ring.gz files."),
)


# The cluster's own TLS (docs/tls.rst): one section, the same in proxy.conf and objectnode.conf,
# for backend HTTP (proxy -> node, node -> node) and replication alike.
CLUSTER_TLS = "cluster-tls"
CLUSTER_TLS_OPTIONS = ("tls_certificate", "tls_private_key", "tls_ca")
CLUSTER_TLS_SECTION = c.Section(
    CLUSTER_TLS,
    doc="Mutual TLS between the cluster's processes: this host's certificate and key, and the cluster CA.",
    options=tuple(c.Option(name, c.path, None, doc="A PEM file; all three or none.") for name in CLUSTER_TLS_OPTIONS),
)
# The proxy's client-facing listener.
LISTENER_TLS_OPTIONS = (
    c.Option("tls_certificate", c.path, None,
             doc="PEM certificate (then its intermediates) to serve HTTPS with; with tls_private_key."),
    c.Option("tls_private_key", c.path, None, doc="Its PEM private key (not protected by a passphrase)."),
)


def _all_or_none(loaded: LoadedConfig, section: str, names: tuple[str, ...]) -> bool:
    values = loaded.section(section)
    given = [name for name in names if values.get(name) is not None]
    if given and len(given) != len(names):
        missing = next(name for name in names if values.get(name) is None)
        raise loaded.error(f"TLS needs {', '.join(names[:-1])} and {names[-1]} together", section, missing)
    return bool(given)


def _tls_files(loaded: LoadedConfig, section: str, names: tuple[str, ...], load: Callable[..., Any]) -> Any:
    """``load`` of the files these options name (all or none), None when unset; a bad file is a `ConfigError`."""
    if not _all_or_none(loaded, section, names):
        return None
    values = loaded.section(section)
    try:
        return load(*(values[name] for name in names))
    except TLSFileError as error:
        option = next((name for name in names if values[name] == error.path), names[0])
        raise loaded.error(str(error), section, option) from None


def cluster_tls(loaded: LoadedConfig) -> Credentials | None:
    """The ``[cluster-tls]`` credentials, read and checked; None when the section sets none."""
    return _tls_files(loaded, CLUSTER_TLS, CLUSTER_TLS_OPTIONS, Credentials.from_files)


def listener_tls(loaded: LoadedConfig, section: str) -> ServerCertificate | None:
    """A server section's ``tls_certificate`` and ``tls_private_key``, read and checked; None when unset."""
    names = tuple(option.name for option in LISTENER_TLS_OPTIONS)
    return _tls_files(loaded, section, names, ServerCertificate.from_files)


ENDPOINT_OPTION = c.Option(
    "endpoint", c.string, "",
    doc="A Twisted server endpoint string (tcp:8080:interface=::, ssl:443:privateKey=...:certKey=...) to listen"
        " on instead of bind_ip, bind_port and tls_*; one process (workers = 1).",
)


def endpoint_string(loaded: LoadedConfig, section: str, workers: int = 1) -> str:
    """A section's ``endpoint``, parsed (nothing listens yet: its files are read); "" when unset."""
    values = loaded.section(section)
    text = values["endpoint"]
    if not text:
        return ""
    if values.get("tls_certificate") is not None or values.get("tls_private_key") is not None:
        raise loaded.error("give the certificate in the endpoint string or in tls_certificate and"
                           " tls_private_key, not both", section, "endpoint")
    if workers > 1:
        raise loaded.error("an endpoint string is listened on by one process: set workers = 1, or use"
                           " bind_ip, bind_port and tls_* (every worker serves those)", section, "endpoint")
    from twisted.internet.endpoints import serverFromString

    try:
        serverFromString(None, text)  # parses, and reads an ssl: endpoint's files; no reactor is used
    except Exception as err:
        raise loaded.error(f"{text!r} is not a server endpoint string: {err}", section, "endpoint") from None
    return text


def load_cluster_from(loaded: LoadedConfig, section: str) -> ClusterConfig:
    """The cluster config a server's config points to; errors say which file pointed there."""
    cluster_path: Path = loaded.section(section)["txstore_conf"]
    try:
        cluster = load_cluster_config(cluster_path)
    except ConfigError as err:
        if err.message == "no such file":
            raise loaded.error(f"{cluster_path}: no such file", section, "txstore_conf") from None
        raise
    return cluster


def server_section(name: str, default_port: int, *options: c.Option) -> c.Section:
    """
    A server's own section, required: where to listen, the cluster's files, the largest
    object and StatsD, then its own ``options``.
    """
    return c.Section(
        name,
        required=True,
        options=(*listen_options(default_port), *CLUSTER_FILE_OPTIONS, MAX_FILE_SIZE_OPTION, *STATSD_OPTIONS, *options),
    )


def server_settings(loaded: LoadedConfig, section: str) -> dict[str, Any]:
    """
    The settings `server_section` declares for every server, with the file's path and the
    cluster config it points to, as the servers' settings classes take them.
    """
    values = loaded.section(section)
    return {
        "path": loaded.path,
        "bind_ip": values["bind_ip"],
        "bind_port": values["bind_port"],
        "ring_dir": values["ring_dir"],
        "cluster": load_cluster_from(loaded, section),
        "max_file_size": values["max_file_size"],
        "statsd": statsd_settings(values),
    }


def require_directory(loaded: LoadedConfig, section: str, option: str) -> Path:
    directory: Path = loaded.section(section)[option]
    if not directory.is_dir():
        raise loaded.error(f"{directory}: no such directory", section, option)
    return directory
