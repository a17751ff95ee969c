# -*- test-case-name: txstore.test.test_server_config -*-
"""``objectnode.conf``: one storage host's devices, where it listens, and its cluster files."""

from __future__ import annotations

from pathlib import Path

from attrs import field, frozen

from txstore.common import config as c
from txstore.common.cluster import ClusterConfig
from txstore.common.server_config import (
    CLUSTER_FILE_OPTIONS,
    MAX_FILE_SIZE_OPTION,
    listen_options,
    load_cluster_from,
    require_directory,
)

SECTION = "objectnode"
UPDATER_SECTION = "container-updater"
OBJECT_UPDATER_SECTION = "object-updater"
AUDITOR_SECTION = "object-auditor"

SCHEMA = c.Schema(
    sections=(
        c.Section(
            SECTION,
            required=True,
            options=(
                *listen_options(6200),
                *CLUSTER_FILE_OPTIONS,
                c.Option("devices", c.path, "/srv/node", doc="Directory holding one directory per device."),
                c.Option(
                    "mount_check",
                    c.boolean,
                    True,
                    doc="Serve a device only while it is a mount point (507 otherwise).",
                ),
                MAX_FILE_SIZE_OPTION,
            ),
        ),
        c.Section(
            UPDATER_SECTION,
            doc="Pushes containers' object counts and bytes to their accounts.",
            options=(
                c.Option("enabled", c.boolean, True, doc="Run the container updater."),
                c.Option("interval", c.number(1.0), 30.0, doc="Seconds between passes."),
            ),
        ),
        c.Section(
            OBJECT_UPDATER_SECTION,
            doc="Replays container updates that object writes could not deliver (async pendings).",
            options=(
                c.Option("enabled", c.boolean, True, doc="Run the object updater."),
                c.Option("interval", c.number(1.0), 30.0, doc="Seconds between passes."),
            ),
        ),
        c.Section(
            AUDITOR_SECTION,
            doc="Re-reads every object to find bit rot, and quarantines what fails.",
            options=(
                c.Option("enabled", c.boolean, True, doc="Run the object auditor."),
                c.Option("interval", c.number(1.0), 1800.0, doc="Seconds between passes."),
                c.Option("files_per_second", c.number(0.0), 20.0, doc="Objects checked per second (0: no limit)."),
                c.Option("bytes_per_second", c.size, 10 * 1024 * 1024, doc="Bytes read per second (0: no limit)."),
                c.Option("zero_byte_only", c.boolean, False, doc="Check metadata and sizes only, not md5s."),
            ),
        ),
    )
)


@frozen
class NodeSettings:
    path: Path
    bind_ip: str
    bind_port: int
    ring_dir: Path
    devices: Path
    mount_check: bool
    cluster: ClusterConfig
    max_file_size: int = 5 * 1024**3 + 2
    container_updater_enabled: bool = True
    container_updater_interval: float = 30.0
    object_updater_enabled: bool = True
    object_updater_interval: float = 30.0
    auditor: dict = field(factory=lambda: {"enabled": True, "interval": 1800.0, "files_per_second": 20.0,
                                           "bytes_per_second": 10 * 1024 * 1024, "zero_byte_only": False})


def load_node_settings(path: str | Path) -> NodeSettings:
    """Read ``objectnode.conf`` and the cluster file it names; raise `ConfigError` when wrong."""
    loaded = c.load_config(path, SCHEMA)
    node = loaded.section(SECTION)
    return NodeSettings(
        path=loaded.path,
        bind_ip=node["bind_ip"],
        bind_port=node["bind_port"],
        ring_dir=node["ring_dir"],
        devices=require_directory(loaded, SECTION, "devices"),
        mount_check=node["mount_check"],
        cluster=load_cluster_from(loaded, SECTION),
        max_file_size=node["max_file_size"],
        container_updater_enabled=loaded.section(UPDATER_SECTION)["enabled"],
        container_updater_interval=loaded.section(UPDATER_SECTION)["interval"],
        object_updater_enabled=loaded.section(OBJECT_UPDATER_SECTION)["enabled"],
        object_updater_interval=loaded.section(OBJECT_UPDATER_SECTION)["interval"],
        auditor=dict(loaded.section(AUDITOR_SECTION)),
    )
