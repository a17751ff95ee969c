# -*- test-case-name: txstore.test.integration.test_aio -*-
"""
The files of an all-in-one cluster under one root directory, written once and reused.

``<root>/etc`` holds the config files and rings (``nodeN.conf`` is what an operator passes to
``twistd objectnode --config`` to restart one node by hand), ``<root>/srv/nodeN/dN`` the
devices, ``<root>/run`` the pid files and ``<root>/log`` one log per process. The topology is
recorded in ``etc/aio.json``: re-running on the same root keeps the rings, the hash secret and
so the data, and refuses a different topology rather than silently orphaning what is stored.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from attrs import asdict, frozen

from txstore.proxy.pipeline import DEFAULT_PIPELINE
from txstore.ring.builder import RingBuilder

HOST = "127.0.0.1"
RING_NAMES = ("account", "container", "object")
# a second, two-replica policy as Swift's all-in-one has (clients choose it with X-Storage-Policy)
SECOND_POLICY = ("silver", "object-1", 2)
# and an erasure-coded one, so both kinds are tried by default: 4+2 (Swift's usual) where six
# nodes can each hold a fragment, else 2+1 (three fragments on the default four nodes)
EC_POLICY = ("ec", "object-2")
# Its codec, the first that this pyeclib has: isa-l's Cauchy Reed-Solomon encodes a 1 MiB
# segment into 4+2 in 0.21 ms on this machine's CPU, liberasurecode's own Vandermonde (which
# every pyeclib ships) in 1.39 (docs/erasure-coding.rst); isa-l's Vandermonde is as fast but
# not MDS for every k+m. Chosen once, when the cluster is made: a policy's codec never changes.
EC_TYPES = ("isa_l_rs_cauchy", "liberasurecode_rs_vand")


def available_ec_type(fragments: tuple[int, int], candidates: tuple[str, ...] = EC_TYPES) -> str:
    """The first of ``candidates`` that pyeclib can build for (data, parity) ``fragments``."""
    from pyeclib.ec_iface import ECDriver  # imported here: only a cluster with EC needs it

    for ec_type in candidates[:-1]:
        try:
            ECDriver(k=fragments[0], m=fragments[1], ec_type=ec_type)
        except Exception:  # pyeclib raises its own errors for a backend it lacks
            continue
        return ec_type
    return candidates[-1]


def ec_fragments(nodes: int) -> tuple[int, int] | None:
    """
    The all-in-one's EC policy: (data, parity) fragments for a cluster of ``nodes`` nodes;
    None below three nodes (one fragment per node: no EC policy then).
    """
    if nodes < 3:
        return None
    return (4, 2) if nodes >= 6 else (2, 1)

DEFAULT_USERS = (
    # (account, user, key, groups) as Swift's all-in-one has them
    ("admin", "admin", "admin", (".admin", ".reseller_admin")),
    ("test", "tester", "testing", (".admin",)),
    ("test2", "tester2", "testing2", (".admin",)),
    ("test", "tester3", "testing3", ()),
)


class LayoutError(Exception):
    """The root cannot be used as asked; the message says why and what to do."""


@frozen
class Topology:
    """The cluster's shape, recorded in ``etc/aio.json``: a root is reused only with the same one."""

    nodes: int = 4  # storage nodes, node1 to nodeN, one device each
    replicas: int = 3  # of the account, container and first object ring (no more than nodes)
    part_power: int = 10  # of every ring
    base_port: int = 6200  # node N serves on base_port + 10 N, and replicates on the port after it

    def node_port(self, number: int) -> int:
        return self.base_port + 10 * number


@frozen
class Layout:
    root: Path
    topology: Topology
    proxy_port: int
    max_file_size: int | None = None  # the largest object, on the proxy and every node (None: the default)
    proxy_workers: int = 1  # proxy processes on the proxy's port (more: tokens are signed)
    proxies: int = 1  # proxies, on proxy_port, proxy_port + 1, ... (more: they share a memcached)
    memcache_port: int | None = None  # the memcached the proxies share (None: none; tokens signed)

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def log(self) -> Path:
        return self.root / "log"

    def devices(self, number: int) -> Path:
        return self.root / "srv" / f"node{number}"

    def node_config(self, number: int) -> Path:
        return self.etc / f"node{number}.conf"

    @property
    def proxy_config(self) -> Path:
        return self.etc / "proxy.conf"

    @property
    def proxy_names(self) -> list[str]:
        """``proxy``, then ``proxy2``, ``proxy3``, ... (``--proxies``)."""
        return ["proxy"] + [f"proxy{n}" for n in range(2, self.proxies + 1)]

    def pid_file(self, name: str) -> Path:
        return self.run / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.log / f"{name}.log"

    @property
    def process_names(self) -> list[str]:
        return self.proxy_names + [f"node{n}" for n in range(1, self.topology.nodes + 1)]

    def port_of(self, name: str) -> int:
        if name.startswith("proxy"):
            return self.proxy_port + int(name[5:] or 1) - 1
        return self.topology.node_port(int(name[4:]))

    def config_of(self, name: str) -> Path:
        return self.etc / f"{name}.conf" if name.startswith("proxy") else self.node_config(int(name[4:]))


def _write(path: Path, text: str) -> None:
    """Write a file whole or not at all: a crash never leaves half a config behind."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def _recorded_topology(etc: Path) -> Topology | None:
    record = etc / "aio.json"
    if not record.exists():
        return None
    try:
        return Topology(**json.loads(record.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as err:
        raise LayoutError(f"{record} is damaged ({err}); use a new --root") from None


# ``--daemons updaters``: only what the Swift anchor runs beside its servers (benchmarks).
UPDATERS = ("container-updater", "object-updater")
OTHER_DAEMONS = (
    "object-auditor", "object-replicator", "container-replicator", "account-replicator", "object-expirer",
    "container-auditor", "account-auditor", "account-reaper", "object-reconstructor",
)
DAEMON_SETS = ("all", "updaters")


def prepare(
    root: Path, topology: Topology, proxy_port: int, *, seed: int | None = None, daemons: str = "all",
    max_file_size: int | None = None, proxy_workers: int = 1, io_classes: dict[str, dict[str, str]] | None = None,
    proxies: int = 1, memcache_port: int | None = None,
) -> Layout:
    """
    Create (first run) or check and refresh (later runs) everything under ``root``. ``daemons``
    is ``all`` or ``updaters`` (the others written with ``enabled = false``). ``io_classes``:
    the ``[io-class:<name>]`` sections of this start (their options as written), replacing those
    of an earlier one. ``proxies``: how many proxies (``proxy.conf``, ``proxy2.conf``, ...),
    sharing tokens and info through the memcached on ``memcache_port`` (None: signed tokens).
    """
    if daemons not in DAEMON_SETS:
        raise LayoutError(f"unknown daemon set {daemons!r} (known: {', '.join(DAEMON_SETS)})")
    layout = Layout(root.absolute(), topology, proxy_port, max_file_size, proxy_workers, proxies, memcache_port)
    if topology.nodes < topology.replicas:
        raise LayoutError(f"{topology.replicas} replicas need at least as many nodes, not {topology.nodes}")
    for directory in (layout.etc, layout.run, layout.log):
        directory.mkdir(parents=True, exist_ok=True)
    recorded = _recorded_topology(layout.etc)
    if recorded is None:
        _write_cluster_config(layout)
        _build_rings(layout, seed)
        _write(layout.etc / "aio.json", json.dumps(asdict(topology), indent=2) + "\n")
    elif recorded != topology:
        raise LayoutError(
            f"{layout.root} holds a cluster of {recorded.nodes} nodes, {recorded.replicas} replicas,"
            f" part power {recorded.part_power}, base port {recorded.base_port}; start it with those"
            " options or choose a new --root"
        )
    _write_io_classes(layout, io_classes or {})
    for number in range(1, topology.nodes + 1):
        (layout.devices(number) / f"d{number}").mkdir(parents=True, exist_ok=True)
        _write(layout.node_config(number), _node_config(layout, number, daemons))
    for name in layout.proxy_names:
        _write(layout.config_of(name), _proxy_config(layout, name))
    for stale in layout.etc.glob("proxy*.conf"):  # an earlier start's with more proxies
        if stale.stem not in layout.proxy_names:
            stale.unlink()
    return layout


def _write_cluster_config(layout: Layout) -> None:
    fragments = ec_fragments(layout.topology.nodes)
    ec_policy = "" if fragments is None else (
        "\n"
        "[storage-policy:2]\n"
        f"name = {EC_POLICY[0]}\n"
        "policy_type = erasure_coding\n"
        f"ec_type = {available_ec_type(fragments)}\n"
        f"ec_num_data_fragments = {fragments[0]}\n"
        f"ec_num_parity_fragments = {fragments[1]}\n"
    )
    _write(
        layout.etc / "txstore.conf",
        "# Cluster-wide settings, the same on every host. Written by txstore-aio.\n"
        "[txstore-hash]\n"
        "# The secret that salts path hashes; never change it once data is stored.\n"
        "hash_path_prefix =\n"
        f"hash_path_suffix = {secrets.token_hex(16)}\n"
        "\n"
        "[storage-policy:0]\n"
        "name = gold\n"
        "default = yes\n"
        "policy_type = replication\n"
        "\n"
        "[storage-policy:1]\n"
        f"name = {SECOND_POLICY[0]}\n"
        "policy_type = replication\n"
        + ec_policy,
    )


IO_CLASS_MARK = "# IO classes of this start (txstore-aio --io-class):\n"


def _write_io_classes(layout: Layout, classes: dict[str, dict[str, str]]) -> None:
    """txstore.conf with ``classes`` as its ``[io-class:…]`` sections, after the part written once."""
    path = layout.etc / "txstore.conf"
    text = path.read_text(encoding="utf-8").split("\n" + IO_CLASS_MARK)[0]
    if classes:
        text += "\n" + IO_CLASS_MARK + "".join(
            f"[io-class:{name}]\n" + "".join(f"{option} = {value}\n" for option, value in options.items()) + "\n"
            for name, options in classes.items()
        )
    _write(path, text)


def _build_rings(layout: Layout, seed: int | None) -> None:
    topology = layout.topology
    _, second_ring, second_replicas = SECOND_POLICY
    rings = [(name, topology.replicas) for name in RING_NAMES]
    rings.append((second_ring, min(second_replicas, topology.replicas)))
    fragments = ec_fragments(topology.nodes)
    if fragments is not None:
        rings.append((EC_POLICY[1], sum(fragments)))
    for name, count in rings:
        builder = RingBuilder(topology.part_power, count, 1)
        for number in range(1, topology.nodes + 1):
            builder.add_dev(
                {
                    "region": 1,
                    "zone": number,
                    "ip": HOST,
                    "port": topology.node_port(number),
                    "replication_ip": HOST,
                    "replication_port": topology.node_port(number) + 1,
                    "device": f"d{number}",
                    "weight": 100.0,
                }
            )
        builder.rebalance(seed=seed)
        builder.save(layout.etc / f"{name}.builder")
        builder.get_ring().save(layout.etc / f"{name}.ring.gz")


def _node_config(layout: Layout, number: int, daemons: str = "all") -> str:
    text = (
        f"# Object node {number} of the all-in-one. Written by txstore-aio on every start.\n"
        f"# Restart this node alone with: twistd -n objectnode --config {layout.node_config(number)}\n"
        "[objectnode]\n"
        f"bind_ip = {HOST}\n"
        f"bind_port = {layout.topology.node_port(number)}\n"
        "txstore_conf = txstore.conf\n"
        "ring_dir = .\n"
        f"devices = {layout.devices(number)}\n"
        "# The devices are plain directories here, not mount points.\n"
        "mount_check = false\n"
        "# As Swift's all-in-one: an upload's declared size is not reserved up front, so that\n"
        "# uploads declaring more than a small disk's free space are not refused before the body.\n"
        "disable_fallocate = true\n"
        + _max_file_size(layout)
        + "\n"
        "[container-updater]\n"
        "# Often, so that account stats follow uploads quickly on a laptop.\n"
        "interval = 5\n"
        "\n"
        "[object-updater]\n"
        "interval = 5\n"
        "\n"
        "[object-auditor]\n"
        "interval = 60\n"
        "\n"
        "[replication]\n"
        f"bind_ip = {HOST}\n"
        f"bind_port = {layout.topology.node_port(number) + 1}\n"
        "\n"
        "[object-replicator]\n"
        "interval = 10\n"
        "\n"
        "[object-reconstructor]\n"
        "interval = 10\n"
        "\n"
        "[container-replicator]\n"
        "interval = 10\n"
        "\n"
        "[account-replicator]\n"
        "interval = 10\n"
        "\n"
        "[object-expirer]\n"
        "# Short, so that objects with X-Delete-After leave listings within seconds.\n"
        "interval = 5\n"
        "\n"
        "[container-auditor]\n"
        "interval = 60\n"
        "\n"
        "[account-auditor]\n"
        "interval = 60\n"
        "\n"
        "[account-reaper]\n"
        "# Short, so that a deleted account's objects go within seconds.\n"
        "interval = 5\n"
    )
    if daemons == "updaters":
        for name in OTHER_DAEMONS:
            text = text.replace(f"[{name}]\n", f"[{name}]\n# txstore-aio --daemons updaters\nenabled = false\n")
    return text


def _max_file_size(layout: Layout) -> str:
    if layout.max_file_size is None:
        return ""
    return f"# txstore-aio --max-file-size\nmax_file_size = {layout.max_file_size}\n"


# Options the all-in-one sets in its proxy's filters (others keep their defaults). domain_remap:
# Swift's all-in-one of the functional tests serves example.net (their test.conf's storage_domain).
FILTER_OPTIONS = {"versioned_writes": "allow_versioned_writes = true\nallow_object_versioning = true\n",
                  "domain_remap": "storage_domain = example.net\n"}


def _shared_state(layout: Layout) -> tuple[str, str]:
    """
    What the proxies share, as (the ``[filter:cache]`` options, tempauth's ``token_store``
    line): several proxies share a memcached (tokens and info) when there is one, else sign
    their tokens (as several workers do); one proxy keeps everything in its memory.
    """
    if layout.memcache_port is not None:
        return (f"memcache_servers = {HOST}:{layout.memcache_port}\n"
                "# on loopback a refused connection costs nothing: ask a restarted memcached again soon\n"
                "error_suppression_interval = 5\n", "token_store = memcached\n")
    if layout.proxies > 1 or layout.proxy_workers > 1:
        return "", "token_store = signed\n"  # a token good on every proxy and worker
    return "", ""


def _proxy_config(layout: Layout, name: str = "proxy") -> str:
    cache, token_store = _shared_state(layout)
    users = "".join(
        f"user_{account}_{user} = {key}{''.join(' ' + g for g in groups)}\n"
        for account, user, key, groups in DEFAULT_USERS
    )
    return (
        "# The all-in-one's proxy. Written by txstore-aio on every start.\n"
        "[proxy]\n"
        f"bind_ip = {HOST}\n"
        f"bind_port = {layout.port_of(name)}\n"
        "txstore_conf = txstore.conf\n"
        "ring_dir = .\n"
        + _max_file_size(layout)
        + (f"# txstore-aio --workers\nworkers = {layout.proxy_workers}\n" if layout.proxy_workers > 1 else "")
        + "\n"
        "[pipeline:main]\n"
        f"pipeline = {' '.join(DEFAULT_PIPELINE)}\n"
        "\n"
        + "".join(f"[filter:{filter}]\nuse = egg:txstore#{filter}\n"
                  f"{cache if filter == 'cache' else FILTER_OPTIONS.get(filter, '')}\n"
                  for filter in dict.fromkeys(DEFAULT_PIPELINE[:-1]) if filter != "tempauth")
        + "[filter:tempauth]\nuse = egg:txstore#tempauth\n"
        + token_store
        + users
    )
