# -*- test-case-name: txstore.test.test_config,txstore.test.test_server_config -*-
"""Options that every server's config file shares: where to listen, and the cluster's files."""

from __future__ import annotations

from pathlib import Path

from txstore.common import config as c
from txstore.common.cluster import ClusterConfig, load_cluster_config
from txstore.common.config import ConfigError, LoadedConfig


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


def require_directory(loaded: LoadedConfig, section: str, option: str) -> Path:
    directory: Path = loaded.section(section)[option]
    if not directory.is_dir():
        raise loaded.error(f"{directory}: no such directory", section, option)
    return directory
