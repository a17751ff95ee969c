# -*- test-case-name: txstore.test.unit.test_cluster_config -*-
"""
The cluster-wide configuration, ``txstore.conf``: identical on every host.

It holds what all processes must agree on: the secret that salts path hashes (so partitions are
the same everywhere, and unguessable from outside), the storage policies, and the IO classes
(`txstore.qos.classes`: the proxies check them, the nodes share devices by them).
"""

from __future__ import annotations

from pathlib import Path

from attrs import evolve, frozen

from txstore.common import config as c
from txstore.common.hashing import PathHasher
from txstore.common.policies import (
    DEFAULT_POLICIES,
    ERASURE_CODING,
    POLICY_TYPES,
    ECParameters,
    PolicyCollection,
    StoragePolicy,
)
from txstore.qos import classes as io_classes

HASH_SECTION = "txstore-hash"
POLICY_SECTION_REGEX = r"storage-policy:(0|[1-9][0-9]{0,8})"

POLICY_SECTION = c.Section(
    "storage-policy:<index>",
    doc="One storage policy; the index is permanent.",
    options=(
        c.Option("name", c.nonempty_string, doc="Name clients use in X-Storage-Policy."),
        c.Option("aliases", c.string, "", doc="Other names, comma separated."),
        c.Option("default", c.boolean, False, doc="The policy of containers that name none."),
        c.Option("deprecated", c.boolean, False, doc="No new containers may use it."),
        c.Option("policy_type", c.choice(*POLICY_TYPES), "replication", doc="replication or erasure_coding."),
        c.Option("ec_type", c.string, "", doc="pyeclib backend, e.g. liberasurecode_rs_vand."),
        c.Option("ec_num_data_fragments", c.integer(1, 64), 0, doc="k: data fragments."),
        c.Option("ec_num_parity_fragments", c.integer(1, 64), 0, doc="m: parity fragments."),
        c.Option("ec_object_segment_size", c.size, 1024 * 1024, doc="Bytes per encoded segment."),
    ),
)

SCHEMA = c.Schema(
    sections=(
        c.Section(
            HASH_SECTION,
            required=True,
            options=(
                c.Option("hash_path_prefix", c.string, "", doc="Secret salt before the path."),
                c.Option("hash_path_suffix", c.string, "", doc="Secret salt after the path."),
            ),
        ),
    ),
    dynamic=((POLICY_SECTION_REGEX, POLICY_SECTION), (io_classes.SECTION_REGEX, io_classes.SECTION)),
)


@frozen
class ClusterConfig:
    path: Path
    hasher: PathHasher
    policies: PolicyCollection
    io_classes: io_classes.IOClasses = io_classes.DEFAULT_CLASSES


def _ec_parameters(loaded: c.LoadedConfig, section: str, values: dict) -> ECParameters:
    for option in ("ec_type", "ec_num_data_fragments", "ec_num_parity_fragments"):
        if not values[option]:
            raise loaded.error("is required for an erasure_coding policy", section, option)
    params = ECParameters(
        values["ec_type"],
        values["ec_num_data_fragments"],
        values["ec_num_parity_fragments"],
        values["ec_object_segment_size"],
    )
    if params.segment_size < 1:
        raise loaded.error("must be at least 1 byte", section, "ec_object_segment_size")
    try:
        from pyeclib.ec_iface import ECDriver

        ECDriver(k=params.num_data_fragments, m=params.num_parity_fragments, ec_type=params.ec_type)
    except ImportError:
        raise loaded.error("pyeclib is not installed; it is needed for erasure coding", section) from None
    except Exception as err:  # pyeclib raises its own families of errors for bad backends
        raise loaded.error(f"pyeclib cannot use it: {err}", section, "ec_type") from None
    return params


def load_cluster_config(path: str | Path) -> ClusterConfig:
    """Read ``txstore.conf``; raise `ConfigError` naming what is wrong."""
    loaded = c.load_config(path, SCHEMA)
    hashing = loaded.section(HASH_SECTION)
    prefix, suffix = hashing["hash_path_prefix"], hashing["hash_path_suffix"]
    if not prefix and not suffix:
        raise loaded.error(
            "missing hash path secret: set hash_path_suffix (and/or hash_path_prefix) to a"
            " random string, the same on every host, and never change it",
            HASH_SECTION,
            "hash_path_suffix",
        )
    policies = []
    for section, values in loaded.values.items():
        if not section.startswith("storage-policy:"):
            continue
        index = int(section.split(":", 1)[1])
        ec = None
        if values["policy_type"] == ERASURE_CODING:
            ec = _ec_parameters(loaded, section, values)
        aliases = tuple(a.strip() for a in values["aliases"].split(",") if a.strip())
        policies.append(
            StoragePolicy(
                index=index,
                name=values["name"],
                policy_type=values["policy_type"],
                is_default=values["default"],
                deprecated=values["deprecated"],
                aliases=aliases,
                ec=ec,
            )
        )
    if not policies:
        collection = DEFAULT_POLICIES
    else:
        if len(policies) == 1 and not policies[0].is_default:
            policies = [evolve(policies[0], is_default=True)]
        try:
            collection = PolicyCollection(tuple(policies))
        except ValueError as err:
            raise loaded.error(str(err), "storage-policy") from None
    return ClusterConfig(
        path=loaded.path,
        hasher=PathHasher(prefix.encode("utf-8"), suffix.encode("utf-8")),
        policies=collection,
        io_classes=io_classes.load_io_classes(loaded),
    )
