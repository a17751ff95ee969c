# -*- test-case-name: txstore.test.unit.test_server_config -*-
"""``objectnode.conf``: one storage host's devices, where it listens, and its cluster files."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs
from attrs import field, fields, frozen

from txstore.common import config as c
from txstore.common.cluster import ClusterConfig
from txstore.common.server_config import (
    CLUSTER_TLS,
    CLUSTER_TLS_SECTION,
    cluster_tls,
    listen_options,
    require_directory,
    server_section,
    server_settings,
)

SECTION = "objectnode"
CONTAINER_UPDATER = "container-updater"
OBJECT_UPDATER = "object-updater"
OBJECT_AUDITOR = "object-auditor"
OBJECT_REPLICATOR = "object-replicator"
OBJECT_RECONSTRUCTOR = "object-reconstructor"
CONTAINER_REPLICATOR = "container-replicator"
ACCOUNT_REPLICATOR = "account-replicator"
OBJECT_EXPIRER = "object-expirer"
CONTAINER_AUDITOR = "container-auditor"
ACCOUNT_AUDITOR = "account-auditor"
ACCOUNT_REAPER = "account-reaper"
DAEMONS = (
    CONTAINER_UPDATER, OBJECT_UPDATER, OBJECT_AUDITOR, OBJECT_REPLICATOR, CONTAINER_REPLICATOR, ACCOUNT_REPLICATOR,
    OBJECT_EXPIRER, CONTAINER_AUDITOR, ACCOUNT_AUDITOR, ACCOUNT_REAPER, OBJECT_RECONSTRUCTOR,
)
REPLICATION = "replication"
TLS_OPTIONS = ("tls_certificate", "tls_private_key", "tls_ca")
WEEK = 7 * 24 * 3600.0


# Enough for a device to work on several fsyncs at once (SSDs answer them in parallel).
DEFAULT_THREADS_PER_DEVICE = 4

def _daemon_section(name: str, doc: str, interval: float, *extra: c.Option) -> c.Section:
    """A daemon's section: whether it runs, how often, and its own options."""
    return c.Section(
        name,
        doc=doc,
        options=(
            c.Option("enabled", c.boolean, True, doc=f"Run the {name}."),
            c.Option("interval", c.number(1.0), interval, doc="Seconds between passes."),
            *extra,
        ),
    )


SCHEMA = c.Schema(
    sections=(
        server_section(
            SECTION,
            6200,
            c.Option("devices", c.path, "/srv/node", doc="Directory holding one directory per device."),
            c.Option(
                "mount_check",
                c.boolean,
                True,
                doc="Serve a device only while it is a mount point (507 otherwise).",
            ),
            c.Option(
                "threads_per_device",
                c.integer(1),
                DEFAULT_THREADS_PER_DEVICE,
                doc="Threads doing each device's disk I/O (opens, writes, fsyncs, SQLite).",
            ),
            c.Option(
                "direct_writes",
                c.boolean,
                True,
                doc="Write bodies of 16 MiB and more with O_DIRECT, past the page cache.",
            ),
            c.Option(
                "direct_reads",
                c.boolean,
                True,
                doc="Read bodies of 16 MiB and more (past keep_cache_size) with O_DIRECT, past the page cache.",
            ),
            c.Option(
                "disable_fallocate",
                c.boolean,
                False,
                doc="Do not reserve a PUT's declared size before its body (a full disk is found as it is written).",
            ),
            c.Option(
                "keep_cache_size",
                c.size,
                5 * 1024 * 1024,
                doc="Objects of this size and more are dropped from the page cache as they are read.",
            ),
            c.Option(
                "container_update_timeout",
                c.number(0.1),
                1.0,
                doc="Seconds an object write waits for its container row before leaving it to the updater.",
            ),
        ),
        _daemon_section(CONTAINER_UPDATER, "Pushes containers' object counts and bytes to their accounts.", 30.0),
        _daemon_section(OBJECT_UPDATER, "Replays container updates that object writes could not deliver.", 30.0),
        _daemon_section(
            OBJECT_AUDITOR,
            "Re-reads every object to find bit rot, and quarantines what fails.",
            1800.0,
            c.Option("files_per_second", c.number(0.0), 20.0, doc="Objects checked per second (0: no limit)."),
            c.Option("bytes_per_second", c.size, 10 * 1024 * 1024, doc="Bytes read per second (0: no limit)."),
            c.Option("zero_byte_only", c.boolean, False, doc="Check metadata and sizes only, not md5s."),
        ),
        c.Section(
            REPLICATION,
            doc="The replication listener: where peers push partitions to this node's devices.",
            options=(
                *listen_options(6201),
                c.Option("sessions_per_device", c.integer(1), 4, doc="Concurrent incoming sessions per device."),
                c.Option("node_timeout", c.number(0.1), 60.0, doc="Seconds to wait for a peer's next frame."),
                c.Option("conn_timeout", c.number(0.1), 2.0, doc="Seconds to wait for a connection."),
                *(c.Option(name, c.path, None, doc=f"Moved to [{CLUSTER_TLS}].") for name in TLS_OPTIONS),
            ),
        ),
        CLUSTER_TLS_SECTION,
        _daemon_section(
            OBJECT_REPLICATOR,
            "Pushes each partition's differing suffixes to the other replicas; sends handoffs home.",
            30.0,
            c.Option("concurrency", c.integer(1), 1, doc="Partitions replicated at once."),
            c.Option("reclaim_age", c.number(0.0), WEEK, doc="Seconds a tombstone is kept."),
            c.Option("bytes_per_second", c.size, 0, doc="Bytes sent per second by all sessions (0: no limit)."),
        ),
        _daemon_section(
            OBJECT_RECONSTRUCTOR,
            "Rebuilds the EC fragment archives a primary lacks; sends handoffs' archives to their primaries.",
            30.0,
            c.Option("concurrency", c.integer(1), 1, doc="Partitions reconstructed at once."),
            c.Option("reclaim_age", c.number(0.0), WEEK,
                     doc="Seconds a tombstone, or an archive never made durable, is kept."),
        ),
        _daemon_section(
            OBJECT_EXPIRER,
            "Deletes the objects of this node whose X-Delete-At has passed.",
            300.0,
            c.Option("objects_per_second", c.number(0.0), 50.0, doc="Queue entries handled per second (0: no limit)."),
        ),
        *(
            _daemon_section(
                name,
                f"Pushes each {kind} database to its other replicas; sends handoff databases home.",
                30.0,
                c.Option("concurrency", c.integer(1), 1, doc="Databases replicated at once."),
                c.Option("reclaim_age", c.number(0.0), WEEK, doc="Seconds deleted rows and databases are kept."),
            )
            for name, kind in ((CONTAINER_REPLICATOR, "container"), (ACCOUNT_REPLICATOR, "account"))
        ),
        *(
            _daemon_section(
                name,
                f"Checks every {kind} database of this node with SQLite and quarantines damaged ones.",
                1800.0,
                c.Option("databases_per_second", c.number(0.0), 50.0, doc="Databases checked per second (0: no limit)."),
                c.Option("integrity_check", c.boolean, False, doc="PRAGMA integrity_check instead of quick_check."),
            )
            for name, kind in ((CONTAINER_AUDITOR, "container"), (ACCOUNT_AUDITOR, "account"))
        ),
        _daemon_section(
            ACCOUNT_REAPER,
            "Deletes the containers and objects of deleted accounts.",
            3600.0,
            c.Option(
                "delay_reaping", c.number(0.0), 0.0,
                doc="Seconds after an account's deletion before its data is deleted.",
            ),
        ),
    )
)


def _section_defaults(name: str) -> dict:
    return {option.name: option.default for option in SCHEMA.section_for(name).options}


S = TypeVar("S")


def _from_options(settings_type: type[S], options: Mapping[str, Any]) -> S:
    """A settings class from a section's parsed options (each of its fields by name)."""
    return settings_type(**{f.name: options[f.name] for f in fields(settings_type)})  # type: ignore[arg-type]


# -- each daemon's settings: its section of the schema (which holds the defaults), typed -------------


@frozen
class DaemonSettings:
    """What every daemon's section says: whether the node runs it, and the seconds between passes."""

    enabled: bool
    interval: float


@frozen
class ObjectAuditorSettings(DaemonSettings):
    files_per_second: float
    bytes_per_second: int
    zero_byte_only: bool


@frozen
class ReplicatorSettings(DaemonSettings):
    """The object reconstructor's, and the container and account replicators'."""

    concurrency: int
    reclaim_age: float


@frozen
class ObjectReplicatorSettings(ReplicatorSettings):
    bytes_per_second: int


@frozen
class ExpirerSettings(DaemonSettings):
    objects_per_second: float


@frozen
class DatabaseAuditorSettings(DaemonSettings):
    databases_per_second: float
    integrity_check: bool


@frozen
class ReaperSettings(DaemonSettings):
    delay_reaping: float


@frozen
class NodeDaemons:
    """Every daemon's settings, one field per section (``object-replicator`` is ``object_replicator``)."""

    container_updater: DaemonSettings
    object_updater: DaemonSettings
    object_auditor: ObjectAuditorSettings
    object_replicator: ObjectReplicatorSettings
    object_reconstructor: ReplicatorSettings
    container_replicator: ReplicatorSettings
    account_replicator: ReplicatorSettings
    object_expirer: ExpirerSettings
    container_auditor: DatabaseAuditorSettings
    account_auditor: DatabaseAuditorSettings
    account_reaper: ReaperSettings

    @classmethod
    def from_sections(cls, section: Callable[[str], Mapping[str, Any]]) -> NodeDaemons:
        """From each daemon section's parsed options (``section(name)``)."""
        return cls(**{f.name: _from_options(f.type, section(_section_name(f.name))) for f in fields(cls)})

    @classmethod
    def defaults(cls) -> NodeDaemons:
        """Every daemon at its documented defaults (a node built without a file)."""
        return cls.from_sections(_section_defaults)

    def section(self, name: str) -> DaemonSettings:
        """The settings of the daemon of section ``name``."""
        return getattr(self, name.replace("-", "_"))

    def sections(self) -> dict[str, DaemonSettings]:
        """Section name → settings, for every daemon."""
        return {_section_name(f.name): getattr(self, f.name) for f in fields(type(self))}


def _section_name(field_name: str) -> str:
    return field_name.replace("_", "-")


@frozen
class ReplicationSettings:
    """The ``[replication]`` listener: where peers push partitions, and how long it waits on them."""

    bind_ip: str
    bind_port: int
    sessions_per_device: int
    node_timeout: float
    conn_timeout: float

    @classmethod
    def defaults(cls) -> ReplicationSettings:
        return _from_options(cls, _section_defaults(REPLICATION))


attrs.resolve_types(NodeDaemons)
DEFAULT_DAEMONS = NodeDaemons.defaults()


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
    threads_per_device: int = DEFAULT_THREADS_PER_DEVICE
    direct_writes: bool = True
    direct_reads: bool = True
    disable_fallocate: bool = False
    keep_cache_size: int = 5 * 1024 * 1024
    container_update_timeout: float = 1.0
    statsd: dict | None = None  # host, port, prefix, sample_rate (None: no StatsD)
    daemons: NodeDaemons = DEFAULT_DAEMONS
    replication: ReplicationSettings = field(factory=ReplicationSettings.defaults)
    cluster_tls: Any = None  # txstore.common.tls.Credentials: backend HTTP and replication over TLS


def load_node_settings(path: str | Path) -> NodeSettings:
    """Read ``objectnode.conf`` and the cluster file it names; raise `ConfigError` when wrong."""
    loaded = c.load_config(path, SCHEMA)
    node = loaded.section(SECTION)
    return NodeSettings(
        devices=require_directory(loaded, SECTION, "devices"),
        mount_check=node["mount_check"],
        **server_settings(loaded, SECTION),
        threads_per_device=node["threads_per_device"],
        direct_writes=node["direct_writes"],
        direct_reads=node["direct_reads"],
        disable_fallocate=node["disable_fallocate"],
        keep_cache_size=node["keep_cache_size"],
        container_update_timeout=node["container_update_timeout"],
        daemons=NodeDaemons.from_sections(loaded.section),
        replication=_replication_settings(loaded),
        cluster_tls=cluster_tls(loaded),
    )


def _replication_settings(loaded: c.LoadedConfig) -> ReplicationSettings:
    options = loaded.section(REPLICATION)
    for name in TLS_OPTIONS:
        if options.get(name) is not None:
            # One configuration for backend HTTP and replication: a node cannot speak TLS on one only.
            raise loaded.error(f"moved to [{CLUSTER_TLS}], which also serves backend HTTP over TLS (docs/tls.rst)",
                               REPLICATION, name)
    return _from_options(ReplicationSettings, options)
